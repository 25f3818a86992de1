"""The time of one trial, here and at an earlier commit, side by side in one run.

Runs the same trial -- ``python -m hpo.run`` of ``sparse_mnist`` (its first grid point: depth
3, ReLU, batch 64, lr 1e-3), ``--epochs`` x ``--train-size`` images, pruner off, seed 0 -- with
the working tree's code and with the code of ``--against REF`` (exported with ``git archive``
into a temporary folder), alternating which goes first in each of ``--rounds`` rounds, so
that load on the shared machine reaches both alike. It prints, per side, the trial's own wall
time (from its storage), the whole command's, and the command's peak resident memory, then
the median ratio. ``--work-args`` adds options for the working tree only (``--val-size all``
scores on as many validation images as the older code did, which isolates the speed of the
code from the change of the default).

``--memory-trials N`` instead runs N trials in one worker of the working tree and prints the
worker's resident memory after each (no growth: nothing is kept from one trial to the next).
``--gpu-hour`` (on a GPU) runs trials of ``sparse_mnist`` at its own budget and prints trials
per GPU-hour. ``--workers-sweep`` runs the same trials with 1, 2, 4 and 8 workers (1 and 2 on
a CPU) and prints trials per hour for each: what ``--workers auto`` should choose.

    .venv/bin/python bench/trial_throughput.py --against a94bd32 --data-dir ../shared/data
    .venv/bin/python bench/trial_throughput.py --against a94bd32 --work-args "--val-size all"
    .venv/bin/python bench/trial_throughput.py --memory-trials 20 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from data import DATA_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent


def _export(ref: str, into: Path) -> Path:
    """The tree of commit ``ref``, from ``git archive`` (the repository is not touched)."""
    tree = into / f"ref-{ref}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _run(tree: Path, storage: str, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``hpo.run`` from ``tree``; returns (command wall seconds, peak RSS MiB)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "hpo.run", "--storage", storage, *args],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"hpo.run in {tree} failed:\n{process.stderr.read()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def _trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


def _seconds(trial: optuna.trial.FrozenTrial) -> float:
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def compare(args: argparse.Namespace, env: dict[str, str]) -> None:
    common = ["--study", "sparse_mnist", "--n-trials", "1", "--epochs", str(args.epochs),
              "--train-size", str(args.train_size), "--pruner", "none", "--seed", "0",
              "--no-progress", "--device", "cpu"]  # fmt: skip
    if args.data_dir:
        common += ["--data-dir", args.data_dir]
    extra = shlex.split(args.work_args)
    with tempfile.TemporaryDirectory(prefix="trial-throughput-") as tmp:
        sides = {"work": (ROOT, extra), args.against: (_export(args.against, Path(tmp)), [])}
        results: dict[str, list[tuple[float, float, float]]] = {side: [] for side in sides}
        for i in range(args.rounds):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for side in order:
                tree, own = sides[side]
                storage = f"sqlite:///{Path(tmp) / f'{side}-{i}.db'}"
                wall, rss = _run(tree, storage, [*common, *own], env)
                (trial,) = _trials(storage, "sparse_mnist")
                results[side].append((_seconds(trial), wall, rss))
                print(f"round {i + 1} {side:>8}: trial {_seconds(trial):6.1f} s, command "
                      f"{wall:6.1f} s, peak RSS {rss:6.0f} MiB", flush=True)  # fmt: skip
    work, ref = results["work"], results[args.against]
    ratios = [r[0] / w[0] for w, r in zip(work, ref, strict=True)]
    given = " ".join(extra) or "(defaults)"
    print(
        f"\ntrial of sparse_mnist, {args.epochs} epoch(s) x {args.train_size} images, pruner "
        f"off, {env['OMP_NUM_THREADS']} threads; working tree {given}"
    )
    for side, rows in results.items():
        print(f"{side:>8}: trial median {statistics.median(r[0] for r in rows):6.1f} s, command "
              f"{statistics.median(r[1] for r in rows):6.1f} s, peak RSS "
              f"{max(r[2] for r in rows):6.0f} MiB")  # fmt: skip
    print(
        f"speed-up of the trial (ref / work, median over {len(ratios)} rounds): "
        f"{statistics.median(ratios):.2f}x  [{min(ratios):.2f} - {max(ratios):.2f}]"
    )


def memory(args: argparse.Namespace, env: dict[str, str]) -> None:
    from hpo.tuning import keys

    with tempfile.TemporaryDirectory(prefix="trial-memory-") as tmp:
        storage = f"sqlite:///{Path(tmp) / 'memory.db'}"
        run = ["--study", "sparse_mnist", "--n-trials", str(args.memory_trials), "--epochs", "1",
               "--train-size", str(args.train_size), "--pruner", "none", "--seed", "0",
               "--no-progress", "--device", "cpu"]  # fmt: skip
        if args.data_dir:
            run += ["--data-dir", args.data_dir]
        _run(ROOT, storage, run, env)
        trials = sorted(_trials(storage, "sparse_mnist"), key=lambda t: t.number)
    rss = [t.user_attrs[keys.MEMORY]["rss_mb"] for t in trials]
    for t, mb in zip(trials, rss, strict=True):
        print(f"trial {t.number:2d} depth {t.params['depth']}: resident {mb:7.1f} MiB")
    # The first trials reach the working size of the deepest network yet; compare after them.
    later = rss[len(rss) // 2 :]
    print(f"\n{len(rss)} trials in one worker: resident memory {rss[0]:.0f} MiB after the first, "
          f"{rss[-1]:.0f} MiB after the last; over the second half it moved by "
          f"{later[-1] - later[0]:+.1f} MiB (max {max(later):.0f})")  # fmt: skip


def gpu_hour(args: argparse.Namespace, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="trial-gpu-") as tmp:
        storage = f"sqlite:///{Path(tmp) / 'gpu.db'}"
        run = ["--study", "sparse_mnist", "--n-trials", str(args.gpu_trials), "--pruner", "none",
               "--no-progress", "--device", "cuda"]  # fmt: skip
        if args.data_dir:
            run += ["--data-dir", args.data_dir]
        wall, _ = _run(ROOT, storage, run, env)
        seconds = [_seconds(t) for t in _trials(storage, "sparse_mnist")]
    print(f"sparse_mnist at its own budget on one GPU: {len(seconds)} trials, median "
          f"{statistics.median(seconds):.1f} s per trial, {3600 / statistics.mean(seconds):.0f} "
          f"trials per GPU-hour (one worker; {wall:.0f} s in all)")  # fmt: skip


def workers_sweep(args: argparse.Namespace, env: dict[str, str]) -> None:
    import torch

    cuda = torch.cuda.is_available()
    counts = (1, 2, 4, 8) if cuda else (1, 2)
    trials = max(args.sweep_trials, max(counts))
    rates = {}
    with tempfile.TemporaryDirectory(prefix="trial-sweep-") as tmp:
        for k in counts:
            storage = f"sqlite:///{Path(tmp) / f'workers-{k}.db'}"
            run = ["--study", "sparse_mnist", "--n-trials", str(trials), "--pruner", "none",
                   "--no-progress", "--workers", str(k), "--seed", "0",
                   "--device", "cuda" if cuda else "cpu"]  # fmt: skip
            if not cuda:
                run += ["--epochs", str(args.epochs), "--train-size", str(args.train_size)]
            if args.data_dir:
                run += ["--data-dir", args.data_dir]
            wall, rss = _run(ROOT, storage, run, env)
            rates[k] = 3600 * len(_trials(storage, "sparse_mnist")) / wall
            print(f"{k} worker(s): {trials} trials in {wall:6.1f} s = {rates[k]:6.1f} trials/hour, "
                  f"peak RSS {rss:.0f} MiB", flush=True)  # fmt: skip
    best = max(rates, key=rates.get)
    print(f"most trials per hour with {best} worker(s) on {'one GPU' if cuda else 'this CPU'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="a94bd32", help="git ref to compare with")
    parser.add_argument("--work-args", default="", help="extra hpo.run options, working tree only")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV))
    parser.add_argument("--memory-trials", type=int, default=0)
    parser.add_argument("--gpu-hour", action="store_true")
    parser.add_argument("--gpu-trials", type=int, default=8)
    parser.add_argument("--workers-sweep", action="store_true")
    parser.add_argument("--sweep-trials", type=int, default=8)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    env.pop("HPO_STORAGE", None)
    if args.memory_trials:
        memory(args, env)
    elif args.gpu_hour:
        gpu_hour(args, env)
    elif args.workers_sweep:
        workers_sweep(args, env)
    else:
        compare(args, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
