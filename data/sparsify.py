"""Random pixel masks: which pixels of an image are observed.

Each pixel is kept independently with probability ``1 - sparsity``; one mask is shared by all
channels of an image (a pixel is observed or not, not a colour channel). The mask marks
*dropped* pixels, never dark ones: MNIST's black background is observed data.

Training masks are fresh every epoch (augmentation); evaluation masks are a pure function of
(seed, sparsity, sample index, image size), drawn on the CPU with a dedicated generator, so
every trial, process and model family is scored on exactly the same inputs.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

from .errors import InvalidSparsityError

__all__ = ["check_sparsity", "derive_seed", "fixed_masks", "random_masks"]


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float if it is in ``[0, 1)``.

    Raises:
        InvalidSparsityError: Not a number, NaN, negative, or >= 1 (nothing would be observed).
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float):
        raise InvalidSparsityError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    value = float(sparsity)
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise InvalidSparsityError(
            f"sparsity must be in [0, 1), got {sparsity!r}: it is the fraction of pixels "
            "dropped, so 1 would leave nothing observed (0.9 keeps 10%)"
        )
    return value


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts``, stable across processes (unlike ``hash()``)."""
    text = "|".join(repr(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def random_masks(
    n: int,
    height: int,
    width: int,
    *,
    sparsity: float,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bool,
) -> Tensor:
    """``n`` fresh masks (n, 1, height, width), 1/True where the pixel is observed.

    ``generator`` must live on ``device``; drawing there keeps training masks off the CPU.
    With a floating ``dtype`` the comparison is done in place on the uniform draws, which
    saves the training loop a kernel and an allocation per batch.
    """
    if sparsity == 0.0:
        return torch.ones(n, 1, height, width, dtype=dtype, device=device)
    if dtype.is_floating_point:
        draws = torch.rand(n, 1, height, width, generator=generator, device=device, dtype=dtype)
        return draws.ge_(sparsity)  # 1.0 where kept (probability 1 - sparsity), else 0.0
    return torch.rand(n, 1, height, width, generator=generator, device=device) >= sparsity


def fixed_masks(n: int, height: int, width: int, *, sparsity: float, seed: int) -> Tensor:
    """The evaluation masks of an ``n``-image split: bool (n, 1, height, width) on the CPU.

    Mask ``i`` depends only on ``(seed, sparsity, i, height, width)``: identical across calls,
    processes, devices and batch sizes. Generated on the CPU because CPU and CUDA generators
    give different streams; move the result to the device once.
    """
    sparsity = check_sparsity(sparsity)
    generator = torch.Generator().manual_seed(derive_seed("eval-mask", seed, f"{sparsity:.6g}"))
    return random_masks(n, height, width, sparsity=sparsity, generator=generator)
