"""One worker: take the next trial of the study, run it, record it, until the budget is met.

:func:`run_worker` takes one picklable :class:`~hpo.tuning.settings.RunSettings`, so several
processes (``--workers K``) or machines can run it side by side against one storage. The loop
is the runner's own rather than ``Study.optimize`` (why: ``docs/design.md`` and
:mod:`hpo.runtime.optuna_compat`): it keeps ``--n-trials`` exact under concurrency
(:mod:`hpo.tuning.budget`), waits for and takes over the last slots when another worker's
trial fails, and re-queues a grid point interrupted by Ctrl-C.

How a trial ends: COMPLETE with its best validation accuracy; PRUNED when the pruner stops it
or its loss diverges (a property of its hyperparameters, which TPE should see as a poor
result); FAIL with ``keys.FAIL_REASON`` for a :class:`~hpo.errors.TrialError` (out of memory,
a model the data cannot support), after which the study continues; FAIL and then raised for
Ctrl-C and for any unexpected exception (a bug).
"""

from __future__ import annotations

import logging
import os
import socket
import time

import optuna
import torch
from optuna.trial import TrialState

from data import SparseDataset
from studies import StudyDefinition

from ..errors import NonFiniteLossError, TrialError, one_line
from ..runtime import optuna_compat
from ..runtime.cpu import prepare_cpu_training
from ..runtime.interrupts import HeldInterrupts
from ..runtime.storage import open_storage
from ..runtime.storage_url import mask_url
from . import keys
from .artifacts import open_artifact_store
from .budget import count_trials, is_surplus, release_surplus, wait_for_slot
from .estimate import estimate_line, eta_line, measure_cost
from .objective import Objective
from .progress import RunProgress, format_trial_line
from .pruning import make_pruner
from .search import make_sampler
from .settings import RunSettings
from .study_setup import open_study
from .trial_data import load_trial_data, validation_split

__all__ = ["run_one_trial", "run_worker"]

_logger = logging.getLogger("hpo.run")


def run_worker(settings: RunSettings) -> None:
    """Run trials of ``settings``' study until it has ``n_trials`` finished trials.

    Safe to run in several processes (and machines) at once against one storage: the study
    and its grid are created exactly once (:mod:`hpo.tuning.study_setup`) and the budget is
    shared exactly (:mod:`hpo.tuning.budget`). Returns when the budget is met or
    ``settings.timeout`` has passed.

    Raises:
        KeyboardInterrupt: After recording the running trial as FAIL ("interrupted").
        UsageError, StorageError, DataError, ...: Bad input, before any trial ran.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # we log one line per trial ourselves
    device = torch.device(settings.device)
    if device.type == "cpu":
        prepare_cpu_training()  # denormals flushed, freed memory retained (hpo.runtime.cpu)
    definition = settings.definition()
    storage = open_storage(settings.storage_url)  # cheap checks first: URL, then data
    data = load_trial_data(definition, settings.data_dir, settings.download)
    sampler = make_sampler(definition, settings.seed)
    n_val = len(validation_split(definition, data))
    pruner = make_pruner(
        settings.pruner, definition.epochs, num_classes=data.num_classes, n_val=n_val
    )
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
    if counts.finished < settings.n_trials:
        _log_estimate(definition, data, device, settings, counts.finished)
    progress = RunProgress(
        study.study_name, settings.n_trials, counts.finished, settings.show_progress
    )
    objective = Objective(
        definition, data, device, settings.seed, store, progress, worker, settings.execution()
    )
    try:
        with progress.logging():
            while _next_step(study, settings, progress, deadline):
                run_one_trial(study, objective, settings.n_trials)
                eta = eta_line(study, settings.n_trials)
                if eta:
                    _logger.info(eta)
    finally:
        progress.close()


def _log_estimate(
    definition: StudyDefinition,
    data: SparseDataset,
    device: torch.device,
    settings: RunSettings,
    finished: int,
) -> None:
    """Measure a typical trial briefly and log what the study will cost on this device."""
    estimate, probed = measure_cost(definition, data, device)
    _logger.info(
        estimate_line(
            definition,
            estimate,
            probed,
            n_trials=settings.n_trials,
            finished=finished,
            pruner=settings.pruner,
            device=device,
            n_train=len(data.train),
            n_val=len(validation_split(definition, data)),
        )
    )


def _next_step(
    study: optuna.Study, settings: RunSettings, progress: RunProgress, deadline: float | None
) -> bool:
    """Whether to start another trial now (waiting first while others hold the last slots)."""
    while True:
        counts = count_trials(study)
        progress.set_finished(counts.finished)
        if counts.finished >= settings.n_trials:
            return False
        if deadline is not None and time.monotonic() >= deadline:
            _logger.info("timeout: starting no new trial (%d finished)", counts.finished)
            return False
        if counts.finished + counts.running < settings.n_trials:
            break
        # Other workers run the last trials; take over if one of them fails.
        wait_for_slot(study, settings.n_trials, deadline=deadline)
    if settings.retrain_from and counts.waiting == 0:
        # A failed copy is not retried (its failure would repeat); never fall through to TPE
        # in a retrain study.
        _logger.warning(
            "no retrain copy left to run: %d finished, %d failed", counts.finished, counts.failed
        )
        return False
    return True


def run_one_trial(study: optuna.Study, objective: Objective, n_trials: int) -> None:
    """Ask for a trial, run it unless another worker took the last slot, tell the result."""
    optuna_compat.fail_stale_trials(study)
    # A Ctrl-C from here until the trial is recorded or given back is delivered only then, so
    # no trial is left RUNNING (hpo.runtime.interrupts).
    with HeldInterrupts() as held:
        trial = optuna_compat.ask(study)
        surplus = is_surplus(study, trial.number, n_trials)
    if surplus:
        try:
            release_surplus(study, trial, n_trials)
        finally:
            held.release()
        return
    started = time.perf_counter()
    value: float | None = None
    error: BaseException | None = None
    with optuna_compat.heartbeat(study, trial):
        try:
            held.release()
            value = objective(trial)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except NonFiniteLossError as e:
            # Divergence is a property of the hyperparameters (a too-large learning rate):
            # PRUNED keeps it visible to TPE as a poor result, which FAIL would not.
            trial.set_user_attr(keys.FAIL_REASON, one_line(e))
            state = TrialState.PRUNED
        except TrialError as e:
            trial.set_user_attr(keys.FAIL_REASON, one_line(e))
            state = TrialState.FAIL
        except KeyboardInterrupt as e:
            trial.set_user_attr(keys.FAIL_REASON, "interrupted")
            state, error = TrialState.FAIL, e
        except Exception as e:  # recorded, then propagated: an unexpected error is a bug
            trial.set_user_attr(keys.FAIL_REASON, f"{type(e).__name__}: {one_line(e)}")
            state, error = TrialState.FAIL, e
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    frozen = optuna_compat.frozen_trial(study, trial)
    line = format_trial_line(frozen, time.perf_counter() - started)
    (_logger.warning if state == TrialState.FAIL else _logger.info)(line)
    if isinstance(error, KeyboardInterrupt):
        _requeue_interrupted(study, frozen)
    if error is not None:
        raise error


def _requeue_interrupted(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
    """The user stopped the run, the queued point did nothing wrong: queue it again, so the
    resumed study still covers the whole grid (a TPE proposal is simply dropped)."""
    params = optuna_compat.queued_params(frozen)
    if params is None:
        return
    attrs = {k: frozen.user_attrs[k] for k in (keys.PHASE, keys.GRID_ID) if k in frozen.user_attrs}
    study.enqueue_trial(params, user_attrs=attrs)
