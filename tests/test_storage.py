"""hpo.runtime.storage: URLs, SQLite and PostgreSQL under concurrent worker processes, heartbeats.

The concurrency tests start real interpreter processes running a trivial objective, so they
exercise the storage alone; tests/test_workers.py runs the study runner itself.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo import records as keys
from hpo.runtime.locks import exclusive
from hpo.runtime.sqlite_transactions import BEGIN_INFO_KEY
from hpo.runtime.storage import (
    StorageOptions,
    close_storage,
    open_existing_storage,
    open_storage,
)
from hpo.runtime.storage_url import (
    ARTIFACT_DIR_ENV,
    DEFAULT_STORAGE_URL,
    STORAGE_ENV,
    StorageError,
    StorageTarget,
    mask_url,
    resolve_storage_url,
)

ROOT = Path(__file__).resolve().parent.parent

# A worker process: opens the storage, joins the study, runs trials of a trivial objective.
# argv: url, study, n_trials, sleep_seconds, marker_file (touched when a trial starts) or "",
# heartbeat interval, grace period (seconds).
WORKER = r"""
import sys, time
from pathlib import Path
import optuna
from hpo.runtime.storage import StorageOptions, open_storage

url, study_name, n_trials, sleep, marker, interval, grace = sys.argv[1:8]
optuna.logging.set_verbosity(optuna.logging.WARNING)
options = StorageOptions(heartbeat_interval=int(interval), grace_period=int(grace))
storage = open_storage(url, options)
study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True)

def objective(trial):
    x = trial.suggest_float("x", -1.0, 1.0)
    if marker:
        Path(marker).write_text(str(trial.number))
    time.sleep(float(sleep))
    return x * x

study.optimize(objective, n_trials=int(n_trials))
"""


# A reader: loads the study and reads all its trials in a loop, as optuna-dashboard does, until
# the stop file appears; prints how many full reads it made. argv: url, study, stop_file.
READER = r"""
import sys, time
from pathlib import Path
import optuna
from hpo.runtime.storage import StorageOptions, open_storage

url, study_name, stop = sys.argv[1:4]
storage = open_storage(url, StorageOptions(heartbeat_interval=None, grace_period=None))
reads = 0
while not Path(stop).exists():
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name in names:
        study_id = storage.get_study_id_from_name(study_name)
        storage.get_all_trials(study_id, deepcopy=False)
        reads += 1
    time.sleep(0.01)
