"""The on-disk cache of decoded datasets and of extracted archives.

Decoding 70k IDX images or 9k JPEGs takes seconds to minutes; every trial of a study needs the
same tensors, so they are decoded once and saved as uint8 tensors in one file per
(dataset, decode options, source files' size and mtime). Writers go through a temporary file
and ``os.replace`` (atomic on POSIX), so concurrent workers racing on a cold cache each write a
complete file and readers never see a half-written one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CacheNotWritableError
from .paths import CACHE_DIR_ENV

__all__ = [
    "CACHE_FORMAT",
    "cache_key",
    "is_write_failure",
    "file_fingerprint",
    "load_tensors",
    "save_tensors_atomic",
    "staged_directory",
]

# Bump when the layout or content of cached files changes, so stale files are not reused.
CACHE_FORMAT = 2

_COMPLETE_MARKER = ".complete"

# errno values that mean "the cache cannot be written", not "the input is bad".
_WRITE_FAILURES = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOTDIR,
}


def is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a permission / read-only / disk-full error."""
    return isinstance(exc, OSError) and exc.errno in _WRITE_FAILURES


def _not_writable(path: Path, exc: OSError) -> CacheNotWritableError:
    return CacheNotWritableError(
        f"cannot write to the cache at {path} ({exc.strerror or exc}); free some space or set "
        f"{CACHE_DIR_ENV} (or cache_dir) to a writable folder"
    )


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Name, size and mtime of ``path``: cheap to compute, changes when the file is replaced."""
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(payload: Mapping[str, Any]) -> str:
    """A short stable hash of a JSON-able description of what is cached."""
    text = json.dumps({"format": CACHE_FORMAT, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def load_tensors(path: Path) -> dict[str, Any] | None:
    """The cached dictionary at ``path``, or ``None`` if absent or unreadable (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None


def save_tensors_atomic(obj: Mapping[str, Any], path: Path) -> None:
    """Save ``obj`` to ``path`` through a temporary file and an atomic rename."""
    tmp = _temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dict(obj), tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise _not_writable(path.parent, exc) from exc
    except RuntimeError as exc:  # torch.save reports a failed write as RuntimeError
        raise CacheNotWritableError(
            f"cannot write {path} ({' '.join(str(exc).split())[:200]}); free some space or set "
            f"{CACHE_DIR_ENV} (or cache_dir) to a writable folder"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def staged_directory(final: Path, populate: Callable[[Path], None]) -> Path:
    """A directory filled once by ``populate`` (e.g. extracting an archive), safely under races.

    ``populate`` writes into a private temporary directory that is then renamed to ``final``;
    a marker file inside says the content is complete. If another process finished first, its
    directory is used and ours discarded.
    """
    if (final / _COMPLETE_MARKER).is_file():
        return final
    tmp = _temporary_sibling(final)
    try:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
        except OSError as exc:
            raise _not_writable(final.parent, exc) from exc
        populate(tmp)
        (tmp / _COMPLETE_MARKER).touch()
        if final.exists() and not (final / _COMPLETE_MARKER).is_file():
            shutil.rmtree(final, ignore_errors=True)  # left over by a killed process
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
