"""Locks that several worker processes -- on one machine or many -- take on their storage.

* **Waiting locks** serialize what must happen once at a time: creating the schema of a fresh
  database (Optuna's table creation and Alembic stamping race otherwise). SQLite: an ``flock``
  on the file's directory; PostgreSQL: a session advisory lock.
* **Try-locks** (:func:`try_exclusive`) let exactly one worker do a job the others skip, such
  as a study's final step. They are released when the block ends or the process dies, so a
  killed worker never leaves a study locked.

Neither touches the SQLite file itself: closing a descriptor of the database file would drop
the POSIX locks SQLite holds on it in this process. No stray lock file is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["postgres_lock", "sqlite_lock", "try_exclusive"]


@contextlib.contextmanager
def sqlite_lock(db_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``db_path``'s directory until the block ends (waits)."""
    fd = os.open(db_path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def postgres_lock(parsed: URL, connect_timeout: int) -> Iterator[None]:
    """Hold the schema-initialization advisory lock of the database (waits)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        parsed,
        poolclass=sqlalchemy.pool.NullPool,
        connect_args={"connect_timeout": connect_timeout},
    )
    key = zlib.crc32(b"sparse-cnn-hpo schema init")
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


@contextlib.contextmanager
def try_exclusive(url: str, folder: Path, name: str) -> Iterator[bool]:
    """Try to take the lock ``name`` of the storage at ``url``; yields whether this process got it.

    Args:
        url: The storage (PostgreSQL: an advisory lock in its database).
        folder: For SQLite, an existing folder of that storage (its artifact folder) to lock
            with ``flock``; SQLite storages are shared on one machine only.
        name: What the lock is for (two names never collide).
    """
    from .storage_url import SQLITE_DRIVERS, parse_storage_url

    parsed = parse_storage_url(url)
    if parsed.drivername in SQLITE_DRIVERS:
        fd = os.open(folder, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.pool.NullPool)
    key = zlib.crc32(f"sparse-cnn-hpo {name}".encode())
    try:
        with engine.connect() as connection:
            query = sqlalchemy.text("SELECT pg_try_advisory_lock(:k)")
            held = bool(connection.execute(query, {"k": key}).scalar())
            try:
                yield held
            finally:
                if held:
                    unlock = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
                    connection.execute(unlock, {"k": key})
    finally:
        engine.dispose()
