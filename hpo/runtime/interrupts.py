"""Ctrl-C held back for the few milliseconds in which a trial exists but is not yet ours.

``Study.ask`` writes the new trial to the storage as RUNNING before it returns, and then does
more work (the sampler's relative search space, which under load takes a while). A Ctrl-C or
SIGTERM in that window raises ``KeyboardInterrupt`` inside Optuna, before the caller holds the
trial, so nobody can record it FAIL: it stays RUNNING until a later run's stale-trial check.
:class:`HeldInterrupts` notes such a signal instead, and delivers it once the caller is ready
to record the trial.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

__all__ = ["HeldInterrupts"]

_HELD = (signal.SIGINT, signal.SIGTERM)


class HeldInterrupts:
    """Hold SIGINT and SIGTERM from ``with`` until :meth:`release`.

    ``with HeldInterrupts() as held: trial = ask()`` then, inside the ``try`` that records the
    trial, ``held.release()``: it restores the previous handlers and re-sends a signal that
    arrived meanwhile, so that handler runs as if the signal came now (the default raises
    ``KeyboardInterrupt``; a worker's raises it once and then ignores more). If the block
    itself raises, the handlers are restored at once. Outside the main thread, where Python
    runs no signal handlers, it does nothing.
    """

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._received: int | None = None

    def __enter__(self) -> HeldInterrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._note) for s in _HELD}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._restore()

    def release(self) -> None:
        """Restore the handlers; deliver the first signal received while held, if any."""
        self._restore()
        received, self._received = self._received, None
        if received is not None:
            signal.raise_signal(received)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self._received is None:
            self._received = signum

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
