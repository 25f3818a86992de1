"""Exception types raised by the data package.

All derive from :class:`DataError`, itself a :class:`ValueError`, so a command line can catch
exactly these and print their one-line message (which says what was wrong and how to fix it)
instead of a traceback, while callers that already catch ``ValueError`` keep working.
"""

from __future__ import annotations

__all__ = [
    "CacheNotWritableError",
    "CorruptArchiveError",
    "DataError",
    "DataMissingError",
    "DownloadError",
    "InvalidDataOptionsError",
    "InvalidImageSizeError",
    "InvalidSparsityError",
    "UnknownDatasetError",
]


class DataError(ValueError):
    """Base class of every error the data package raises on bad input or bad files."""


class UnknownDatasetError(DataError):
    """A dataset name that is not one of :class:`data.DatasetName`."""


class DataMissingError(DataError):
    """The dataset is not in the data root and downloading is not allowed (or not possible)."""


class DownloadError(DataMissingError):
    """Downloading was allowed but failed (no network, unreachable mirror, read-only root)."""


class CorruptArchiveError(DataError):
    """An archive or image file exists but cannot be read (truncated, wrong format)."""


class InvalidDataOptionsError(DataError):
    """Dataset options that cannot be satisfied (negative sizes, a split larger than the data)."""


class InvalidImageSizeError(InvalidDataOptionsError):
    """An image size that is too small for the networks or absurdly large."""


class InvalidSparsityError(DataError):
    """A sparsity outside ``[0, 1)``."""


class CacheNotWritableError(DataError):
    """The cache folder cannot be created or written (permissions, read-only, disk full)."""
