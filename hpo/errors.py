"""The exceptions and exit statuses every ``hpo`` command shares: a :class:`UsageError` is one
line and exit 2; a :class:`TrialError` fails or prunes its trial and the study goes on."""

from __future__ import annotations

import signal
import sys
from typing import Final

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_NO_SPACE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CheckpointError",
    "ConfigMismatchError",
    "DeviceError",
    "InvalidSettingError",
    "NonFiniteLossError",
    "OutOfMemoryTrialError",
    "TrialError",
    "UnsupportedConfigError",
    "UsageError",
    "one_line",
    "print_usage_error",
]

EXIT_OK: Final = 0
EXIT_USAGE: Final = 2  # bad input, as argparse itself exits
EXIT_INTERRUPTED: Final = 128 + signal.SIGINT  # 130: stopped by Ctrl-C, as shells report it
# A fault of the environment, not of the input: the disk is full (sysexits' EX_IOERR). Free
# space and run the same command again.
EXIT_NO_SPACE: Final = 74


class UsageError(Exception):
    """Bad command-line input; the message is one line saying what is wrong and how to fix it."""


class InvalidSettingError(UsageError):
    """A command-line value is out of range or of the wrong type (e.g. ``--n-trials 0``)."""


class DeviceError(UsageError):
    """The requested torch device does not exist or is not available on this machine."""


class ConfigMismatchError(UsageError):
    """A resumed study was started with a different configuration than the one stored."""


class CheckpointError(LookupError):
    """A trial has no checkpoint, or a checkpoint cannot be read (message is one line)."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0]) if self.args else ""


class TrialError(Exception):
    """A trial cannot finish; the runner records it with this message and continues."""


class NonFiniteLossError(TrialError):
    """The training loss became NaN or infinite (usually a learning rate that diverges)."""


class OutOfMemoryTrialError(TrialError):
    """The model or batch did not fit into the device memory."""


class UnsupportedConfigError(TrialError):
    """The sampled hyperparameters describe a model that cannot be built for this dataset."""


def one_line(error: BaseException) -> str:
    """The first line of ``error``'s message (with the next when the first only introduces
    it, as torch's "Error(s) in loading state_dict for X:"), else its type name; a SQLAlchemy
    error is read from its driver's message (``error.orig``), which names the cause."""
    orig = getattr(error, "orig", None)
    lines = [line.strip() for line in str(orig if orig is not None else error).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return type(error).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"
    return lines[0]


def print_usage_error(error: BaseException, prog: str | None = None) -> int:
    """Print ``[prog: ]error: <first line>`` on stderr; returns :data:`EXIT_USAGE`."""
    prefix = f"{prog}: " if prog else ""
    print(f"{prefix}error: {one_line(error)}", file=sys.stderr)
    return EXIT_USAGE
