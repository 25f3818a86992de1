"""Decode once: a dataset's decoded tensors, read from the cache or decoded and cached.

Each dataset's decoded arrays are saved in one file,
``<cache>/decoded/<dataset>-<key>.pt``, whose key hashes the dataset's name, the fingerprints
of its source files and the options that change the decoded pixels. Any change of those gives
a new file, so a stale one is never read; a missing or unreadable one is decoded again. The
per-image pixel sums of the training images are stored alongside, so normalization statistics
never need a pass over the pixels (see :mod:`data.stats`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import cache_key, load_tensors, save_tensors_atomic
from .stats import pixel_sums

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["decode_once"]


def decode_once(
    cache: Path,
    dataset: str,
    sources: list[dict[str, object]],
    decode: Callable[[], DataclassInstance],
    *,
    decode_options: Mapping[str, object] | None = None,
    stats_prefix: str = "",
) -> dict[str, Any]:
    """The decoded tensors of ``dataset``: the cached file if there is one, else ``decode()``.

    Args:
        cache: The writable cache folder.
        dataset: The dataset's name, first in the file name and in the key.
        sources: Fingerprints of the source files (they key the file).
        decode: Decodes the sources into a dataclass of tensors with a ``class_names`` tuple;
            called only when no cached file is found.
        decode_options: Options that change the decoded tensors (they key the file too).
        stats_prefix: The images whose pixel sums are cached are the field
            ``<stats_prefix>images``; the sums go into ``<stats_prefix>sums`` and
            ``<stats_prefix>squares``.

    Returns:
        The dataclass's fields by name (``class_names`` as a list) plus the pixel sums.

    Raises:
        CacheNotWritableError: The decoded tensors cannot be saved.
    """
    key = cache_key({"dataset": dataset, "sources": sources, **(decode_options or {})})
    path = cache / "decoded" / f"{dataset}-{key}.pt"
    cached = load_tensors(path)
    if cached is None:
        arrays = decode()
        cached = {f.name: getattr(arrays, f.name) for f in dataclasses.fields(arrays)}
        cached["class_names"] = list(cached["class_names"])  # stored as a list (CACHE_FORMAT 2)
        sums, squares = pixel_sums(cached[f"{stats_prefix}images"])
        cached[f"{stats_prefix}sums"], cached[f"{stats_prefix}squares"] = sums, squares
        save_tensors_atomic(cached, path)
    return cached