print("reads", reads)
"""


def _start_worker(
    url: str,
    study: str,
    n_trials: int,
    sleep: float = 0.0,
    marker: Path | None = None,
    heartbeat: tuple[int, int] = (10, 30),
) -> subprocess.Popen:
    """A worker; ``heartbeat``: interval and grace, the product's defaults unless a test needs
    a dead worker noticed quickly (a short grace fails live trials on an overloaded machine)."""
    args = [url, study, str(n_trials), str(sleep), str(marker or ""), *map(str, heartbeat)]
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *args],
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
    assert StorageTarget.parse("postgresql://u:p@h/db").url == "postgresql+psycopg://u:p@h/db"
    assert StorageTarget.parse("postgres://u:p@h/db").url == "postgresql+psycopg://u:p@h/db"
    assert not StorageTarget.parse("postgresql://u:p@h/db").is_sqlite
    assert StorageTarget.parse("sqlite:///x.db").is_sqlite


def test_a_parsed_storage_never_shows_its_password() -> None:
    target = StorageTarget.parse("postgresql://hpo:S3cretPw@h/db")
    assert "S3cretPw" not in target.masked and "S3cretPw" not in repr(target)
    assert "S3cretPw" in target.url  # the control: the URL to open does hold it


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("", "empty storage URL"),
        ("not a url", "invalid storage URL"),
        ("mysql://u:p@h/db", "unsupported storage URL"),
        ("redis://localhost", "unsupported storage URL"),
        ("sqlite://host/x.db", "three slashes"),
        ("postgresql+psycopg://u:p@h:5432", "names no database"),
        ("sqlite:///x-{SCHEMA_VERSION}.db", "braces"),
    ],
)
def test_bad_urls_raise_one_line_storage_errors(url: str, fragment: str) -> None:
    with pytest.raises(StorageError, match=fragment) as info:
        open_storage(url)
    assert "\n" not in str(info.value)
    assert "sqlite:///" in str(info.value) or "name the database" in str(info.value)


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


_STORAGE_ENV = (
    "HPO_HEARTBEAT_INTERVAL",
    "HPO_HEARTBEAT_GRACE",
    "HPO_DB_POOL_SIZE",
    "HPO_DB_MAX_OVERFLOW",
)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"HPO_HEARTBEAT_GRACE": "soon"}, "HPO_HEARTBEAT_GRACE='soon' must be a whole number"),
        ({"HPO_HEARTBEAT_INTERVAL": "2", "HPO_HEARTBEAT_GRACE": "1"}, "longer than the heartbeat"),
        ({"HPO_DB_POOL_SIZE": "two"}, "HPO_DB_POOL_SIZE='two' must be a whole number"),
        ({"HPO_DB_POOL_SIZE": "0"}, "pool_size must be >= 1"),
    ],
)
def test_a_bad_storage_setting_in_the_environment_is_one_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str
) -> None:
    for name in _STORAGE_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StorageError, match=re.escape(fragment)):
        StorageOptions.from_env()


def test_artifact_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ARTIFACT_DIR_ENV, raising=False)
    assert StorageTarget.parse("sqlite:///runs/a.db").artifact_dir == Path("runs/a-artifacts")
    assert StorageTarget.parse("postgresql://u:p@h/db").artifact_dir == Path("hpo-artifacts")
    monkeypatch.setenv(ARTIFACT_DIR_ENV, str(tmp_path))
    assert StorageTarget.parse("sqlite:///runs/a.db").artifact_dir == tmp_path


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


def _write_lock_free(db: Path) -> bool:
    """Whether another connection can take ``db``'s write lock right now (it does not wait)."""
    probe = sqlite3.connect(db, timeout=0)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as e:
        assert "locked" in str(e)
        return False
    finally:
        probe.close()


def test_sqlite_reader_takes_no_write_lock_and_a_worker_takes_it_up_front(
    tmp_path: Path,
) -> None:
    """A reader's transaction (the dashboard's, the report's) leaves the write lock free; a
    worker's takes it at BEGIN (the control), so its read-then-write never hits SQLITE_BUSY."""
    db = tmp_path / "s.db"
    worker = open_storage(f"sqlite:///{db}", StorageOptions(sqlite_timeout=0.2))
    study = optuna.create_study(storage=worker)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    reader = open_existing_storage(f"sqlite:///{db}")
    with reader.engine.connect() as connection:
        connection.exec_driver_sql("BEGIN")
        connection.exec_driver_sql("SELECT COUNT(*) FROM trials").all()  # a read in progress
        assert _write_lock_free(db)
        study.set_user_attr("during", "a read")  # the worker writes meanwhile, without waiting
        connection.exec_driver_sql("ROLLBACK")
    with worker.engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1").all()
        assert connection.info[BEGIN_INFO_KEY] == "BEGIN IMMEDIATE"
        assert not _write_lock_free(db)
    assert _write_lock_free(db)
    assert study.user_attrs == {"during": "a read"}


