"""Exception types raised by the models package.

Both derive from :class:`ValueError` so callers that already catch ``ValueError`` keep working,
while the command line can catch exactly these and print their one-line message.
"""

from __future__ import annotations

__all__ = ["ModelConfigError", "ModelInputError"]


class ModelConfigError(ValueError):
    """A model or layer was configured with an invalid value (message says which and how to fix)."""


class ModelInputError(ValueError):
    """A forward call received tensors of the wrong shape or type."""
