"""Where datasets are read from and where decoded data is cached.

Precedence, for both folders: the explicit argument (``--data-dir`` / ``--cache-dir`` on the
command line) > the environment variable > the default. Nothing is resolved at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "default_cache_dir",
    "resolve_cache_dir",
    "resolve_data_dir",
]

DATA_DIR_ENV = "HPO_DATA_DIR"
CACHE_DIR_ENV = "HPO_CACHE_DIR"


def default_cache_dir() -> Path:
    """``~/.cache/sparse-cnn-hpo``: the writable cache when nothing else is configured."""
    return Path.home() / ".cache" / "sparse-cnn-hpo"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The writable cache folder: ``cache_dir`` > ``$HPO_CACHE_DIR`` > :func:`default_cache_dir`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return default_cache_dir()


def resolve_data_dir(
    data_dir: str | os.PathLike[str] | None = None, cache_dir: Path | None = None
) -> Path:
    """The data root (torchvision layout): ``data_dir`` > ``$HPO_DATA_DIR`` > cache/datasets.

    The default lives inside the (writable) cache so that ``download=True`` works out of the box;
    a read-only root holding the published archives is fine too, since archives are extracted
    into the cache, never next to themselves.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return resolve_cache_dir(cache_dir) / "datasets"
