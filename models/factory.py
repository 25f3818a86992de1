"""One entry point that builds any model family from a :class:`CNNConfig`."""

from __future__ import annotations

from torch import nn

from .config import CNNConfig, ModelFamily
from .dense_cnn import DenseCNN
from .errors import ModelConfigError
from .sparse_cnn import SparseCNN

__all__ = ["build_model"]


def build_model(family: ModelFamily | str, config: CNNConfig) -> nn.Module:
    """Build the network of ``family`` with the topology ``config``.

    Args:
        family: A :class:`ModelFamily` or its string value.
        config: The topology, shared by all families.

    Returns:
        A freshly initialized module; seed torch before calling for reproducible weights.

    Raises:
        ModelConfigError: ``family`` is not a known family or ``config`` is not a CNNConfig.
    """
    try:
        family = ModelFamily(family)
    except ValueError:
        valid = ", ".join(f.value for f in ModelFamily)
        raise ModelConfigError(f"unknown model family {family!r}; valid: {valid}") from None
    if not isinstance(config, CNNConfig):
        raise ModelConfigError(f"build_model needs a CNNConfig, got {type(config).__name__}")
    if family is ModelFamily.SPARSE:
        return SparseCNN(config)
    return DenseCNN(config, mask_channel=family is ModelFamily.DENSE_MASK)
