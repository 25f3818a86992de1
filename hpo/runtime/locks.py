"""A lock that processes sharing a storage take by name, released when the block ends or the
process dies. SQLite: an ``flock`` on a folder (closing a descriptor of the database file would
drop SQLite's own locks); PostgreSQL: a transaction-scoped advisory lock, which connection
poolers in transaction mode (PgBouncer) keep on one server connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
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
        connect_args=target.server_connect_args(connect_timeout),
    )
    key = {"k": zlib.crc32(f"sparse-cnn-hpo {name}".encode())}
    take = sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:k)")
    try:
        with engine.connect() as connection:
            while True:
                # A transaction from taking the lock to the end of the block, whose rollback
                # releases it (also when the body raised). Behind PgBouncer in transaction
                # pooling a transaction keeps its server connection, where a session lock
                # could be released on another one and stay held by a pooled connection. A
                # waiter tries again between transactions rather than block in one: blocked
                # waiters would hold the pooler's server connections that the lock's holder
                # needs for its own work, and wait for each other forever.
                transaction = connection.begin()
                held = bool(connection.execute(take, key).scalar())
                if held or not wait:
                    try:
                        yield held
                    finally:
                        transaction.rollback()
                    return
                transaction.rollback()
                time.sleep(random.uniform(0.05, 0.25))
    finally:
        engine.dispose()
