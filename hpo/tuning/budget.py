"""Exact trial budgets: ``--n-trials N`` ends the study with exactly N finished trials.

"Finished" means COMPLETE or PRUNED (a FAIL is not a result and does not use up the budget),
counted over the whole study, whoever ran the trials. Several workers -- processes on one
machine or on many -- share the budget through the storage alone, so the rule must hold
without a lock. Two checks do it:

1. **Before asking** for a trial, a worker counts the study: it stops once ``finished >= N``,
   and when ``finished + running >= N`` it does not start a trial but waits (see
   :func:`wait_for_slot`): the running trials may still fail, and then their slots reopen.
2. **After asking** (``study.ask()`` has created or popped trial number ``t``), two workers
   may both have passed check 1 at the same moment. Trial ``t`` keeps its slot only if fewer
   than N trials numbered *before* it are not FAIL (COMPLETE, PRUNED, RUNNING or WAITING):
   :func:`is_surplus`. Trial numbers are unique and a trial's rank among the non-failed
   trials can only go down (new trials get higher numbers; trials only leave by failing), so
   every kept trial had rank < N at its check and keeps it: at most N trials are ever
   finished-or-running, whatever the interleaving. WAITING trials count because
   ``study.ask()`` pops the lowest-numbered one first, so they are next in line.

A surplus trial never runs (:func:`release_surplus`): if it was popped from the queue (a grid
point or a retried trial, which carry the parameters they were enqueued with), it goes back to
WAITING so the grid point is not lost; a freshly created one is marked FAIL with the reason in
``keys.FAIL_REASON`` (failed trials do not count, and Optuna cannot delete a trial).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..runtime import optuna_compat
from . import keys

__all__ = ["TrialCounts", "count_trials", "is_surplus", "release_surplus", "wait_for_slot"]

# Trial states that hold (or will hold) a slot of the budget.
_CLAIMING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


@dataclass(frozen=True)
class TrialCounts:
    """Trials of a study by state."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> TrialCounts:
        """Count ``trials`` by state."""
        states = [t.state for t in trials]
        return cls(
            complete=states.count(TrialState.COMPLETE),
            pruned=states.count(TrialState.PRUNED),
            failed=states.count(TrialState.FAIL),
            running=states.count(TrialState.RUNNING),
            waiting=states.count(TrialState.WAITING),
        )

    @property
    def finished(self) -> int:
        """Trials that count towards ``--n-trials``: complete + pruned."""
        return self.complete + self.pruned

    @property
    def total(self) -> int:
        """Trials in any state."""
        return self.complete + self.pruned + self.failed + self.running + self.waiting

    def as_rows(self) -> list[tuple[str, int]]:
        """``(state name, count)`` rows for report tables."""
        return [
            ("COMPLETE", self.complete),
            ("PRUNED", self.pruned),
            ("FAIL", self.failed),
            ("RUNNING", self.running),
            ("WAITING", self.waiting),
        ]


def count_trials(study: optuna.Study) -> TrialCounts:
    """Count ``study``'s trials by state (one storage read)."""
    return TrialCounts.of(study.get_trials(deepcopy=False))


def is_surplus(study: optuna.Study, trial_number: int, n_trials: int) -> bool:
    """Whether trial ``trial_number`` would exceed the budget (check 2 of the module doc)."""
    ahead = sum(
        1 for t in study.get_trials(deepcopy=False, states=_CLAIMING) if t.number < trial_number
    )
    return ahead >= n_trials


def release_surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> None:
    """Give up ``trial`` without running it: back to the queue if it came from there, else FAIL."""
    if optuna_compat.queued_params(optuna_compat.frozen_trial(study, trial)) is not None:
        optuna_compat.return_to_queue(study, trial)
        return
    optuna_compat.fail_without_running(
        study,
        trial,
        keys.FAIL_REASON,
        f"surplus: the budget of {n_trials} trials was already claimed by other workers",
    )


def wait_for_slot(
    study: optuna.Study,
    n_trials: int,
    *,
    poll_seconds: float = 1.0,
    deadline: float | None = None,
) -> bool:
    """Block while the budget is fully claimed by running trials; True when a slot opens.

    Returns False when the study has its ``n_trials`` finished trials (nothing left to do) or
    ``deadline`` (a ``time.monotonic()`` value) has passed. While waiting it fails stale
    trials (dead workers) so their slots reopen, as Optuna only does that when a trial is asked
    for. A worker killed between ``ask()`` and its first heartbeat leaves a RUNNING trial that
    Optuna never considers stale; such a trial seen RUNNING for longer than the grace period
    gets one heartbeat recorded on its behalf (harmless for a live trial, whose own heartbeat
    thread keeps beating), so it goes stale one grace period later.
    """
    grace = optuna_compat.heartbeat_grace_period(study)
    adopted: set[int] = set()
    while True:
        optuna_compat.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if finished >= n_trials:
            return False
        if finished + len(running) < n_trials:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if grace is not None:
            now = datetime.datetime.now()
            for trial in running:
                started = trial.datetime_start
                if trial.number in adopted or started is None:
                    continue
                if (now - started).total_seconds() > grace:
                    optuna_compat.record_heartbeat(study, trial)
                    adopted.add(trial.number)
        time.sleep(poll_seconds)
