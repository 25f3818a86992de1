"""``python -m hpo.experiments NAME [--storage URL] [--out DIR]``: run a fixed-budget comparison
as an Optuna study, then write ``<name>_runs.csv``, ``<name>.md`` and figures; re-running
trains only what is missing. Exit status: 0 done, 2 bad input (one line), 130 interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from data import DATA_DIR_ENV, DataError
from studies import UnknownStudyError
from studies.experiments import EXPERIMENTS, ExperimentDefinition, get_experiment

from ..errors import EXIT_OK, EXIT_USAGE, UsageError, print_usage_error
from ..runtime.faults import NoSpaceError, faults_named, print_no_space
from ..runtime.interrupts import Stopped
from ..runtime.storage_url import STORAGE_DEFAULT_HELP, StorageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpo.experiments",
        description="Run a fixed-budget sparse-vs-dense comparison experiment (resumable).",
    )
    add = parser.add_argument
    add("name", nargs="?", help=f"experiment: {', '.join(EXPERIMENTS)}")
    add("--list", action="store_true", help="list the experiments and exit")
    add("--storage", metavar="URL", help=f"study storage (default: {STORAGE_DEFAULT_HELP})")
    add("--out", type=Path, default=Path("docs/results"), help="CSV, tables and figures "
        "(default: %(default)s)")  # fmt: skip
    add("--data-dir", default=None, help=f"data root (default: ${DATA_DIR_ENV}, else the cache)")
    add("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add("--download", action="store_true", help="let torchvision download missing data")
    add("--summarize-only", action="store_true", help="rewrite tables/figures from the CSV")
    add("--no-png", action="store_true", help="skip static PNGs even if Kaleido is installed")
    return parser


def main(
    argv: Sequence[str] | None = None,
    lookup: Callable[[str], ExperimentDefinition] = get_experiment,
) -> int:
    """Command-line entry point; returns the exit status (``lookup``: where NAME is found)."""
    args = build_parser().parse_args(argv)
    if args.list or args.name is None:
        for name in EXPERIMENTS:
            print(f"{name:22s} {get_experiment(name).description}")
        return EXIT_OK if args.list else EXIT_USAGE
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%X")  # if not yet set up
    logging.getLogger("hpo").setLevel(logging.INFO)  # a line per run, not Kaleido's chatter
    from .rows import read_rows, write_rows
    from .summary import summarize

    try:
        definition = lookup(args.name)
        csv_path = args.out / f"{definition.name}_runs.csv"
        rows: list[dict[str, Any]] = list(read_rows(csv_path))
        if args.summarize_only and not rows:
            raise UsageError(f"--summarize-only: no runs in {csv_path}; run the experiment first")
        if not args.summarize_only:
            rows = _run(definition, csv_path, args)
            write_rows(csv_path, rows)
        summarize(definition, rows, args.out, png=not args.no_png)
    except NoSpaceError as e:
        return print_no_space(e, resumes=not args.summarize_only)
    except (UnknownStudyError, UsageError, DataError, StorageError) as e:
        return print_usage_error(e)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (hpo.runtime.interrupts)
        stopped = e if isinstance(e, Stopped) else Stopped(signal.SIGINT)
        print(f"{stopped.reason}: run the same command again to resume", file=sys.stderr)
        return stopped.exit_status
    return EXIT_OK


def _run(definition: ExperimentDefinition, csv_path: Path, args: Any) -> list[dict[str, Any]]:
    import torch

    from ..runtime.device import resolve_device
    from ..runtime.storage_url import StorageTarget, resolve_storage_url
    from .study import run_experiment

    target = StorageTarget.parse(resolve_storage_url(args.storage))
    device = torch.device(resolve_device(args.device))
    args.out.mkdir(parents=True, exist_ok=True)  # before hours of training, not after
    with faults_named(target.masked):
        return run_experiment(definition, target, csv_path, device, args.data_dir, args.download)
