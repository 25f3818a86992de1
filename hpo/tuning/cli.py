"""``python -m hpo.run --study NAME --n-trials N``: tune one registered study.

The entry point decides the device and the seed, resolves the study definition from the
registry once, validates every input (bad input is one line on stderr and exit status 2), then
runs the worker loop (:mod:`hpo.tuning.worker`) here or in K spawned processes and, once the
trials are done, scores the best trial on the test split (:mod:`hpo.tuning.finalize`).

``--retrain-best STUDY`` turns the search into a final training run: every trial trains the
best configuration of an earlier study (usually with a larger ``--epochs`` / ``--train-size``),
each with its own seed, and the best of them is scored on the test split (see
:mod:`hpo.tuning.study_setup`).

Exit status: 0 done, 2 bad input, 130 interrupted (Ctrl-C; the running trial is recorded as
FAIL with reason "interrupted" and the same command resumes the study).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence

from data import DATA_DIR_ENV, DataError
from studies import DefinitionError, StudyRegistry, UnknownStudyError, default_registry

from ..errors import (
    EXIT_INTERRUPTED,
    CheckpointError,
    InvalidSettingError,
    UsageError,
    print_usage_error,
)
from ..runtime.execution import PRECISIONS
from ..runtime.processes import available_cpu_count, plan_workers, run_workers
from ..runtime.storage_url import (
    STORAGE_DEFAULT_HELP,
    StorageError,
    StorageTarget,
    resolve_storage_url,
)
from .settings import ALL, DEFAULT_PRUNER, DRY_RUN_HELP, PRUNERS, RunSettings, fresh_seed

# torch and everything that trains are imported only once the arguments are parsed, so that
# --help and --list answer at once (see _run).

__all__ = ["USAGE_ERRORS", "build_parser", "main", "settings_from_args"]

# Input errors: printed as one line, exit status 2.
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    UnknownStudyError,
    DefinitionError,
    StorageError,
    DataError,
    CheckpointError,
)

# --workers auto on a GPU: the H200 study of 2026-11-26 ran 4 per GPU at 27-61 s per trial;
# 1, 2, 4 and 8 have not been measured against each other on a GPU yet.
WORKERS_PER_GPU = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpo.run",
        description="Tune a registered study with Optuna: a coarse grid first, then TPE. "
        "Every trial is stored; re-running the same command resumes the study.",
    )
    parser.add_argument("--study", help="registered study to run (see --list)")
    parser.add_argument(
        "--n-trials",
        type=int,
        default=100,
        help="run until the study has this many finished (complete or pruned) trials, "
        "counting earlier runs and other workers; K workers that finish together may add up "
        "to K-1 more (default: %(default)s)",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL: sqlite:///file.db (one machine) or postgresql+psycopg://... "
        f"(default: {STORAGE_DEFAULT_HELP} in the working directory)",
    )
    parser.add_argument(
        "--study-name",
        default=None,
        help="name of the study in the storage (default: the --study name)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"folder with the dataset archives (default: ${DATA_DIR_ENV}, else the loader's)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="download missing dataset archives (default: offline, archives must exist)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device: cpu, cuda, cuda:N (default: cuda if available, else cpu)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seeds the sampler; trial i trains with seed + i (default: a fresh seed per run, "
        "so independently started workers explore differently; logged and stored on every "
        "trial, pass it again to reproduce a worker; 0 with --retrain-best, which samples "
        "nothing)",
    )
    parser.add_argument(
        "--workers",
        default="1",
        metavar="K|auto",
        help="worker processes on this machine, sharing the storage: worker k uses seed + k, "
        "GPUs round robin (--device cuda), and 1/K of the CPU cores; auto: "
        f"{WORKERS_PER_GPU} per GPU, 1 on the CPU (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="override the study's epochs per trial (default: the study's)",
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="override the number of training examples (default: the whole training split)",
    )
    parser.add_argument(
        "--val-size",
        default=None,
        metavar="N|all",
        help="override the validation images every trial is scored on, a fixed stratified "
        "subset of the validation split, or 'all' (default: the study's, see --list)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds, counted from this worker's first trial, after which it starts no new "
        "trial (default: no limit)",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNERS,
        default=None,
        help="early stopping of poor trials on per-epoch validation accuracy: asha (successive "
        "halving in the first half of the epochs), median, hyperband (as studies used it "
        f"before), none (default: {DEFAULT_PRUNER}; none with --retrain-best)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32, or bf16 autocast of the forward passes (measured on the CPU only; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the networks with torch.compile, CUDA graphs on a GPU; drops each "
        "epoch's last partial training batch (not timed without a GPU; default: off)",
    )
    parser.add_argument(
        "--retrain-best",
        metavar="SOURCE",
        default=None,
        help="instead of searching, train the best configuration of the finished study SOURCE "
        "(same storage) --n-trials times with seeds seed+i, e.g. with a larger --epochs / "
        "--train-size; stored as study SOURCE_retrain unless --study-name is given",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (log lines only)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=DRY_RUN_HELP,
    )
    parser.add_argument("--list", action="store_true", help="list the registered studies and exit")
    return parser


def settings_from_args(args: argparse.Namespace, registry: StudyRegistry) -> RunSettings:
    """Resolve the command line (and environment) into validated settings.

    Raises:
        UsageError: A value is out of range, the device is unavailable, ...
        UnknownStudyError, DefinitionError, StorageError: as their names say.
    """
    from ..runtime.device import resolve_device  # imports torch

    device = resolve_device(args.device)
    if not args.study:
        raise UsageError("--study is required; registered studies: " + ", ".join(registry.names()))
    settings = RunSettings(
        study=registry.get(args.study),  # unknown study / invalid override: before any storage
        n_trials=args.n_trials,
        storage=StorageTarget.parse(resolve_storage_url(args.storage)),
        device=device,
        seed=_seed(args),
        study_name=args.study_name,
        data_dir=args.data_dir,
        download=args.download,
        epochs=args.epochs,
        train_size=args.train_size,
        val_size=_val_size(args.val_size),
        timeout=args.timeout,
        pruner=args.pruner or ("none" if args.retrain_best else DEFAULT_PRUNER),
        show_progress=not args.no_progress,
        workers=_workers(args.workers, device),
        retrain_from=args.retrain_best,
        precision=args.precision,
        compile=args.compile,
    )
    return settings


def _workers(value: str, device: str) -> int:
    """``--workers K`` or ``auto``: ``WORKERS_PER_GPU`` per visible GPU, one on the CPU.

    One on the CPU because a worker already uses every core (two workers of one thread each
    finished no more trials per hour on two cores: ``docs/performance.md``). On a GPU several
    workers overlap one another's data, Python and launch gaps.
    """
    if value != "auto":
        try:
            return int(value)
        except ValueError:
            raise InvalidSettingError(
                f"--workers must be an integer >= 1 or 'auto', got {value!r}"
            ) from None
    if not device.startswith("cuda"):
        return 1
    import torch

    gpus = 1 if ":" in device else torch.cuda.device_count()
    return WORKERS_PER_GPU * max(1, gpus)


def _seed(args: argparse.Namespace) -> int:
    """``--seed``, else 0 for a retrain study (no sampler) and a fresh seed for a search."""
    if args.seed is not None:
        return args.seed
    return 0 if args.retrain_best else fresh_seed()


def _val_size(value: str | None) -> int | str | None:
    """``--val-size``: a positive integer or ``all`` (validated by ``RunSettings``)."""
    if value is None or value == ALL:
        return value
    try:
        return int(value)
    except ValueError:
        raise InvalidSettingError(
            f"--val-size must be an integer >= 1 or '{ALL}', got {value!r}"
        ) from None


def main(argv: Sequence[str] | None = None, registry: StudyRegistry | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        registry: Where ``--study`` names are looked up (default: ``studies.catalog``).
    """
    registry = registry or default_registry()
    args = build_parser().parse_args(argv)
    if args.list:
        for definition in registry:
            print(f"{definition.name:20s} {definition.description}")
            for line in definition.summary():
                print(f"{'':20s}   {line}")
        return 0
    _configure_logging()
    try:
        settings = settings_from_args(args, registry)
        if not args.dry_run:
            return _run(settings)
        with tempfile.TemporaryDirectory(prefix="hpo-dry-run-") as tmp:
            storage = StorageTarget.parse(f"sqlite:///{os.path.join(tmp, 'dry-run.db')}")
            return _run(settings.for_dry_run(storage))
    except USAGE_ERRORS as e:
        return print_usage_error(e)
    except KeyboardInterrupt:
        print(
            "interrupted: the running trial was recorded as FAIL; run the same command "
            "again to resume the study",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def _run(settings: RunSettings) -> int:
    from .finalize import finalize_study

    status = 1  # until the workers return: an exception leaves it non-zero
    with _no_empty_database_left(settings.storage, lambda: status):
        status = run_workers_here(settings)
    if status == 0:
        finalize_study(settings)
    return status


@contextlib.contextmanager
def _no_empty_database_left(target: StorageTarget, status: Callable[[], int]) -> Iterator[None]:
    """If this run creates a SQLite file and fails before creating a study, delete the file
    (and the empty artifact folder made for it): a typo must not leave a database behind."""
    from ..runtime.storage import remove_if_unused

    db = target.sqlite_path
    artifacts = target.artifact_dir
    created = db is not None and not db.exists()
    artifacts_created = not artifacts.exists()
    try:
        yield
    finally:
        if created and status() != 0 and remove_if_unused(db) and artifacts_created:
            with contextlib.suppress(OSError):  # not empty: something was saved, keep it
                artifacts.rmdir()


# --- K workers on this machine -----------------------------------------------------------


def run_workers_here(settings: RunSettings) -> int:
    """Run ``settings.workers`` workers in this process (K = 1) or in K spawned processes.

    Returns the exit status: 0 when every worker finished, else the first failing worker's
    status (``EXIT_INTERRUPTED`` on Ctrl-C, after all workers were stopped).
    """
    import torch

    from ..runtime.storage import open_storage
    from .worker import run_worker

    if settings.workers == 1:
        run_worker(settings)
        return 0
    # Open the storage once here: a bad URL or an unreachable database is one line, not K.
    open_storage(settings.storage).engine.dispose()
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    plan = plan_workers(
        settings.workers, settings.seed, settings.device, cuda_devices, available_cpu_count()
    )
    per_worker = [
        # K progress bars would overwrite each other: workers log one line per trial instead.
        dataclasses.replace(settings, seed=a.seed, device=a.device, workers=1, show_progress=False)
        for a in plan
    ]
    status = run_workers(_worker_process, per_worker, plan)
    if status == EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if status != 0:
        print(
            f"error: a worker failed (exit status {status}); run the same command again to "
            "resume the study",
            file=sys.stderr,
        )
    return status


def _worker_process(settings: RunSettings) -> None:
    """Body of one spawned worker: bad input is one line on stderr and exit status 2."""
    from .worker import run_worker

    try:
        run_worker(settings)
    except USAGE_ERRORS as e:
        raise SystemExit(print_usage_error(e)) from None


def _configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
        )
