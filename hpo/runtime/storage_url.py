"""What a storage URL means: where it comes from, whether it is valid, how it is shown.

Only two backends are supported, each for a reason (see :mod:`hpo.runtime.storage`): SQLite
for one machine and PostgreSQL through psycopg 3 for many. Credentials come only from the URL,
i.e. from ``--storage`` or ``HPO_STORAGE``; every message shows the URL with its password
masked (:func:`mask_url`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # SQLAlchemy is imported on first use: a command's --help does not pay
    from sqlalchemy.engine import URL

__all__ = [
    "ARTIFACT_DIR_ENV",
    "DEFAULT_STORAGE_URL",
    "STORAGE_DEFAULT_HELP",
    "STORAGE_ENV",
    "StorageError",
    "artifact_dir_for",
    "mask_url",
    "normalize_storage_url",
    "parse_storage_url",
    "resolve_storage_url",
    "storage_kind",
]

STORAGE_ENV: Final = "HPO_STORAGE"
ARTIFACT_DIR_ENV: Final = "HPO_ARTIFACT_DIR"
DEFAULT_STORAGE_URL: Final = "sqlite:///hpo.db"
# How every command's --storage help states its default.
STORAGE_DEFAULT_HELP: Final = f"${STORAGE_ENV}, else {DEFAULT_STORAGE_URL}"

SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
_POSTGRES_ALIASES = frozenset({"postgresql", "postgres"})
_EXPECTED = (
    "expected sqlite:///path/to/study.db (one machine) or "
    "postgresql+psycopg://user:password@host:5432/dbname (many machines)"
)


class StorageError(Exception):
    """The storage URL is unusable or the database cannot be reached (message is one line)."""


def resolve_storage_url(cli_value: str | None) -> str:
    """Command line beats environment beats the SQLite default in the working directory."""
    return cli_value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE_URL


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe for logs and error messages."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):
        # Not parseable: blank out anything between "user:" and "@" ourselves.
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def normalize_storage_url(url: str) -> str:
    """Validate ``url`` and return the form SQLAlchemy should open.

    Raises:
        StorageError: If the URL cannot be parsed or names an unsupported database.
    """
    return parse_storage_url(url).render_as_string(hide_password=False)


def storage_kind(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"``: which backend ``url`` uses (after validation)."""
    return "sqlite" if parse_storage_url(url).drivername in SQLITE_DRIVERS else "postgresql"


def artifact_dir_for(url: str) -> Path:
    """Where trial artifacts (model checkpoints) go for the study stored at ``url``.

    ``HPO_ARTIFACT_DIR`` wins (the compose file points every container at one shared volume);
    otherwise next to a SQLite file, else ``hpo-artifacts`` under the working directory.
    """
    override = os.environ.get(ARTIFACT_DIR_ENV)
    if override:
        return Path(override)
    if url.startswith("sqlite:///") and url not in ("sqlite:///", "sqlite:///:memory:"):
        db_path = Path(url.removeprefix("sqlite:///"))
        return db_path.parent / f"{db_path.stem}-artifacts"
    return Path("hpo-artifacts")


def parse_storage_url(url: str) -> URL:
    """The SQLAlchemy URL of a supported storage (a bare ``postgresql://`` means psycopg 3).

    Raises:
        StorageError: Empty, unparseable, an unsupported database, or a malformed SQLite or
            PostgreSQL URL (one line, password masked).
    """
    import sqlalchemy

    if not url or not url.strip():
        raise StorageError(f"empty storage URL: {_EXPECTED}")
    try:
        parsed = sqlalchemy.engine.make_url(url.strip())
    except (sqlalchemy.exc.ArgumentError, ValueError) as e:
        raise StorageError(f"invalid storage URL {mask_url(url)!r}: {_EXPECTED}") from e
    if parsed.drivername in SQLITE_DRIVERS:
        if parsed.host or parsed.username or parsed.password or parsed.port:
            raise StorageError(
                f"invalid SQLite URL {mask_url(url)!r}: use three slashes for a relative path "
                "(sqlite:///study.db) or four for an absolute one (sqlite:////abs/study.db)"
            )
        return parsed
    if parsed.drivername in _POSTGRES_ALIASES:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql":
        if not parsed.database:
            raise StorageError(f"PostgreSQL URL {mask_url(url)!r} names no database: {_EXPECTED}")
        return parsed
    raise StorageError(f"unsupported storage URL {mask_url(url)!r}: {_EXPECTED}")
