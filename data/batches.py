"""Sparse batches straight from device-resident uint8 tensors.

The whole split is moved to the training device once, as uint8 (60k MNIST images are 47 MB).
A batch is then an index into that tensor, a float conversion fused with normalization, and a
multiplication by the mask: a handful of device kernels, no per-sample Python, no DataLoader
workers, no host-to-device copy per batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from .augment import Augmentation
from .dataset import TensorSplit
from .sparsify import check_sparsity, derive_seed, random_masks
from .sparsify import fixed_masks as draw_fixed_masks

__all__ = ["SparseBatches"]


class SparseBatches:
    """Batches ``(x, mask, y)`` of one split at one sparsity, on ``device``.

    ``x`` (B, C, H, W) float32 is normalized with the observed-pixel statistics and zero where
    unobserved; ``mask`` (B, 1, H, W) float32 is 1 where observed; ``y`` (B,) int64.

    Args:
        split: The images (uint8) and labels.
        sparsity: Fraction of pixels dropped, in [0, 1).
        batch_size: Images per batch; the last batch of an epoch may be smaller (or dropped).
        device: Where the split lives and batches are produced.
        mean, std: Per-channel statistics on the [0, 1] scale (``SparseDataset.mean/std``).
        shuffle: Visit the images in a new seeded order every epoch (training).
        seed: Seeds the order and the training masks per epoch, or the fixed masks.
        fixed_masks: Use one mask per image for every epoch, a function of (seed, sparsity,
            image index) only (validation and test: every trial sees the same inputs).
            Otherwise masks are redrawn every epoch (training augmentation).
        drop_last: Leave out an epoch's last, smaller batch (training of a compiled model,
            whose graphs are recorded for one batch shape); ignored when the split is smaller
            than one batch.
        augment: Training augmentation applied to the dense images before their masks
            (``data.augmentation_for``), drawn per epoch from ``seed``; never with
            ``fixed_masks``, whose inputs must be the same for every model.

    Raises:
        InvalidSparsityError: ``sparsity`` outside [0, 1).
        ValueError: Empty split, non-positive batch size, statistics of the wrong length, or
            an augmentation of fixed-mask (evaluation) batches.
    """

    def __init__(
        self,
        split: TensorSplit,
        *,
        sparsity: float,
        batch_size: int,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        seed: int = 0,
        fixed_masks: bool = False,
        drop_last: bool = False,
        augment: Augmentation | None = None,
    ) -> None:
        self.sparsity = check_sparsity(sparsity)
        if augment is not None and fixed_masks:
            raise ValueError("evaluation batches (fixed_masks) must not be augmented")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if len(split) == 0:
            raise ValueError("cannot batch an empty split")
        n, c, h, w = split.images.shape
        if len(mean) != c or len(std) != c:
            raise ValueError(
                f"mean/std need one value per channel ({c}), got {len(mean)} and {len(std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.fixed_masks = fixed_masks
        self.augment = augment
        self.drop_last = drop_last and n >= batch_size  # a split smaller than a batch keeps it
        self._shape = (n, c, h, w)
        self._images = split.images.to(self.device)  # (N, C, H, W) uint8, moved once
        self._labels = split.labels.to(self.device)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        # (u8 / 255 - mean) / std == u8 * scale + shift
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t
        self._masks: Tensor | None = None
        if fixed_masks:
            masks = draw_fixed_masks(n, h, w, sparsity=self.sparsity, seed=seed)
            self._masks = masks.to(self.device)  # (N, 1, H, W) bool, kept on the device

    def __len__(self) -> int:
        """Batches per epoch."""
        n = self._shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Images per epoch."""
        return self._shape[0]

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The batches of epoch ``epoch``; the same epoch number gives the same batches."""
        n, _c, h, w = self._shape
        order: Tensor | None = None
        if self.shuffle:
            cpu_gen = torch.Generator().manual_seed(derive_seed("order", self.seed, epoch))
            order = torch.randperm(n, generator=cpu_gen).to(self.device)
        mask_gen: torch.Generator | None = None
        if self._masks is None:
            mask_gen = torch.Generator(device=self.device)
            mask_gen.manual_seed(derive_seed("train-mask", self.seed, epoch, self.sparsity))
        augment_gen: torch.Generator | None = None
        if self.augment is not None:
            augment_gen = torch.Generator(device=self.device)
            augment_gen.manual_seed(derive_seed("augment", self.seed, epoch))
        end = len(self) * self.batch_size if self.drop_last else n
        for start in range(0, end, self.batch_size):
            stop = min(start + self.batch_size, n)
            idx: Tensor | slice = order[start:stop] if order is not None else slice(start, stop)
            images = self._images[idx]  # (B, C, H, W) uint8
            labels = self._labels[idx]
            if self._masks is not None:
                mask_f = self._masks[idx].to(torch.float32)  # (B, 1, H, W)
            else:
                assert mask_gen is not None
                mask_f = random_masks(
                    stop - start,
                    h,
                    w,
                    sparsity=self.sparsity,
                    generator=mask_gen,
                    device=self.device,
                    dtype=torch.float32,
                )
            pixels = images.to(torch.float32)  # [0, 255]
            if self.augment is not None:
                assert augment_gen is not None
                pixels = self.augment(pixels, augment_gen)  # before the mask, not with it
            x = torch.addcmul(self._shift, pixels, self._scale)
            x.mul_(mask_f)
            yield x, mask_f, labels
