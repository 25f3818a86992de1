"""What a running study tells its user: progress bars and one log line per finished trial.

Bars go to stderr through tqdm and hide themselves when stderr is not a terminal (logs of a
batch job or a container stay clean); log lines are routed through ``tqdm.write`` while a bar
is open so they do not tear it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import optuna
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import keys

__all__ = ["RunProgress", "format_params", "format_trial_line"]


class RunProgress:
    """A bar over the study's finished trials and, inside it, a transient bar over epochs."""

    def __init__(self, study_name: str, n_trials: int, finished: int, enabled: bool) -> None:
        self._enabled = enabled
        self._trials = tqdm(
            total=n_trials,
            initial=min(finished, n_trials),
            desc=study_name,
            unit="trial",
            disable=None if enabled else True,  # None: only on a terminal
            dynamic_ncols=True,
        )

    def set_finished(self, finished: int) -> None:
        """Show the study-wide count (other workers finish trials too)."""
        self._trials.n = min(finished, self._trials.total)
        self._trials.refresh()

    @contextlib.contextmanager
    def epochs(self, trial_number: int, total: int) -> Iterator[tqdm]:
        """A bar over one trial's epochs that disappears when the trial ends."""
        bar = tqdm(
            total=total,
            desc=f"trial {trial_number}",
            unit="epoch",
            leave=False,
            disable=None if self._enabled else True,
            dynamic_ncols=True,
        )
        try:
            yield bar
        finally:
            bar.close()

    @contextlib.contextmanager
    def logging(self) -> Iterator[None]:
        """Route log records through ``tqdm.write`` while the bars are open."""
        with logging_redirect_tqdm(loggers=[logging.getLogger()]):
            yield

    def close(self) -> None:
        self._trials.close()


def format_params(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def format_trial_line(trial: optuna.trial.FrozenTrial, seconds: float) -> str:
    """``trial 12 [tpe] COMPLETE value=0.9512 depth=6 ... in 41.2s`` (one line)."""
    phase = trial.user_attrs.get(keys.PHASE, "?")
    value = f"value={trial.value:.4f}" if trial.value is not None else "value=-"
    line = (
        f"trial {trial.number} [{phase}] {trial.state.name} {value} "
        f"{format_params(trial.params)} in {seconds:.1f}s"
    )
    reason = trial.user_attrs.get(keys.FAIL_REASON)
    if reason and trial.state.name != "COMPLETE":
        line += f" ({reason})"
    return line
