"""``python -m hpo.experiments NAME``: run a fixed-budget sparse-vs-dense comparison.

    python -m hpo.experiments --list
    python -m hpo.experiments mnist_sparsity --data-dir DIR --out docs/results

Resumable: re-running skips the runs already in ``<out>/<name>_runs.csv``, and a second
process started with the same command shares the remaining runs with the first. Writes
``<name>.md`` and the PNG figures into ``--out`` once the runs are done.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from data import DATA_DIR_ENV, DataError
from studies import UnknownStudyError
from studies.experiments import EXPERIMENTS, get_experiment

from ..errors import EXIT_OK, EXIT_USAGE, UsageError, print_usage_error
from ..runtime.device import resolve_device
from .runner import run_experiment
from .summary import summarize

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpo.experiments",
        description="Run a fixed-budget sparse-vs-dense comparison experiment (resumable).",
    )
    parser.add_argument("name", nargs="?", help=f"experiment: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument(
        "--data-dir", default=None, help=f"data root (default: ${DATA_DIR_ENV}, else the cache)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/results"),
        help="output folder (default: %(default)s)",
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--download", action="store_true", help="let torchvision download missing data"
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        metavar="DIR",
        help="also save every trained network as DIR/<experiment>/<run>.pt, a checkpoint "
        "that python -m hpo.evaluate scores (default: not saved)",
    )
    parser.add_argument(
        "--summarize-only", action="store_true", help="rewrite tables/figures from the CSV"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.list or args.name is None:
        for name in EXPERIMENTS:
            print(f"{name:22s} {get_experiment(name).description}")
        return EXIT_OK if args.list else EXIT_USAGE
    try:
        definition = get_experiment(args.name)
        if args.summarize_only:
            summarize(definition, args.out / f"{definition.name}_runs.csv", args.out)
            return 0
        device = resolve_device(args.device)
        csv_path = run_experiment(
            definition,
            data_dir=args.data_dir,
            out_dir=args.out,
            device=device,
            download=args.download,
            models_dir=args.models,
        )
    except (UnknownStudyError, UsageError, DataError) as e:
        return print_usage_error(e)
    summarize(definition, csv_path, args.out)
    return EXIT_OK
