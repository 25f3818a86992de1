"""``python -m hpo.export --study NAME [--trial N] --out best.pt``: a trial's model as a file.

The trial's checkpoint with where it came from added (``source``: study, trial, value,
storage), so ``python -m hpo.evaluate best.pt`` needs nothing else. The default trial is the
one whose test figures the run stored, else the current best. Exit status: 0, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import EXIT_OK, CheckpointError, UsageError, print_usage_error
from ..runtime.faults import NoSpaceError, faults_named, print_no_space
from ..runtime.storage_url import (
    STORAGE_DEFAULT_HELP,
    StorageError,
    StorageTarget,
    resolve_storage_url,
)

__all__ = ["build_parser", "export_checkpoint", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpo.export",
        description="Write a trial's saved model (default: the best trial's) to a named file.",
    )
    parser.add_argument("--study", required=True, help="the study (its name in the storage)")
    parser.add_argument(
        "--trial", type=int, default=None, help="trial number (default: the best trial)"
    )
    parser.add_argument("--out", required=True, type=Path, help="file to write, e.g. best.pt")
    parser.add_argument(
        "--storage", metavar="URL", help=f"study storage (default: {STORAGE_DEFAULT_HELP})"
    )
    return parser


def export_checkpoint(target: StorageTarget, study_name: str, trial: int | None, out: Path) -> str:
    """Write the checkpoint of ``trial`` (``None``: the best) to ``out``; returns a summary.

    Raises:
        StorageError, CheckpointError, UsageError: No such storage, study, model or folder.
    """
    import dataclasses

    from ..checkpoints.format import write_checkpoint
    from ..runtime.storage import close_storage, load_existing_study, open_existing_storage
    from .artifacts import open_artifact_store, trial_checkpoint

    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    storage = open_existing_storage(target)
    try:
        study = load_existing_study(storage, study_name, target.masked)
        checkpoint = trial_checkpoint(study, trial, open_artifact_store(target))
        number = checkpoint.config.trial_number
        value = next(t.value for t in study.get_trials(deepcopy=False) if t.number == number)
    finally:
        close_storage(storage)
    source = {"study": study.study_name, "trial": number, "value": value, "storage": target.masked}
    # An experiment's run keeps its own source (experiment, run, seed) beside the study's.
    config = dataclasses.replace(
        checkpoint.config, source={**(checkpoint.config.source or {}), **source}
    )
    write_checkpoint(out, checkpoint.state_dict, config)
    return f"trial {number} of study {study.study_name} (objective {value:.4f})"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (bad input: one line on stderr, status 2)."""
    args = build_parser().parse_args(argv)
    try:
        target = StorageTarget.parse(resolve_storage_url(args.storage))
        with faults_named(target.masked):
            what = export_checkpoint(target, args.study, args.trial, args.out)
    except NoSpaceError as e:
        return print_no_space(e, prog="hpo.export")
    except (StorageError, CheckpointError, UsageError) as e:
        return print_usage_error(e, prog="hpo.export")
    print(f"wrote {args.out}: {what}; score it with python -m hpo.evaluate {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
