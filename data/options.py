"""Which dataset to load, and its options, validated when constructed rather than when loaded.

Sizes that are not positive integers, fractions that leave no training images and image sizes
no network can convolve fail at once with a one-line :class:`~data.InvalidDataOptionsError`,
before any file is read; only checks that need the data (a ``val_size`` or ``train_size``
larger than the training images there) wait for :func:`~data.load_dataset`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import InvalidDataOptionsError, InvalidImageSizeError, UnknownDatasetError

__all__ = [
    "MAX_IMAGE_SIZE",
    "MIN_IMAGE_SIZE",
    "Caltech101Options",
    "DatasetName",
    "DatasetOptions",
    "MNISTOptions",
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
