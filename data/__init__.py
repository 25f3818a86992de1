"""Sparse MNIST and Caltech-101 datasets, sparsification and on-device batching.

See ``docs/design.md``::

    ds = load_dataset(DatasetName.MNIST, data_dir=None, cache_dir=None, download=False, seed=0,
                      options=MNISTOptions())
    batches = SparseBatches(ds.val, sparsity=0.9, batch_size=256, device=device,
                            mean=ds.mean, std=ds.std, seed=1234, fixed_masks=True)
    for x, mask, y in batches.epoch(0): ...
"""

from .batches import SparseBatches
from .dataset import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    Caltech101Options,
    DatasetName,
    DatasetOptions,
    MNISTOptions,
    SparseDataset,
    TensorSplit,
    load_dataset,
)
from .errors import (
    CacheNotWritableError,
    CorruptArchiveError,
    DataError,
    DataMissingError,
    DownloadError,
    InvalidDataOptionsError,
    InvalidImageSizeError,
    InvalidSparsityError,
    UnknownDatasetError,
)
from .paths import (
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    default_cache_dir,
    resolve_cache_dir,
    resolve_data_dir,
)
from .sparsify import check_sparsity, fixed_masks, random_masks

__all__ = [
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "MAX_IMAGE_SIZE",
    "MIN_IMAGE_SIZE",
    "CacheNotWritableError",
    "Caltech101Options",
    "CorruptArchiveError",
    "DataError",
    "DataMissingError",
    "DatasetName",
    "DatasetOptions",
    "DownloadError",
    "InvalidDataOptionsError",
    "InvalidImageSizeError",
    "InvalidSparsityError",
    "MNISTOptions",
    "SparseBatches",
    "SparseDataset",
    "TensorSplit",
    "UnknownDatasetError",
    "check_sparsity",
    "default_cache_dir",
    "fixed_masks",
    "load_dataset",
    "random_masks",
    "resolve_cache_dir",
    "resolve_data_dir",
]
