"""Sparsity-invariant convolution and the sparse / dense CNN families."""

from .errors import ModelConfigError, ModelInputError
from .sparse_conv import SparseConv2d, window_count

__all__ = ["ModelConfigError", "ModelInputError", "SparseConv2d", "window_count"]
