"""What the storage load benches share (``soak.py``, ``scale.py``): their processes, the
dashboard-like reader, the server's connections, and the count of killed and re-queued trials.

Run as a script it is the reader (``storage_load.py _reader STUDY STOP_FILE POLL``). The
processes take the storage URL from ``HPO_STORAGE`` in their environment, never from their
command line, which any user of the machine can read (``ps``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORAGE_ENV = "HPO_STORAGE"  # hpo.runtime.storage_url.STORAGE_ENV, without importing hpo here
# What a process's output must not hold: SQLite's and PostgreSQL's lock errors.
LOCK_ERROR = re.compile(r"database is locked|deadlock detected|could not obtain lock", re.I)


@dataclass
class Process:
    """A bench process and its log (stdout and stderr); ``killed``: by the bench, on purpose."""

    popen: subprocess.Popen
    log: Path
    killed: bool = False

    def kill(self) -> bool:
        """SIGKILL it if it still runs; True if it did."""
        if self.popen.poll() is not None:
            return False
        self.popen.kill()
        self.popen.wait()
        self.killed = True
        return True


def bench_env(url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the storage URL in ``HPO_STORAGE``, the repository first on
    ``PYTHONPATH`` (the editable install may point at another checkout) and ``extra`` on top."""
    env = {**os.environ, STORAGE_ENV: url, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def spawn(script: Path, args: Sequence[str], log: Path, env: dict[str, str]) -> Process:
    """``python script args...`` in the repository, its output in ``log``."""
    with log.open("w") as handle:
        popen = subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    return Process(popen, log)


def spawn_reader(
    study_name: str, stop_file: Path, poll: float, log: Path, env: dict[str, str]
) -> Process:
    """The dashboard-like reader (:func:`reader_main`) in a process of its own."""
    args = ["_reader", study_name, str(stop_file), str(poll)]
    return spawn(Path(__file__).resolve(), args, log, env)


def stop(processes: Sequence[Process]) -> None:
    for process in processes:
        if process.popen.poll() is None:
            process.popen.kill()
        process.popen.wait()


def dashboard_poll(n_trials: int) -> float:
    """How long optuna-dashboard (0.21, ``_storage.get_trials``) serves a study's trials from
    its cache before it reads them all again, however many browsers ask: 2 s under 100
    trials, 5 s under 500, 10 s from then on."""
    return 2.0 if n_trials < 100 else 5.0 if n_trials < 500 else 10.0


def reader_main(study_name: str, stop_file: str, poll: float) -> None:
    """Read every trial of the study every ``poll`` s (0: as often as optuna-dashboard does,
    :func:`dashboard_poll`), as the dashboard's trial list does, until ``stop_file`` exists;
    prints ``reads N longest-read S``."""
    import optuna

    from hpo.runtime.storage import open_existing_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_existing_storage(os.environ[STORAGE_ENV])  # as the dashboard opens it
    study_id = storage.get_study_id_from_name(study_name)
    reads, longest = 0, 0.0
    while not Path(stop_file).exists():
        start = time.perf_counter()
        trials = storage.get_all_trials(study_id, deepcopy=False)
        longest = max(longest, time.perf_counter() - start)
        reads += 1
        next_read = time.monotonic() + (poll or dashboard_poll(len(trials)))
        while time.monotonic() < next_read and not Path(stop_file).exists():
            time.sleep(0.1)
    print(f"reads {reads} longest-read {longest:.3f} cpu {time.process_time():.1f}", flush=True)


def reader_figures(log_text: str) -> tuple[int, float, float]:
    """(full reads, longest read in s, the reader's CPU seconds) from its output."""
    found = re.search(r"reads (\d+) longest-read (\S+) cpu (\S+)", log_text)
    return (int(found[1]), float(found[2]), float(found[3])) if found else (0, 0.0, 0.0)


class ConnectionSampler:
    """Samples the database server's client connections (``pg_stat_activity``; the sampler's
    own included, all databases: what ``max_connections`` limits) every ``every`` s in a thread,
    through ``url`` (directly or through a pooler, which passes the query on). ``peak`` and
    ``max_connections`` hold the figures once it has stopped."""

    def __init__(self, url: str, every: float = 0.25) -> None:
        self.url, self.every = url, every
        self.peak = 0
        self.max_connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        import sqlalchemy

        from hpo.runtime.storage_url import StorageTarget

        target = StorageTarget.parse(self.url)
        engine = sqlalchemy.create_engine(
            target.url,
            poolclass=sqlalchemy.pool.NullPool,
            connect_args=target.server_connect_args(10),
        )
        query = sqlalchemy.text(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
        try:
            with engine.connect() as connection:
                self.max_connections = int(
                    connection.exec_driver_sql("SHOW max_connections").scalar()
                )
                connection.rollback()
                while not self._stop.is_set():
                    self.peak = max(self.peak, int(connection.execute(query).scalar()))
                    connection.rollback()
                    self._stop.wait(self.every)
        finally:
            engine.dispose()


@dataclass(frozen=True)
class Requeues:
    """Trials killed with their worker and what became of them."""

    killed: int  # FAIL without a reason of ours: failed as stale, their worker dead
    retried_once: int  # of those, re-queued exactly once (RetryHeartbeatStaleTrialCallback)

    @property
    def lost(self) -> int:
        """Killed trials with no retry, or with several (the grid point ran twice)."""
        return self.killed - self.retried_once


def requeues(trials: Sequence[object]) -> Requeues:
    """Count the killed trials of ``trials`` (FrozenTrials) and their retries."""
    import optuna
    from optuna.trial import TrialState

    from hpo import records as keys

    killed = [
        t for t in trials if t.state == TrialState.FAIL and keys.FAIL_REASON not in t.user_attrs
    ]
    retries: dict[int, int] = {}
    with warnings.catch_warnings():  # experimental since Optuna 3.0, knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for t in trials:
            history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t)
            if history:
                retries[history[-1]] = retries.get(history[-1], 0) + 1
    return Requeues(len(killed), sum(retries.get(t.number) == 1 for t in killed))


def finished_trials(storage: object, study_name: str) -> int:
    """COMPLETE and PRUNED trials of the study: what the product's budget counts."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=study_name, storage=storage)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "_reader":
    reader_main(sys.argv[2], sys.argv[3], float(sys.argv[4]))
