"""Scale: hundreds of simulated workers on one storage, SIGKILLs and a reader (issue 32, item 4).

Load (the default). ``--workers N`` simulated workers, threads spread over ``--processes P``
processes, each thread with its own storage object (``hpo.runtime.storage.open_storage``: its
own pool of 2 connections, heartbeats, the re-queue of dead workers' trials), run the
product's trial loop (``hpo.tuning.trial_loop.optimize``: ``study.optimize`` with its callbacks)
on one study for ``--minutes M``, with a trivial objective (one parameter, one user attribute,
``--trial-seconds`` of sleep). The sampler is Optuna's ``RandomSampler``, not the product's
grid + TPE: TPE's cost grows with the trials it reads and is CPU spent in the worker, not in
the storage, which is what this measures. Meanwhile

* every ``--kill-every`` s one worker process, chosen by a seeded generator, is killed with
  SIGKILL (all its threads' trials die with it) and a fresh one started in its place;
* a reader process reads every trial of the study as often as optuna-dashboard does (its cache
  keeps them 2 s, 5 s from 100 trials, 10 s from 500), or every ``--poll`` s;
* the database server's client connections are sampled every 0.25 s (PostgreSQL).

At the end the workers stop after their current trial, and ``hpo.tuning.trial_loop.settle`` (the
final step's) fails what went stale, so killed trials are re-queued. The last line is JSON:
``finished`` (COMPLETE trials), ``lost`` (killed trials not re-queued exactly once),
``running_left`` (RUNNING at the end), ``errors`` (tracebacks and lock errors in any output,
a process that exited badly, a live worker's trial failed as stale), ``peak_connections`` and
``max_connections`` (the server's), ``trials_per_s`` (trials completed after ``--warmup``
until the end, per second), ``storage_ms_p50`` / ``storage_ms_p99`` (per trial, after the
warm-up: the time a worker spent between the end of one objective and the start of the next
-- tell, callbacks, failing stale trials, ask, starting the heartbeat -- plus the objective's
own storage calls; it includes waits for the GIL of its process).

Growth (``--growth T``). ``--growth-workers K`` worker processes run the same loop without
sleep until the study has T finished trials; printed: the per-trial storage time (median over
``--window`` trials) when the study holds 1,000, 5,000, 10,000 and T trials.

    PYTHONPATH=. .venv/bin/python bench/scale.py --storage URL --workers 256 --minutes 5 --json
    PYTHONPATH=. .venv/bin/python bench/scale.py --storage URL --growth 20000 --json

Exit status 1 when a trial was lost, left RUNNING, or an error was seen, else 0. Loopback:
the bench starts no server; ``.ci/postgres.sh`` and ``.ci/pgbouncer.sh`` do
(``docs/performance.md``, "Issue 32: scaling", has the commands).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Siblings: bench/ is on sys.path.
from storage_load import (
    LOCK_ERROR,
    ConnectionSampler,
    Process,
    bench_env,
    reader_figures,
    requeues,
    spawn,
    spawn_reader,
)

SCRIPT = Path(__file__).resolve()
UNLIMITED = 10**9  # the load's budget: it stops at its deadline
WORKER_ATTR = "bench_worker"  # the process id that ran a trial


# --- the worker processes ---------------------------------------------------------------------


class TimedObjective:
    """The trivial objective; records each trial's storage time as its worker sees it (module
    doc): the gap since the previous objective ended plus its own ``suggest`` and
    ``set_user_attr``, in wall time and in the worker thread's CPU time (which leaves out
    waits: for the database, the GIL, other processes). A worker's first trial has no gap and
    is not recorded."""

    def __init__(self, seconds: float, record: Callable[[int, float, float], None]) -> None:
        self.seconds, self.record = seconds, record
        self.previous_end: tuple[float, float] | None = None

    def __call__(self, trial: object) -> float:
        start = (time.perf_counter(), time.thread_time())
        x = trial.suggest_float("x", -1.0, 1.0)
        trial.set_user_attr(WORKER_ATTR, os.getpid())
        inside = (time.perf_counter() - start[0], time.thread_time() - start[1])
        if self.previous_end is not None:
            wall = start[0] - self.previous_end[0] + inside[0]
            self.record(trial.number, wall, start[1] - self.previous_end[1] + inside[1])
        time.sleep(self.seconds)
        self.previous_end = (time.perf_counter(), time.thread_time())
        return x * x


def workers_main(
    study_name: str, threads: int, n_trials: int, deadline: float, seconds: float
) -> None:
    """``threads`` workers in this process, each with its own storage (``HPO_STORAGE``), until
    ``deadline`` (epoch seconds; 0: none) or ``n_trials`` finished; prints ``sample EPOCH
    NUMBER WALL CPU`` per trial and ``worker-error`` after a worker's traceback."""
    import optuna

    from hpo.runtime.storage import open_storage
    from hpo.tuning.trial_loop import optimize

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    printing = threading.Lock()

    def record(number: int, wall: float, cpu: float) -> None:
        with printing:
            print(f"sample {time.time():.3f} {number} {wall:.6f} {cpu:.6f}", flush=True)

    def work() -> None:
        try:
            storage = open_storage(os.environ["HPO_STORAGE"])  # as a real worker's
            study = optuna.load_study(
                study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler()
            )
            timeout = deadline - time.time() if deadline else None
            if timeout is None or timeout > 0:
                objective = TimedObjective(seconds, record)
                optimize(study, objective, n_trials, timeout=timeout, storage=storage)
            storage.engine.dispose()
        except Exception:
            with printing:
                traceback.print_exc()
                print("worker-error", flush=True)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


