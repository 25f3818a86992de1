"""Writers of tiny datasets in the exact on-disk layouts of the published archives.

The tests exercise the *real* loading code (torchvision's MNIST and Caltech-101 readers, the
archive staging, the decode cache) offline, so the fixtures must look like the real files:
gzip-compressed IDX files under ``MNIST/raw/`` and a ``101_ObjectCategories.tar.gz`` holding
one folder of JPEGs per class plus ``BACKGROUND_Google``. The images are *learnable* (a distinct
texture per class plus noise) so that end-to-end tests can check that a model actually trains.

Layout written under ``root``::

    root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
    root/caltech101/101_ObjectCategories.tar.gz
        101_ObjectCategories/<class>/image_0001.jpg ...
        101_ObjectCategories/BACKGROUND_Google/image_0001.jpg ...
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "CALTECH_CLASSES",
    "MNIST_FILES",
    "mnist_pattern_images",
    "write_caltech101",
    "write_idx",
    "write_mnist",
    "write_synthetic_data",
]

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Images per class of the default synthetic Caltech-101. One class is larger than the others so
# a cap (``max_per_class``) below 24 has something to cut; names are real Caltech-101 classes.
CALTECH_CLASSES: Mapping[str, int] = {
    "accordion": 24,
    "airplanes": 20,
    "anchor": 18,
    "Faces_easy": 20,
}

# IDX type code of unsigned bytes (the only type MNIST uses).
_IDX_UBYTE = 0x08


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8, 1-3 dims) as a gzip-compressed IDX file, as LeCun publishes it.

    IDX: two zero bytes, the type code, the number of dimensions, then each dimension as a
    big-endian uint32, then the data in C order.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, _IDX_UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same arrays give byte-identical files.
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(header + array.tobytes())


def mnist_pattern_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 uint8 images: a textured patch on a dark background, the texture encoding the class.

    The networks end in a (masked) global average pool, so classes must differ in *what* is
    drawn, not *where*: classes 0-3 are stripes (horizontal, vertical, two diagonals) of period
    4, classes 4-7 the same of period 8, classes 8-9 checkerboards of 2- and 4-pixel cells.
    Each image has a random phase, a randomly placed 16-22 px patch, brightness jitter and
    background noise, so no two images are identical. Measured with a 3-layer, width-16
    sparse CNN (Adam 3e-3, batch 32, 500 training images): 100% validation accuracy after 5
    epochs at sparsity 0; at sparsity 0.9 it is a hard task, ~30% after 8 epochs (chance: 10%).
    """
    n = len(labels)
    yy, xx = np.mgrid[0:28, 0:28]
    images = rng.integers(0, 30, size=(n, 28, 28)).astype(np.int64)
    for i, label in enumerate(labels):
        k = int(label)
        phase = int(rng.integers(0, 8))
        if k < 8:
            period = 4 if k < 4 else 8
            coord = (yy, xx, yy + xx, yy - xx)[k % 4]
            on = (coord + phase) % period < period // 2
        else:
            cell = 2 if k == 8 else 4
            on = ((yy + phase) // cell + (xx + phase) // cell) % 2 == 0
        h, w = (int(v) for v in rng.integers(16, 23, size=2))
        top, left = int(rng.integers(0, 29 - h)), int(rng.integers(0, 29 - w))
        patch = np.zeros((28, 28), dtype=bool)
        patch[top : top + h, left : left + w] = True
        bright = rng.integers(170, 256, size=(28, 28))
        images[i][patch & on] = bright[patch & on]
    return images.astype(np.uint8)


def _balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    return labels.astype(np.uint8)


def write_mnist(root: Path, *, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write a tiny MNIST (``n_train`` / ``n_test`` images, balanced classes) under ``root``.

    Returns:
        The ``root/MNIST/raw`` folder holding the four ``.gz`` files.
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / "MNIST" / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _balanced_labels(n, 10, rng)
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", mnist_pattern_images(labels, rng))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return raw


def _caltech_image(class_index: int, rng: np.random.Generator, *, gray: bool) -> Image.Image:
    """An image of varied size whose dominant color and shape depend on the class."""
    h = int(rng.integers(40, 90))
    w = int(rng.integers(40, 90))
    pixels = rng.integers(0, 60, size=(h, w, 3)).astype(np.int64)
    color = np.zeros(3, dtype=np.int64)
    color[class_index % 3] = 230
    color[(class_index + 1) % 3] = 60 * (class_index // 3)
    if class_index % 2 == 0:  # a filled disc
        yy, xx = np.mgrid[0:h, 0:w]
        inside = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2
    else:  # a wide horizontal band
        inside = np.zeros((h, w), dtype=bool)
        inside[h // 3 : 2 * h // 3, :] = True
    pixels[inside] = color
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    return image.convert("L") if gray else image


def write_caltech101(
    root: Path,
    *,
    classes: Mapping[str, int] = CALTECH_CLASSES,
    n_background: int = 5,
    gray_every: int = 4,
    seed: int = 0,
) -> Path:
    """Write a tiny ``caltech101/101_ObjectCategories.tar.gz`` under ``root``.

    Args:
        root: Data root; the archive goes to ``root/caltech101/``.
        classes: Class name -> number of images (files ``image_0001.jpg`` ...).
        n_background: Images in ``BACKGROUND_Google`` (which loaders must exclude).
        gray_every: Every ``gray_every``-th image of a class is saved as a grayscale JPEG, as
            about 1% of the real images are (loaders must convert them to RGB).
        seed: Seed of the pixel noise and the image sizes.

    Returns:
        Path of the written archive.
    """
    rng = np.random.default_rng(seed)
    archive = Path(root) / "caltech101" / "101_ObjectCategories.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    folders = dict(classes)
    folders["BACKGROUND_Google"] = n_background
    names = sorted(folders)
    with tarfile.open(archive, "w:gz") as tar:
        top = tarfile.TarInfo("101_ObjectCategories")
        top.type = tarfile.DIRTYPE
        top.mode = 0o755
        tar.addfile(top)
        for class_index, name in enumerate(names):
            folder = tarfile.TarInfo(f"101_ObjectCategories/{name}")
            folder.type = tarfile.DIRTYPE
            folder.mode = 0o755
            tar.addfile(folder)
            for i in range(1, folders[name] + 1):
                image = _caltech_image(class_index, rng, gray=(i % gray_every == 0))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=90)
                info = tarfile.TarInfo(f"101_ObjectCategories/{name}/image_{i:04d}.jpg")
                info.size = buffer.tell()
                info.mode = 0o644
                buffer.seek(0)
                tar.addfile(info, buffer)
    return archive


def write_synthetic_data(root: Path, *, seed: int = 0) -> Path:
    """Write both tiny datasets (600/200 MNIST; 4 Caltech classes of 18-24 images) under ``root``.

    With 600 MNIST training images, use ``MNISTOptions(val_size=100)`` (the default 5000 is
    rejected as larger than the training set); for Caltech-101 use a small ``image_size``
    (e.g. 32) to keep tests fast.
    """
    root = Path(root)
    write_mnist(root, seed=seed)
    write_caltech101(root, seed=seed)
    return root
