"""One worker: join the study, then run its trials with ``study.optimize`` until the budget.

Optuna's loop fails dead workers' trials before each trial, pops queued trials first and
records every state; our callbacks stop it (``docs/decisions.md``, "Built on Optuna").
"""

from __future__ import annotations

import logging
import os
import socket

import optuna
import torch

from ..records import TrialCounts
from ..runtime.cpu import prepare_cpu_training
from ..runtime.device import take_device
from ..runtime.interrupts import StopSignals
from ..runtime.storage import open_storage
from .artifacts import open_artifact_store
from .estimate import estimate_line, shared_estimate
from .eta import format_duration
from .objective import Objective
from .progress import RunProgress
from .pruning import make_pruner
from .search import make_sampler
from .settings import RunSettings
from .study_setup import open_study, requeue_stopped
from .trial_data import load_trial_data, validation_split
from .trial_loop import optimize

__all__ = ["run_worker"]

_logger = logging.getLogger("hpo.run")


def run_worker(settings: RunSettings) -> None:
    """Run trials of ``settings``' study until it has ``n_trials`` finished trials.

    Raises:
        KeyboardInterrupt: After Optuna recorded the running trial FAIL ("interrupted").
        UsageError, StorageError, DataError, ...: Bad input, before any trial ran.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours
    device, slot = take_device(settings.device)
    try:
        with StopSignals().installed() as signals:
            _run_on(device, settings, signals)
    finally:
        if slot is not None:
            slot.release()


def _run_on(device: torch.device, settings: RunSettings, signals: StopSignals) -> None:
    execution = settings.execution()
    execution.apply(device)  # TF32 and cuDNN switches: once per process
    if device.type == "cpu":
        prepare_cpu_training()  # denormals flushed, freed memory retained (hpo.runtime.cpu)
    definition = settings.definition()
    storage = open_storage(settings.storage)  # cheap checks first: URL, then data
    data = load_trial_data(definition, settings.data_dir, settings.download, definition.train_size)
    n_val = len(validation_split(data, definition.val_size))
    pruner = make_pruner(
        settings.pruner, definition.epochs, num_classes=data.num_classes, n_val=n_val
    )
    study = open_study(storage, settings, make_sampler(definition, settings.seed), pruner)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    counts = TrialCounts.of(study.get_trials(deepcopy=False))
    _logger.info(
        "study %s on %s: %d/%d finished, device %s, seed %d, worker %s",
        study.study_name, settings.storage.masked, counts.finished, settings.n_trials, device,
        settings.seed, worker,
    )  # fmt: skip
    if counts.finished >= settings.n_trials:
        return
    estimate = shared_estimate(study, settings.storage, definition, data, device, execution)
    if estimate.compile_error:
        _logger.warning(
            "--compile: compiling failed on %s (%s); trials run eager and keep every batch",
            device, estimate.compile_error,
        )  # fmt: skip
        execution = execution.eager()
    _logger.info(
        estimate_line(definition, estimate, settings, counts.finished, len(data.train), n_val)
    )
    progress = RunProgress(
        study.study_name, settings.n_trials, counts.finished, settings.show_progress
    )
    remaining = max(0, settings.n_trials - counts.finished)
    progress.set_eta(f"~{format_duration(remaining * estimate.trial_seconds)} (estimate)")
    store = open_artifact_store(settings.storage, create=True)
    objective = Objective(
        definition, data, device, settings.seed, store, progress, worker, execution,
        queue_only=settings.retrain_from is not None, signals=signals,
    )  # fmt: skip
    with progress.logging():
        try:
            optimize(
                study, objective, settings.n_trials, timeout=settings.timeout,
                queue_only=settings.retrain_from is not None, progress=progress,
                signals=signals, storage=storage,
            )  # fmt: skip
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: Optuna recorded the running trial FAIL
            _requeue_on_the_way_out(study, settings)
            raise
        finally:
            progress.close()


def _requeue_on_the_way_out(study: optuna.Study, settings: RunSettings) -> None:
    """Queue the stopped trial's point for the workers still running (``requeue_stopped``).
    Whatever fails here must not replace the stop: the next worker to start queues it too."""
    try:
        requeue_stopped(study, settings)
    except Exception as e:  # on the way out of a stopped worker; the next start is the fallback
        _logger.warning(
            "study %s: the stopped trial's point was not queued again now (%s: %s); the next "
            "worker to start queues it",
            study.study_name, type(e).__name__, settings.storage.hide(str(e)),
        )  # fmt: skip
