"""A dataset's source files: find them, download them if allowed, and name unpacking failures.

MNIST and Caltech-101 follow one flow: look in the data root; if nothing is there, refuse
when downloading is not allowed (the network is touched only on request), otherwise let
torchvision download into the root and look again. What differs per dataset (the file names,
the torchvision call, the wording of the "not found" message) is passed in, so each dataset
module keeps only its own files and checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from .cache import is_write_failure
from .errors import CacheNotWritableError, CorruptArchiveError, DataMissingError, DownloadError
from .paths import CACHE_DIR_ENV, DATA_DIR_ENV

__all__ = ["downloading", "find_source", "unpack_error"]

SourceT = TypeVar("SourceT")


def find_source(
    root: Path,
    *,
    download: bool,
    locate: Callable[[Path], SourceT | None],
    fetch: Callable[[Path], None],
    missing_message: Callable[[Path], str],
) -> SourceT:
    """Locate a dataset under ``root``, downloading it there first if allowed and absent.

    Args:
        root: The data root (torchvision's layout).
        download: Whether ``fetch`` may be called when nothing is found.
        locate: Where the files are under a root, or ``None`` if they are not all there.
        fetch: Downloads the dataset into a root (wrapped in :func:`downloading`).
        missing_message: The one-line "not found" message for a root: what was expected
            there and how to provide it.

    Raises:
        DataMissingError: Not found and ``download`` is false.
        DownloadError: The download failed (no network, read-only root).
    """
    source = locate(root)
    if source is not None:
        return source
    if not download:
        raise DataMissingError(missing_message(root))
    fetch(root)
    source = locate(root)
    if source is None:  # pragma: no cover - torchvision succeeded but left no files
        raise DownloadError(missing_message(root))
    return source


@contextmanager
def downloading(root: Path, *, what: str, by_hand: str) -> Iterator[None]:
    """Create ``root`` and turn a failure of the download in the block into a DownloadError.

    torchvision reports an unreachable mirror as ``RuntimeError`` and a read-only root as
    ``OSError``; either becomes one line naming the dataset, the cause and the two ways out.

    Args:
        root: The data root being downloaded into.
        what: The dataset's name in the message (``"MNIST"``).
        by_hand: What the user can put into ``root`` instead (``"the four ... files"``).
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        yield
    except (OSError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise DownloadError(
            f"could not download {what} into {root} ({type(exc).__name__}: {detail}); put "
            f"{by_hand} there yourself or point --data-dir / {DATA_DIR_ENV} at a writable "
            "folder with network access"
        ) from exc


def unpack_error(
    archive: Path, dest_root: Path, exc: BaseException, *, verb: str
) -> CacheNotWritableError | CorruptArchiveError:
    """The error to raise when unpacking ``archive`` into the cache at ``dest_root`` failed.

    A full disk or a read-only cache is the cache's fault, not the archive's, and is fixed
    elsewhere, so the two get different types and advice.

    Args:
        archive: The archive being unpacked.
        dest_root: The (temporary) folder in the cache it was unpacked into.
        exc: What went wrong.
        verb: How the archive is unpacked, for the message (``"decompress"``, ``"extract"``).
    """
    if is_write_failure(exc):
        return CacheNotWritableError(
            f"cannot extract {archive} into the cache at {dest_root} ({exc}); free some space "
            f"or set {CACHE_DIR_ENV} (or cache_dir) to a writable folder"
        )
    return CorruptArchiveError(
        f"cannot {verb} {archive} ({type(exc).__name__}: {exc}); the archive is corrupt or "
        "truncated: replace it with the published file"
    )
