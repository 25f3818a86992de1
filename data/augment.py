"""Light, batched training augmentation, applied to dense images *before* their masks.

Augmenting before the mask is drawn keeps the sparsity model honest: the network sees a
shifted (or cropped) digit with pixels dropped at random from the result, as a sensor would
drop them, never a mask that was moved with the image. Every augmentation draws one set of
random parameters per image from a seeded generator on the training device and resamples the
whole batch with one ``affine_grid`` / ``grid_sample`` pair, so it costs two kernels per
batch and no per-image Python (torchvision's transforms draw one set of parameters per call,
which for a batch means a loop over images).

Images arrive as float (B, C, H, W) on the [0, 255] scale, before normalization, so the
zeros that ``grid_sample`` pads with are black, MNIST's background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .options import DatasetName

__all__ = ["Augmentation", "RandomResizedCropFlip", "RandomShift", "augmentation_for"]


class Augmentation(Protocol):
    """``augment(images, generator) -> images`` of the same shape, one draw per image."""

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor: ...


@dataclass(frozen=True)
class RandomShift:
    """Shift every image by a whole number of pixels, independently in x and y.

    Attributes:
        max_pixels: Largest shift in each direction; 2 on 28x28 MNIST digits moves a stroke
            by about its width, the classic "elastic-free" MNIST augmentation.
    """

    max_pixels: int = 2

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        n, _c, h, w = images.shape
        span = 2 * self.max_pixels + 1
        shifts = torch.randint(
            span, (n, 2), generator=generator, device=images.device
        ).float() - float(self.max_pixels)  # (B, 2) pixels, (dx, dy)
        theta = images.new_zeros(n, 2, 3)
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        # A grid coordinate spans 2 / size per pixel; sampling at x + d shows the image moved by -d.
        theta[:, 0, 2] = shifts[:, 0] * (2.0 / w)
        theta[:, 1, 2] = shifts[:, 1] * (2.0 / h)
        # Whole-pixel offsets land on pixel centres, so nearest sampling is exact.
        return _resample(images, theta, mode="nearest")


@dataclass(frozen=True)
class RandomResizedCropFlip:
    """Crop a random region (area share and aspect ratio drawn per image), resize it back to
    the full image, and mirror it left-right with probability ``flip``.

    The defaults are the standard ImageNet ones (Szegedy et al. 2015) with a larger smallest
    area: Caltech-101 objects are centred and fill most of the frame, and 8 % crops of a 64 px
    image would leave a few pixels of object.

    Attributes:
        scale: Range of the crop's share of the image area.
        ratio: Range of the crop's aspect ratio (width / height), drawn log-uniformly.
        flip: Probability of a horizontal flip.
    """

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        n = images.shape[0]
        u = torch.rand(n, 5, generator=generator, device=images.device)  # (B, 5) uniforms
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
        # Crop width and height as fractions of the image's, clipped to the image.
        width = torch.sqrt(area * aspect).clamp(max=1.0)
        height = torch.sqrt(area / aspect).clamp(max=1.0)
        sign = torch.where(u[:, 4] < self.flip, -1.0, 1.0)
        theta = images.new_zeros(n, 2, 3)
        theta[:, 0, 0] = width * sign
        theta[:, 1, 1] = height
        theta[:, 0, 2] = (2.0 * u[:, 2] - 1.0) * (1.0 - width)  # centre inside the image
        theta[:, 1, 2] = (2.0 * u[:, 3] - 1.0) * (1.0 - height)
        return _resample(images, theta, mode="bilinear")


def _resample(images: Tensor, theta: Tensor, *, mode: str) -> Tensor:
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


def augmentation_for(dataset: DatasetName) -> Augmentation:
    """The light augmentation of ``dataset``: shifts for digits, crops and flips for objects.

    Digits are not flipped (a mirrored 2 is not a 2) and not cropped (a crop of a 28 px digit
    loses strokes); objects are, as in every ImageNet-style recipe.
    """
    if dataset is DatasetName.MNIST:
        return RandomShift()
    if dataset is DatasetName.CALTECH101:
        return RandomResizedCropFlip()
    raise ValueError(f"no augmentation is defined for dataset {dataset!r}")
