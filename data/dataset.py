"""The public entry point: :func:`load_dataset` -> :class:`SparseDataset` of uint8 tensors.

Loading is decode-once: the first call decodes the source files (through torchvision's
MNIST / Caltech101 readers) and caches the decoded uint8 tensors; every later call, in any
process, reads that one file (about a second) and only redoes the cheap, seeded, stratified
split in memory (see :mod:`data.decoded`). Sparsification is *not* applied here: masks are
drawn per batch on the training device (see :mod:`data.batches`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import caltech101, mnist
from .decoded import decode_once
from .errors import InvalidDataOptionsError
from .options import Caltech101Options, DatasetName, DatasetOptions, MNISTOptions
from .paths import resolve_cache_dir, resolve_data_dir
from .splits import stratified_take
from .stats import channel_stats

__all__ = ["SparseDataset", "TensorSplit", "load_dataset"]

# The decoded tensors of a dataset, by name (see :func:`~data.decoded.decode_once`).
Decoded = dict[str, Any]


@dataclass(frozen=True)
class TensorSplit:
    """One split held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.long or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 (N,), got {self.labels.dtype} "
                f"{tuple(self.labels.shape)} for {self.images.shape[0]} images"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def stratified_subset(self, n: int, seed: int) -> TensorSplit:
        """A fixed subset of ``n`` images, stratified by class and drawn with ``seed``.

        The same ``(n, seed)`` gives the same images in every process, so a smaller
        validation set can still judge every trial on the same images. ``n`` at least the
        split's size returns the split itself.

        Raises:
            InvalidDataOptionsError: ``n`` is not a positive integer.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidDataOptionsError(f"subset size must be an integer >= 1, got {n!r}")
        if n >= len(self):
            return self
        taken, _ = stratified_take(self.labels, n, torch.Generator().manual_seed(seed))
        return TensorSplit(self.images[taken], self.labels[taken])


@dataclass(frozen=True)
class SparseDataset:
    """A dataset split three ways, with what networks and normalization need to know.

    Attributes:
        name: Which dataset.
        train, val, test: The splits (dense uint8 images; masks are applied per batch).
        num_classes, in_channels, image_size: For building the network.
        mean, std: Per-channel statistics of the training images on the [0, 1] scale, over
            observed pixels. Masks drop pixels independently of their values, so the observed
            pixels of a sparse image are an unbiased sample of its pixels and these equal the
            statistics over all training pixels; what matters is that the zeros standing for
            *unobserved* pixels are not counted (which would drag the mean towards 0).
        class_names: Name of each label.
        options: The options the dataset was loaded with.
        seed: The split seed.
    """

    name: DatasetName
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    options: DatasetOptions = field(repr=False)
    seed: int = 0


class _Rows(NamedTuple):
    """Rows of the decoded training pool in the training and validation splits; the test split."""

    train_idx: Tensor
    val_idx: Tensor
    test: TensorSplit


def _decode_mnist(root: Path, cache: Path, download: bool, options: MNISTOptions) -> Decoded:
    source = mnist.find_mnist(root, download=download)
    read = partial(mnist.read_mnist, source, staging_root=cache / "staged")
    return decode_once(cache, "mnist", mnist.fingerprint(source), read, stats_prefix="train_")


def _split_mnist(cached: Decoded, options: MNISTOptions, generator: torch.Generator) -> _Rows:
    """Validation carved from the official training set; the official test set as is."""
    labels = cached["train_labels"]
    n_train = len(labels)
    if options.val_size >= n_train:
        raise InvalidDataOptionsError(
            f"MNISTOptions.val_size={options.val_size} leaves no training images: the MNIST "
            f"training set has {n_train} images; choose val_size < {n_train}"
        )
    val_idx, train_idx = stratified_take(labels, options.val_size, generator)
    return _Rows(train_idx, val_idx, TensorSplit(cached["test_images"], cached["test_labels"]))


def _decode_caltech101(
    root: Path, cache: Path, download: bool, options: Caltech101Options
) -> Decoded:
    source = caltech101.find_caltech101(root, download=download)
    size, cap = options.image_size, options.max_per_class
    read = partial(
        caltech101.read_caltech101,
        source,
        staging_root=cache / "staged",
        image_size=size,
        max_per_class=cap,
    )
    return decode_once(
        cache,
        "caltech101",
        caltech101.fingerprint(source),
        read,
        decode_options={"image_size": size, "max_per_class": cap},
    )


def _split_caltech101(
    cached: Decoded, options: Caltech101Options, generator: torch.Generator
) -> _Rows:
    """Test, validation and training splits carved per class from all the (capped) images."""
    labels = cached["labels"]
    n = len(labels)
    test_idx, rest = stratified_take(labels, round(n * options.test_fraction), generator)
    val_rel, train_rel = stratified_take(labels[rest], round(n * options.val_fraction), generator)
    test = TensorSplit(cached["images"][test_idx], labels[test_idx])
    return _Rows(rest[train_rel], rest[val_rel], test)


@dataclass(frozen=True)
class _Recipe:
    """What is particular to one dataset; :func:`load_dataset` runs the rest the same way.

    Attributes:
        options: The dataset's options type.
        decode: ``(root, cache, download, options)`` -> the decoded tensors (found, downloaded
            if allowed, and decoded once; see :func:`~data.decoded.decode_once`).
        split: ``(decoded, options, generator)`` -> the rows of the training and validation
            splits and the test split.
        pool: Prefix of the decoded ``<pool>images`` the training and validation rows index:
            MNIST's ``train_`` (its test set is decoded apart), Caltech-101's none.
    """

    options: type[DatasetOptions]
    decode: Callable[[Path, Path, bool, Any], Decoded]
    split: Callable[[Decoded, Any, torch.Generator], _Rows]
    pool: str


_RECIPES: dict[DatasetName, _Recipe] = {
    DatasetName.MNIST: _Recipe(MNISTOptions, _decode_mnist, _split_mnist, pool="train_"),
    DatasetName.CALTECH101: _Recipe(
        Caltech101Options, _decode_caltech101, _split_caltech101, pool=""
    ),
}


def _subset(labels: Tensor, n: int | None, what: str, generator: torch.Generator) -> Tensor:
    """Indices of a stratified subset of size ``n`` (all if ``None``)."""
    if n is None:
        return torch.arange(len(labels))
    if n > len(labels):
        raise InvalidDataOptionsError(
            f"{what}={n} exceeds the {len(labels)} available training images; choose a "
            "smaller value or leave it unset"
        )
    return stratified_take(labels, n, generator)[0]


def _dataset(
    name: DatasetName,
    recipe: _Recipe,
    cached: Decoded,
    rows: _Rows,
    options: DatasetOptions,
    generator: torch.Generator,
    seed: int,
) -> SparseDataset:
    """The dataset of ``rows``, after the optional ``train_size`` subset of the training rows.

    Normalization statistics are those of the training rows, from the cached pixel sums.
    """
    images, labels = cached[f"{recipe.pool}images"], cached[f"{recipe.pool}labels"]
    what = f"{recipe.options.__name__}.train_size"
    train_idx = rows.train_idx[_subset(labels[rows.train_idx], options.train_size, what, generator)]
    _n, channels, height, width = images.shape
    mean, std = channel_stats(
        cached[f"{recipe.pool}sums"], cached[f"{recipe.pool}squares"], train_idx, height * width
    )
    return SparseDataset(
        name=name,
        train=TensorSplit(images[train_idx], labels[train_idx]),
        val=TensorSplit(images[rows.val_idx], labels[rows.val_idx]),
        test=rows.test,
        num_classes=len(cached["class_names"]),
        in_channels=int(channels),
        image_size=int(width),
        mean=mean,
        std=std,
        class_names=tuple(cached["class_names"]),
        options=options,
        seed=seed,
    )


def load_dataset(
    name: DatasetName | str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    seed: int = 0,
    options: DatasetOptions | None = None,
) -> SparseDataset:
    """Load a dataset, decoding it on the first call and reading the cache afterwards.

    Args:
        name: ``DatasetName`` or its string value (``"mnist"``, ``"caltech101"``).
        data_dir: Data root in torchvision's layout (``MNIST/raw/*.gz``,
            ``caltech101/101_ObjectCategories.tar.gz``); ``None``: ``$HPO_DATA_DIR``, else
            ``<cache_dir>/datasets``. May be read-only: archives are extracted into the cache.
        cache_dir: Writable cache; ``None``: ``$HPO_CACHE_DIR``, else ``~/.cache/sparse-cnn-hpo``.
        download: Let torchvision download missing data into ``data_dir``. With ``False`` (or
            when the files are present) the network is never touched.
        seed: Seed of the stratified splits (and subsets). Keep it fixed within a study so all
            trials see the same validation images.
        options: ``MNISTOptions`` / ``Caltech101Options``; ``None`` for the defaults.

    Raises:
        UnknownDatasetError, DataMissingError, DownloadError, CorruptArchiveError,
        InvalidDataOptionsError, InvalidImageSizeError: all :class:`DataError`, one-line messages.
    """
    dataset = DatasetName.parse(name)
    cache = resolve_cache_dir(cache_dir)
    root = resolve_data_dir(data_dir, cache)
    recipe = _RECIPES[dataset]
    options = recipe.options() if options is None else options
    if not isinstance(options, recipe.options):
        raise InvalidDataOptionsError(
            f"{dataset.value} takes {recipe.options.__name__}, got {type(options).__name__}"
        )
    cached = recipe.decode(root, cache, download, options)
    generator = torch.Generator().manual_seed(seed)
    rows = recipe.split(cached, options, generator)
    return _dataset(dataset, recipe, cached, rows, options, generator, seed)
