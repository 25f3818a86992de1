"""Opening the study storage that many worker processes share.

Workers coordinate only through the storage, so this module decides how a URL becomes an
Optuna ``RDBStorage`` that survives concurrency:

* **SQLite (one machine).** ``RDBStorage`` rather than Optuna's ``JournalStorage`` because only
  RDB storage implements heartbeats (``BaseHeartbeat``), which is how a killed worker's trial is
  failed and retried; optuna-dashboard reads the same file. Three settings make >= 8 concurrent
  writers safe while readers run alongside: the file is switched to WAL (a reader reads a
  snapshot and takes no lock), every connection waits up to ``sqlite_timeout`` seconds for a
  lock instead of failing, and Optuna's write methods begin their transactions with
  ``BEGIN IMMEDIATE`` while everything else begins deferred
  (:mod:`hpo.runtime.sqlite_transactions` says why both halves matter). Writers are
  serialized, which costs nothing next to a trial that trains a network; readers such as the
  dashboard never block writers (``bench/storage_probe.py`` measures it). SQLite locking is
  unreliable on network file systems: across machines, use PostgreSQL.
* **PostgreSQL (many machines).** ``postgresql+psycopg://`` (a bare ``postgresql://`` is read as
  psycopg 3, the driver this project installs) with a small bounded pool per process -- one
  connection for the trial loop, one for the heartbeat thread, a little overflow -- plus
  ``pool_pre_ping`` and ``pool_recycle`` so connections dropped by the server or a firewall are
  replaced instead of failing a trial. K workers hold at most K * (pool_size + max_overflow)
  connections, well under the server's default ``max_connections`` of 100.
* **Creating the schema** is serialized (an ``flock`` on the SQLite file's directory, a PostgreSQL
  advisory lock): Optuna's table creation and Alembic stamping race when several workers open a
  fresh database at the same moment, as ``docker compose up --scale worker=4`` does.
* **An older table schema** (a database written by an older Optuna) is refused with one line
  saying to run ``optuna storage upgrade``, instead of Optuna's ``RuntimeError``.
* **Heartbeats.** Every trial records a heartbeat each ``heartbeat_interval`` seconds; a RUNNING
  trial whose heartbeat is older than ``grace_period`` is marked FAIL by the next worker that asks
  for a trial, and ``RetryHeartbeatStaleTrialCallback`` enqueues a copy (same parameters and user
  attributes, so a grid point stays that grid point) as WAITING.

What a URL may be, and how it is shown in messages, is :mod:`hpo.runtime.storage_url`.
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
from sqlalchemy.engine import URL

from ..errors import one_line
from . import optuna_compat
from .locks import postgres_lock, sqlite_lock
from .sqlite_transactions import SQLiteStorage, install_transaction_hooks
from .storage_url import SQLITE_DRIVERS, STORAGE_ENV, StorageError, mask_url, parse_storage_url

__all__ = [
    "GRACE_PERIOD_ENV",
    "HEARTBEAT_INTERVAL_ENV",
    "StorageOptions",
    "StudyNotFoundError",
    "load_existing_study",
    "open_existing_storage",
    "remove_if_unused",
    "sqlite_file",
    "open_storage",
]

HEARTBEAT_INTERVAL_ENV: Final = "HPO_HEARTBEAT_INTERVAL"
GRACE_PERIOD_ENV: Final = "HPO_HEARTBEAT_GRACE"


class StudyNotFoundError(StorageError):
    """The storage holds no study of that name; the message lists the studies it does hold."""


@dataclass(frozen=True)
class StorageOptions:
    """How a worker talks to the storage; the defaults suit trials that take minutes.

    Attributes:
        heartbeat_interval: Seconds between heartbeats of a running trial; ``None`` disables
            heartbeats (and with them the retry of dead workers' trials).
        grace_period: Seconds without a heartbeat after which a RUNNING trial counts as dead.
            Must exceed ``heartbeat_interval`` comfortably: a busy database can delay a beat.
        max_retry: How often one trial is re-queued after its worker died (``None``: forever).
            Bounded so that a configuration that kills its worker (out of memory) cannot loop.
        sqlite_timeout: Seconds a SQLite connection waits for a lock before failing.
        pool_size: Persistent connections per process (server databases only).
        max_overflow: Extra connections per process allowed at peaks.
        pool_timeout: Seconds to wait for a free pooled connection.
        pool_recycle: Seconds after which a pooled connection is replaced.
        connect_timeout: Seconds to wait for the database server to accept a connection.
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
        """Defaults, with the heartbeat timing taken from the environment when set.

        ``HPO_HEARTBEAT_INTERVAL`` and ``HPO_HEARTBEAT_GRACE`` (whole seconds) let a cluster
        with long network hiccups raise them, and tests lower them, without a flag on every
        entry point. The grace period defaults to 3 x the interval when only that is given.

        Raises:
            StorageError: A value is not a whole number of seconds, or grace <= interval.
        """
        interval = _env_seconds(HEARTBEAT_INTERVAL_ENV)
        grace = _env_seconds(GRACE_PERIOD_ENV)
        if interval is None and grace is None:
            return cls()
        interval = interval if interval is not None else cls.heartbeat_interval
        grace = grace if grace is not None else 3 * interval
        return cls(heartbeat_interval=interval, grace_period=grace)

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


def open_storage(url: str, options: StorageOptions | None = None) -> optuna.storages.RDBStorage:
    """Open (creating tables if needed) the storage behind ``url``, ready for many workers.

    Each worker process opens its own storage; a storage object is never shared between
    processes (its engine and pool belong to the process that opened it).

    Args:
        url: SQLite or PostgreSQL SQLAlchemy URL (see the module docstring).
        options: Heartbeat and connection settings; ``StorageOptions.from_env()`` when omitted.

    Raises:
        StorageError: One line naming the (masked) URL and what went wrong.
    """
    options = options or StorageOptions.from_env()
    parsed = parse_storage_url(_filled(url))
    masked = parsed.render_as_string(hide_password=True)
    is_sqlite = parsed.drivername in SQLITE_DRIVERS
    in_memory = is_sqlite and parsed.database in (None, "", ":memory:")
    heartbeat = {} if in_memory else _heartbeat_kwargs(options)
    try:
        if is_sqlite:
            engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": options.sqlite_timeout}}
            if in_memory:
                return _rdb_storage(optuna.storages.RDBStorage, parsed, engine_kwargs, heartbeat)
            db_path = _sqlite_path(parsed)
            with sqlite_lock(db_path):
                _enable_wal(db_path, options.sqlite_timeout)
                storage = _rdb_storage(SQLiteStorage, parsed, engine_kwargs, heartbeat)
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
            with postgres_lock(parsed, options.connect_timeout):
                storage = _rdb_storage(optuna.storages.RDBStorage, parsed, engine_kwargs, heartbeat)
        _check_schema(storage, masked)
        return storage
    except StorageError:
        raise
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error, OSError) as e:
        raise StorageError(f"cannot open storage {masked}: {one_line(e)}") from e
    except ImportError as e:
        raise StorageError(
            f"cannot open storage {masked}: database driver missing ({one_line(e)})"
        ) from e


