"""Soak: many workers, a dashboard-like reader and a SIGKILL every 20 s -- is anything lost?

For each backend (PostgreSQL with 8 workers, SQLite with 4 by default), worker processes run
the product's own worker path (:func:`hpo.tuning.worker.optimize`: ``study.optimize`` with
``MaxTrialsCallback``, heartbeats and the re-queue of dead workers' trials, then
:func:`hpo.tuning.worker.settle` as the final step does) on a trivial objective (one
parameter, one user attribute, ``--trial-seconds`` of sleep) against one study with a budget
of N trials (N to N + K - 1 finished with K workers), while

* a reader process polls the study as optuna-dashboard does (every trial, every ``--poll`` s), and
* every ``--kill-every`` seconds one worker, chosen by a seeded generator, is killed with
  SIGKILL and a fresh one started in its place, for ``--duration`` seconds; then the workers
  finish the budget undisturbed (bounded by ``--tail``).

N is sized so the study outlasts the kills: the same workers and reader first run a throwaway
study for ``--calibrate`` seconds (after a warm-up), and N = that rate x ``duration``.
Heartbeats every 2 s, stale after 6 s (``HPO_HEARTBEAT_*``), so a killed trial is re-queued
within the run. Printed per backend: trials finished (N to N + K - 1, none RUNNING), killed
trials and their retries (each killed trial re-queued exactly once), trials lost, lock errors
in any process's output, the longest single write a worker made (the objective's
``set_user_attr``; it includes waits for other writers and for the reader, if readers block
writers), and for PostgreSQL the peak connections against ``max_connections``. Loopback only.

    .venv/bin/python bench/soak.py                          # 10 min per backend; starts PostgreSQL
    .venv/bin/python bench/soak.py --duration 60 --backends sqlite      # a smoke check

Exit status 0 when nothing was lost and no lock error was seen, else 1.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from loopback_postgres import loopback_postgres  # a sibling: bench/ is on sys.path

ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT_ENV = {"HPO_HEARTBEAT_INTERVAL": "2", "HPO_HEARTBEAT_GRACE": "6"}
LOCK_ERROR = re.compile(r"database is locked|deadlock detected|could not obtain lock", re.I)


# --- the processes the soak starts -----------------------------------------------------------


def worker_main(url: str, study_name: str, n_trials: int, trial_seconds: float) -> None:
    """One worker: the product's trial loop until the study has ``n_trials`` finished trials."""
    import optuna

    from hpo.runtime.storage import open_storage
    from hpo.tuning.worker import optimize, settle

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url)  # heartbeats from HPO_HEARTBEAT_* (set by the soak)
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    longest = 0.0

    def objective(trial: optuna.Trial) -> float:
        nonlocal longest
        x = trial.suggest_float("x", -1.0, 1.0)
        start = time.perf_counter()
        trial.set_user_attr("worker", os.getpid())
        write = time.perf_counter() - start
        if write > longest:
            longest = write
            print(f"longest-write {write:.4f}", flush=True)
        time.sleep(trial_seconds)
        return x * x

    if _finished(storage, study_name) < n_trials:  # as run_worker: nothing to do past N
        optimize(study, objective, n_trials)
    settle(study, storage, n_trials)


def reader_main(url: str, study_name: str, stop_file: str, poll: float) -> None:
    """Read every trial of the study every ``poll`` s, as optuna-dashboard's trial list does."""
    import optuna

    from hpo.runtime.storage import open_existing_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_existing_storage(url)  # a reader, as the dashboard opens it
    study_id = storage.get_study_id_from_name(study_name)
    reads, longest = 0, 0.0
    while not Path(stop_file).exists():
        start = time.perf_counter()
        storage.get_all_trials(study_id, deepcopy=False)
        longest = max(longest, time.perf_counter() - start)
        reads += 1
        time.sleep(poll)
    print(f"reads {reads} longest-read {longest:.3f}", flush=True)


# --- the soak itself -------------------------------------------------------------------------


@dataclass
class _Process:
    popen: subprocess.Popen
    log: Path
    killed: bool = False


@dataclass
class Outcome:
    backend: str
    workers: int
    n_trials: int
    counts: dict[str, int]
    kills: int
    killed_trials: int
    retried_once: int
    lost: int
    lock_errors: int
    longest_write: float
    reads: int
    longest_read: float
    connections: tuple[int, int] | None = None  # (peak, max_connections)
    failures: list[str] = field(default_factory=list)


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> _Process:
    handle = log.open("w")
    popen = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    return _Process(popen, log)


