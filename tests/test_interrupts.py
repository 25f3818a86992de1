"""hpo.runtime.interrupts: Ctrl-C and SIGTERM stop a worker the same way, and a signal that
arrives between trials waits for the next trial to start, where it can be recorded."""

from __future__ import annotations

import os
import signal

import pytest

from hpo.runtime.interrupts import Stopped, StopSignals


def test_sigterm_stops_like_ctrl_c_and_says_terminated() -> None:
    with pytest.raises(Stopped) as stopped, StopSignals().installed():
        os.kill(os.getpid(), signal.SIGTERM)
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert (stopped.value.reason, stopped.value.exit_status) == ("terminated", 143)


def test_a_signal_between_trials_is_raised_when_the_next_trial_starts() -> None:
    steps = []
    with StopSignals().installed() as signals, pytest.raises(Stopped) as stopped:
        with signals.between_trials():
            os.kill(os.getpid(), signal.SIGINT)  # e.g. while Optuna creates the next trial
            steps.append("the trial was created")
            with signals.in_trial():
                steps.append("the trial ran")  # never: it stops as it starts
    assert steps == ["the trial was created"]
    assert (stopped.value.reason, stopped.value.exit_status) == ("interrupted", 130)


def test_a_signal_held_after_the_last_trial_is_raised_when_the_loop_ends() -> None:
    with StopSignals().installed() as signals, pytest.raises(Stopped):
        with signals.between_trials():
            os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("the held signal was lost")


def test_later_signals_are_ignored_while_the_first_is_handled() -> None:
    with pytest.raises(Stopped) as stopped, StopSignals().installed():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the parent's SIGTERM after Ctrl-C
    assert stopped.value.reason == "interrupted"


def test_the_previous_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals().installed():
        assert signal.getsignal(signal.SIGTERM) != before
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_stop_swallowed_where_it_cannot_propagate_is_raised_at_the_next_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A signal can arrive while a weakref callback runs: Python swallows what it raises there
    (and would print a traceback); the trial's next check raises it."""
    import weakref

    class Anything:
        pass

    with StopSignals().installed() as signals, pytest.raises(Stopped):
        with signals.between_trials(), signals.in_trial():
            thing = Anything()
            weakref.finalize(thing, os.kill, os.getpid(), signal.SIGTERM)
            del thing  # the signal is handled inside the finalizer, and swallowed there
            signals.check()
    assert "Traceback" not in capsys.readouterr().err
