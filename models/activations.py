"""Activation functions selectable by name (a tuned hyperparameter)."""

from __future__ import annotations

from torch import nn

from .config import ACTIVATIONS
from .errors import ModelConfigError

__all__ = ["make_activation"]


def make_activation(name: str) -> nn.Module:
    """Build the activation module called ``name``.

    Args:
        name: One of :data:`ACTIVATIONS`.

    Returns:
        A fresh, stateless activation module (PyTorch's default slopes).

    Raises:
        ModelConfigError: ``name`` is not one of :data:`ACTIVATIONS`.
    """
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU()
    if name == "elu":
        return nn.ELU()
    raise ModelConfigError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
