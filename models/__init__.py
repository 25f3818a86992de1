"""Sparsity-invariant convolution and the sparse / dense CNN families.

Uhrig et al., "Sparsity Invariant CNNs", 3DV 2017. Every network is called as
``model(x, mask) -> logits (N, num_classes)``; see ``docs/design.md``.

The names below load their module on first use (``lazy_loader``): ``CNNConfig``,
``ModelFamily`` and the errors are plain Python, so code that only describes a network (a
study definition, a report) does not import torch.
"""

import lazy_loader

from . import config, errors  # plain Python: imported now, and cheap

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "activations": ["make_activation"],
        "config": config.__all__,
        "conv_stack": ["ConvStack"],
        "dense_cnn": ["DenseCNN"],
        "errors": errors.__all__,
        "factory": ["build_model"],
        "sparse_cnn": ["SparseCNN", "masked_adaptive_avg_pool", "masked_global_avg_pool"],
        "sparse_conv": ["SparseConv2d", "window_count"],
        "sparse_pool": ["SparseMaxPool2d"],
    },
)