def _sample_connections(url: str, stop: threading.Event, peak: list[int]) -> None:
    """Keep ``peak = [most connections seen to the database, max_connections]`` (1 s samples)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    query = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d")
    try:
        with engine.connect() as connection:
            peak[1] = int(connection.exec_driver_sql("SHOW max_connections").scalar())
            while not stop.is_set():
                used = int(connection.execute(query, {"d": engine.url.database}).scalar()) - 1
                peak[0] = max(peak[0], used)  # minus this sampler's own connection
                connection.rollback()
                stop.wait(1.0)
    finally:
        engine.dispose()


def _finished(storage: object, study_name: str) -> int:
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=study_name, storage=storage)
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _stop(processes: list[_Process]) -> None:
    for proc in processes:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.popen.wait()


def calibrate(url: str, workers: int, args: argparse.Namespace, env: dict, logs: Path) -> float:
    """Finished trials per second with these workers and the reader, without kills."""
    import optuna

    from hpo.runtime.storage import open_storage

    study_name = f"calibrate-{uuid.uuid4().hex[:6]}"
    storage = open_storage(url)
    optuna.create_study(study_name=study_name, storage=storage)
    stop_file = logs / "calibrate.stop"
    procs = [
        _spawn(
            ["_worker", url, study_name, "1000000", str(args.trial_seconds)],
            logs / f"c{i}.log",
            env,
        )
        for i in range(workers)
    ]
    procs.append(
        _spawn(["_reader", url, study_name, str(stop_file), str(args.poll)], logs / "cr.log", env)
    )
    time.sleep(args.warmup)
    before, start = _finished(storage, study_name), time.monotonic()
    time.sleep(args.calibrate)
    rate = (_finished(storage, study_name) - before) / (time.monotonic() - start)
    _stop(procs)
    optuna.delete_study(study_name=study_name, storage=storage)
    storage.engine.dispose()
    return rate


def soak(backend: str, url: str, workers: int, args: argparse.Namespace, tmp: Path) -> Outcome:
    import optuna
    from optuna.trial import TrialState

    from hpo import records as keys
    from hpo.runtime.storage import open_storage

    env = {**os.environ, **HEARTBEAT_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    os.environ.update(HEARTBEAT_ENV)
    logs = tmp / backend
    logs.mkdir()
    rate = calibrate(url, workers, args, env, logs)
    n_trials = max(workers, int(rate * args.duration))
    print(f"{backend}: calibration: {rate:.2f} trials/s with {workers} workers and the reader")
    study_name = f"soak-{backend}-{uuid.uuid4().hex[:6]}"
    storage = open_storage(url)
    optuna.create_study(study_name=study_name, storage=storage)
    stop_file = tmp / f"{backend}.stop"
    worker_args = ["_worker", url, study_name, str(n_trials), str(args.trial_seconds)]
    procs = [_spawn(worker_args, logs / f"w{i}-0.log", env) for i in range(workers)]
    retired: list[_Process] = []
    reader_args = ["_reader", url, study_name, str(stop_file), str(args.poll)]
    reader = _spawn(reader_args, logs / "reader.log", env)
    peak = [0, 0]
    stop_sampling = threading.Event()
    sampler = None
    if backend == "postgresql":
        sampler = threading.Thread(
            target=_sample_connections, args=(url, stop_sampling, peak), daemon=True
        )
        sampler.start()
    rng = random.Random(args.seed)
    start = time.monotonic()
    kills = 0
    print(f"{backend}: {workers} workers, N = {n_trials}, killing for {args.duration:.0f} s")
    while time.monotonic() - start < args.duration:
        time.sleep(args.kill_every)
        if all(p.popen.poll() is not None for p in procs):
            break  # the study is done: nothing left to kill
        victim = rng.randrange(workers)
        proc = procs[victim]
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGKILL)
            proc.popen.wait()
            proc.killed = True
            kills += 1
        retired.append(proc)
        procs[victim] = _spawn(worker_args, logs / f"w{victim}-{kills}.log", env)
    failures: list[str] = []
    deadline = time.monotonic() + args.tail
    for proc in procs:
        try:
            proc.popen.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
            failures.append(f"a worker did not finish within --tail ({proc.log.name})")
    stop_file.touch()
    reader.popen.wait(timeout=600)
    stop_sampling.set()
    if sampler is not None:
        sampler.join(timeout=10)
    for proc in [*procs, reader]:
        if proc.popen.returncode != 0:
            failures.append(f"{proc.log.name} exited {proc.popen.returncode}")
    for proc in retired:
        if not proc.killed and proc.popen.returncode != 0:
            failures.append(f"{proc.log.name} exited {proc.popen.returncode}")

    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    # Killed: FAIL without a reason of ours (the runner gives one to every trial it fails itself).
    killed = [
        t for t in trials if t.state == TrialState.FAIL and keys.FAIL_REASON not in t.user_attrs
    ]
    retries: dict[int, int] = {}
    for t in trials:
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t)
        if history:
            retries[history[-1]] = retries.get(history[-1], 0) + 1
    retried_once = sum(retries.get(t.number) == 1 for t in killed)
    finished = counts["COMPLETE"] + counts["PRUNED"]
    lost = max(0, n_trials - finished) + counts["RUNNING"] + (len(killed) - retried_once)
    outputs = [p.log.read_text() for p in [*procs, *retired, reader]]
    lock_errors = sum(len(LOCK_ERROR.findall(text)) for text in outputs)
    writes = [float(v) for text in outputs for v in re.findall(r"longest-write (\S+)", text)]
    read_line = re.search(r"reads (\d+) longest-read (\S+)", outputs[-1])
    if not n_trials <= finished <= n_trials + workers - 1 or counts["RUNNING"]:
        failures.append(f"{finished} finished (N = {n_trials}), {counts['RUNNING']} RUNNING")
    optuna.delete_study(study_name=study_name, storage=storage)
    storage.engine.dispose()
    return Outcome(
        backend=backend,
        workers=workers,
        n_trials=n_trials,
        counts=counts,
        kills=kills,
        killed_trials=len(killed),
        retried_once=retried_once,
        lost=lost,
        lock_errors=lock_errors,
        longest_write=max(writes, default=0.0),
        reads=int(read_line.group(1)) if read_line else 0,
        longest_read=float(read_line.group(2)) if read_line else 0.0,
        connections=(peak[0], peak[1]) if backend == "postgresql" else None,
        failures=failures,
    )


def _report(o: Outcome) -> str:
    states = ", ".join(f"{k} {v}" for k, v in o.counts.items() if v)
    line = (
        f"{o.backend}: {o.workers} workers, N = {o.n_trials}: {states}; {o.kills} kills, "
        f"{o.killed_trials} killed trials, {o.retried_once} re-queued exactly once; "
        f"lost {o.lost}; lock errors {o.lock_errors}; longest write {1000 * o.longest_write:.0f} "
        f"ms; reader: {o.reads} full reads, longest {o.longest_read:.2f} s"
    )
    if o.connections:
        line += f"; connections: peak {o.connections[0]} of max_connections {o.connections[1]}"
    return line + "".join(f"\n  FAILED: {f}" for f in o.failures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["postgresql", "sqlite"])
    parser.add_argument("--duration", type=float, default=600, help="seconds of kills (600)")
    parser.add_argument("--kill-every", type=float, default=20, help="seconds (default 20)")
    parser.add_argument("--pg-workers", type=int, default=8, help="PostgreSQL workers (8)")
    parser.add_argument("--sqlite-workers", type=int, default=4, help="SQLite workers (4)")
    parser.add_argument("--trial-seconds", type=float, default=1.0, help="objective sleep (1)")
    parser.add_argument("--tail", type=float, default=900, help="max seconds to finish (900)")
    parser.add_argument("--poll", type=float, default=1.0, help="reader's poll, seconds (1)")
    parser.add_argument("--warmup", type=float, default=30, help="calibration warm-up (30 s)")
    parser.add_argument("--calibrate", type=float, default=60, help="calibration (60 s)")
    parser.add_argument("--seed", type=int, default=0, help="which workers are killed (0)")
    args = parser.parse_args()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as tmp, loopback_postgres() as postgres_url:
        for backend in args.backends:
            if backend == "postgresql":
                url = postgres_url()
                workers = args.pg_workers
            else:
                url, workers = f"sqlite:///{Path(tmp) / 'soak.db'}", args.sqlite_workers
            outcome = soak(backend, url, workers, args, Path(tmp))
            print(_report(outcome), flush=True)
            outcomes.append(outcome)
    bad = any(o.failures or o.lost or o.lock_errors for o in outcomes)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        url, name, n, seconds = sys.argv[2:6]
        worker_main(url, name, int(n), float(seconds))
    elif len(sys.argv) > 1 and sys.argv[1] == "_reader":
        url, name, stop, poll = sys.argv[2:6]
        reader_main(url, name, stop, float(poll))
    else:
        sys.exit(main())
