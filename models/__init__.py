"""Sparsity-invariant convolution and the sparse / dense CNN families.

Uhrig et al., "Sparsity Invariant CNNs", 3DV 2017. Every network is called as
``model(x, mask) -> logits (N, num_classes)``; see ``docs/design.md``.
"""

from .activations import ACTIVATIONS, make_activation
from .config import MAX_DEPTH, MIN_DEPTH, PAPER_KERNELS, CNNConfig
from .dense_cnn import DenseCNN
from .errors import ModelConfigError, ModelInputError
from .factory import ModelFamily, build_model
from .sparse_cnn import SparseCNN, masked_adaptive_avg_pool, masked_global_avg_pool
from .sparse_conv import SparseConv2d, window_count
from .sparse_pool import SparseMaxPool2d

__all__ = [
    "ACTIVATIONS",
    "MAX_DEPTH",
    "MIN_DEPTH",
    "PAPER_KERNELS",
    "CNNConfig",
    "DenseCNN",
    "ModelConfigError",
    "ModelFamily",
    "ModelInputError",
    "SparseCNN",
    "SparseConv2d",
    "SparseMaxPool2d",
    "build_model",
    "make_activation",
    "masked_adaptive_avg_pool",
    "masked_global_avg_pool",
    "window_count",
]
