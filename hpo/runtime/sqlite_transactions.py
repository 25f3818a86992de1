"""SQLite transactions that take the write lock only when they write.

Many processes share one SQLite file in WAL mode: the workers write, the dashboard and the
report read. Two SQLite facts decide how a transaction must begin:

* A **deferred** transaction (plain ``BEGIN``) that has read and then writes must upgrade its
  read snapshot to the write lock. If another connection holds the lock, or has committed since
  the snapshot was taken, SQLite answers ``SQLITE_BUSY`` at once -- the busy timeout is *not*
  consulted for an upgrade -- and the caller sees "database is locked". Optuna reads and then
  writes inside one transaction in every write method (it looks the trial up, checks its state,
  then inserts), so its writes must begin with ``BEGIN IMMEDIATE``: the write lock is taken up
  front, and a second writer waits for it (up to the busy timeout) instead of failing.
* In WAL mode a transaction that only **reads** needs no lock at all: it reads a snapshot while
  writers go on appending to the WAL. Beginning it with ``BEGIN IMMEDIATE`` as well would make
  every read hold the write lock for as long as it runs -- a dashboard reading 1,500 trials
  would stall every worker for the length of each refresh -- and a read that opens a second
  connection (Optuna's schema check does) would wait on itself for the whole busy timeout.

So a transaction begins ``IMMEDIATE`` when it runs inside one of Optuna's write methods (the
list is :data:`hpo.runtime.optuna_compat.RDB_WRITE_METHODS`) and deferred otherwise.
:class:`SQLiteStorage` marks those methods; the engine's ``begin`` hook reads the mark of the
thread that begins the transaction (each thread -- the trial loop, the heartbeat thread --
has its own). Writers are still serialized, which costs nothing next to a trial that trains a
network; readers never wait for writers, and writers never wait for readers.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Final, TypeVar

import optuna
import sqlalchemy

from . import optuna_compat

__all__ = ["BEGIN_INFO_KEY", "SQLiteStorage", "install_transaction_hooks", "writing"]

# ``connection.info[BEGIN_INFO_KEY]`` is the statement the connection's current transaction
# began with (tests read it to check that every write ran in an IMMEDIATE transaction).
BEGIN_INFO_KEY: Final = "hpo_sqlite_begin"

# How many write methods this thread is inside (a write method may call another one).
_WRITE_DEPTH: ContextVar[int] = ContextVar("hpo_sqlite_write_depth", default=0)

_F = TypeVar("_F", bound=Callable[..., Any])


@contextlib.contextmanager
def writing() -> Iterator[None]:
    """Transactions this thread begins inside the block take the write lock up front."""
    token = _WRITE_DEPTH.set(_WRITE_DEPTH.get() + 1)
    try:
        yield
    finally:
        _WRITE_DEPTH.reset(token)


def _marked_as_writing(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with writing():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def install_transaction_hooks(engine: sqlalchemy.engine.Engine) -> None:
    """Begin ``engine``'s transactions ourselves: IMMEDIATE inside :func:`writing`, else deferred.

    Also sets ``synchronous=NORMAL`` on every connection (safe with WAL, fewer fsyncs). The
    engine's pool is emptied, so no connection opened before the hooks stays in use.
    """

    def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Stop the sqlite3 module from issuing its own BEGIN; ``on_begin`` issues ours.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    def on_begin(connection: sqlalchemy.engine.Connection) -> None:
        begin = "BEGIN IMMEDIATE" if _WRITE_DEPTH.get() else "BEGIN"
        connection.info[BEGIN_INFO_KEY] = begin
        connection.exec_driver_sql(begin)

    sqlalchemy.event.listen(engine, "connect", on_connect)
    sqlalchemy.event.listen(engine, "begin", on_begin)
    engine.dispose()


class SQLiteStorage(optuna.storages.RDBStorage):
    """An ``RDBStorage`` on a SQLite file whose write methods alone take the write lock.

    Build it with :func:`hpo.runtime.storage.open_storage`, which switches the file to WAL and
    then calls :func:`install_transaction_hooks` on the engine. A pickled copy installs the hooks
    again when it is loaded: Optuna rebuilds the engine from the URL and would lose them.
    """

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        install_transaction_hooks(self.engine)


for _name in optuna_compat.RDB_WRITE_METHODS:
    setattr(SQLiteStorage, _name, _marked_as_writing(getattr(optuna.storages.RDBStorage, _name)))
del _name
