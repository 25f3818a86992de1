"""The public entry point: :func:`load_dataset` -> :class:`SparseDataset` of uint8 tensors.

Loading is decode-once: the first call decodes the source files (through torchvision's
MNIST / Caltech101 readers) and caches the decoded uint8 tensors; every later call, in any
process, reads that one file (about a second) and only redoes the cheap, seeded, stratified
split in memory. Sparsification is *not* applied here: masks are drawn per batch on the
training device (see :mod:`data.batches`).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from . import caltech101, mnist
from .cache import cache_key, load_tensors, save_tensors_atomic
from .errors import InvalidDataOptionsError, InvalidImageSizeError, UnknownDatasetError
from .paths import resolve_cache_dir, resolve_data_dir
from .splits import stratified_take

__all__ = [
    "MAX_IMAGE_SIZE",
    "MIN_IMAGE_SIZE",
    "Caltech101Options",
    "DatasetName",
    "DatasetOptions",
    "MNISTOptions",
    "SparseDataset",
    "TensorSplit",
    "load_dataset",
]

MIN_IMAGE_SIZE = 8  # below this a 6-layer network has nothing left to convolve
MAX_IMAGE_SIZE = 1024  # larger is a typo: 101 x 100 RGB images of 1024^2 are 30 GB of uint8


class DatasetName(enum.StrEnum):
    """The datasets this package can load."""

    MNIST = "mnist"
    CALTECH101 = "caltech101"

    @classmethod
    def parse(cls, value: str | DatasetName) -> DatasetName:
        """``DatasetName(value)`` with a clear error listing the valid names."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            msg = f"unknown dataset {value!r}; choose one of: {valid}"
            raise UnknownDatasetError(msg) from None


def _check_int(owner: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidDataOptionsError(
            f"{owner}.{name} must be an integer >= {minimum}, got {value!r}"
        )


@dataclass(frozen=True)
class MNISTOptions:
    """Options of MNIST.

    Attributes:
        val_size: Validation images carved (seeded, stratified) from the 60k training images;
            the rest is the training split. The test split is always the official 10k.
        train_size: If set, a stratified subset of this many training images (quick runs,
            ``--train-size``); validation and test are unaffected.
    """

    val_size: int = 5000
    train_size: int | None = None

    def __post_init__(self) -> None:
        _check_int("MNISTOptions", "val_size", self.val_size, 1)
        if self.train_size is not None:
            _check_int("MNISTOptions", "train_size", self.train_size, 1)


@dataclass(frozen=True)
class Caltech101Options:
    """Options of Caltech-101 (the 101 object classes; ``BACKGROUND_Google`` is excluded).

    Attributes:
        image_size: Images are resized to ``image_size`` x ``image_size`` (150 as in the
            literature; 32-64 for CPU runs). Must be in [8, 1024].
        max_per_class: Cap on images per class (a fixed pseudo-random subset) to balance the
            classes, which range from 31 to 800 images; ``None`` keeps everything.
        val_fraction: Fraction of the (capped) images in the validation split, per class.
        test_fraction: Fraction in the test split, per class; the rest is training.
        train_size: If set, a stratified subset of this many training images.
    """

    image_size: int = 150
    max_per_class: int | None = 100
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    train_size: int | None = None

    def __post_init__(self) -> None:
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int):
            raise InvalidImageSizeError(
                f"Caltech101Options.image_size must be an integer, got {size!r}"
            )
        if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
            raise InvalidImageSizeError(
                f"Caltech101Options.image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], "
                f"got {size} (150 matches the literature; 32-64 suits CPU runs)"
            )
        if self.max_per_class is not None:
            _check_int("Caltech101Options", "max_per_class", self.max_per_class, 3)
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise InvalidDataOptionsError(
                    f"Caltech101Options.{name} must be a number in (0, 1), got {value!r}"
                )
        if self.val_fraction + self.test_fraction >= 0.9:
            raise InvalidDataOptionsError(
                "Caltech101Options.val_fraction + test_fraction must be < 0.9 to leave training "
                f"images, got {self.val_fraction} + {self.test_fraction}"
            )
        if self.train_size is not None:
            _check_int("Caltech101Options", "train_size", self.train_size, 1)


DatasetOptions = MNISTOptions | Caltech101Options


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


def _pixel_sums(images: Tensor) -> tuple[Tensor, Tensor]:
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


