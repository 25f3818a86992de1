"""Opening the study storage that many worker processes share (``docs/decisions.md``): SQLite
or PostgreSQL, with Optuna's heartbeats, the schema created under a lock (Optuna's table
creation races) and refused in one line if another Optuna wrote it; readers create nothing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import optuna
import sqlalchemy

from ..errors import one_line
from .faults import NoSpaceError, damaged_why, faults_named
from .locks import exclusive
from .sqlite_files import (
    OPTUNA_TABLES,
    ReadOnlySQLiteStorage,
    check_optuna_file,
    check_optuna_tables,
)
from .sqlite_transactions import SQLiteStorage, install_transaction_hooks
from .storage_url import STORAGE_ENV, StorageError, StorageTarget

__all__ = [
    "StorageOptions",
    "close_storage",
    "load_existing_study",
    "open_existing_storage",
    "open_storage",
    "remove_if_unused",
]

HEARTBEAT_INTERVAL_ENV: Final = "HPO_HEARTBEAT_INTERVAL"
GRACE_PERIOD_ENV: Final = "HPO_HEARTBEAT_GRACE"
POOL_SIZE_ENV: Final = "HPO_DB_POOL_SIZE"
MAX_OVERFLOW_ENV: Final = "HPO_DB_MAX_OVERFLOW"


# A reader creates nothing, so it waits for the schema lock only while the schema is being
# created: Optuna stamps ``alembic_version`` (table and row, one transaction) last. Otherwise a
# dashboard opened while hundreds of workers restart queues behind all of them (the lock is
# tried and retried, not queued fairly): minutes, in ``bench/scale.py``.
_STAMPED_SCHEMA: Final = OPTUNA_TABLES | {"alembic_version"}


class StudyNotFoundError(StorageError):
    """The storage holds no study of that name; the message lists the studies it does hold."""


@dataclass(frozen=True)
class StorageOptions:
    """How a worker talks to the storage (seconds); the defaults suit trials that take minutes."""

    heartbeat_interval: int | None = 10  # None: no heartbeats, no retry of dead workers' trials
    grace_period: int | None = 30  # above the interval, as a busy database can delay a beat
    max_retry: int | None = 3  # bounded, so a configuration that kills its worker cannot loop
    sqlite_timeout: float = 120.0  # how long a SQLite connection waits for a lock
    # PostgreSQL connections per worker process: what one worker uses at once, its trial loop
    # and its heartbeat thread; 2 x workers must fit max_connections, or go through a pooler.
    pool_size: int = 2
    max_overflow: int = 0
    pool_timeout: float = 60.0
    pool_recycle: int = 1800
    connect_timeout: int = 10

    @classmethod
    def from_env(cls) -> StorageOptions:
        """Heartbeat timing from ``HPO_HEARTBEAT_INTERVAL`` / ``HPO_HEARTBEAT_GRACE`` (whole
        seconds; the grace defaults to 3 x the interval when only that is given), and the
        connection pool from ``HPO_DB_POOL_SIZE`` / ``HPO_DB_MAX_OVERFLOW``."""
        pool = {
            "pool_size": _env_int(POOL_SIZE_ENV, "connections"),
            "max_overflow": _env_int(MAX_OVERFLOW_ENV, "connections"),
        }
        pool = {k: v for k, v in pool.items() if v is not None}
        interval, grace = _env_seconds(HEARTBEAT_INTERVAL_ENV), _env_seconds(GRACE_PERIOD_ENV)
        if interval is None and grace is None:
            return cls(**pool)
        interval = interval if interval is not None else cls.heartbeat_interval
        return cls(heartbeat_interval=interval, grace_period=grace or 3 * interval, **pool)

    def __post_init__(self) -> None:
        if self.heartbeat_interval is not None and self.heartbeat_interval < 1:
            raise StorageError(f"heartbeat interval must be >= 1 s, got {self.heartbeat_interval}")
        if self.grace_period is not None:
            if self.heartbeat_interval is None:
                raise StorageError("a grace period needs heartbeats: set a heartbeat interval")
            if self.grace_period <= self.heartbeat_interval:
                raise StorageError(
                    f"grace period ({self.grace_period} s) must be longer than the heartbeat "
                    f"interval ({self.heartbeat_interval} s), or live trials are failed"
                )
        if self.max_retry is not None and self.max_retry < 0:
            raise StorageError(f"max_retry must be >= 0, got {self.max_retry}")
        if self.pool_size < 1 or self.max_overflow < 0:
            raise StorageError("pool_size must be >= 1 and max_overflow >= 0")


def open_storage(
    target: StorageTarget | str, options: StorageOptions | None = None, *, worker: bool = True
) -> optuna.storages.RDBStorage:
    """Open (a worker: creating tables if needed) the storage ``target`` for this process;
    ``worker``: SQLite transactions begin ``IMMEDIATE`` (``False`` for a reader, whose reads
    take no lock and which creates no table). An existing SQLite file that is another
    application's is refused before anything writes to it. Raises ``StorageError``, one line
    naming the (masked) URL and what went wrong."""
    target = StorageTarget.parse(target) if isinstance(target, str) else target
    options = options or StorageOptions.from_env()
    with _storage_errors(target):
        if target.is_sqlite:
            engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": options.sqlite_timeout}}
            if target.in_memory:
                return _rdb_storage(optuna.storages.RDBStorage, target, engine_kwargs, options)
            path = target.sqlite_path
            _check_folder(path)
            with exclusive(target, "schema"):
                if path.exists():
                    check_optuna_file(path, reading=not worker)
                _enable_wal(path, options.sqlite_timeout)
                cls = SQLiteStorage if worker else optuna.storages.RDBStorage
                storage = _rdb_storage(cls, target, engine_kwargs, options, create=worker)
            if worker:
                install_transaction_hooks(storage.engine)
        else:
            engine_kwargs = {
                "pool_size": options.pool_size,
                "max_overflow": options.max_overflow,
                "pool_timeout": options.pool_timeout,
                "pool_recycle": options.pool_recycle,
                "pool_pre_ping": True,
                "connect_args": {
                    **target.server_connect_args(options.connect_timeout),
                    "application_name": "sparse-cnn-hpo",
                },
            }
            # Another application's schema is refused before Optuna adds its tables to it.
            tables = _server_tables(target, options.connect_timeout)
            check_optuna_tables(tables, f"storage {target.masked}", reading=not worker)
            schema_lock = (
                exclusive(target, "schema", connect_timeout=options.connect_timeout)
                if worker or not _STAMPED_SCHEMA <= tables
                else contextlib.nullcontext()
            )
            with schema_lock:
                cls = optuna.storages.RDBStorage
                storage = _rdb_storage(cls, target, engine_kwargs, options, create=worker)
        _check_schema(storage, target.masked)
        return storage


def open_existing_storage(
    target: StorageTarget | str, *, edit: bool = False
) -> optuna.storages.RDBStorage:
    """Open the storage ``target`` for reading results; never create a database or a table (a
    typo must not give an empty storage with "no studies"). A SQLite file must be an Optuna
    storage and is read through read-only connections that leave no side files (close the
    storage with :func:`close_storage`, else that happens when the process ends); ``edit``:
    opened as a reader that may write (the dashboard's ``--edit``)."""
    target = StorageTarget.parse(target) if isinstance(target, str) else target
    if target.in_memory:
        raise StorageError(
            "an in-memory SQLite storage holds no study another process can read; "
            "pass --storage sqlite:///path/to/hpo.db"
        )
    path = target.sqlite_path
    if path is not None and not path.exists():
        raise StorageError(
            f"no study storage at {path} (from {target.masked}); pass --storage "
            f"URL or set {STORAGE_ENV} to the storage your study ran on"
        )
    if path is None or edit:
        return open_storage(target, worker=False)
    with _storage_errors(target):
        check_optuna_file(path, reading=True)
        storage = ReadOnlySQLiteStorage(target.url, path, StorageOptions.from_env().sqlite_timeout)
        try:
            _check_schema(storage, target.masked)
        except BaseException:
            storage.close()
            raise
        return storage


def close_storage(storage: optuna.storages.BaseStorage) -> None:
    """Close the connections of a storage this module opened; a reader's SQLite side files go
    with them (:class:`ReadOnlySQLiteStorage`)."""
    if isinstance(storage, ReadOnlySQLiteStorage):
        storage.close()
    elif isinstance(storage, optuna.storages.RDBStorage):
        storage.engine.dispose()


@contextlib.contextmanager
def _storage_errors(target: StorageTarget) -> Iterator[None]:
    """Database and driver errors as one ``StorageError`` line, the URL's secrets hidden."""
    try:
        with faults_named(target.masked):  # a full disk: the environment, not the URL
            yield
    except (StorageError, NoSpaceError):
        raise
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, OSError) as e:
        raise StorageError(f"cannot open storage {target.masked}: {_why(target, e)}") from e
    except optuna.exceptions.StorageInternalError as e:  # Optuna's wrapper: the cause says why
        why = _why(target, e.__cause__ or e)
        raise StorageError(f"cannot open storage {target.masked}: {why}") from e
    except ImportError as e:
        why = target.hide(str(e))
        raise StorageError(f"cannot open storage {target.masked}: driver missing ({why})") from e


