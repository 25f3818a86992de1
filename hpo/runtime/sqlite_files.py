"""SQLite files we may not own: tell an Optuna storage from another application's file without
changing it, and read a storage through read-only connections that leave nothing behind
(``docs/decisions.md``, "Files that are not ours").
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import weakref
from pathlib import Path
from typing import Final
from urllib.parse import quote

import optuna
import sqlalchemy

from ..errors import one_line
from .storage_url import StorageError

__all__ = [
    "OPTUNA_TABLES",
    "ReadOnlySQLiteStorage",
    "check_optuna_file",
    "check_optuna_tables",
    "sqlite_tables",
]

# Tables every Optuna RDB storage has had since Optuna 0.9 (older schemas lack alembic_version):
# a file lacking one of them is not one; an old one is then refused by the schema check, which
# says to run `optuna storage upgrade`.
OPTUNA_TABLES: Final = frozenset({"studies", "trials", "version_info"})


def sqlite_tables(path: Path) -> set[str]:
    """The tables of the SQLite file ``path``, read without writing to it.

    Read through a plain read-only connection. Not ``immutable``, although that would leave no
    ``-wal``/``-shm`` files: SQLite keeps per-file state for the whole process, and after an
    immutable connection the process's later connections to the file (a worker's) kept their
    WAL index in private memory, so no other process saw their writes until they closed. A
    read-only connection that had to create the side files is followed, as in
    :class:`ReadOnlySQLiteStorage`, by one ordinary connection that lets SQLite remove them.

    Raises:
        sqlite3.DatabaseError: ``path`` is not a SQLite database.
    """
    tidy = not any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
    with contextlib.closing(_connect_read_only(path, timeout=5.0)) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {name for (name,) in rows}
    if tidy:
        _remove_side_files(path)
    return tables


def check_optuna_file(path: Path, *, reading: bool) -> None:
    """Refuse (``StorageError``, one line) a file that is not an Optuna storage, before anything
    writes to it. A writer (``reading=False``) accepts a SQLite file without tables, as a new
    one; a reader needs Optuna's tables."""
    try:
        tables = sqlite_tables(path)
    except sqlite3.DatabaseError as e:
        raise StorageError(
            f"{path} is not a SQLite database ({one_line(e)}): name an Optuna storage, or a "
            "new file for hpo.run to create"
        ) from e
    check_optuna_tables(tables, str(path), reading=reading)


def check_optuna_tables(tables: set[str], where: str, *, reading: bool) -> None:
    """``StorageError`` unless ``tables`` (of the database ``where``) hold Optuna's, or are
    none at all and a writer may create them."""
    if OPTUNA_TABLES <= tables or (not tables and not reading):
        return
    if not tables:
        raise StorageError(
            f"{where} holds no Optuna storage (no tables): pass --storage with the storage "
            "your study ran on"
        )
    shown = ", ".join(sorted(tables)[:3]) + (", ..." if len(tables) > 3 else "")
    count = f"{len(tables)} table{'s' if len(tables) > 1 else ''}"
    raise StorageError(
        f"{where} is not an Optuna storage: it holds {count} of another application "
        f"({shown}) and none of Optuna's; it was left unchanged: name the storage your study "
        "ran on, or a new file"
    )


class ReadOnlySQLiteStorage(optuna.storages.RDBStorage):
    """A reader's storage on a SQLite file that is an Optuna storage: read-only connections
    (``mode=ro``), no table created, no schema stamped.

    SQLite needs ``-wal`` and ``-shm`` files to read a WAL database, and a read-only connection
    creates them but cannot remove them. If they were not there when the storage was opened,
    :meth:`close` (or the end of the process) closes one ordinary connection after the reads:
    SQLite removes them then, if no other connection uses the database, without writing to the
    file (its WAL is empty; a worker that wrote meanwhile is checkpointed, as its own close
    would have done).
    """

    def __init__(self, url: str, path: Path, timeout: float) -> None:
        tidy = not any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
        connect = functools.partial(_connect_read_only, path, timeout)
        try:
            super().__init__(
                url,
                engine_kwargs={"creator": connect},
                skip_compatibility_check=True,
                skip_table_creation=True,
            )
        except Exception:  # e.g. a schema Optuna would have to stamp: nothing is left behind
            if hasattr(self, "engine"):
                _release(self.engine, path if tidy else None)
            raise
        self._finalizer = weakref.finalize(self, _release, self.engine, path if tidy else None)

    def close(self) -> None:
        """Close every connection and remove the side files this storage made (idempotent)."""
        self._finalizer()


def _file_uri(path: Path) -> str:
    return f"file:{quote(str(path.absolute()))}"


def _connect_read_only(path: Path, timeout: float) -> sqlite3.Connection:
    # check_same_thread: the dashboard's threads share the engine's pool.
    uri = f"{_file_uri(path)}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)


def _release(engine: sqlalchemy.engine.Engine, path: Path | None) -> None:
    engine.dispose()
    if path is not None:
        _remove_side_files(path)


def _remove_side_files(path: Path) -> None:
    """Let SQLite remove the ``-wal``/``-shm`` files a read-only connection made (it does on
    the last connection's close, if no other process uses the database)."""
    if not any(Path(f"{path}{s}").exists() for s in ("-wal", "-shm")):
        return
    with contextlib.suppress(sqlite3.Error, OSError):  # best effort: the reads are done
        with contextlib.closing(sqlite3.connect(path, timeout=1.0)) as connection:
            connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