# --- the load ---------------------------------------------------------------------------------


@dataclass
class Load:
    """What the load run measured; ``figures()`` is the JSON line."""

    finished: int = 0
    lost: int = 0
    running_left: int = 0
    errors: int = 0
    peak_connections: int | None = None
    max_connections: int | None = None
    trials_per_s: float = 0.0
    storage_ms_p50: float = 0.0
    storage_ms_p99: float = 0.0
    storage_cpu_ms_p50: float = 0.0  # of those, the worker thread's own CPU time
    storage_cpu_ms_p99: float = 0.0
    trials_per_s_lowest_30s: float = 0.0
    workers: int = 0
    processes: int = 0
    minutes: float = 0.0
    trial_seconds: float = 0.0
    sampler: str = "RandomSampler"
    kills: int = 0
    killed_trials: int = 0
    waiting_left: int = 0
    reads: int = 0
    longest_read_s: float = 0.0
    reader_cpu_s: float = 0.0
    processes_cpu_s: float = 0.0  # the CPU time of the workers' processes and the reader
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    why: list[str] = field(default_factory=list)  # what the errors were

    def error(self, count: int, what: str) -> None:
        self.errors += count
        self.why.append(what)

    def figures(self) -> dict:
        figures = asdict(self)
        figures.pop("why")
        return figures


