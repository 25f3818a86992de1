"""hpo.runtime.storage: URLs, SQLite and PostgreSQL under concurrent worker processes, heartbeats.

The concurrency tests start real interpreter processes running a trivial objective, so they
exercise the storage alone; tests/test_workers.py runs the study runner itself.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo.runtime.storage import StorageOptions, open_storage
from hpo.runtime.storage_url import (
    ARTIFACT_DIR_ENV,
    DEFAULT_STORAGE_URL,
    STORAGE_ENV,
    StorageError,
    artifact_dir_for,
    mask_url,
    normalize_storage_url,
    resolve_storage_url,
    storage_kind,
)
from hpo.tuning import keys

ROOT = Path(__file__).resolve().parent.parent

# A worker process: opens the storage, joins the study, runs trials of a trivial objective.
# argv: url, study, n_trials, sleep_seconds, marker_file (touched when a trial starts) or "".
WORKER = r"""
import sys, time
from pathlib import Path
import optuna
from hpo.runtime.storage import StorageOptions, open_storage

url, study_name, n_trials, sleep, marker = sys.argv[1:6]
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = open_storage(url, StorageOptions(heartbeat_interval=1, grace_period=2))
study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True)

def objective(trial):
    x = trial.suggest_float("x", -1.0, 1.0)
    if marker:
        Path(marker).write_text(str(trial.number))
    time.sleep(float(sleep))
    return x * x

study.optimize(objective, n_trials=int(n_trials))
"""


def _start_worker(
    url: str, study: str, n_trials: int, sleep: float = 0.0, marker: Path | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, study, str(n_trials), str(sleep), str(marker or "")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _run_workers(url: str, study: str, n_workers: int, n_trials: int) -> list[str]:
    workers = [_start_worker(url, study, n_trials) for _ in range(n_workers)]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
    return outputs


def _states(url: str, study: str) -> list[TrialState]:
    loaded = optuna.load_study(study_name=study, storage=open_storage(url))
    return [t.state for t in loaded.get_trials(deepcopy=False)]


# --- URLs -----------------------------------------------------------------------------------


def test_cli_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert resolve_storage_url(None) == DEFAULT_STORAGE_URL
    monkeypatch.setenv(STORAGE_ENV, "sqlite:///env.db")
    assert resolve_storage_url(None) == "sqlite:///env.db"
    assert resolve_storage_url("sqlite:///cli.db") == "sqlite:///cli.db"


def test_mask_url_hides_the_password_even_when_unparseable() -> None:
    assert (
        mask_url("postgresql+psycopg://u:s3cret@h:5432/db")
        == "postgresql+psycopg://u:***@h:5432/db"
    )
    assert "s3cret" not in mask_url("no-scheme://u:s3cret@h:notaport/db")


def test_bare_postgresql_means_psycopg3() -> None:
    assert normalize_storage_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_storage_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert storage_kind("postgresql://u:p@h/db") == "postgresql"
    assert storage_kind("sqlite:///x.db") == "sqlite"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "empty storage URL"),
        ("not a url", "invalid storage URL"),
        ("mysql://u:p@h/db", "unsupported storage URL"),
        ("redis://localhost", "unsupported storage URL"),
        ("sqlite://host/x.db", "three slashes"),
        ("postgresql+psycopg://u:p@h:5432", "names no database"),
    ],
)
def test_bad_urls_raise_one_line_storage_errors(url: str, fragment: str) -> None:
    with pytest.raises(StorageError, match=fragment) as info:
        open_storage(url)
    assert "\n" not in str(info.value)
    assert "sqlite:///" in str(info.value) or "SQLite" in str(info.value)  # says how to fix


def test_unreachable_server_is_a_masked_one_line_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://hpo:Sup3rSecret@127.0.0.1:{port}/hpo"
    with pytest.raises(StorageError) as info:
        open_storage(url, StorageOptions(connect_timeout=2))
    message = str(info.value)
    assert "Sup3rSecret" not in message and "***" in message
    assert message.startswith("cannot open storage") and "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"heartbeat_interval": 0}, "heartbeat interval"),
        ({"heartbeat_interval": 10, "grace_period": 10}, "longer than the heartbeat"),
        ({"heartbeat_interval": None, "grace_period": 5}, "needs heartbeats"),
        ({"max_retry": -1}, "max_retry"),
        ({"pool_size": 0}, "pool_size"),
    ],
)
def test_storage_options_are_validated(kwargs: dict, fragment: str) -> None:
    with pytest.raises(StorageError, match=fragment):
        StorageOptions(**kwargs)


def test_heartbeat_timing_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPO_HEARTBEAT_INTERVAL", raising=False)
    monkeypatch.delenv("HPO_HEARTBEAT_GRACE", raising=False)
    assert StorageOptions.from_env() == StorageOptions()
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "2")
    assert StorageOptions.from_env().grace_period == 6
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "5")
    assert (
        StorageOptions.from_env().heartbeat_interval,
        StorageOptions.from_env().grace_period,
    ) == (
        2,
        5,
    )
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "soon")
    with pytest.raises(StorageError, match="HPO_HEARTBEAT_GRACE='soon' must be a whole number"):
        StorageOptions.from_env()
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "1")
    with pytest.raises(StorageError, match="longer than the heartbeat"):
        StorageOptions.from_env()


def test_artifact_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ARTIFACT_DIR_ENV, raising=False)
    assert artifact_dir_for("sqlite:///runs/a.db") == Path("runs/a-artifacts")
    assert artifact_dir_for("postgresql+psycopg://u:p@h/db") == Path("hpo-artifacts")
    monkeypatch.setenv(ARTIFACT_DIR_ENV, str(tmp_path))
    assert artifact_dir_for("sqlite:///runs/a.db") == tmp_path


def _heartbeats(db: Path) -> int:
    """Trials with a heartbeat recorded in Optuna's heartbeat table of the SQLite file ``db``."""
    connection = sqlite3.connect(db)
    try:
        return connection.execute("SELECT COUNT(*) FROM trial_heartbeats").fetchone()[0]
    finally:
        connection.close()


