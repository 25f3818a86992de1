"""Sparse MNIST and Caltech-101 datasets, sparsification and on-device batching.

See ``docs/design.md``::

    ds = load_dataset(DatasetName.MNIST, data_dir=None, cache_dir=None, download=False, seed=0,
                      options=MNISTOptions())
    batches = SparseBatches(ds.val, sparsity=0.9, batch_size=256, device=device,
                            mean=ds.mean, std=ds.std, seed=1234, fixed_masks=True)
    for x, mask, y in batches.epoch(0): ...

The names below load their module on first use (``lazy_loader``): the options, errors and
paths are plain Python, so a study definition or a ``--help`` that needs only them does not
import torch.
"""

import lazy_loader

from . import errors, options, paths  # plain Python: imported now, and cheap

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "augment": ["Augmentation", "RandomResizedCropFlip", "RandomShift", "augmentation_for"],
        "batches": ["SparseBatches"],
        "dataset": ["SparseDataset", "TensorSplit", "load_dataset"],
        "errors": errors.__all__,
        "options": options.__all__,
        "paths": paths.__all__,
        "sparsify": ["check_sparsity", "fixed_masks", "random_masks"],
    },
)
