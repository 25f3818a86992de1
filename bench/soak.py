"""Soak: many workers, a dashboard-like reader and a SIGKILL every 20 s -- is anything lost?

For each backend (PostgreSQL with 8 workers, SQLite with 4 by default), worker processes run
the product's own worker path (:func:`hpo.tuning.trial_loop.optimize`: ``study.optimize`` with
``MaxTrialsCallback``, heartbeats and the re-queue of dead workers' trials; once they are
done, :func:`hpo.tuning.trial_loop.settle` runs once, as the final step) on a trivial objective (one
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
writers), and for PostgreSQL the peak of the server's client connections (the sampler's own
included) against ``max_connections``. Loopback only. ``bench/storage_load.py`` holds what
this and ``bench/scale.py`` share.

    .venv/bin/python bench/soak.py                          # 10 min per backend; starts PostgreSQL
    .venv/bin/python bench/soak.py --duration 60 --backends sqlite      # a smoke check

Exit status 0 when nothing was lost and no lock error was seen, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# Siblings: bench/ is on sys.path.
from loopback_postgres import loopback_postgres
from storage_load import (
    LOCK_ERROR,
    ConnectionSampler,
    Process,
    bench_env,
    finished_trials,
    reader_figures,
    requeues,
    spawn,
    spawn_reader,
    stop,
)

HEARTBEAT_ENV = {"HPO_HEARTBEAT_INTERVAL": "2", "HPO_HEARTBEAT_GRACE": "6"}
SCRIPT = Path(__file__).resolve()


# --- the processes the soak starts -----------------------------------------------------------


def worker_main(study_name: str, n_trials: int, trial_seconds: float) -> None:
    """One worker: the product's trial loop until the study has ``n_trials`` finished trials
    (the storage URL in ``HPO_STORAGE``)."""
    import optuna

    from hpo.runtime.storage import open_storage
    from hpo.tuning.trial_loop import optimize

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(os.environ["HPO_STORAGE"])  # heartbeats from HPO_HEARTBEAT_*
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

    if finished_trials(storage, study_name) < n_trials:  # as run_worker: nothing to do past N
        optimize(study, objective, n_trials, storage=storage)


# --- the soak itself -------------------------------------------------------------------------


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


def calibrate(url: str, workers: int, args: argparse.Namespace, env: dict, logs: Path) -> float:
    """Finished trials per second with these workers and the reader, without kills."""
    import optuna

    from hpo.runtime.storage import open_storage

    study_name = f"calibrate-{uuid.uuid4().hex[:6]}"
    storage = open_storage(url)
    optuna.create_study(study_name=study_name, storage=storage)
    worker_args = ["_worker", study_name, "1000000", str(args.trial_seconds)]
    procs = [spawn(SCRIPT, worker_args, logs / f"c{i}.log", env) for i in range(workers)]
    stop_file = logs / "calibrate.stop"
    procs.append(spawn_reader(study_name, stop_file, args.poll, logs / "cr.log", env))
    time.sleep(args.warmup)
    before, start = finished_trials(storage, study_name), time.monotonic()
    time.sleep(args.calibrate)
    rate = (finished_trials(storage, study_name) - before) / (time.monotonic() - start)
    stop(procs)
    optuna.delete_study(study_name=study_name, storage=storage)
    storage.engine.dispose()
    return rate


def soak(backend: str, url: str, workers: int, args: argparse.Namespace, tmp: Path) -> Outcome:
    import optuna
    from optuna.trial import TrialState

    from hpo.runtime.storage import open_storage
    from hpo.tuning.trial_loop import settle

    env = bench_env(url, HEARTBEAT_ENV)
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
    worker_args = ["_worker", study_name, str(n_trials), str(args.trial_seconds)]
    procs = [spawn(SCRIPT, worker_args, logs / f"w{i}-0.log", env) for i in range(workers)]
    retired: list[Process] = []
    reader = spawn_reader(study_name, stop_file, args.poll, logs / "reader.log", env)
    sampler = ConnectionSampler(url) if backend == "postgresql" else contextlib.nullcontext()
    rng = random.Random(args.seed)
    start = time.monotonic()
    kills = 0
    print(f"{backend}: {workers} workers, N = {n_trials}, killing for {args.duration:.0f} s")
    failures: list[str] = []
    with sampler:
        while time.monotonic() - start < args.duration:
            time.sleep(args.kill_every)
            if all(p.popen.poll() is not None for p in procs):
                break  # the study is done: nothing left to kill
            victim = rng.randrange(workers)
            kills += procs[victim].kill()
            retired.append(procs[victim])
            procs[victim] = spawn(SCRIPT, worker_args, logs / f"w{victim}-{kills}.log", env)
        deadline = time.monotonic() + args.tail
        for proc in procs:
            try:
                proc.popen.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
                failures.append(f"a worker did not finish within --tail ({proc.log.name})")
        settle(optuna.load_study(study_name=study_name, storage=storage), storage, n_trials)
        stop_file.touch()
        reader.popen.wait(timeout=600)
    for proc in [*procs, reader, *retired]:
        if not proc.killed and proc.popen.returncode != 0:
            failures.append(f"{proc.log.name} exited {proc.popen.returncode}")

    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    killed = requeues(trials)
    finished = counts["COMPLETE"] + counts["PRUNED"]
    lost = max(0, n_trials - finished) + counts["RUNNING"] + killed.lost
    outputs = [p.log.read_text() for p in [*procs, *retired, reader]]
    lock_errors = sum(len(LOCK_ERROR.findall(text)) for text in outputs)
    writes = [float(v) for text in outputs for v in re.findall(r"longest-write (\S+)", text)]
    reads, longest_read, _ = reader_figures(outputs[-1])
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
        killed_trials=killed.killed,
        retried_once=killed.retried_once,
        lost=lost,
        lock_errors=lock_errors,
        longest_write=max(writes, default=0.0),
        reads=reads,
        longest_read=longest_read,
        connections=(
            (sampler.peak, sampler.max_connections)
            if isinstance(sampler, ConnectionSampler)
            else None
        ),
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
        name, n, seconds = sys.argv[2:5]
        worker_main(name, int(n), float(seconds))
    else:
        sys.exit(main())