def _why(target: StorageTarget, error: BaseException) -> str:
    """The error's one line, secrets hidden, with what to do about a damaged SQLite file."""
    return damaged_why(target.hide(one_line(error)))


def _server_tables(target: StorageTarget, connect_timeout: int) -> set[str]:
    """The tables a reader would find on a database server (the search path's first schema)."""
    engine = sqlalchemy.create_engine(
        target.url,
        poolclass=sqlalchemy.pool.NullPool,
        connect_args=target.server_connect_args(connect_timeout),
    )
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def remove_if_unused(path: Path) -> bool:
    """Delete the SQLite file ``path`` (and its WAL files) if it holds no study; True if so:
    a run that stops before its first trial must not leave an empty database behind."""
    if not path.exists():
        return False
    with contextlib.closing(sqlite3.connect(path)) as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
        used = "studies" in tables and connection.execute("SELECT 1 FROM studies").fetchone()
    if used:
        return False
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return True


def load_existing_study(
    storage: optuna.storages.BaseStorage, name: str, storage_label: str
) -> optuna.Study:
    """Load study ``name``, or raise ``StudyNotFoundError`` naming the studies there are."""
    names = sorted(s.study_name for s in storage.get_all_studies())
    if name not in names:
        raise StudyNotFoundError(
            f"no study named {name!r} in {storage_label}; studies there: "
            f"{', '.join(names) if names else 'none'} (pass --storage URL or set "
            f"{STORAGE_ENV} to read another storage)"
        )
    return optuna.load_study(study_name=name, storage=storage)


