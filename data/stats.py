"""Per-channel mean and std of a training split, for normalization, from cached pixel sums."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["channel_stats", "pixel_sums"]


def pixel_sums(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image, per-channel sums of pixel values and of their squares: int64 (N, C) each.

    Stored with the decoded images, so the statistics of any subset (whatever the split seed
    or ``train_size``) are a sum over N rows instead of a pass over every pixel: exact integer
    arithmetic, and ~10x faster than recomputing on a warm load of Caltech-101 at 150 px.
    """
    n, c = images.shape[:2]
    sums = torch.empty(n, c, dtype=torch.int64)
    squares = torch.empty(n, c, dtype=torch.int64)
    step = max(1, (1 << 22) // max(1, images[0].numel()))  # ~4M pixels (16 MB of int32) per chunk
    for start in range(0, n, step):
        chunk = images[start : start + step].reshape(-1, c, images[0, 0].numel()).to(torch.int32)
        sums[start : start + step] = chunk.sum(dim=2, dtype=torch.int64)
        squares[start : start + step] = (chunk * chunk).sum(dim=2, dtype=torch.int64)
    return sums, squares


def channel_stats(
    sums: Tensor, squares: Tensor, index: Tensor, pixels_per_image: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std, on the [0, 1] scale, of the images ``index`` selects."""
    n = len(index) * pixels_per_image
    total = sums[index].sum(dim=0).double()
    total_sq = squares[index].sum(dim=0).double()
    mean = total / n
    var = (total_sq / n - mean * mean).clamp_min(0.0)
    std = (var.sqrt() / 255.0).clamp_min(1e-6)  # a constant channel must not divide by zero
    return tuple(float(v) for v in mean / 255.0), tuple(float(v) for v in std)
