"""A lock that processes sharing a storage take by name, released when the block ends or the
process dies. SQLite: an ``flock`` on a folder (closing a descriptor of the database file would
drop SQLite's own locks); PostgreSQL: a session advisory lock.
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
    """Hold the lock ``name`` of the storage; yields whether this process holds it (always
    with ``wait``, else only if it was free). SQLite locks ``folder`` (default: the database
    file's), so two names that must not exclude each other name different folders."""
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