def test_sqlite_reader_reads_while_another_process_writes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    study = optuna.create_study(study_name="r", storage=open_storage(f"sqlite:///{db}"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    reader = open_existing_storage(f"sqlite:///{db}")
    holder = sqlite3.connect(db)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        assert len(reader.get_all_trials(reader.get_study_id_from_name("r"))) == 2
        assert optuna.load_study(study_name="r", storage=reader).best_trial.number in (0, 1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_sqlite_trial_loop_and_heartbeat_thread_of_one_worker_both_write(tmp_path: Path) -> None:
    """The trial loop writes while its heartbeat thread beats on another connection: each
    waits for the other's short transaction (a short busy timeout would fail at once)."""
    options = StorageOptions(sqlite_timeout=5, heartbeat_interval=1, grace_period=2)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", options)

    def objective(trial: optuna.Trial) -> float:
        for step in range(25):
            trial.report(0.1 * step, step)
            time.sleep(0.1)
        return 1.0

    study = optuna.create_study(storage=storage)
    study.optimize(objective, n_trials=1)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert _heartbeats(tmp_path / "s.db") == 1


def test_sqlite_every_transaction_of_a_worker_is_immediate(tmp_path: Path) -> None:
    """Through the Study API (and Optuna's cache), heartbeats, stale-trial checks and deletes,
    every statement of a worker's storage runs in a transaction that took the write lock."""
    db = tmp_path / "s.db"
    storage = open_storage(f"sqlite:///{db}", StorageOptions(heartbeat_interval=1, grace_period=2))
    seen: list[tuple[str, str]] = []

    def record(connection, _cursor, statement: str, *_args: object) -> None:
        seen.append((connection.info.get(BEGIN_INFO_KEY, "none"), statement.split()[0].upper()))

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", record)
    study = optuna.create_study(study_name="w", storage=storage)
    study.set_user_attr("a", 1)
    study.enqueue_trial({"x": 0.5}, user_attrs={"grid": 1})

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.report(x, step=1)
        trial.set_user_attr("b", 2)
        return x

    study.optimize(objective, n_trials=3)
    optuna.delete_study(study_name="w", storage=storage)
    writes = [begin for begin, verb in seen if verb in {"INSERT", "UPDATE", "DELETE", "REPLACE"}]
    assert len(writes) > 10 and {begin for begin, _ in seen} == {"BEGIN IMMEDIATE"}
    # The control: the same calls on a reader's storage begin no write transaction.
    reader = open_existing_storage(f"sqlite:///{db}")
    with reader.engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1").all()
        assert BEGIN_INFO_KEY not in connection.info


def test_sqlite_storage_keeps_its_settings_when_pickled(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage)
    restored = pickle.loads(pickle.dumps(storage))
    assert type(restored) is type(storage) and restored.engine is not storage.engine
    assert restored.get_heartbeat_interval() == storage.get_heartbeat_interval()
    with restored.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert connection.info[BEGIN_INFO_KEY] == "BEGIN IMMEDIATE"
    trial_id = restored.create_new_trial(restored.get_study_id_from_name(study.study_name))
    restored.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


def _set_schema(db: Path, revision: str, library: str) -> None:
    """Make ``db`` look as if an Optuna of that alembic revision and version had set it up."""
    connection = sqlite3.connect(db)
    with connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        connection.execute("UPDATE version_info SET library_version = ?", (library,))
    connection.close()


@pytest.mark.parametrize(
    ("revision", "fragment"),
    [("v3.0.0.d", "run `optuna storage upgrade --storage URL`"), ("v99.0.0.a", "newer Optuna")],
)
def test_another_optunas_schema_is_one_line(tmp_path: Path, revision: str, fragment: str) -> None:
    db = tmp_path / "old.db"
    open_storage(f"sqlite:///{db}").engine.dispose()
    _set_schema(db, revision, "3.0.0")
    with pytest.raises(StorageError, match=fragment) as info:
        open_storage(f"sqlite:///{db}")
    assert "\n" not in str(info.value) and revision in str(info.value)


def test_old_schema_exits_2_with_one_line_from_hpo_run(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    open_storage(f"sqlite:///{db}").engine.dispose()
    _set_schema(db, "v3.0.0.d", "3.0.0")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpo.run",
            "--study",
            "sparse_mnist",
            "--storage",
            f"sqlite:///{db}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: storage sqlite:///") and "optuna storage upgrade" in line


@pytest.mark.slow
def test_sqlite_eight_writers_and_a_reader_on_a_fresh_file(tmp_path: Path) -> None:
    """Eight workers create the schema and run trials while a reader loops over the study, as
    the dashboard does: no 'database is locked', and every trial completes."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, url, "s", str(stop)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        outputs = _run_workers(url, "s", n_workers=8, n_trials=10)
    finally:
        stop.touch()
    reader_output = reader.communicate(timeout=120)[0]
    assert reader.returncode == 0, reader_output
    assert not any("locked" in out.lower() for out in [*outputs, reader_output]), outputs
    assert int(reader_output.split()[-1]) > 0  # it did read the study while the workers ran
    states = _states(url, "s")
    assert len(states) == 80 and set(states) == {TrialState.COMPLETE}


def test_in_memory_sqlite_still_opens_without_heartbeats() -> None:
    storage = open_storage("sqlite:///:memory:")
    assert storage.get_heartbeat_interval() is None


# --- heartbeats -----------------------------------------------------------------------------


def _fail_stale_until(study: optuna.Study, state: TrialState, number: int) -> None:
    """What every worker's ``study.optimize`` does before a trial, until trial ``number`` has
    ``state`` (no deadline of our own: the test's timeout ends a regression)."""
    import warnings

    while study.trials[number].state != state:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        time.sleep(0.2)


@pytest.mark.timeout(90)
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_killed_worker_trial_goes_stale_is_failed_and_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    options = StorageOptions(heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="hb", storage=open_storage(url, options))
    study.enqueue_trial({"x": 0.25}, user_attrs={keys.PHASE: keys.PHASE_GRID, keys.GRID_ID: 7})

    marker = tmp_path / "started"
    victim = _start_worker(url, "hb", n_trials=1, sleep=600, marker=marker, heartbeat=(1, 2))
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

    _fail_stale_until(study, TrialState.FAIL, 0)  # ... until it is stale
    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING
    assert retry.params == {"x": 0.25}
    assert retry.user_attrs == {keys.PHASE: keys.PHASE_GRID, keys.GRID_ID: 7}
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0

    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=1)  # pops the retry
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].value == pytest.approx(0.0625)


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
def test_postgres_reader_opens_while_workers_hold_the_schema_lock(postgres_url: str) -> None:
    """A dashboard opened while workers start does not queue behind them for the schema lock,
    which a reader of a complete schema does not need; a worker still waits for it."""
    close_storage(open_storage(postgres_url))  # the schema, created and stamped
    opened: dict[str, optuna.storages.RDBStorage] = {}
    reader = threading.Thread(
        target=lambda: opened.setdefault("reader", open_existing_storage(postgres_url))
    )
    worker = threading.Thread(
        target=lambda: opened.setdefault("worker", open_storage(postgres_url))
    )
    with exclusive(StorageTarget.parse(postgres_url), "schema"):
        reader.start()
        worker.start()
        reader.join(timeout=60)
        assert "reader" in opened
        assert "worker" not in opened  # the lock is held: a worker waits for it
    worker.join(timeout=60)
    assert "worker" in opened
    for storage in opened.values():
        close_storage(storage)


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


def test_a_damaged_sqlite_file_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "study.db"
    open_storage(f"sqlite:///{path}").engine.dispose()  # an Optuna storage...
    with contextlib.closing(sqlite3.connect(path)) as db:  # ...with room to damage
        db.execute("CREATE TABLE filler (x BLOB)")
        for _ in range(20):
            db.execute("INSERT INTO filler VALUES (zeroblob(4000))")
        db.commit()
    with path.open("r+b") as f:
        f.seek(4096 * 3)
        f.write(b"\xde\xad" * 2048)
    with pytest.raises(StorageError) as error:
        open_storage(f"sqlite:///{path}")
    assert "damaged: restore it from a backup" in str(error.value)
    assert "\n" not in str(error.value)


def test_the_connection_pool_is_what_one_worker_uses_and_configurable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker uses two connections at once (its trial loop and its heartbeat thread): 2 per
    worker by default, so 256 workers need a pooler in front of max_connections 100."""
    for name in _STORAGE_ENV:
        monkeypatch.delenv(name, raising=False)
    default = StorageOptions.from_env()
    assert default.pool_size + default.max_overflow == 2
    monkeypatch.setenv("HPO_DB_POOL_SIZE", "1")
    monkeypatch.setenv("HPO_DB_MAX_OVERFLOW", "3")
    options = StorageOptions.from_env()
    assert (options.pool_size, options.max_overflow) == (1, 3)
