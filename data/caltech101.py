"""Finding, staging and decoding Caltech-101 with ``torchvision.datasets.Caltech101``.

torchvision expects the extracted folder ``<root>/caltech101/101_ObjectCategories/<class>/``;
the published archive is ``101_ObjectCategories.tar.gz``. When a data root holds only the
archive (e.g. a read-only shared folder) it is extracted once into the writable cache and
torchvision is pointed there. torchvision lists the classes (sorted, ``BACKGROUND_Google``
removed) and the image numbering; images are decoded here with Pillow rather than through
``Caltech101.__getitem__``, which imports SciPy for the unused annotation targets.

Decoding converts grayscale (and CMYK) JPEGs to RGB and resizes every image to a square of
``image_size`` pixels; JPEG draft mode decodes large images directly at a reduced scale,
which is several times faster than decoding at full size and then shrinking.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .cache import cache_key, file_fingerprint, staged_directory
from .errors import CorruptArchiveError
from .paths import DATA_DIR_ENV
from .source import downloading, find_source, unpack_error

__all__ = [
    "ARCHIVE_NAME",
    "CaltechArrays",
    "CaltechSource",
    "find_caltech101",
    "read_caltech101",
]

ARCHIVE_NAME = "101_ObjectCategories.tar.gz"
_FOLDER = "101_ObjectCategories"
# The capped subset of each class is a fixed pseudo-random choice (not the split seed), so
# every split seed sees the same images and shares one decoded cache file.
_CAP_SEED = 101


@dataclass(frozen=True)
class CaltechSource:
    """Where Caltech-101 was found: the archive (to be staged) or an extracted folder."""

    path: Path
    is_archive: bool


@dataclass(frozen=True)
class CaltechArrays:
    """Decoded Caltech-101: uint8 images (N, 3, S, S), int64 labels and the class names."""

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]


def _missing_message(root: Path) -> str:
    return (
        f"Caltech-101 not found in data root {root}: expected {root}/caltech101/{ARCHIVE_NAME} "
        f"(or the extracted folder {root}/caltech101/{_FOLDER}/); pass --data-dir DIR or set "
        f"{DATA_DIR_ENV}=DIR to a folder holding caltech101/{ARCHIVE_NAME}, or allow "
        "downloading (--download)"
    )


def _locate(root: Path) -> CaltechSource | None:
    folder = root / "caltech101" / _FOLDER
    if folder.is_dir():
        return CaltechSource(folder, is_archive=False)
    archive = root / "caltech101" / ARCHIVE_NAME
    if archive.is_file():
        return CaltechSource(archive, is_archive=True)
    return None


def find_caltech101(root: Path, *, download: bool) -> CaltechSource:
    """Locate Caltech-101 under ``root`` (extracted folder first, then the archive).

    Raises:
        DataMissingError: Not found and ``download`` is false.
        DownloadError: The download failed.
    """
    return find_source(
        root, download=download, locate=_locate, fetch=_download, missing_message=_missing_message
    )


def _download(root: Path) -> None:
    from torchvision.datasets import Caltech101

    with downloading(root, what="Caltech-101", by_hand=f"caltech101/{ARCHIVE_NAME}"):
        Caltech101(os.fspath(root), download=True)


def fingerprint(source: CaltechSource) -> list[dict[str, object]]:
    """Fingerprint of the archive (or folder), for the decode cache key."""
    return [file_fingerprint(source.path)]


def _extract_into(archive: Path, dest_root: Path) -> None:
    target = dest_root / "caltech101"
    target.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            if not any(m.name.split("/")[0] == _FOLDER for m in members):
                raise CorruptArchiveError(
                    f"{archive} does not contain a {_FOLDER}/ folder; it is not the published "
                    "Caltech-101 archive"
                )
            tar.extractall(target, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise unpack_error(archive, dest_root, exc, verb="extract") from exc


def _decode(path: Path, size: int) -> np.ndarray:
    """One image as uint8 (3, size, size), RGB."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at the smallest scale >= size
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise CorruptArchiveError(
            f"cannot decode image {path} ({type(exc).__name__}: {exc}); the Caltech-101 files "
            "are corrupt: replace the archive with the published file"
        ) from exc
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def read_caltech101(
    source: CaltechSource, *, staging_root: Path, image_size: int, max_per_class: int | None
) -> CaltechArrays:
    """Decode the (capped) 101 object classes at ``image_size`` x ``image_size``, RGB.

    Args:
        source: Where the data is (from :func:`find_caltech101`).
        staging_root: Writable folder (in the cache) under which the archive is extracted,
            into ``caltech101-<key>`` keyed by its fingerprint alone: one extraction serves
            every image size and cap, and is reused later.
        image_size: Side of the square output images.
        max_per_class: Keep at most this many images per class (a fixed pseudo-random subset),
            or all of them if ``None``.
    """
    from torchvision.datasets import Caltech101

    if source.is_archive:
        staged = staging_root / f"caltech101-{cache_key({'sources': fingerprint(source)})}"
        root = staged_directory(staged, lambda tmp: _extract_into(source.path, tmp))
    else:
        root = source.path.parent.parent
    try:
        dataset = Caltech101(os.fspath(root), target_type="category", download=False)
    except (RuntimeError, ValueError, OSError) as exc:
        raise CorruptArchiveError(
            f"torchvision cannot index Caltech-101 in {root / 'caltech101' / _FOLDER} "
            f"({type(exc).__name__}: {exc}); expected one folder per class plus "
            "BACKGROUND_Google: replace it with the published archive"
        ) from exc
    categories = tuple(dataset.categories)
    labels_all = torch.tensor(dataset.y, dtype=torch.long)
    numbers_all = torch.tensor(dataset.index, dtype=torch.long)
    generator = torch.Generator().manual_seed(_CAP_SEED)
    chosen: list[Tensor] = []
    for k in range(len(categories)):
        members = torch.nonzero(labels_all == k, as_tuple=True)[0]
        if max_per_class is not None and len(members) > max_per_class:
            pick = torch.randperm(len(members), generator=generator)[:max_per_class]
            members = members[pick.sort().values]
        chosen.append(members)
    order = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.long)
    images = np.empty((len(order), 3, image_size, image_size), dtype=np.uint8)
    folder = root / "caltech101" / _FOLDER
    for row, i in enumerate(order.tolist()):
        name = f"image_{int(numbers_all[i]):04d}.jpg"  # torchvision's own naming
        images[row] = _decode(folder / categories[int(labels_all[i])] / name, image_size)
    return CaltechArrays(
        images=torch.from_numpy(images), labels=labels_all[order].clone(), class_names=categories
    )
