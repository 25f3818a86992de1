"""What a running study tells its user: two tqdm bars on a terminal (the study's trials and
the running trial's batches), else a log line every ``log_every`` s, and a line per trial."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .. import records

LOG_EVERY_SECONDS = 30.0

_logger = logging.getLogger("hpo.run")


class RunProgress:
    """A bar over the study's finished trials, and a :class:`TrialProgress` per trial; bars
    only when ``enabled`` and stderr is a terminal, else log lines (``clock``: for tests)."""

    def __init__(
        self,
        study_name: str,
        n_trials: int,
        finished: int,
        enabled: bool,
        *,
        log_every: float = LOG_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bars = enabled and sys.stderr.isatty()
        self._log_every = log_every
        self._clock = clock
        self._trials = tqdm(
            total=n_trials,
            initial=min(finished, n_trials),
            desc=study_name,
            unit="trial",
            disable=not self._bars,
            dynamic_ncols=True,
        )

    def set_eta(self, eta: str) -> None:
        """Show an ETA on the study's bar: the estimate's before the first trial ends (hours
        on a CPU), then the finished trials'."""
        self._trials.set_postfix_str(f"ETA {eta}")

    def set_finished(self, finished: int) -> None:
        """Show the study-wide count (other workers finish trials too)."""
        self._trials.n = min(finished, self._trials.total)
        self._trials.refresh()

    @contextlib.contextmanager
    def trial(self, trial_number: int, epochs: int) -> Iterator[TrialProgress]:
        """Progress of one trial, its bar closed when the trial ends."""
        bar = tqdm(
            total=None,
            desc=f"trial {trial_number}",
            unit="batch",
            leave=False,
            disable=not self._bars,
            dynamic_ncols=True,
        )
        log_every = None if self._bars else self._log_every
        progress = TrialProgress(trial_number, epochs, bar, log_every, self._clock)
        try:
            yield progress
        finally:
            bar.close()

    @contextlib.contextmanager
    def logging(self) -> Iterator[None]:
        """Route log records through ``tqdm.write`` while the bars are open."""
        if not self._bars:
            yield
            return
        with logging_redirect_tqdm(loggers=[logging.getLogger()]):
            yield

    def close(self) -> None:
        self._trials.close()


class TrialProgress:
    """Counts a running trial's batches into its bar, or into a log line every so often.
    ``track(source)`` returns it as the batch source: ``.epoch(e)`` counts ``source``'s."""

    def __init__(
        self,
        trial_number: int,
        epochs: int,
        bar: tqdm,
        log_every: float | None,
        clock: Callable[[], float],
    ) -> None:
        self._number, self._epochs, self._per_epoch = trial_number, epochs, 0
        self._bar, self._log_every, self._clock = bar, log_every, clock
        self._started = self._last_log = clock()
        self._images = 0
        self._val: float | None = None
        self._shown_epoch: int | None = None
        self._source: Any = None

    def track(self, source: Any) -> TrialProgress:
        self._source, self._per_epoch = source, len(source)
        self._bar.reset(total=self._epochs * self._per_epoch)
        return self

    def epoch(self, epoch: int) -> Iterator[Any]:
        for index, batch in enumerate(self._source.epoch(epoch), 1):
            yield batch
            self._batch(epoch, index, int(batch[-1].shape[0]))

    def epoch_done(self, step: int, accuracy: float) -> None:
        self._val = accuracy
        self._bar.set_postfix(val=f"{accuracy:.4f}")

    def _batch(self, epoch: int, index: int, images: int) -> None:
        self._images += images
        if epoch != self._shown_epoch:
            self._shown_epoch = epoch
            self._bar.set_description(
                f"trial {self._number} epoch {epoch + 1}/{self._epochs}", False
            )
        self._bar.update()
        now = self._clock()
        if self._log_every is None or now - self._last_log < self._log_every:
            return
        self._last_log = now
        rate = self._images / max(now - self._started, 1e-9)
        val = f", val {self._val:.4f} after epoch {epoch}" if self._val is not None else ""
        _logger.info(
            "trial %d: epoch %d/%d, batch %d/%d, %.0f images/s%s",
            self._number, epoch + 1, self._epochs, index, self._per_epoch, rate, val,
        )  # fmt: skip


def format_params(params: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def format_trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """``trial 12 [tpe] COMPLETE value=0.9512 depth=6 ... in 41.2s`` (one line)."""
    phase = trial.user_attrs.get(records.PHASE, "?")
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    value = f"value={trial.value:.4f}" if trial.value is not None else "value=-"
    line = (
        f"trial {trial.number} [{phase}] {trial.state.name} {value} "
        f"{format_params(trial.params)} in {seconds:.1f}s"
    )
    reason = trial.user_attrs.get(records.FAIL_REASON)
    if reason and trial.state.name != "COMPLETE":
        line += f" ({reason})"
    return line
