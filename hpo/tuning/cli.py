"""``python -m hpo.run --study NAME --n-trials N``: tune one registered study.

The entry point decides the device and the seed, validates every input (bad input is one line
on stderr and exit status 2), then runs the worker loop and, once the trials are done, scores
the best trial on the test split. The worker loop, :func:`run_worker`, takes one picklable
:class:`~hpo.settings.RunSettings`, so several processes (``--workers K``) or machines can run
it side by side against one storage; :func:`finalize_study` runs once, after all of them.

``--retrain-best STUDY`` turns the search into a final training run: every trial trains the
best configuration of an earlier study (usually with a larger ``--epochs`` / ``--train-size``),
each with its own seed, and the best of them is scored on the test split (see ``hpo.search``).

Exit status: 0 done, 2 bad input, 130 interrupted (Ctrl-C; the running trial is recorded as
FAIL with reason "interrupted" and the same command resumes the study).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence

import optuna
import torch
from optuna.storages._heartbeat import (  # no public equivalent
    get_heartbeat_thread,
    is_heartbeat_enabled,
)
from optuna.trial import TrialState

from data import DataError, DatasetName, load_dataset
from studies import DefinitionError, StudyDefinition, UnknownStudyError, all_studies

from . import keys
from .artifacts import ArtifactError, load_trial_model, open_artifact_store
from .budget import count_trials, is_surplus, release_surplus, wait_for_slot
from .charts import attach_to_dashboard
from .cpu_process import prepare_cpu_training
from .errors import NonFiniteLossError, TrialError, UsageError
from .objective import (
    TEST_MASK_SEED,
    Objective,
    TrialData,
    eval_batches,
    evaluate_at_sparsities,
)
from .progress import RunProgress, format_params, format_trial_line
from .search import make_pruner, make_sampler, open_study
from .settings import PRUNERS, RunSettings, resolve_device
from .storage import (
    StorageError,
    artifact_dir_for,
    mask_url,
    normalize_storage_url,
    open_storage,
    resolve_storage_url,
)
from .workers import available_cpu_count, plan_workers, run_workers

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "build_parser", "finalize_study", "main", "run_worker"]

_logger = logging.getLogger("hpo.run")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Input errors: printed as one line, exit status 2.
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    UnknownStudyError,
    DefinitionError,
    StorageError,
    DataError,
    ArtifactError,
)

DRY_RUN = {"n_trials": 2, "epochs": 1, "train_size": 256}


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
        help="the study ends with exactly this many finished (complete or pruned) trials, "
        "counting earlier runs and other workers (default: %(default)s)",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL: sqlite:///file.db (one machine) or postgresql+psycopg://... "
        "(default: $HPO_STORAGE, else sqlite:///hpo.db in the working directory)",
    )
    parser.add_argument(
        "--study-name",
        default=None,
        help="name of the study in the storage (default: the --study name)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset archives (default: $HPO_DATA_DIR, else the loader's)",
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
        default=0,
        help="seeds the sampler; trial i trains with seed + i (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on this machine, sharing the storage: worker k uses seed + k, "
        "GPUs round robin (--device cuda), and 1/K of the CPU cores (default: %(default)s)",
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
        "--timeout",
        type=float,
        default=None,
        help="seconds after which no new trial is started (default: no limit)",
    )
    parser.add_argument(
        "--pruner",
        choices=PRUNERS,
        default=None,
        help="early stopping of poor trials on per-epoch validation accuracy "
        "(default: hyperband; none with --retrain-best)",
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
        help=f"smoke test: {DRY_RUN['n_trials']} trials of {DRY_RUN['epochs']} epoch on "
        f"{DRY_RUN['train_size']} examples in a temporary storage that is deleted afterwards",
    )
    parser.add_argument("--list", action="store_true", help="list the registered studies and exit")
    return parser


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """Resolve the command line (and environment) into validated settings.

    Raises:
        UsageError: A value is out of range, the device is unavailable, ...
        UnknownStudyError, DefinitionError, StorageError: as their names say.
    """
    if not args.study:
        raise UsageError("--study is required; registered studies: " + _study_names())
    settings = RunSettings(
        study=args.study,
        n_trials=args.n_trials,
        storage_url=resolve_storage_url(args.storage),
        device=resolve_device(args.device),
        seed=args.seed,
        study_name=args.study_name,
        data_dir=args.data_dir,
        download=args.download,
        epochs=args.epochs,
        train_size=args.train_size,
        timeout=args.timeout,
        pruner=args.pruner or ("none" if args.retrain_best else "hyperband"),
        show_progress=not args.no_progress,
        workers=args.workers,
        retrain_from=args.retrain_best,
    )
    settings.definition()  # unknown study / invalid override: fail before touching storage
    normalize_storage_url(settings.storage_url)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.list:
        for definition in all_studies():
            print(f"{definition.name:20s} {definition.description}")
        return 0
    _configure_logging()
    try:
        if args.dry_run:
            with tempfile.TemporaryDirectory(prefix="hpo-dry-run-") as tmp:
                args.storage = f"sqlite:///{os.path.join(tmp, 'dry-run.db')}"
                args.n_trials = DRY_RUN["n_trials"]
                args.epochs = args.epochs or DRY_RUN["epochs"]
                args.train_size = args.train_size or DRY_RUN["train_size"]
                settings = settings_from_args(args)
                status = run_workers_here(settings)
                if status == 0:
                    finalize_study(settings)
            return status
        settings = settings_from_args(args)
        status = run_workers_here(settings)
        if status == 0:
            finalize_study(settings)
        return status
    except USAGE_ERRORS as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "interrupted: the running trial was recorded as FAIL; run the same command "
            "again to resume the study",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


# --- K workers on this machine -----------------------------------------------------------


def run_workers_here(settings: RunSettings) -> int:
    """Run ``settings.workers`` workers in this process (K = 1) or in K spawned processes.

    Returns the exit status: 0 when every worker finished, else the first failing worker's
    status (``EXIT_INTERRUPTED`` on Ctrl-C, after all workers were stopped).
    """
    if settings.workers == 1:
        run_worker(settings)
        return 0
    # Open the storage once here: a bad URL or an unreachable database is one line, not K.
    open_storage(settings.storage_url).engine.dispose()
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
    try:
        run_worker(settings)
    except USAGE_ERRORS as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


# --- one worker --------------------------------------------------------------------------


def run_worker(settings: RunSettings) -> None:
    """Run trials of ``settings``' study until it has ``n_trials`` finished trials.

    Safe to run in several processes (and machines) at once against one storage: the study
    and its grid are created exactly once (``hpo.search``) and the budget is shared exactly
    (``hpo.budget``). Returns when the budget is met or ``settings.timeout`` has passed.

    Raises:
        KeyboardInterrupt: After recording the running trial as FAIL ("interrupted").
        UsageError, StorageError, DataError, ...: Bad input, before any trial ran.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we log one line per trial ourselves
    device = torch.device(settings.device)
    if device.type == "cpu":
        prepare_cpu_training()  # denormals flushed, freed memory retained (hpo.cpu_process)
    definition = settings.definition()
    storage = open_storage(settings.storage_url)  # cheap checks first: URL, then data
    data = load_trial_data(definition, settings)
    sampler = make_sampler(definition, settings.seed)
    pruner = make_pruner(settings.pruner, definition.epochs)
    study = open_study(storage, settings, sampler, pruner)
    store = open_artifact_store(settings.storage_url)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    counts = count_trials(study)
    _logger.info(
        "study %s on %s: %d/%d finished, device %s, seed %d, worker %s",
        study.study_name,
        mask_url(settings.storage_url),
        counts.finished,
        settings.n_trials,
        device,
        settings.seed,
        worker,
    )
    progress = RunProgress(
        study.study_name, settings.n_trials, counts.finished, settings.show_progress
    )
    objective = Objective(definition, data, device, settings.seed, store, progress, worker)
    try:
        with progress.logging():
            while True:
                counts = count_trials(study)
                progress.set_finished(counts.finished)
                if counts.finished >= settings.n_trials:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    _logger.info("timeout: starting no new trial (%d finished)", counts.finished)
                    break
                if counts.finished + counts.running >= settings.n_trials:
                    # Other workers run the last trials; take over if one of them fails.
                    wait_for_slot(study, settings.n_trials, deadline=deadline)
                    continue
                if settings.retrain_from and counts.waiting == 0:
                    # A failed copy is not retried (its failure would repeat); never fall
                    # through to TPE in a retrain study.
                    _logger.warning(
                        "no retrain copy left to run: %d finished, %d failed",
                        counts.finished,
                        counts.failed,
                    )
                    break
                run_one_trial(study, objective, settings.n_trials)
    finally:
        progress.close()


