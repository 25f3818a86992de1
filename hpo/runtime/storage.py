"""Opening the study storage that many worker processes share.

* **SQLite (one machine).** ``RDBStorage`` (Optuna's journal storage has no heartbeats, which
  is how a killed worker's trial is failed and retried). The file is switched to WAL, every
  connection waits up to ``sqlite_timeout`` s for a lock, and a worker's transactions begin
  ``IMMEDIATE`` (:mod:`hpo.runtime.sqlite_transactions`); readers take no lock.
* **PostgreSQL (many machines).** psycopg 3, a small bounded pool per process (one connection
  for the trial loop, one for the heartbeat thread), pre-pinged and recycled.
* **The schema** of a fresh database is created under a lock (:mod:`hpo.runtime.locks`):
  Optuna's table creation races when several workers open it at once. A schema written by
  another Optuna is refused in one line.
* **Heartbeats.** A RUNNING trial whose heartbeat is older than the grace period is failed by
  the next worker that asks for a trial and re-queued by ``RetryHeartbeatStaleTrialCallback``
  (same parameters and user attributes, so a grid point stays that grid point).
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import optuna
import sqlalchemy

from ..errors import one_line
from .locks import exclusive
from .sqlite_transactions import SQLiteStorage, install_transaction_hooks
from .storage_url import STORAGE_ENV, StorageError, StorageTarget

__all__ = [
    "GRACE_PERIOD_ENV",
    "HEARTBEAT_INTERVAL_ENV",
    "StorageOptions",
    "StudyNotFoundError",
    "load_existing_study",
    "open_existing_storage",
    "open_storage",
    "remove_if_unused",
]

HEARTBEAT_INTERVAL_ENV: Final = "HPO_HEARTBEAT_INTERVAL"
GRACE_PERIOD_ENV: Final = "HPO_HEARTBEAT_GRACE"


class StudyNotFoundError(StorageError):
    """The storage holds no study of that name; the message lists the studies it does hold."""


@dataclass(frozen=True)
class StorageOptions:
    """How a worker talks to the storage; the defaults suit trials that take minutes.

    Attributes:
        heartbeat_interval: Seconds between heartbeats of a running trial (``None``: none, and
            no retry of dead workers' trials).
        grace_period: Seconds without a heartbeat after which a RUNNING trial counts as dead;
            comfortably above the interval, as a busy database can delay a beat.
        max_retry: How often one trial is re-queued after its worker died (bounded, so a
            configuration that kills its worker cannot loop).
        sqlite_timeout: Seconds a SQLite connection waits for a lock.
        pool_size, max_overflow, pool_timeout, pool_recycle, connect_timeout: PostgreSQL's
            connection pool per process.
    """

    heartbeat_interval: int | None = 10
    grace_period: int | None = 30
    max_retry: int | None = 3
    sqlite_timeout: float = 120.0
    pool_size: int = 2
    max_overflow: int = 2
    pool_timeout: float = 60.0
    pool_recycle: int = 1800
    connect_timeout: int = 10

    @classmethod
    def from_env(cls) -> StorageOptions:
        """Heartbeat timing from ``HPO_HEARTBEAT_INTERVAL`` / ``HPO_HEARTBEAT_GRACE`` (whole
        seconds; the grace defaults to 3 x the interval when only that is given).

        Raises:
            StorageError: Not a whole number of seconds, or grace <= interval.
        """
        interval, grace = _env_seconds(HEARTBEAT_INTERVAL_ENV), _env_seconds(GRACE_PERIOD_ENV)
        if interval is None and grace is None:
            return cls()
        interval = interval if interval is not None else cls.heartbeat_interval
        return cls(heartbeat_interval=interval, grace_period=grace or 3 * interval)

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
    """Open (creating tables if needed) the storage ``target``, ready for many workers.

    Each process opens its own storage (an engine and its pool belong to one process).

    Args:
        target: The parsed storage (a URL string is parsed here).
        options: Heartbeats and connections (default: ``StorageOptions.from_env()``).
        worker: SQLite: begin every transaction ``IMMEDIATE`` (a process that writes trials);
            ``False`` for a reader, whose reads must take no lock.

    Raises:
        StorageError: One line naming the (masked) URL and what went wrong.
    """
    target = StorageTarget.parse(target) if isinstance(target, str) else target
    options = options or StorageOptions.from_env()
    heartbeat = {} if target.in_memory else _heartbeat_kwargs(options)
    try:
        if target.is_sqlite:
            engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": options.sqlite_timeout}}
            if target.in_memory:
                return _rdb_storage(optuna.storages.RDBStorage, target, engine_kwargs, heartbeat)
            _check_folder(target.sqlite_path)
            with exclusive(target, "schema"):
                _enable_wal(target.sqlite_path, options.sqlite_timeout)
                cls = SQLiteStorage if worker else optuna.storages.RDBStorage
                storage = _rdb_storage(cls, target, engine_kwargs, heartbeat)
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
                    "connect_timeout": options.connect_timeout,
                    "application_name": "sparse-cnn-hpo",
                },
            }
            with exclusive(target, "schema", connect_timeout=options.connect_timeout):
                storage = _rdb_storage(optuna.storages.RDBStorage, target, engine_kwargs, heartbeat)
        _check_schema(storage, target.masked)
        return storage
    except StorageError:
        raise
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, OSError) as e:
        raise StorageError(f"cannot open storage {target.masked}: {one_line(e)}") from e
    except ImportError as e:
        raise StorageError(f"cannot open storage {target.masked}: driver missing ({e})") from e


def open_existing_storage(target: StorageTarget | str) -> optuna.storages.RDBStorage:
    """Open the storage ``target`` for reading results; never create a database.

    Raises:
        StorageError: A missing SQLite file (a typo must not give an empty storage with "no
            studies"), an in-memory one, or an unreachable server (one line, masked).
    """
    target = StorageTarget.parse(target) if isinstance(target, str) else target
    if target.in_memory:
        raise StorageError(
            "an in-memory SQLite storage holds no study another process can read; "
            "pass --storage sqlite:///path/to/hpo.db"
        )
    if target.sqlite_path is not None and not target.sqlite_path.exists():
        raise StorageError(
            f"no study storage at {target.sqlite_path} (from {target.masked}); pass --storage "
            f"URL or set {STORAGE_ENV} to the storage your study ran on"
        )
    return open_storage(target, worker=False)


def remove_if_unused(path: Path) -> bool:
    """Delete the SQLite file ``path`` (and its WAL files) if it holds no study; True if so.

    A run that stops before its first trial must not leave an empty database behind.
    """
    if not path.exists():
        return False
    connection = sqlite3.connect(path)
    try:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
        used = "studies" in tables and connection.execute("SELECT 1 FROM studies").fetchone()
    finally:
        connection.close()
    if used:
        return False
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return True


def load_existing_study(
    storage: optuna.storages.BaseStorage, name: str, storage_label: str
) -> optuna.Study:
    """Load study ``name``, or fail with one line naming the studies the storage does hold.

    Raises:
        StudyNotFoundError: No such study.
    """
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
    connection = sqlite3.connect(str(db_path), timeout=timeout)
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    finally:
        connection.close()
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


def _heartbeat_kwargs(options: StorageOptions) -> dict[str, Any]:
    if options.heartbeat_interval is None:
        return {}
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8; relied on knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=options.max_retry)
    return {
        "heartbeat_interval": options.heartbeat_interval,
        "grace_period": options.grace_period,
        "heartbeat_stale_trial_callback": callback,
    }


def _rdb_storage(
    cls: type[optuna.storages.RDBStorage],
    target: StorageTarget,
    engine_kwargs: dict[str, Any],
    heartbeat: dict[str, Any],
) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(
            target.url,
            engine_kwargs=engine_kwargs,
            skip_compatibility_check=True,  # _check_schema says it in one line instead
            **heartbeat,
        )


def _env_seconds(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise StorageError(f"{name}={raw!r} must be a whole number of seconds") from None
