"""What a storage URL means (SQLite for one machine, PostgreSQL for many): parsed once into a
:class:`StorageTarget` at the entry point; messages show only its masked form.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "ARTIFACT_DIR_ENV",
    "DEFAULT_STORAGE_URL",
    "STORAGE_DEFAULT_HELP",
    "STORAGE_ENV",
    "StorageError",
    "StorageTarget",
    "mask_url",
    "resolve_storage_url",
]

STORAGE_ENV: Final = "HPO_STORAGE"
ARTIFACT_DIR_ENV: Final = "HPO_ARTIFACT_DIR"
DEFAULT_STORAGE_URL: Final = "sqlite:///hpo.db"
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
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


@dataclass(frozen=True)
class StorageTarget:
    """A validated storage URL, parsed once (picklable: ``--workers K`` hands it on)."""

    url: str  # password included: never print it
    masked: str  # for every message
    sqlite_path: Path | None = None  # None: a server, or memory
    in_memory: bool = False  # an in-memory SQLite database (one process, nothing kept)

    @classmethod
    def parse(cls, url: str) -> StorageTarget:
        """Validate ``url`` (a bare ``postgresql://`` means psycopg 3); ``StorageError`` (one
        line, masked) if it is empty, unparseable, unsupported or malformed."""
        import sqlalchemy

        if not url or not url.strip():
            raise StorageError(f"empty storage URL: {_EXPECTED}")
        if "{" in url or "}" in url:
            raise StorageError(
                "the storage URL holds braces (Optuna's {SCHEMA_VERSION} template is not "
                "supported): name the database file or database plainly"
            )
        try:
            parsed = sqlalchemy.engine.make_url(url.strip())
        except (sqlalchemy.exc.ArgumentError, ValueError) as e:
            raise StorageError(f"invalid storage URL {mask_url(url)!r}: {_EXPECTED}") from e
        if parsed.drivername in SQLITE_DRIVERS:
            if parsed.host or parsed.username or parsed.password or parsed.port:
                raise StorageError(
                    f"invalid SQLite URL {mask_url(url)!r}: use three slashes for a relative "
                    "path (sqlite:///study.db) or four for an absolute one (sqlite:////abs/x.db)"
                )
            if parsed.query.get("uri") or (parsed.database or "").startswith("file:"):
                raise StorageError("SQLite URI file names are not supported: sqlite:///path/db")
            in_memory = parsed.database in (None, "", ":memory:")
            path = None if in_memory else Path(str(parsed.database))
            return cls(parsed.render_as_string(hide_password=False), str(parsed), path, in_memory)
        if parsed.drivername in _POSTGRES_ALIASES:
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_backend_name() != "postgresql":
            raise StorageError(f"unsupported storage URL {mask_url(url)!r}: {_EXPECTED}")
        if not parsed.database:
            raise StorageError(f"PostgreSQL URL {mask_url(url)!r} names no database: {_EXPECTED}")
        masked = parsed.render_as_string(hide_password=True)
        return cls(parsed.render_as_string(hide_password=False), masked)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def artifact_dir(self) -> Path:
        """Where trial artifacts (checkpoints) go: ``HPO_ARTIFACT_DIR``, else next to a SQLite
        file (``<stem>-artifacts``), else ``hpo-artifacts`` in the working directory."""
        override = os.environ.get(ARTIFACT_DIR_ENV)
        if override:
            return Path(override)
        if self.sqlite_path is not None:
            return self.sqlite_path.parent / f"{self.sqlite_path.stem}-artifacts"
        return Path("hpo-artifacts")

    def __repr__(self) -> str:  # the dataclass repr would print the password
        return f"StorageTarget({self.masked!r})"