def run_one_trial(study: optuna.Study, objective: Objective, n_trials: int) -> None:
    """Ask for a trial, run it unless another worker took the last slot, tell the result."""
    if is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    with warnings.catch_warnings():
        # We run the heartbeat thread ourselves, as Study.optimize does.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        trial = study.ask()
    if is_surplus(study, trial.number, n_trials):
        release_surplus(study, trial, n_trials)
        return
    started = time.perf_counter()
    value: float | None = None
    error: BaseException | None = None
    with get_heartbeat_thread(trial._trial_id, study._storage):
        try:
            value = objective(trial)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except NonFiniteLossError as e:
            # Divergence is a property of the hyperparameters (a too-large learning rate):
            # PRUNED keeps it visible to TPE as a poor result, which FAIL would not.
            trial.set_user_attr(keys.FAIL_REASON, _one_line(e))
            state = TrialState.PRUNED
        except TrialError as e:
            trial.set_user_attr(keys.FAIL_REASON, _one_line(e))
            state = TrialState.FAIL
        except KeyboardInterrupt as e:
            trial.set_user_attr(keys.FAIL_REASON, "interrupted")
            state, error = TrialState.FAIL, e
        except Exception as e:  # recorded, then propagated: an unexpected error is a bug
            trial.set_user_attr(keys.FAIL_REASON, f"{type(e).__name__}: {_one_line(e)}")
            state, error = TrialState.FAIL, e
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    frozen = study._storage.get_trial(trial._trial_id)
    line = format_trial_line(frozen, time.perf_counter() - started)
    (_logger.warning if state == TrialState.FAIL else _logger.info)(line)
    if isinstance(error, KeyboardInterrupt) and "fixed_params" in frozen.system_attrs:
        # The user stopped the run, the grid point did nothing wrong: queue it again so the
        # resumed study still covers the whole grid.
        study.enqueue_trial(
            frozen.system_attrs["fixed_params"],
            user_attrs={
                k: frozen.user_attrs[k]
                for k in (keys.PHASE, keys.GRID_ID)
                if k in frozen.user_attrs
            },
        )
    if error is not None:
        raise error