def load(args: argparse.Namespace, logs: Path) -> Load:
    import optuna
    from optuna.trial import TrialState

    from hpo.runtime.storage import open_storage
    from hpo.runtime.storage_url import StorageTarget
    from hpo.tuning.trial_loop import settle

    target = StorageTarget.parse(args.storage)
    env = bench_env(target.url)
    storage = open_storage(target)
    study_name = f"scale-{uuid.uuid4().hex[:6]}"
    optuna.create_study(study_name=study_name, storage=storage)
    processes = min(args.processes, args.workers)
    shares = [args.workers // processes + (i < args.workers % processes) for i in range(processes)]
    start = time.time()
    deadline = start + 60 * args.minutes
    measured_from = start + args.warmup

    def start_workers(index: int, generation: int) -> Process:
        worker_args = [
            "_workers",
            study_name,
            str(shares[index]),
            str(UNLIMITED),
            str(deadline),
            str(args.trial_seconds),
        ]
        return spawn(SCRIPT, worker_args, logs / f"w{index}-{generation}.log", env)

    procs = [start_workers(i, 0) for i in range(processes)]
    retired: list[Process] = []
    stop_file = logs / "reader.stop"
    reader = spawn_reader(study_name, stop_file, args.poll, logs / "reader.log", env)
    sampler = None if target.is_sqlite else ConnectionSampler(target.url)
    result = Load(
        workers=args.workers,
        processes=processes,
        minutes=args.minutes,
        trial_seconds=args.trial_seconds,
    )
    rng = random.Random(args.seed)
    killed_pids: set[int] = set()
    _progress(
        f"scale: {args.workers} workers in {processes} processes on {target.masked}, "
        f"{args.minutes} min, study {study_name}"
    )
    with sampler or _nothing():
        next_kill = start + args.kill_every if args.kill_every else float("inf")
        next_line = start + 30
        while time.time() < deadline:
            time.sleep(max(0.0, min(next_kill, next_line, deadline) - time.time()))
            now = time.time()
            if now >= next_kill and now < deadline:
                victim = rng.randrange(processes)
                pid = procs[victim].popen.pid
                if procs[victim].kill():
                    killed_pids.add(pid)
                    result.kills += 1
                    _progress(f"scale: killed process {pid} at {time.time():.3f}")
                retired.append(procs[victim])
                procs[victim] = start_workers(victim, result.kills)
                next_kill += args.kill_every
            if now >= next_line:
                done = _trials_run([*procs, *retired])
                _progress(f"scale: {now - start:.0f} s: {done} trials run, {result.kills} kills")
                next_line += 30
        for proc in procs:  # each stops after its current trial
            try:
                proc.popen.wait(timeout=args.trial_seconds + 300)
            except subprocess.TimeoutExpired:
                proc.kill()
                result.error(1, f"{proc.log.name} did not stop after the deadline")
        settle(optuna.load_study(study_name=study_name, storage=storage), storage, 0)
        stop_file.touch()
        reader.popen.wait(timeout=600)
    if sampler is not None:
        result.peak_connections, result.max_connections = sampler.peak, sampler.max_connections

    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    killed = requeues(trials)
    result.finished = counts[TrialState.COMPLETE]
    result.running_left = counts[TrialState.RUNNING]
    result.waiting_left = counts[TrialState.WAITING]
    result.killed_trials, result.lost = killed.killed, killed.lost
    # A trial failed as stale while its worker lived: heartbeats later than the grace period.
    stale_alive = [
        t.number
        for t in trials
        if t.state == TrialState.FAIL and t.user_attrs.get(WORKER_ATTR) not in (None, *killed_pids)
    ]
    if stale_alive:
        result.error(len(stale_alive), f"live workers' trials failed as stale: {stale_alive[:9]}")
    for proc in [*procs, *retired, reader]:
        if not proc.killed and proc.popen.returncode != 0:
            result.error(1, f"{proc.log.name} exited {proc.popen.returncode}")
    samples = []
    for proc in [*procs, *retired, reader]:
        text = proc.log.read_text()
        if found := text.count("Traceback") + len(LOCK_ERROR.findall(text)):
            result.error(found, f"{proc.log.name}: {found} tracebacks or lock errors")
        samples += _samples(text)
    result.reads, result.longest_read_s, result.reader_cpu_s = reader_figures(
        reader.log.read_text()
    )
    used = resource.getrusage(resource.RUSAGE_CHILDREN)  # every process it started, ended
    result.processes_cpu_s = round(used.ru_utime + used.ru_stime, 1)

    ends = sorted(t.datetime_complete.timestamp() for t in trials if t.state == TrialState.COMPLETE)
    window = max(1e-9, deadline - measured_from)
    result.trials_per_s = sum(measured_from <= e <= deadline for e in ends) / window
    result.trials_per_s_lowest_30s = _lowest_rate(ends, measured_from, deadline, 30.0)
    measured = [s for s in samples if measured_from <= s[0] <= deadline]
    result.storage_ms_p50, result.storage_ms_p99 = _percentiles_ms([s[2] for s in measured])
    result.storage_cpu_ms_p50, result.storage_cpu_ms_p99 = _percentiles_ms([s[3] for s in measured])
    result.load_average = tuple(round(x, 2) for x in os.getloadavg())
    if not args.keep:
        optuna.delete_study(study_name=study_name, storage=storage)
    storage.engine.dispose()
    return result


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # stdout: the results only


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _trials_run(processes: list[Process]) -> int:
    """Trials the processes have run so far, from their logs (the progress line costs the
    database nothing)."""
    return sum(p.log.read_text().count("\nsample ") for p in processes)


def _samples(text: str) -> list[tuple[float, int, float, float]]:
    """(epoch, trial number, wall seconds, CPU seconds) of every ``sample`` line."""
    found = re.findall(r"^sample (\S+) (\d+) (\S+) (\S+)$", text, flags=re.M)
    return [(float(a), int(b), float(c), float(d)) for a, b, c, d in found]


def _percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    if len(seconds) < 2:
        return (1000 * seconds[0], 1000 * seconds[0]) if seconds else (0.0, 0.0)
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return round(1000 * statistics.median(seconds), 2), round(1000 * cuts[98], 2)


def _lowest_rate(ends: list[float], start: float, stop: float, width: float) -> float:
    """The fewest trials completed per second in any ``width``-second window of the run."""
    if stop - start < width:
        return 0.0
    rates = []
    left = start
    while left + width <= stop:
        rates.append(sum(left <= e < left + width for e in ends) / width)
        left += width / 2
    return round(min(rates), 2)


# --- the growth -------------------------------------------------------------------------------


def growth(args: argparse.Namespace, logs: Path) -> dict:
    import optuna

    from hpo.runtime.storage import open_storage
    from hpo.runtime.storage_url import StorageTarget

    target = StorageTarget.parse(args.storage)
    storage = open_storage(target)
    study_name = f"growth-{uuid.uuid4().hex[:6]}"
    optuna.create_study(study_name=study_name, storage=storage)
    _progress(f"growth: {args.growth_workers} workers to {args.growth} trials on {target.masked}")
    worker_args = ["_workers", study_name, "1", str(args.growth), "0", "0"]
    env = bench_env(target.url)
    procs = [
        spawn(SCRIPT, worker_args, logs / f"g{i}.log", env) for i in range(args.growth_workers)
    ]
    start = time.time()
    while any(p.popen.poll() is None for p in procs):
        time.sleep(30)
        _progress(f"growth: {time.time() - start:.0f} s: {_trials_run(procs)} trials run")
    samples = [s for p in procs for s in _samples(p.log.read_text())]
    errors = sum(p.log.read_text().count("Traceback") + (p.popen.returncode != 0) for p in procs)
    points = {}
    for point in [p for p in args.points if p < args.growth] + [args.growth]:
        low, high = point - args.window // 2, point + args.window // 2
        if high > args.growth:
            low, high = args.growth - args.window, args.growth
        window = [s for s in samples if low <= s[1] < high]
        p50, p99 = _percentiles_ms([s[2] for s in window])
        cpu_p50, _ = _percentiles_ms([s[3] for s in window])
        points[str(point)] = {
            "storage_ms_p50": p50, "storage_ms_p99": p99, "storage_cpu_ms_p50": cpu_p50,
            "trials": len(window),
        }  # fmt: skip
    first, last = points[str(min(args.points))], points[str(args.growth)]
    result = {
        "growth": points,
        "ratio_last_to_first_p50": round(last["storage_ms_p50"] / first["storage_ms_p50"], 2),
        "ratio_last_to_first_cpu_p50": round(
            last["storage_cpu_ms_p50"] / first["storage_cpu_ms_p50"], 2
        ),
        "trials": len(samples) + args.growth_workers,
        "errors": errors,
        "seconds": round(time.time() - start, 1),
        "workers": args.growth_workers,
        "load_average": tuple(round(x, 2) for x in os.getloadavg()),
    }
    if not args.keep:
        optuna.delete_study(study_name=study_name, storage=storage)
    storage.engine.dispose()
    return result


# --- the command ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--storage",
        default=os.environ.get("HPO_STORAGE"),
        help="storage URL, through a pooler or not (default $HPO_STORAGE, which keeps the "
        "password off the command line)",
    )
    parser.add_argument("--workers", type=int, default=256, help="simulated workers (256)")
    parser.add_argument("--processes", type=int, default=8, help="processes they share (8)")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the load (5)")
    parser.add_argument("--trial-seconds", type=float, default=3.0, help="objective sleep (3)")
    parser.add_argument(
        "--kill-every",
        type=float,
        default=30.0,
        help="seconds between SIGKILLs of a worker process; 0: none (30)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=60.0,
        help="seconds left out of trials/s and storage times (60)",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=0.0,
        help="reader's poll, seconds; 0: optuna-dashboard's (2 s, 5 s from 100 trials, "
        "10 s from 500) (0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="which processes are killed (0)")
    parser.add_argument(
        "--growth",
        type=int,
        default=0,
        help="instead of the load: grow one study to this many trials",
    )
    parser.add_argument("--growth-workers", type=int, default=4, help="growth's workers (4)")
    parser.add_argument(
        "--points",
        type=int,
        nargs="+",
        default=[1000, 5000, 10000],
        help="growth: study sizes to report besides the last (1000 5000 10000)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=400,
        help="growth: trials around each point whose median is reported (400)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the study (deleted by default)")
    parser.add_argument(
        "--logs", type=Path, help="keep the processes' logs in this folder (default: removed)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print only the JSON line (progress goes to stderr)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.storage:
        parser.error("give --storage URL or set HPO_STORAGE")
    for name in ("workers", "processes", "growth_workers", "window"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.minutes <= 0:
        parser.error("--minutes must be more than 0")
    for name in ("trial_seconds", "kill_every", "warmup", "poll", "growth"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    with tempfile.TemporaryDirectory(prefix="hpo-scale-") as tmp:
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
        tmp = args.logs or tmp
        if args.growth:
            result = growth(args, Path(tmp))
            if not args.json:
                for point, figures in result["growth"].items():
                    print(
                        f"growth: at {int(point):,} trials: {figures['storage_ms_p50']} ms "
                        f"p50, {figures['storage_ms_p99']} ms p99 per trial, of which "
                        f"{figures['storage_cpu_ms_p50']} ms p50 the worker's CPU"
                    )
            print(json.dumps(result), flush=True)
            return 1 if result["errors"] else 0
        outcome = load(args, Path(tmp))
    if not args.json:
        for why in outcome.why:
            print(f"scale: error: {why}")
    print(json.dumps(outcome.figures()), flush=True)
    bad = outcome.lost or outcome.running_left or outcome.errors
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_workers":
        name, threads, n_trials, deadline, seconds = sys.argv[2:7]
        workers_main(name, int(threads), int(n_trials), float(deadline), float(seconds))
    else:
        sys.exit(main())