def open_existing_storage(url: str) -> optuna.storages.RDBStorage:
    """Open the storage at ``url`` for reading results.

    Unlike the study runner, a reader must not create a database: a SQLite file that does not
    exist (a typo, the wrong working directory) is an error naming the path, not an empty
    storage with "no studies".

    Raises:
        StorageError: The URL is invalid, names a missing SQLite file or an in-memory one, or
            the database cannot be reached (one line, password masked).
    """
    parsed = parse_storage_url(_filled(url))
    if parsed.drivername in SQLITE_DRIVERS:
        if parsed.database in (None, "", ":memory:"):
            raise StorageError(
                "an in-memory SQLite storage holds no study another process can read; "
                "pass --storage sqlite:///path/to/hpo.db"
            )
        if not Path(parsed.database).exists():
            raise StorageError(
                f"no study storage at {parsed.database} (from {mask_url(url)}); pass --storage "
                f"URL or set {STORAGE_ENV} to the storage your study ran on"
            )
    return open_storage(url)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite storage URL (``None``: a server database or in-memory SQLite)."""
    parsed = parse_storage_url(url)
    if parsed.drivername not in SQLITE_DRIVERS or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def remove_if_unused(path: Path) -> bool:
    """Delete the SQLite file ``path`` (and its WAL files) if it holds no study; True if so.

    A run that stops before its first trial (missing data, a typo in ``--retrain-best``)
    must not leave an empty database behind; a file with any study in it is never touched.
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

    Args:
        storage: An opened storage.
        name: The study to load.
        storage_label: How to name the storage in the message (a masked URL).

    Raises:
        StudyNotFoundError: No such study.
    """
    names = sorted(s.study_name for s in storage.get_all_studies())
    if name not in names:
        held = ", ".join(names) if names else "none"
        raise StudyNotFoundError(
            f"no study named {name!r} in {storage_label}; studies there: {held} "
            f"(pass --storage URL or set {STORAGE_ENV} to read another storage)"
        )
    return optuna.load_study(study_name=name, storage=storage)


# --- helpers ------------------------------------------------------------------------------


def _sqlite_path(parsed: URL) -> Path:
    assert parsed.database is not None
    path = Path(parsed.database)
    if parsed.query.get("uri") or parsed.database.startswith("file:"):
        raise StorageError("SQLite URI file names are not supported: use sqlite:///path/to/db")
    if not path.parent.is_dir():
        # A typo in a folder name must not start hours of trials in a database nobody finds.
        raise StorageError(
            f"the folder of the SQLite file {path} does not exist ({path.parent}); create it "
            "first or pass another --storage"
        )
    return path


def _enable_wal(db_path: Path, timeout: float) -> None:
    # WAL is a property of the database file, so setting it once is enough for every process.
    connection = sqlite3.connect(db_path, timeout=timeout)
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    finally:
        connection.close()
    if str(mode).lower() != "wal":
        raise StorageError(
            f"SQLite could not switch {db_path} to WAL mode (got {mode!r}); is it on a "
            "network file system? Use PostgreSQL for storage shared between machines"
        )


def _filled(url: str) -> str:
    """``url`` with Optuna's ``{SCHEMA_VERSION}`` placeholder filled in (before parsing)."""
    try:
        return optuna_compat.url_template_filled(url)
    except (KeyError, IndexError, ValueError):
        raise StorageError(
            f"storage URL {mask_url(url)!r} has braces other than Optuna's {{SCHEMA_VERSION}} "
            "placeholder; double them ({{ }}) to mean a brace"
        ) from None


def _check_schema(storage: optuna.storages.RDBStorage, masked: str) -> None:
    """Refuse a database whose tables another Optuna version set up (one line, what to do).

    The storage is built with Optuna's own check skipped: it raises a ``RuntimeError`` that
    would reach the user as a traceback. This is the same comparison, by public methods.
    """
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
    with warnings.catch_warnings():
        # Heartbeats have been "experimental" in Optuna since 2.8; we rely on them knowingly.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=options.max_retry)
    return {
        "heartbeat_interval": options.heartbeat_interval,
        "grace_period": options.grace_period,
        "heartbeat_stale_trial_callback": callback,
    }


def _rdb_storage(
    cls: type[optuna.storages.RDBStorage],
    parsed: URL,
    engine_kwargs: dict[str, Any],
    heartbeat: dict[str, Any],
) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(
            parsed.render_as_string(hide_password=False),
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