def load_trial_data(definition: StudyDefinition, settings: RunSettings) -> TrialData:
    """Load the study's dataset once per worker, cut to the definition's ``train_size``.

    The training subset is stratified and drawn with the definition's ``data_seed`` (by
    ``data/``), so all trials and workers train and validate on the same examples.
    """
    options = definition.dataset_options
    if definition.train_size is not None:
        options = dataclasses.replace(options, train_size=definition.train_size)
    ds = load_dataset(
        DatasetName(definition.dataset),
        data_dir=settings.data_dir,
        download=settings.download,
        seed=definition.data_seed,
        options=options,
    )
    train = ds.train
    return TrialData(
        train=train,
        val=ds.val,
        test=ds.test,
        in_channels=ds.in_channels,
        num_classes=ds.num_classes,
        mean=ds.mean,
        std=ds.std,
    )


# --- after all workers -----------------------------------------------------------------


def finalize_study(settings: RunSettings) -> None:
    """Score the best trial on the test split, store the figures, print a summary.

    Runs once per run, after every worker has returned (``--workers K`` calls it in the
    parent). Idempotent: if the best trial has not changed since the last run, the stored
    test figures are reused instead of evaluating again.
    """
    storage = open_storage(settings.storage_url)
    study = optuna.load_study(study_name=settings.optuna_study_name, storage=storage)
    counts = count_trials(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    print(
        f"study {study.study_name}: {counts.complete} complete, {counts.pruned} pruned, "
        f"{counts.failed} failed, {counts.running} running, {counts.waiting} waiting "
        f"(target {settings.n_trials} finished)"
    )
    attach_to_dashboard(study)  # charts in optuna-dashboard; a no-op while nothing completed
    if not complete:
        print("no completed trial yet: nothing to evaluate")
        return
    best = study.best_trial
    definition = settings.definition()
    test_metrics = study.user_attrs.get(keys.TEST_METRICS)
    if study.user_attrs.get(keys.BEST_TRIAL) != best.number or test_metrics is None:
        store = open_artifact_store(settings.storage_url)
        loaded = load_trial_model(study, best.number, store=store, device=settings.device)
        data = load_trial_data(definition, settings)
        device = torch.device(settings.device)
        batches = {
            s: eval_batches(definition, data, data.test, s, TEST_MASK_SEED, device)
            for s in definition.test_sparsities
        }
        metrics = evaluate_at_sparsities(loaded.model, batches, definition.test_sparsities)
        test_metrics = {k: m.to_dict() for k, m in metrics.items()}
        study.set_user_attr(keys.TEST_METRICS, test_metrics)
        study.set_user_attr(keys.BEST_MODEL_ARTIFACT, best.user_attrs[keys.MODEL_ARTIFACT])
        study.set_user_attr(keys.BEST_TRIAL, best.number)
    val_metrics = best.user_attrs.get(keys.VAL_METRICS, {})
    source = study.user_attrs.get(keys.RETRAIN_SOURCE)
    if source is not None:
        print(
            f"retraining trial {source['trial']} of study {source['study']} "
            f"(val accuracy {source['value']:.4f} at that study's budget)"
        )
    print(
        f"best trial {best.number} [{best.user_attrs.get(keys.PHASE, '?')}]: "
        f"val accuracy {best.value:.4f} at sparsity {definition.train_sparsity:g}; "
        f"{format_params(best.params)}"
    )
    print(f"{'sparsity':>8}  {'val acc':>8}  {'val MAE':>8}  {'test acc':>8}  {'test MAE':>8}")
    for sparsity in definition.test_sparsities:
        k = keys.sparsity_key(sparsity)
        v, t = val_metrics.get(k, {}), test_metrics.get(k, {})
        print(
            f"{k:>8}  {_fmt(v.get('accuracy'))}  {_fmt(v.get('mae'))}  "
            f"{_fmt(t.get('accuracy'))}  {_fmt(t.get('mae'))}"
        )
    print(
        f"best model: artifact {study.user_attrs.get(keys.BEST_MODEL_ARTIFACT)} in "
        f"{artifact_dir_for(settings.storage_url)}"
    )


def _fmt(value: float | None) -> str:
    return f"{value:8.4f}" if isinstance(value, float | int) else f"{'-':>8}"


def _study_names() -> str:
    return ", ".join(d.name for d in all_studies())


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
        )


if __name__ == "__main__":
    sys.exit(main())
