"""SQLite transactions of a worker's storage begin ``IMMEDIATE``: a second writer waits for the
lock instead of failing with "database is locked" (``docs/decisions.md``, "SQLite").
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import optuna
import sqlalchemy

__all__ = ["BEGIN_INFO_KEY", "SQLiteStorage", "install_transaction_hooks"]

# connection.info[BEGIN_INFO_KEY]: how the connection's current transaction began (tests).
BEGIN_INFO_KEY: Final = "hpo_sqlite_begin"


def install_transaction_hooks(engine: sqlalchemy.engine.Engine) -> None:
    """Begin every transaction of ``engine`` with ``BEGIN IMMEDIATE``; ``synchronous=NORMAL``
    (safe with WAL, fewer fsyncs). Connections opened before the hooks are dropped."""

    def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None  # the sqlite3 module issues no BEGIN of its own
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    def on_begin(connection: sqlalchemy.engine.Connection) -> None:
        connection.info[BEGIN_INFO_KEY] = "BEGIN IMMEDIATE"
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(engine, "connect", on_connect)
    sqlalchemy.event.listen(engine, "begin", on_begin)
    engine.dispose()


class SQLiteStorage(optuna.storages.RDBStorage):
    """A worker's ``RDBStorage`` on a SQLite file; a pickled copy installs the hooks again
    (Optuna rebuilds the engine from the URL when it unpickles a storage)."""

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        install_transaction_hooks(self.engine)
