"""One worker: join the study, then run its trials with ``study.optimize`` until the budget.

Optuna's loop fails dead workers' trials before each trial, pops queued trials first and
records every state; our callbacks stop it (``docs/decisions.md``, "Built on Optuna").
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from .. import records
from ..errors import TrialError
from ..records import TrialCounts
from ..runtime.cpu import prepare_cpu_training
from ..runtime.device import take_device
from ..runtime.interrupts import StopSignals
from ..runtime.storage import StorageOptions, open_storage
from ..runtime.trial_count import trial_counter
from .artifacts import open_artifact_store
from .estimate import estimate_line, format_duration, shared_estimate, study_eta
from .objective import Objective
from .progress import RunProgress, format_trial_line
from .pruning import make_pruner
from .search import make_sampler
from .settings import RunSettings
from .study_setup import open_study, requeue_stopped
from .trial_data import load_trial_data, validation_split

__all__ = ["optimize", "run_worker", "settle"]

_logger = logging.getLogger("hpo.run")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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


def optimize(
    study: optuna.Study,
    objective: optuna.study.study.ObjectiveFuncType,
    n_trials: int,
    *,
    timeout: float | None = None,
    queue_only: bool = False,
    progress: RunProgress | None = None,
    signals: StopSignals | None = None,
    storage: optuna.storages.BaseStorage | None = None,
) -> None:
    """``study.optimize`` with the product's policies: ``MaxTrialsCallback(n_trials)`` over
    finished trials (K workers that finish together may add K - 1), ``catch=`` for a
    :class:`~hpo.errors.TrialError`, a line per trial; ``queue_only``: stop when none waits;
    ``signals``: Ctrl-C and SIGTERM held between trials (the objective raises them inside);
    ``storage``: the study's, when it is a database: the budget is counted there
    (:class:`_FinishedBudget`)."""
    count = None if storage is None else trial_counter(storage, study.study_name, FINISHED)
    if count is None:
        callbacks = [MaxTrialsCallback(n_trials, states=FINISHED), _TrialLog(n_trials, progress)]
    else:  # the log runs after the budget and shows the count it just took
        budget = _FinishedBudget(n_trials, count)
        callbacks = [budget, _TrialLog(n_trials, progress, budget.last_count)]
    if queue_only:
        callbacks.append(_stop_when_queue_empty)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            _logger.info("study %s: no queued trial left to run", study.study_name)
            return
    with signals.between_trials() if signals else contextlib.nullcontext():
        study.optimize(
            objective, timeout=timeout, catch=(TrialError,), callbacks=callbacks,
            gc_after_trial=False,
        )  # fmt: skip


class _FinishedBudget:
    """``MaxTrialsCallback(n_trials, states=FINISHED)``'s rule, the same stop after the same
    trials, with the finished trials counted by the database (:mod:`hpo.runtime.trial_count`)
    rather than read through Optuna's cache, which re-reads every running trial: with 256
    workers, 26 ms of the 180 ms of CPU a worker spent on the storage per trial."""

    def __init__(self, n_trials: int, count: Callable[[], int]) -> None:
        self._n_trials, self._count = n_trials, count
        self._last = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._last = self._count()
        if self._last >= self._n_trials:
            study.stop()

    def last_count(self) -> int:
        """The finished trials counted after the latest trial (the bar shows it)."""
        return self._last


def _stop_when_queue_empty(study: optuna.Study, trial: FrozenTrial) -> None:
    if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study.stop()


class _TrialLog:
    """After every trial: one line for it; the study's count on the bar, and an ETA after a
    trial that ends at least ``STUDY_READ_SECONDS`` after the last one (a trial of minutes:
    every one). The ETA reads the study, which costs every worker a re-read of every running
    trial and a pass over every finished one: 26 ms of CPU with 256 running, 11 ms more at
    20,000 finished (``docs/performance.md``, "Issue 32"); so short trials read it at most
    once a minute. The count is the budget's, taken by the database after every trial
    (``count``), or, for a storage that is not one, that read plus this worker's own trials
    since."""

    STUDY_READ_SECONDS = 60.0

    def __init__(
        self, n_trials: int, progress: RunProgress | None, count: Callable[[], int] | None = None
    ) -> None:
        self._n_trials, self._progress, self._count = n_trials, progress, count
        self._next_read = 0.0
        self._finished = 0  # the study's, as of the last read or count, plus this worker's since

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        log = _logger.warning if trial.state == TrialState.FAIL else _logger.info
        log(format_trial_line(trial))
        self._finished += trial.state in FINISHED
        if time.monotonic() >= self._next_read:
            trials = study.get_trials(deepcopy=False)
            self._next_read = time.monotonic() + self.STUDY_READ_SECONDS
            self._finished = TrialCounts.of(trials).finished
            eta = study_eta(trials, self._n_trials)
            if eta is not None:
                _logger.info(eta.line())
                if self._progress is not None:
                    self._progress.set_eta(format_duration(eta.seconds))
        elif self._count is not None and self._progress is not None:
            self._finished = self._count()
        if self._progress is not None:
            self._progress.set_finished(self._finished)


def settle(study: optuna.Study, storage: optuna.storages.BaseStorage, n_trials: int) -> None:
    """Once the budget is met, wait (at most two grace periods) for running trials to finish
    or go stale, failing the stale (re-queued by the heartbeat callback). A trial whose worker
    died before its first heartbeat never goes stale: one beat on its behalf makes it so. A
    stale trial whose retry was lost (:func:`_lost_retries`) is re-queued here."""
    options = StorageOptions.from_env()
    interval, grace = options.heartbeat_interval, options.grace_period
    if interval is None or grace is None:
        return
    if TrialCounts.of(study.get_trials(deepcopy=False)).finished < n_trials:
        return  # stopped early (a timeout): other workers go on
    study_id = storage.get_study_id_from_name(study.study_name)
    retry = storage.get_heartbeat_stale_trial_callback()  # type: ignore[attr-defined]
    deadline, adopted = time.monotonic() + 2 * grace + interval, set()
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        now = datetime.datetime.now()
        lost = _lost_retries(trials, options.max_retry) if retry is not None else []
        for trial in lost:
            if (now - trial.datetime_complete).total_seconds() > grace:
                retry(study, copy.deepcopy(trial))
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if not (running or lost) or time.monotonic() >= deadline:
            return
        for trial in running:
            started = trial.datetime_start
            if trial.number not in adopted and started and (now - started).total_seconds() > grace:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
                storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
                adopted.add(trial.number)
        time.sleep(0.25)


def _lost_retries(trials: list[FrozenTrial], max_retry: int | None) -> list[FrozenTrial]:
    """Trials failed as stale (no reason of ours: their worker died), below ``max_retry``
    retries, that no retry copies. Optuna's ``fail_stale_trials`` commits the failures first
    and queues the retries after, so a worker killed in between loses them: 6 of 129 killed
    trials in ``bench/scale.py``, each failed about a second before a SIGKILL. A live worker
    queues them within the grace period, which :func:`settle` waits before queuing one."""
    with warnings.catch_warnings():  # experimental since Optuna 3.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history
        retried = {h[-1] for t in trials if (h := history(t))}
        return [
            t for t in trials
            if t.state == TrialState.FAIL and records.FAIL_REASON not in t.user_attrs
            and t.number not in retried and t.datetime_complete is not None
            and (max_retry is None or len(history(t)) < max_retry)
        ]  # fmt: skip