# --- SQLite ---------------------------------------------------------------------------------


def test_sqlite_file_is_created_in_wal_mode_with_heartbeats(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):  # a typo in a folder: refused
        open_storage(f"sqlite:///{tmp_path / 'nested' / 'study.db'}")
    assert list(tmp_path.iterdir()) == []
    db = tmp_path / "study.db"
    storage = open_storage(f"sqlite:///{db}", StorageOptions(heartbeat_interval=2, grace_period=5))
    assert db.exists()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert storage.get_heartbeat_interval() == 2 and storage.grace_period == 5
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
    assert not list(tmp_path.glob("**/*.lock")), "no stray lock files"


def test_sqlite_transactions_take_the_write_lock_up_front(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a second writer waits for the lock instead of failing later."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", StorageOptions(sqlite_timeout=0.2))
    study = optuna.create_study(storage=storage)
    with storage.engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")  # opens a transaction: now holds the write lock
        blocked = sqlite3.connect(tmp_path / "s.db", timeout=0.1)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            blocked.execute("BEGIN IMMEDIATE")
        blocked.close()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)  # the lock is released
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


def test_sqlite_four_processes_on_a_fresh_file(tmp_path: Path) -> None:
    """Four workers create the schema and run trials at once: no 'database is locked'."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    outputs = _run_workers(url, "s", n_workers=4, n_trials=15)
    assert not any("locked" in out.lower() for out in outputs), outputs
    states = _states(url, "s")
    assert len(states) == 60 and set(states) == {TrialState.COMPLETE}


def test_in_memory_sqlite_still_opens_without_heartbeats() -> None:
    storage = open_storage("sqlite:///:memory:")
    assert storage.get_heartbeat_interval() is None


# --- heartbeats -----------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_killed_worker_trial_goes_stale_is_failed_and_retried(tmp_path: Path) -> None:
    from hpo.tuning.budget import wait_for_slot  # what a worker waiting for the last slot runs

    url = f"sqlite:///{tmp_path / 'hb.db'}"
    options = StorageOptions(heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="hb", storage=open_storage(url, options))
    study.enqueue_trial({"x": 0.25}, user_attrs={keys.PHASE: keys.PHASE_GRID, keys.GRID_ID: 7})

    marker = tmp_path / "started"
    victim = _start_worker(url, "hb", n_trials=1, sleep=600, marker=marker)
    # No deadline of our own: a worker that never starts is ended by the test's timeout.
    while not marker.exists():
        assert victim.poll() is None, victim.communicate()[0]
        time.sleep(0.05)
    while not _heartbeats(tmp_path / "hb.db"):  # the trial's own heartbeat thread has beaten
        assert victim.poll() is None, victim.communicate()[0]
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert _states(url, "hb") == [TrialState.RUNNING]  # a dead worker's trial stays RUNNING...

    assert wait_for_slot(study, n_trials=1, poll_seconds=0.2) is True  # ... until it is stale
    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING
    assert retry.params == {"x": 0.25}
    assert retry.user_attrs == {keys.PHASE: keys.PHASE_GRID, keys.GRID_ID: 7}
    assert retry.system_attrs["failed_trial"] == 0  # RetryHeartbeatStaleTrialCallback's mark

    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=1)  # pops the retry
    assert wait_for_slot(study, n_trials=1) is False  # budget met
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].value == pytest.approx(0.0625)


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_trial_orphaned_before_its_first_heartbeat_is_failed_too(tmp_path: Path) -> None:
    """A worker killed while sampling leaves a RUNNING trial without any heartbeat."""
    from hpo.tuning.budget import wait_for_slot

    options = StorageOptions(heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}", options))
    study.ask()  # RUNNING, and nobody will ever beat for it
    assert not _heartbeats(tmp_path / "o.db")
    assert wait_for_slot(study, n_trials=1, poll_seconds=0.2) is True
    assert _heartbeats(tmp_path / "o.db") == 1  # adopted: one beat recorded on its behalf
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_retries_are_bounded(tmp_path: Path) -> None:
    """A configuration that keeps killing its worker is retried max_retry times, then dropped."""
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", StorageOptions(max_retry=1))
    study = optuna.create_study(storage=storage)
    callback = storage.get_heartbeat_stale_trial_callback()
    study.enqueue_trial({"x": 0.5})
    for _ in range(2):  # the original and its one retry both "die"
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, state=TrialState.FAIL)  # as a dead worker's trial is failed
        callback(study, study.trials[trial.number])
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]  # nothing re-queued
    assert trials[1].params == {"x": 0.5}


# --- PostgreSQL -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_pool_is_bounded_and_pre_pinged(postgres_url: str) -> None:
    storage = open_storage(postgres_url, StorageOptions(pool_size=2, max_overflow=1))
    pool = storage.engine.pool
    assert isinstance(pool, sqlalchemy.pool.QueuePool)
    assert pool.size() == 2 and pool._max_overflow == 1 and pool._pre_ping
    study = optuna.create_study(storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert storage.engine.pool.checkedout() == 0
    assert storage.engine.pool.checkedin() <= 3


@pytest.mark.postgres
def test_postgres_four_processes_on_a_fresh_schema(postgres_url: str) -> None:
    _run_workers(postgres_url, "pg", n_workers=4, n_trials=10)
    states = _states(postgres_url, "pg")
    assert len(states) == 40 and set(states) == {TrialState.COMPLETE}


@pytest.mark.postgres
def test_postgres_wrong_password_is_masked(postgres_url: str) -> None:
    url = sqlalchemy.engine.make_url(postgres_url).set(password="WrongPassw0rd")
    with pytest.raises(StorageError) as info:
        open_storage(url.render_as_string(hide_password=False))
    assert "WrongPassw0rd" not in str(info.value) and "password" in str(info.value)
