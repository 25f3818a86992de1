"""Study-runner overhead: how much of a run is *not* training and evaluation.

Runs the real worker loop (``hpo.tuning.worker.run_worker``: storage, grid queue, TPE, objective,
checkpoint artifacts) for a handful of trials of a study on the real data, in a temporary
SQLite storage, and splits its wall time into

* **training + evaluation**: what every trial records -- ``train_seconds`` (the epochs,
  including the per-epoch validation pass that drives the pruner) plus ``eval_seconds`` (the
  final validation at every test sparsity);
* **everything else**: storage reads and writes, sampling, building models and batch sources,
  saving the checkpoint artifact, loading the dataset from the decoded cache.

The target is an overhead share below 5%. The dataset cache is warmed first (decoding the
archives is a one-time cost per machine, reported separately); the final test-split
evaluation of the best trial (once per study, not per trial) is also reported separately.

    HPO_DATA_DIR=/path/to/data .venv/bin/python bench/hpo_overhead.py
    .venv/bin/python bench/hpo_overhead.py --data-dir DIR --trials 6 --train-size 2048 --epochs 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from data import DATA_DIR_ENV
from hpo.runtime.storage import open_storage
from hpo.tuning import keys
from hpo.tuning.finalize import finalize_study
from hpo.tuning.settings import RunSettings
from hpo.tuning.trial_data import load_trial_data
from hpo.tuning.worker import run_worker
from studies import get_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="sparse_mnist", help="registered study")
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV),
                        help=f"dataset root (default: ${DATA_DIR_ENV})")  # fmt: skip
    parser.add_argument("--trials", type=int, default=6, help="trials to run")
    parser.add_argument("--train-size", type=int, default=2048, help="training examples")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    parser.add_argument("--device", default="cpu", help="torch device")
    args = parser.parse_args(argv)
    if not args.data_dir:
        parser.error(f"pass --data-dir or set {DATA_DIR_ENV} to the folder holding MNIST/raw")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="hpo-overhead-") as tmp:
        settings = RunSettings(
            study=get_study(args.study),
            n_trials=args.trials,
            storage_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
            device=args.device,
            data_dir=args.data_dir,
            epochs=args.epochs,
            train_size=args.train_size,
            pruner="none",  # every trial trains its full budget: the overhead share is fair
            show_progress=False,
        )
        started = time.perf_counter()
        load_trial_data(settings.definition(), settings.data_dir, False)  # warm the data cache
        warm_seconds = time.perf_counter() - started

        started = time.perf_counter()
        run_worker(settings)
        wall = time.perf_counter() - started

        started = time.perf_counter()
        finalize_study(settings)
        final_seconds = time.perf_counter() - started

        study = optuna.load_study(
            study_name=settings.optuna_study_name, storage=open_storage(settings.storage_url)
        )
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        train = sum(t.user_attrs[keys.TRAIN_SECONDS] for t in trials)
        evaluation = sum(t.user_attrs[keys.EVAL_SECONDS] for t in trials)

    n = len(trials)
    inside = train + evaluation
    per_trial = wall / n
    print(
        f"\n{args.study}: {n} trials, --train-size {args.train_size} --epochs {args.epochs}, "
        f"device {args.device}, {torch.get_num_threads()} torch threads"
    )
    print(f"dataset load (cache warm-up, once per machine) {warm_seconds:8.1f} s")
    print(f"worker loop wall time                          {wall:8.1f} s")
    print(f"  training + per-epoch validation              {train:8.1f} s")
    print(f"  final validation at every test sparsity      {evaluation:8.1f} s")
    print(f"  everything else (storage, sampling, data, artifacts) {wall - inside:6.1f} s")
    print(f"seconds per trial                              {per_trial:8.2f}")
    print(f"overhead share (outside training+evaluation)   {100 * (wall - inside) / wall:7.2f} %")
    print(f"trials per hour                                {3600 / per_trial:8.1f}")
    print(f"best-trial test evaluation (once per study)    {final_seconds:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
