"""hpo.runtime.interrupts: a Ctrl-C held while a trial is created is delivered, once, later."""

from __future__ import annotations

import signal

import pytest

from hpo.runtime.interrupts import HeldInterrupts

pytestmark = pytest.mark.usefixtures("terminal_sigint")


def test_a_ctrl_c_inside_the_block_waits_for_release():
    with HeldInterrupts() as held:
        signal.raise_signal(signal.SIGINT)  # the default handler would raise right here
        reached = True
    assert reached
    with pytest.raises(KeyboardInterrupt):
        held.release()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_signal_release_restores_the_handlers_and_returns():
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with HeldInterrupts() as held:
            assert signal.getsignal(signal.SIGTERM) is not previous
        held.release()
        signal.raise_signal(signal.SIGTERM)  # the test's own handler is back
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_first_signal_is_delivered_to_the_restored_handler_and_only_once():
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with HeldInterrupts() as held:
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
        assert seen == []
        held.release()
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_error_in_the_block_restores_the_handlers_at_once():
    with pytest.raises(RuntimeError), HeldInterrupts():
        raise RuntimeError("storage down")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
