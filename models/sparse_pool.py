"""Max pooling over observed positions only, for the sparse CNN's downsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SparseMaxPool2d"]


class SparseMaxPool2d(nn.Module):
    """2-D max pooling of sparse features, pooling the mask alongside.

    An output is the maximum over the *observed* inputs of its window, and observed when any
    input was (``new_mask`` = max-pool of the mask); windows with no observed input give 0.
    Unobserved positions are excluded with ``-inf`` rather than read as 0, because features
    there are not zero in general (``SparseConv2d`` leaves the bias there) and because a
    zero would beat every negative observed value (``leaky_relu``, ``elu``).

    Args:
        kernel_size: Pooling window (default 2).
        stride: Stride (default: ``kernel_size``).

    ``ceil_mode`` is on so that odd sizes keep their last row and column (75 -> 38).
    """

    def __init__(self, kernel_size: int = 2, stride: int | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Pool ``x`` (N, C, H, W) over observed positions of ``mask`` (N, 1, H, W).

        Returns:
            ``(y, new_mask)``, with ``new_mask`` in ``x``'s dtype.
        """
        m = mask.to(x.dtype)
        if x.device.type == "cpu" and not torch.compiler.is_compiling() and m.numel() > 0:
            # Fully observed (common once the mask has dilated through a few convolutions):
            # nothing to exclude, so skip the full-size masked copy of x; the result and the
            # gradient routing are the same. Checked as in SparseConv2d: one read of the mask,
            # on the CPU only (no device sync) and outside torch.compile (no graph split).
            if m.min().item() == 1.0:
                pooled = F.max_pool2d(x, self.kernel_size, self.stride, ceil_mode=True)
                return pooled, F.max_pool2d(m, self.kernel_size, self.stride, ceil_mode=True)
        filled = x.masked_fill(m == 0, float("-inf"))
        pooled = F.max_pool2d(filled, self.kernel_size, self.stride, ceil_mode=True)
        new_mask = F.max_pool2d(m, self.kernel_size, self.stride, ceil_mode=True)
        return pooled.masked_fill(new_mask == 0, 0.0), new_mask