def _check_folder(path: Path | None) -> None:
    assert path is not None
    if not path.parent.is_dir():  # a typo must not start hours of trials nobody finds
        raise StorageError(
            f"the folder of the SQLite file {path} does not exist ({path.parent}); create it "
            "first or pass another --storage"
        )


def _enable_wal(db_path: Path | None, timeout: float) -> None:
    """WAL is a property of the file: setting it once serves every process."""
    with contextlib.closing(sqlite3.connect(str(db_path), timeout=timeout)) as connection:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(
            f"SQLite could not switch {db_path} to WAL mode (got {mode!r}); is it on a "
            "network file system? Use PostgreSQL for storage shared between machines"
        )


def _check_schema(storage: optuna.storages.RDBStorage, masked: str) -> None:
    """Optuna's own check raises a ``RuntimeError`` (a traceback); this says it in one line."""
    current, head = storage.get_current_version(), storage.get_head_version()
    if current == head:
        return
    if current in storage.get_all_versions():
        raise StorageError(
            f"storage {masked} has the tables of an older Optuna (schema {current}; Optuna "
            f"{optuna.__version__} needs {head}): back it up, then run "
            "`optuna storage upgrade --storage URL` with this URL"
        )
    raise StorageError(
        f"storage {masked} was set up by a newer Optuna (schema {current} is unknown to Optuna "
        f"{optuna.__version__}): upgrade Optuna (`pip install -U optuna`)"
    )


def _rdb_storage(
    cls: type[optuna.storages.RDBStorage],
    target: StorageTarget,
    engine_kwargs: dict[str, Any],
    options: StorageOptions,
    *,
    create: bool = True,
) -> optuna.storages.RDBStorage:
    heartbeat: dict[str, Any] = {}
    with warnings.catch_warnings():  # heartbeats: "experimental" since Optuna 2.8, knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if options.heartbeat_interval is not None and not target.in_memory:
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=options.max_retry)
            heartbeat = {
                "heartbeat_interval": options.heartbeat_interval,
                "grace_period": options.grace_period,
                "heartbeat_stale_trial_callback": retry,
            }
        return cls(
            target.url,
            engine_kwargs=engine_kwargs,
            skip_compatibility_check=True,  # _check_schema says it in one line instead
            skip_table_creation=not create,
            **heartbeat,
        )


def _env_seconds(name: str) -> int | None:
    return _env_int(name, "seconds")


def _env_int(name: str, unit: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise StorageError(f"{name}={raw!r} must be a whole number of {unit}") from None
