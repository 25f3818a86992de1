"""Ctrl-C and SIGTERM stop a worker the same way: the running trial is recorded FAIL with the
reason, the worker exits cleanly; and a worker whose parent died stops too.

SIGTERM is what ``docker stop``, ``docker compose down``, Slurm's ``scancel`` and Kubernetes
send, so it must not leave a trial RUNNING until a heartbeat grace expires. A signal that
arrives inside a trial raises at once (the trial stops and Optuna records it FAIL). One that
arrives between trials, e.g. while Optuna is creating the next trial, is held until the trial
starts: raised at that point, it is recorded like any other; raised inside Optuna's ``ask``,
it would leave the new trial RUNNING with nobody to record it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["REASONS", "Stopped", "StopSignals", "signals_ignored", "stop_with_parent"]

REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class Stopped(KeyboardInterrupt):
    """A worker stopped by a signal: Ctrl-C's ``KeyboardInterrupt`` for SIGTERM too, so every
    layer that handles one handles both. ``reason`` is what the trial records."""

    def __init__(self, signum: int) -> None:
        super().__init__(REASONS.get(signum, f"signal {signum}"))
        self.signum = signum
        self.reason = REASONS.get(signum, f"signal {signum}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # as shells report a process ended by the signal


class StopSignals:
    """SIGINT and SIGTERM handlers for one worker; :meth:`between_trials` holds a signal until
    :meth:`in_trial` is entered (or the block ends). Later signals are ignored, so recording
    the stopped trial is not itself interrupted."""

    def __init__(self) -> None:
        self._held: int | None = None
        self._holding = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """The handlers for the block (the previous ones after it); none outside the main
        thread, where Python cannot set them."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in REASONS}
        unraisable = sys.unraisablehook
        sys.unraisablehook = functools.partial(_quiet_if_stopped, unraisable)
        try:
            yield self
        finally:
            sys.unraisablehook = unraisable
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def between_trials(self) -> Iterator[None]:
        """Hold signals in the block except inside :meth:`in_trial`; raise a held one at its end."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        self._raise_held()

    @contextlib.contextmanager
    def in_trial(self) -> Iterator[None]:
        """Raise a held signal now (inside the trial, so it is recorded), then any at once."""
        holding, self._holding = self._holding, False
        try:
            self._raise_held()
            yield
        finally:
            self._holding = holding

    def check(self) -> None:
        """Raise a signal that arrived and was not raised yet: one that came while a garbage
        collector's callback ran is swallowed there, so the trial checks after each epoch."""
        self._raise_held()

    def _raise_held(self) -> None:
        if self._held is not None:
            signum, self._held = self._held, None
            raise Stopped(signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        for other in REASONS:
            # A no-op, not SIG_IGN: a signal already pending when its handler becomes SIG_IGN
            # makes Python print "OSError: Signal 15 ignored due to race condition".
            signal.signal(other, _ignore)
        self._held = signum  # raised later, and kept if a raise now is swallowed (see check)
        if not self._holding:
            raise Stopped(signum)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored in the block: stopping workers must not be cut short."""
    previous = {s: signal.signal(s, _ignore) for s in REASONS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _quiet_if_stopped(default: Callable[[Any], object], unraisable: Any) -> None:
    """Python prints an exception raised where it cannot propagate (a weakref callback); a
    stop raised there is not lost (:meth:`StopSignals.check` raises it again): say nothing."""
    if not isinstance(unraisable.exc_value, Stopped):
        default(unraisable)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A later signal while the first one is being handled."""


def stop_with_parent(poll_seconds: float = 1.0) -> threading.Thread:
    """SIGTERM this process once its parent is gone (``--workers K`` killed with SIGKILL), so
    its workers do not train on unsupervised and a rerun does not double them."""
    parent = os.getppid()

    def watch() -> None:
        stopped = threading.Event()
        while not stopped.wait(poll_seconds):
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="stop-with-parent", daemon=True)
    thread.start()
    return thread
