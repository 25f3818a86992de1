"""Opening study storage from a URL (minimal version; hardened for many workers in issue 5)."""

from __future__ import annotations

import os
from pathlib import Path

import optuna

STORAGE_ENV = "HPO_STORAGE"
DEFAULT_STORAGE_URL = "sqlite:///hpo.db"


def resolve_storage_url(cli_value: str | None) -> str:
    """Command line beats environment beats the SQLite default in the working directory."""
    return cli_value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE_URL


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open (and create if needed) the storage behind ``url``."""
    return optuna.storages.RDBStorage(url)


def artifact_dir_for(url: str) -> Path:
    """File-system artifact store next to a SQLite file, else under the working directory."""
    if url.startswith("sqlite:///"):
        db_path = Path(url.removeprefix("sqlite:///"))
        return db_path.parent / f"{db_path.stem}-artifacts"
    return Path("hpo-artifacts")
