"""The trial loop every worker runs: ``study.optimize`` with the product's policies as
callbacks (the budget, a line per trial, the ETA) and ``catch=``, and the final step's
``settle``. It imports no torch, so a process that only runs the loop (``bench/scale.py``'s
simulated workers, restarted after each SIGKILL) imports it in 0.44 s of CPU, not 1.55 s.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from .. import records
from ..errors import TrialError
from ..records import TrialCounts
from ..runtime.storage import StorageOptions
from ..runtime.trial_count import trial_counter
from .eta import format_duration, study_eta
from .progress import RunProgress, format_trial_line

if TYPE_CHECKING:
    from ..runtime.interrupts import StopSignals

__all__ = ["FINISHED", "optimize", "settle"]

_logger = logging.getLogger("hpo.run")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


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
