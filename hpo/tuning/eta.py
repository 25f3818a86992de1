"""When a study's remaining trials should be done, from the trials it has finished: read by
every worker's trial loop, which imports no torch (``hpo.tuning.trial_loop``)."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

__all__ = ["Eta", "format_duration", "study_eta"]

_ETA_WINDOW = 20  # the last finished trials the ETA averages over


@dataclass(frozen=True)
class Eta:
    """When the study's remaining trials should be done, from the trials finished so far."""

    finished: int
    n_trials: int
    seconds: float  # for the remaining trials
    mean: float  # seconds per trial over the last ``window``
    window: int
    workers: int  # running now

    def line(self) -> str:
        remaining = self.n_trials - self.finished
        return (
            f"{self.finished}/{self.n_trials} finished; ETA {format_duration(self.seconds)} for "
            f"the other {remaining} (mean {format_duration(self.mean)} per trial over the last "
            f"{self.window}, {self.workers} running)"
        )


def study_eta(trials: Sequence[FrozenTrial], n_trials: int) -> Eta | None:
    """The :class:`Eta` of the study's remaining trials (``None`` before the first ends)."""
    done = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        and t.datetime_start is not None
        and t.datetime_complete is not None
    ]
    remaining = n_trials - len(done)
    if not done or remaining <= 0:
        return None
    recent = sorted(done, key=lambda t: t.datetime_complete)[-_ETA_WINDOW:]
    mean = sum(_seconds(t) for t in recent) / len(recent)
    workers = max(1, sum(t.state == TrialState.RUNNING for t in trials))
    return Eta(len(done), n_trials, remaining * mean / workers, mean, len(recent), workers)


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``: as precise as a plan needs."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _seconds(trial: FrozenTrial) -> float:
    delta: datetime.timedelta = trial.datetime_complete - trial.datetime_start
    return delta.total_seconds()
