"""``python -m hpo.run --study NAME --n-trials N``: tune one registered study.

Resolves the definition, storage, device and seed once, validates every input (bad input:
one line, exit 2), runs the workers here or in K processes, then the final step. Exit status:
0 done, 2 bad input, 130 interrupted (the running trial is FAIL; the same command resumes).
``--create-only`` stops after creating (or checking) the study: a scheduler's setup job.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence

from data import DATA_DIR_ENV, DataError
from studies import DefinitionError, StudyRegistry, UnknownStudyError, default_registry

from ..errors import (
    EXIT_NO_SPACE,
    CheckpointError,
    InvalidSettingError,
    UsageError,
    print_usage_error,
)
from ..runtime.execution import LAYOUTS, PRECISIONS
from ..runtime.faults import NoSpaceError, faults_named, print_no_space
from ..runtime.interrupts import REASONS, Stopped
from ..runtime.processes import available_cpu_count, plan_workers, run_workers
from ..runtime.storage_url import (
    STORAGE_DEFAULT_HELP,
    StorageError,
    StorageTarget,
    resolve_storage_url,
)
from .settings import ALL, DEFAULT_PRUNER, DRY_RUN_HELP, PRUNERS, RunSettings, fresh_seed

# torch and everything that trains are imported once the arguments are parsed: --help and
# --list answer at once.
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
    add = parser.add_argument
    add("--study", help="registered study to run (see --list)")
    add(
        "--n-trials",
        type=int,
        default=100,
        help="run until the study has this many finished (complete or pruned) trials, "
        "counting earlier runs and other workers; K workers that finish together may add up "
        "to K-1 more (default: %(default)s)",
    )
    add(
        "--storage",
        help="Optuna storage URL: sqlite:///file.db (one machine) or postgresql+psycopg://... "
        f"(default: {STORAGE_DEFAULT_HELP} in the working directory)",
    )
    add("--study-name", help="name of the study in the storage (default: the --study name)")
    add("--data-dir", help=f"dataset archives (default: ${DATA_DIR_ENV}, else the loader's)")
    add("--download", action="store_true", help="download missing archives (default: offline)")
    add("--device", help="cpu, cuda, cuda:N (default: cuda if available, else cpu)")
    add(
        "--seed",
        type=int,
        help="seeds the sampler; trial i trains with seed + i (default: a fresh seed per run, "
        "so independently started workers explore differently; logged and stored on every "
        "trial, pass it again to reproduce a worker; 0 with --retrain-best)",
    )
    add(
        "--workers",
        default="1",
        metavar="K|auto",
        help="worker processes on this machine, sharing the storage: worker k uses seed + k, "
        "the least used GPU (--device cuda), and 1/K of the CPU cores; auto: "
        f"{WORKERS_PER_GPU} per GPU, 1 on the CPU (default: %(default)s)",
    )
    add("--epochs", type=int, help="override the study's epochs per trial")
    add("--train-size", type=int, help="override the training examples (default: all)")
    add(
        "--val-size",
        metavar="N|all",
        help="override the validation images every trial is scored on, a fixed stratified "
        "subset of the validation split, or 'all' (default: the study's, see --list)",
    )
    add(
        "--timeout",
        type=float,
        help="seconds, counted from this worker's first trial, after which it starts no new "
        "trial (default: no limit)",
    )
    add(
        "--pruner",
        choices=PRUNERS,
        help="early stopping of poor trials on per-epoch validation accuracy: asha (successive "
        "halving in the first half of the epochs), median, hyperband (as studies used it "
        f"before), none (default: {DEFAULT_PRUNER}; none with --retrain-best)",
    )
    add(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (TF32 off), tf32 (TF32 convolutions on GPUs that have them) or bf16 "
        "(autocast of the forward passes) (default: %(default)s)",
    )
    add(
        "--compile",
        action="store_true",
        help="compile the networks with torch.compile, CUDA graphs on a GPU; drops each "
        "epoch's last partial training batch (default: off)",
    )
    add(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help="memory layout of the networks: auto is channels_last on the CPU, contiguous on "
        "a GPU (default: %(default)s)",
    )
    add(
        "--cudnn-benchmark",
        action="store_true",
        help="let cuDNN time its convolution algorithms for each new shape (default: off)",
    )
    add(
        "--retrain-best",
        metavar="SOURCE",
        help="instead of searching, train the best configuration of the finished study SOURCE "
        "(same storage) --n-trials times with seeds seed+i, e.g. with a larger --epochs / "
        "--train-size; stored as study SOURCE_retrain unless --study-name is given",
    )
    add("--no-progress", action="store_true", help="no progress bars (log lines only)")
    add(
        "--create-only",
        action="store_true",
        help="create the study (or check that the stored one has this configuration) and queue "
        "its grid, then exit without training: the job that runs once before a scheduler's "
        "workers (deploy/slurm); needs no data and no GPU",
    )
    add("--dry-run", action="store_true", help=DRY_RUN_HELP)
    add("--list", action="store_true", help="list the registered studies and exit")
    return parser


def settings_from_args(args: argparse.Namespace, registry: StudyRegistry) -> RunSettings:
    """Resolve the command line (and environment) into validated settings, once."""
    from ..runtime.device import resolve_device  # imports torch

    device = resolve_device(args.device)
    if not args.study:
        raise UsageError("--study is required; registered studies: " + ", ".join(registry.names()))
    same = ("n_trials", "study_name", "data_dir", "download", "epochs", "train_size", "timeout")
    return RunSettings(
        study=registry.get(args.study),  # unknown study / invalid override: before any storage
        storage=_kept_storage(StorageTarget.parse(resolve_storage_url(args.storage))),
        device=device,
        seed=args.seed if args.seed is not None else 0 if args.retrain_best else fresh_seed(),
        val_size=_int_or(args.val_size, ALL, "--val-size"),
        pruner=args.pruner or ("none" if args.retrain_best else DEFAULT_PRUNER),
        show_progress=not args.no_progress,
        workers=_workers(args.workers, device),
        retrain_from=args.retrain_best,
        precision=args.precision,
        compile=args.compile,
        layout=args.layout,
        cudnn_benchmark=args.cudnn_benchmark,
        **{name: getattr(args, name) for name in same},
    )


def _kept_storage(target: StorageTarget) -> StorageTarget:
    """Refuse an in-memory database: each process (a worker, the final step) would open its
    own, so the trials would be trained and then lost."""
    if target.in_memory:
        raise StorageError(
            f"--storage {target.masked} is an in-memory database: nothing would be kept and the "
            "final step could not read the trials; name a file, e.g. sqlite:///study.db"
        )
    return target


def _workers(value: str, device: str) -> int:
    """``--workers K`` or ``auto``: ``WORKERS_PER_GPU`` per GPU; one on the CPU, where a
    worker already uses every core (``docs/performance.md``)."""
    workers = _int_or(value, "auto", "--workers")
    if workers != "auto":
        return workers  # type: ignore[return-value]
    if not device.startswith("cuda"):
        return 1
    import torch

    return WORKERS_PER_GPU * max(1, 1 if ":" in device else torch.cuda.device_count())


def _int_or(value: str | None, word: str, flag: str) -> int | str | None:
    """An integer option that also takes ``word`` (validated further by ``RunSettings``)."""
    if value is None or value == word:
        return value
    try:
        return int(value)
    except ValueError:
        message = f"{flag} must be an integer >= 1 or '{word}', got {value!r}"
        raise InvalidSettingError(message) from None


def main(argv: Sequence[str] | None = None, registry: StudyRegistry | None = None) -> int:
    """``python -m hpo.run``; ``registry`` is where ``--study`` is looked up. Returns the status."""
    registry = registry or default_registry()
    args = build_parser().parse_args(argv)
    if args.list:
        for definition in registry:
            print(f"{definition.name:20s} {definition.description}")
            for line in definition.summary():
                print(f"{'':20s}   {line}")
        return 0
    log_format = "%(asctime)s %(levelname)s %(message)s"  # no-op if logging is set up already
    logging.basicConfig(level=logging.INFO, format=log_format, datefmt="%H:%M:%S")
    try:
        settings = settings_from_args(args, registry)
        if args.create_only:
            if args.dry_run:
                raise UsageError("--create-only and --dry-run exclude each other")
            return _create_only(settings)
        if not args.dry_run:
            return _run(settings)
        with tempfile.TemporaryDirectory(prefix="hpo-dry-run-") as tmp:
            storage = StorageTarget.parse(f"sqlite:///{os.path.join(tmp, 'dry-run.db')}")
            return _run(settings.for_dry_run(storage))
    except NoSpaceError as e:
        return print_no_space(e, resumes=True)
    except USAGE_ERRORS as e:
        return print_usage_error(e)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (docker stop, scancel, Kubernetes)
        stopped = e if isinstance(e, Stopped) else Stopped(signal.SIGINT)
        print(
            f"{stopped.reason}: a running trial was recorded as FAIL; run the same command "
            "again to resume the study",
            file=sys.stderr,
        )
        return stopped.exit_status


def _create_only(settings: RunSettings) -> int:
    """``--create-only``: what every worker does first (``open_study``, under the storage's
    lock), alone. Workers need not wait for it; a scheduler runs it so that a wrong storage or
    another stored configuration fails one small job instead of every worker."""
    import optuna

    from ..records import TrialCounts
    from ..runtime.storage import open_storage
    from .search import make_sampler
    from .study_setup import open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the line below says what happened
    created = False  # a SQLite file this command made is removed if no study came of it
    with _no_empty_database_left(settings.storage, lambda: 0 if created else 1):
        storage = open_storage(settings.storage)
        # Neither is stored with the study: each worker brings its own sampler and pruner.
        sampler = make_sampler(settings.definition(), settings.seed)
        study = open_study(storage, settings, sampler, optuna.pruners.NopPruner())
        created = True
    counts = TrialCounts.of(study.get_trials(deepcopy=False))
    print(
        f"study {study.study_name} on {settings.storage.masked}: ready, {counts.finished}/"
        f"{settings.n_trials} finished, {counts.waiting} queued"
    )
    return 0


def _run(settings: RunSettings) -> int:
    from .finalize import finalize_study

    status = 1  # until the workers return: an exception leaves it non-zero
    with faults_named(settings.storage.masked):
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
    """Run the workers here (K = 1) or in K spawned processes; returns 0, or the first
    failing worker's status; raises ``Stopped`` on Ctrl-C or SIGTERM, once all were stopped."""

    from ..runtime.storage import open_storage
    from .worker import run_worker

    if settings.workers == 1:
        run_worker(settings)
        return 0
    # Open the storage once here: a bad URL or an unreachable database is one line, not K.
    open_storage(settings.storage).engine.dispose()
    plan = plan_workers(settings.workers, settings.seed, settings.device, available_cpu_count())
    per_worker = [
        # K progress bars would overwrite each other: workers log one line per trial instead.
        dataclasses.replace(settings, seed=a.seed, device=a.device, workers=1, show_progress=False)
        for a in plan
    ]
    status = run_workers(_worker_process, per_worker, plan)
    if status - 128 in REASONS:
        raise Stopped(status - 128)
    if status not in (0, EXIT_NO_SPACE):  # a worker out of space has said so in one line
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
        with faults_named(settings.storage.masked):
            run_worker(settings)
    except NoSpaceError as e:
        raise SystemExit(print_no_space(e, resumes=True)) from None
    except USAGE_ERRORS as e:
        raise SystemExit(print_usage_error(e)) from None
