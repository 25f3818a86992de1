"""Exceptions of the study runner.

Two families with different fates:

* :class:`UsageError` -- bad input (unknown study, bad override, wrong device, a resumed run
  with a different configuration). The command line prints the message as one line on stderr
  and exits with status 2; nothing has been written to the study yet.
* :class:`TrialError` -- a trial that cannot finish for a reason tied to its configuration or
  to the machine (non-finite loss, out of memory, a model the image size cannot support). The
  runner records the trial as failed or pruned with the message as its reason and carries on
  with the next trial; any other exception from a trial is recorded and then propagates.
"""

from __future__ import annotations

__all__ = [
    "ConfigMismatchError",
    "DeviceError",
    "InvalidSettingError",
    "NonFiniteLossError",
    "OutOfMemoryTrialError",
    "TrialError",
    "UnsupportedConfigError",
    "UsageError",
]


class UsageError(Exception):
    """Bad command-line input; the message is one line saying what is wrong and how to fix it."""


class InvalidSettingError(UsageError):
    """A command-line value is out of range or of the wrong type (e.g. ``--n-trials 0``)."""


class DeviceError(UsageError):
    """The requested torch device does not exist or is not available on this machine."""


class ConfigMismatchError(UsageError):
    """A resumed study was started with a different configuration than the one stored."""


class TrialError(Exception):
    """A trial cannot finish; the runner records it with this message and continues."""


class NonFiniteLossError(TrialError):
    """The training loss became NaN or infinite (usually a learning rate that diverges)."""


class OutOfMemoryTrialError(TrialError):
    """The model or batch did not fit into the device memory."""


class UnsupportedConfigError(TrialError):
    """The sampled hyperparameters describe a model that cannot be built for this dataset."""
