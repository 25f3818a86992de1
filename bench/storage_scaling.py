"""Storage throughput with 1-8 worker processes, and its cost relative to a real trial.

For SQLite (one file, WAL + BEGIN IMMEDIATE) and PostgreSQL (bounded pool per worker), K spawned
processes run a trivial objective (no training) on one study through ``hpo.runtime.storage``
with heartbeats on, exactly as workers do. Printed per backend and K: trials per second, and the
storage time one trial costs its worker (``K * wall / trials``, ms), which with a trivial objective
is all storage and Optuna bookkeeping. That cost is then compared with one epoch of training the
grid's middle sparse CNN (depth 6, width 16, batch 64) on MNIST-sized data (55,000 28x28
images, timed on a subset and scaled linearly; validation not included, so the share is an upper
bound), the shortest trial a real study runs; the target is < 1%.

    .venv/bin/python bench/storage_scaling.py                     # starts PostgreSQL itself
    HPO_TEST_POSTGRES_URL=postgresql+psycopg://... .venv/bin/python bench/storage_scaling.py

The random sampler is used so that the figures measure storage, not TPE's model fitting.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
from loopback_postgres import loopback_postgres  # a sibling: bench/ is on sys.path

from hpo.runtime.storage import StorageOptions, open_storage
from hpo.runtime.storage_url import mask_url

MNIST_TRAIN_IMAGES = 55_000  # MNIST's 60,000 minus the validation split


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    y = trial.suggest_int("y", 0, 10)
    trial.report(x * x, step=0)  # one intermediate value, as a one-epoch trial reports
    return x * x + y


def _worker(url: str, study_name: str, n_trials: int, seed: int, barrier, results) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, StorageOptions())  # production defaults, heartbeats on
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler(seed)
    )
    barrier.wait()
    start = time.perf_counter()
    study.optimize(_objective, n_trials=n_trials)
    results.put(time.perf_counter() - start)


def measure(url: str, n_workers: int, total_trials: int) -> tuple[float, float]:
    """Run ``total_trials`` split over ``n_workers`` processes; return (trials/s, ms per trial)."""
    study_name = f"bench-{uuid.uuid4().hex[:8]}"
    storage = open_storage(url)
    optuna.create_study(study_name=study_name, storage=storage)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(n_workers + 1)
    results = context.Queue()
    per_worker = total_trials // n_workers
    processes = [
        context.Process(target=_worker, args=(url, study_name, per_worker, seed, barrier, results))
        for seed in range(n_workers)
    ]
    for process in processes:
        process.start()
    barrier.wait()  # every worker has opened the storage: time only the trials
    start = time.perf_counter()
    for process in processes:
        process.join()
    wall = time.perf_counter() - start
    if any(p.exitcode != 0 for p in processes):
        raise SystemExit(f"a benchmark worker failed on {mask_url(url)}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    finished = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    if finished != per_worker * n_workers:
        raise SystemExit(f"expected {per_worker * n_workers} trials, found {finished}")
    optuna.delete_study(study_name=study_name, storage=storage)
    storage.engine.dispose()
    return finished / wall, 1000.0 * n_workers * wall / finished


def one_epoch_seconds(subset: int, threads: int) -> tuple[float, str]:
    """Seconds for one training epoch on MNIST-sized data (CPU, ``threads`` threads)."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    try:
        from hpo.training import train_step
        from models import CNNConfig, ModelFamily, build_model

        # The grid's middle architecture: depth 6, ReLU, width 16, batch 64.
        config = CNNConfig(in_channels=1, num_classes=10, depth=6, activation="relu", width=16)
        model = build_model(ModelFamily.SPARSE, config)
        what = "sparse CNN depth 6 width 16, batch 64, training only"
    except ImportError as e:
        raise SystemExit(
            "the models package (issue 2) is needed for the trial-time reference; "
            "or pass --epoch-seconds"
        ) from e
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(subset, 1, 28, 28)
    masks = (torch.rand(subset, 1, 28, 28) > 0.5).float()
    labels = torch.randint(0, 10, (subset,))
    batch = 64
    model.train()
    start = time.perf_counter()
    for i in range(0, subset, batch):
        x, mask = images[i : i + batch] * masks[i : i + batch], masks[i : i + batch]
        train_step(model, optimizer, x, mask, labels[i : i + batch])
    elapsed = time.perf_counter() - start
    return elapsed * MNIST_TRAIN_IMAGES / subset, what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--trials", type=int, default=240, help="trials per measurement (240)")
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument(
        "--epoch-subset", type=int, default=2048, help="images timed for the epoch (2048)"
    )
    parser.add_argument(
        "--epoch-seconds",
        type=float,
        default=None,
        help="use this one-epoch trial time instead of measuring it",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cores} CPU cores available; optuna {optuna.__version__}")
    rows: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp, loopback_postgres() as postgres_url:
        for backend in args.backends:
            if backend == "postgresql":
                url = postgres_url()
            for n_workers in args.workers:
                if backend == "sqlite":
                    url = f"sqlite:///{Path(tmp) / f'bench-{n_workers}.db'}"
                rate, ms = measure(url, n_workers, args.trials)
                rows.append((backend, n_workers, rate, ms))
                print(
                    f"{backend:<10} workers={n_workers}  {rate:7.1f} trials/s  "
                    f"{ms:7.1f} ms storage per trial",
                    flush=True,
                )

    if args.epoch_seconds is not None:
        epoch, what = args.epoch_seconds, "given with --epoch-seconds"
    else:
        epoch, what = one_epoch_seconds(args.epoch_subset, threads=cores or 1)
    print(f"\none-epoch MNIST trial: {epoch:.1f} s ({what})")
    for backend, n_workers, _, ms in rows:
        share = 100.0 * (ms / 1000.0) / epoch
        verdict = "ok" if share < 1.0 else "ABOVE TARGET"
        print(f"{backend:<10} workers={n_workers}  overhead {share:.3f}% of the trial  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