def _channel_stats(
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


def _load_mnist(
    root: Path, cache: Path, download: bool, seed: int, options: MNISTOptions
) -> SparseDataset:
    source = mnist.find_mnist(root, download=download)
    key = cache_key({"dataset": "mnist", "sources": mnist.fingerprint(source)})
    path = cache / "decoded" / f"mnist-{key}.pt"
    cached = load_tensors(path)
    if cached is None:
        arrays = mnist.read_mnist(source, staging_dir=cache / "staged" / f"mnist-{key}")
        cached = {
            "train_images": arrays.train_images,
            "train_labels": arrays.train_labels,
            "test_images": arrays.test_images,
            "test_labels": arrays.test_labels,
            "class_names": list(arrays.class_names),
        }
        cached["train_sums"], cached["train_squares"] = _pixel_sums(arrays.train_images)
        save_tensors_atomic(cached, path)
    train_images, train_labels = cached["train_images"], cached["train_labels"]
    n_train = len(train_labels)
    if options.val_size >= n_train:
        raise InvalidDataOptionsError(
            f"MNISTOptions.val_size={options.val_size} leaves no training images: the MNIST "
            f"training set has {n_train} images; choose val_size < {n_train}"
        )
    generator = torch.Generator().manual_seed(seed)
    val_idx, train_idx = stratified_take(train_labels, options.val_size, generator)
    keep = _subset(
        train_labels[train_idx], options.train_size, "MNISTOptions.train_size", generator
    )
    train_idx = train_idx[keep]
    train = TensorSplit(train_images[train_idx], train_labels[train_idx])
    mean, std = _channel_stats(cached["train_sums"], cached["train_squares"], train_idx, 28 * 28)
    return SparseDataset(
        name=DatasetName.MNIST,
        train=train,
        val=TensorSplit(train_images[val_idx], train_labels[val_idx]),
        test=TensorSplit(cached["test_images"], cached["test_labels"]),
        num_classes=len(cached["class_names"]),
        in_channels=1,
        image_size=int(train_images.shape[-1]),
        mean=mean,
        std=std,
        class_names=tuple(cached["class_names"]),
        options=options,
        seed=seed,
    )


def _load_caltech101(
    root: Path, cache: Path, download: bool, seed: int, options: Caltech101Options
) -> SparseDataset:
    source = caltech101.find_caltech101(root, download=download)
    sources = caltech101.fingerprint(source)
    key = cache_key(
        {
            "dataset": "caltech101",
            "sources": sources,
            "image_size": options.image_size,
            "max_per_class": options.max_per_class,
        }
    )
    path = cache / "decoded" / f"caltech101-{key}.pt"
    cached = load_tensors(path)
    if cached is None:
        staging = cache / "staged" / f"caltech101-{cache_key({'sources': sources})}"
        arrays = caltech101.read_caltech101(
            source,
            staging_dir=staging,
            image_size=options.image_size,
            max_per_class=options.max_per_class,
        )
        cached = {
            "images": arrays.images,
            "labels": arrays.labels,
            "class_names": list(arrays.class_names),
        }
        cached["sums"], cached["squares"] = _pixel_sums(arrays.images)
        save_tensors_atomic(cached, path)
    images, labels = cached["images"], cached["labels"]
    n = len(labels)
    generator = torch.Generator().manual_seed(seed)
    test_idx, rest = stratified_take(labels, round(n * options.test_fraction), generator)
    val_rel, train_rel = stratified_take(labels[rest], round(n * options.val_fraction), generator)
    val_idx, train_idx = rest[val_rel], rest[train_rel]
    keep = _subset(labels[train_idx], options.train_size, "Caltech101Options.train_size", generator)
    train_idx = train_idx[keep]
    train = TensorSplit(images[train_idx], labels[train_idx])
    mean, std = _channel_stats(cached["sums"], cached["squares"], train_idx, options.image_size**2)
    return SparseDataset(
        name=DatasetName.CALTECH101,
        train=train,
        val=TensorSplit(images[val_idx], labels[val_idx]),
        test=TensorSplit(images[test_idx], labels[test_idx]),
        num_classes=len(cached["class_names"]),
        in_channels=3,
        image_size=options.image_size,
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
    if dataset is DatasetName.MNIST:
        options = MNISTOptions() if options is None else options
        if not isinstance(options, MNISTOptions):
            raise InvalidDataOptionsError(f"mnist takes MNISTOptions, got {type(options).__name__}")
        return _load_mnist(root, cache, download, seed, options)
    options = Caltech101Options() if options is None else options
    if not isinstance(options, Caltech101Options):
        raise InvalidDataOptionsError(
            f"caltech101 takes Caltech101Options, got {type(options).__name__}"
        )
    return _load_caltech101(root, cache, download, seed, options)
