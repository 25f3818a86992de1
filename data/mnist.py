"""Finding, staging and decoding MNIST with ``torchvision.datasets.MNIST``.

torchvision reads the *uncompressed* IDX files from ``<root>/MNIST/raw``. The published archives
are the ``.gz`` files; torchvision only decompresses them as part of a download (which would
touch the network, and write next to the archives). So when a data root holds just the ``.gz``
files (a read-only shared folder, say) they are decompressed into the writable cache and
torchvision is pointed there; the network is used only when nothing is found and ``download``
is allowed.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .cache import cache_key, file_fingerprint, staged_directory
from .errors import CorruptArchiveError
from .paths import DATA_DIR_ENV
from .source import downloading, find_source, unpack_error

__all__ = ["MNIST_FILES", "MNISTArrays", "MNISTSource", "find_mnist", "read_mnist"]

# The four IDX files (without .gz) torchvision reads, and the IDX magic number of each.
MNIST_FILES: dict[str, int] = {
    "train-images-idx3-ubyte": 0x00000803,
    "train-labels-idx1-ubyte": 0x00000801,
    "t10k-images-idx3-ubyte": 0x00000803,
    "t10k-labels-idx1-ubyte": 0x00000801,
}


@dataclass(frozen=True)
class MNISTSource:
    """Where the MNIST files were found.

    Attributes:
        raw_dir: ``<root>/MNIST/raw``.
        compressed: ``True`` when only the ``.gz`` archives are there (they must be staged).
        files: The files the data is read from (their fingerprint keys the decode cache).
    """

    raw_dir: Path
    compressed: bool
    files: tuple[Path, ...]


@dataclass(frozen=True)
class MNISTArrays:
    """Decoded MNIST: uint8 images (N, 1, 28, 28) and int64 labels, plus the class names."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    class_names: tuple[str, ...]


def _locate(root: Path) -> MNISTSource | None:
    raw = root / "MNIST" / "raw"
    plain = tuple(raw / name for name in MNIST_FILES)
    if all(p.is_file() for p in plain):
        return MNISTSource(raw, compressed=False, files=plain)
    packed = tuple(raw / f"{name}.gz" for name in MNIST_FILES)
    if all(p.is_file() for p in packed):
        return MNISTSource(raw, compressed=True, files=packed)
    return None


def _missing_message(root: Path) -> str:
    raw = root / "MNIST" / "raw"
    missing = [f"{name}.gz" for name in MNIST_FILES if not (raw / f"{name}.gz").is_file()]
    return (
        f"MNIST not found in data root {root}: expected {raw}/"
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (missing: " + ", ".join(missing) + "); "
        f"pass --data-dir DIR or set {DATA_DIR_ENV}=DIR to a folder holding MNIST/raw/*.gz, "
        "or allow downloading (--download)"
    )


def find_mnist(root: Path, *, download: bool) -> MNISTSource:
    """Locate MNIST under ``root``, downloading it there first if allowed and absent.

    Raises:
        DataMissingError: Not found and ``download`` is false.
        DownloadError: The download failed (no network, read-only root).
    """
    return find_source(
        root, download=download, locate=_locate, fetch=_download, missing_message=_missing_message
    )


def _download(root: Path) -> None:
    from torchvision.datasets import MNIST

    with downloading(root, what="MNIST", by_hand="the four MNIST/raw/*-ubyte.gz files"):
        MNIST(root, train=True, download=True)
        MNIST(root, train=False, download=True)


def fingerprint(source: MNISTSource) -> list[dict[str, object]]:
    """Fingerprints of the source files, for the decode cache key."""
    return [file_fingerprint(p) for p in source.files]


def _check_idx(path: Path, magic: int) -> None:
    """Reject a truncated or foreign IDX file with a clear error (torchvision only asserts)."""
    with path.open("rb") as f:
        header = f.read(4)
        if len(header) < 4 or struct.unpack(">I", header)[0] != magic:
            raise CorruptArchiveError(
                f"{path} is not an MNIST IDX file (bad magic number); replace it with the "
                "published file"
            )
        ndim = magic & 0xFF
        dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
    expected = 4 + 4 * ndim + int(torch.tensor(dims).prod())
    actual = path.stat().st_size
    if actual != expected:
        raise CorruptArchiveError(
            f"{path} is truncated or padded ({actual} bytes, header says {expected}); "
            "replace it with the published file"
        )


def _decompress_into(source: MNISTSource, dest_root: Path) -> None:
    raw = dest_root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for packed in source.files:
        try:
            with gzip.open(packed, "rb") as src, (raw / packed.stem).open("wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
        except (OSError, EOFError, zlib.error) as exc:
            raise unpack_error(packed, dest_root, exc, verb="decompress") from exc


def read_mnist(source: MNISTSource, *, staging_root: Path) -> MNISTArrays:
    """Decode MNIST with torchvision, staging ``.gz`` archives under ``staging_root`` first.

    Args:
        source: Where the files are (from :func:`find_mnist`).
        staging_root: Writable folder (in the cache) under which archives are decompressed,
            into ``mnist-<key>`` keyed by their fingerprint; reused by later calls for the same
            archives.
    """
    from torchvision.datasets import MNIST

    if source.compressed:
        key = cache_key({"dataset": "mnist", "sources": fingerprint(source)})
        staged = staging_root / f"mnist-{key}"
        root = staged_directory(staged, lambda tmp: _decompress_into(source, tmp))
    else:
        root = source.raw_dir.parent.parent
    raw = root / "MNIST" / "raw"
    for name, magic in MNIST_FILES.items():
        _check_idx(raw / name, magic)
    try:
        train = MNIST(os.fspath(root), train=True, download=False)
        test = MNIST(os.fspath(root), train=False, download=False)
    except (AssertionError, TypeError, ValueError, RuntimeError) as exc:
        raise CorruptArchiveError(
            f"torchvision cannot read the MNIST files in {raw} ({type(exc).__name__}: {exc}); "
            "replace them with the published files"
        ) from exc
    for split, images, labels in (
        ("train", train.data, train.targets),
        ("t10k", test.data, test.targets),
    ):
        if len(images) != len(labels):
            raise CorruptArchiveError(
                f"MNIST {split} files disagree: {len(images)} images but {len(labels)} labels in "
                f"{raw}; replace them with the published files"
            )
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
            raise CorruptArchiveError(f"MNIST {split} labels in {raw} are outside 0-9")
    return MNISTArrays(
        train_images=train.data.unsqueeze(1).contiguous(),  # (N, 1, 28, 28) uint8
        train_labels=train.targets.long(),
        test_images=test.data.unsqueeze(1).contiguous(),
        test_labels=test.targets.long(),
        class_names=tuple(MNIST.classes),
    )
