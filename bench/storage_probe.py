"""Do readers block writers on SQLite? Our storage and plain ``RDBStorage``, side by side.

Two probes, each run once with ``hpo.runtime.storage.open_storage`` ("ours") and once with a
plain ``optuna.storages.RDBStorage`` ("plain") on the same WAL file, every party in its own
process, as workers and the dashboard are:

1. **A held read.** One process opens a read transaction (one ``SELECT`` on the trials table)
   and keeps it open for ``--hold`` seconds; meanwhile another process writes one trial user
   attribute. Printed: how long that write took.
2. **A dashboard over a big study.** A study of ``--trials`` finished trials (5 parameters,
   4 user attributes, 10 intermediate values each, like a real one) and one RUNNING trial.
   A writer process sets one user attribute of the running trial ``--writes`` times, 10 ms
   apart, first alone, then while a reader process loops over ``get_all_trials`` as
   optuna-dashboard does. Printed: the writer's p50 / p99 / max latency in both phases, and
   how many full reads the reader made.

    .venv/bin/python bench/storage_probe.py                  # --hold 2 --trials 1500 --writes 300

Targets (issue 19): probe 1 <= 0.1 s with our storage; probe 2 p99 with the reader <= 100 ms
and <= 5x the p99 alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hpo.runtime.storage import StorageOptions, open_storage

KINDS = ("ours", "plain")


def _open(kind: str, url: str, *, reader: bool = False) -> optuna.storages.RDBStorage:
    """Ours: a worker's storage, or a reader's (as the dashboard and the report open it)."""
    if kind == "ours":
        options = StorageOptions(heartbeat_interval=None, grace_period=None)
        return open_storage(url, options, worker=not reader)
    # What Optuna's own tests use for SQLite: only a longer busy timeout.
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})


def _running_trial(storage: optuna.storages.RDBStorage) -> int:
    (study,) = storage.get_all_studies()
    study_id = storage.get_study_id_from_name(study.study_name)
    (trial,) = storage.get_all_trials(study_id, states=(TrialState.RUNNING,))
    return storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)


# --- probe 1: a held read ------------------------------------------------------------------


def _hold_read(kind: str, url: str, hold: float, holding: Any) -> None:
    storage = _open(kind, url, reader=True)
    with storage.engine.connect() as connection:
        connection.exec_driver_sql("SELECT COUNT(*) FROM trials").all()  # the read snapshot
        holding.set()
        time.sleep(hold)
        connection.rollback()
    storage.engine.dispose()


def _write_once(kind: str, url: str, holding: Any, results: Any) -> None:
    storage = _open(kind, url)
    trial_id = _running_trial(storage)
    holding.wait()
    start = time.perf_counter()
    storage.set_trial_user_attr(trial_id, "probe", time.time())
    results.put(time.perf_counter() - start)
    storage.engine.dispose()


def probe_held_read(kind: str, url: str, hold: float) -> float:
    """Seconds one write waited while another process held a read for ``hold`` seconds."""
    context = multiprocessing.get_context("spawn")
    holding, results = context.Event(), context.Queue()
    reader = context.Process(target=_hold_read, args=(kind, url, hold, holding))
    writer = context.Process(target=_write_once, args=(kind, url, holding, results))
    reader.start()
    writer.start()
    waited = results.get(timeout=600)
    reader.join()
    writer.join()
    return waited


# --- probe 2: a dashboard reading a big study ----------------------------------------------


def populate(url: str, n_trials: int) -> None:
    """A study of ``n_trials`` finished trials shaped like a real one, plus one RUNNING trial."""
    storage = open_storage(url, StorageOptions(heartbeat_interval=None, grace_period=None))
    study = optuna.create_study(study_name="probe", storage=storage, direction="maximize")
    distributions = {
        "depth": IntDistribution(2, 10),
        "width": IntDistribution(8, 64, log=True),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "activation": CategoricalDistribution(("relu", "gelu")),
    }
    for number in range(n_trials):
        frac = (number % 97) / 97
        trial = optuna.trial.create_trial(
            params={
                "depth": 2 + number % 9,
                "width": 8 + number % 57,
                "lr": 1e-4 + frac * 0.09,
                "weight_decay": 1e-6 + frac * 0.009,
                "activation": ("relu", "gelu")[number % 2],
            },
            distributions=distributions,
            value=frac,
            intermediate_values={epoch: frac * epoch / 10 for epoch in range(1, 11)},
            user_attrs={"phase": "tpe", "worker": f"host:{number % 8}", "epochs": 10, "s": 12.5},
        )
        study.add_trial(trial)
    study.ask()  # the running trial the writer writes to
    storage.engine.dispose()


def _writer(kind: str, url: str, n_writes: int, go: Any, results: Any) -> None:
    storage = _open(kind, url)
    trial_id = _running_trial(storage)
    go.wait()
    latencies = []
    for i in range(n_writes):
        start = time.perf_counter()
        storage.set_trial_user_attr(trial_id, f"k{i % 10}", i)
        latencies.append(time.perf_counter() - start)
        time.sleep(0.01)
    results.put(latencies)
    storage.engine.dispose()


def _reader(
    kind: str, url: str, first_read: Any, stop: Any, results: Any, worker: bool = False
) -> None:
    storage = _open(kind, url, reader=not worker)
    (study,) = storage.get_all_studies()
    study_id = storage.get_study_id_from_name(study.study_name)
    reads, seconds = 0, 0.0
    while not stop.is_set():
        start = time.perf_counter()
        storage.get_all_trials(study_id, deepcopy=False)
        seconds += time.perf_counter() - start
        reads += 1
        first_read.set()
    results.put((reads, seconds))
    storage.engine.dispose()


def probe_dashboard(
    kind: str, url: str, n_writes: int, with_reader: bool, worker_reads: bool = False
) -> dict[str, float]:
    """The writer's latency (ms) alone or with a reader looping over the whole study (as the
    dashboard opens it, or, ``worker_reads``, through a worker's storage: as another worker's
    sampler reads every trial)."""
    context = multiprocessing.get_context("spawn")
    go, stop, results, reads = context.Event(), context.Event(), context.Queue(), context.Queue()
    writer = context.Process(target=_writer, args=(kind, url, n_writes, go, results))
    writer.start()
    reader = None
    if with_reader:
        args = (kind, url, go, stop, reads, worker_reads)
        reader = context.Process(target=_reader, args=args)
        reader.start()
    else:
        go.set()
    latencies = sorted(1000 * s for s in results.get(timeout=1800))
    stop.set()
    writer.join()
    figures = {
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "max": latencies[-1],
    }
    if reader is not None:
        n_reads, seconds = reads.get(timeout=600)
        reader.join()
        figures["reads"] = n_reads
        figures["read_s"] = seconds / max(n_reads, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=2.0, help="probe 1: seconds (default 2)")
    parser.add_argument("--trials", type=int, default=1500, help="probe 2: study size (1500)")
    parser.add_argument("--writes", type=int, default=300, help="probe 2: writes per phase (300)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "small.db", Path(tmp) / "big.db"
        populate(f"sqlite:///{small}", 1)
        print(f"probe 1: one write while another process holds a {args.hold:g} s read")
        for kind in KINDS:
            waited = probe_held_read(kind, f"sqlite:///{small}", args.hold)
            print(f"  {kind:5s}: the write took {waited:.3f} s")
        start = time.perf_counter()
        populate(f"sqlite:///{big}", args.trials)
        print(
            f"probe 2: {args.writes} single-attribute writes on a study of {args.trials} trials "
            f"(built in {time.perf_counter() - start:.0f} s), alone and with a reader looping "
            "over get_all_trials"
        )
        for kind in KINDS:
            alone = probe_dashboard(kind, f"sqlite:///{big}", args.writes, with_reader=False)
            shared = probe_dashboard(kind, f"sqlite:///{big}", args.writes, with_reader=True)
            print(
                f"  {kind:5s}: alone p50 {alone['p50']:.1f} ms, p99 {alone['p99']:.1f} ms, "
                f"max {alone['max']:.1f} ms | with reader p50 {shared['p50']:.1f} ms, "
                f"p99 {shared['p99']:.1f} ms, max {shared['max']:.1f} ms "
                f"({shared['p99'] / alone['p99']:.1f}x alone's p99; "
                f"{shared['reads']:.0f} reads of {shared['read_s']:.2f} s each)"
            )
        worker = probe_dashboard("ours", f"sqlite:///{big}", args.writes, True, worker_reads=True)
        print(
            f"  the same, the reader a worker's storage (its reads take the write lock): p50 "
            f"{worker['p50']:.1f} ms, p99 {worker['p99']:.1f} ms, max {worker['max']:.1f} ms "
            f"({worker['reads']:.0f} reads of {worker['read_s']:.2f} s each)"
        )


if __name__ == "__main__":
    main()
