"""A lock that processes sharing a storage -- on one machine or many -- take by name.

It serializes what must happen once at a time (creating the schema of a fresh database,
creating a study and its queue) and lets exactly one worker do a job the others skip (a
study's final step). SQLite: an ``flock`` on a folder of the storage (never on the database
file: closing a descriptor of it would drop SQLite's own locks); PostgreSQL: a session
advisory lock keyed by the name. Both are released when the block ends or the process dies,
so a killed worker never leaves a study locked, and no lock file is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from .storage_url import StorageTarget

__all__ = ["exclusive"]


@contextlib.contextmanager
def exclusive(
    target: StorageTarget,
    name: str,
    *,
    wait: bool = True,
    folder: Path | None = None,
    connect_timeout: int = 10,
) -> Iterator[bool]:
    """Hold the lock ``name`` of the storage; yields whether this process holds it.

    Args:
        target: The storage.
        name: What the lock is for (PostgreSQL: two names never collide).
        wait: Wait for the lock (yields True), or try once (yields False if it is taken).
        folder: SQLite: the existing folder to lock (default: the database file's). Two names
            that must not exclude each other lock different folders.
        connect_timeout: PostgreSQL: seconds to wait for the server.
    """
    if target.in_memory:  # one process: nobody to exclude
        yield True
        return
    if target.is_sqlite:
        assert target.sqlite_path is not None
        fd = os.open(folder or target.sqlite_path.parent, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        target.url,
        poolclass=sqlalchemy.pool.NullPool,
        connect_args={"connect_timeout": connect_timeout},
    )
    key = {"k": zlib.crc32(f"sparse-cnn-hpo {name}".encode())}
    take = "pg_advisory_lock(:k), true" if wait else "pg_try_advisory_lock(:k)"
    try:
        with engine.connect() as connection:
            row = connection.execute(sqlalchemy.text(f"SELECT {take}"), key).one()
            held = bool(row[-1])
            try:
                yield held
            finally:
                if held:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), key)
    finally:
        engine.dispose()
