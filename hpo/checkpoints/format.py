"""The checkpoint file: a ``torch.save`` payload of plain types that rebuilds its network.

``{"format": 1, "state_dict": {name: tensor}, "config": {...}}``, where ``config`` holds the
model family, the :class:`models.CNNConfig`, the input normalization (``mean``, ``std``), the
trial's parameters and number, and the resolved study definition (``definition``, as
``StudyDefinition.to_dict()`` stores it: dataset, options, sparsities). Plain types only, so
``torch.load(weights_only=True)`` reads it without executing code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import CNNConfig, ModelFamily, build_model

from ..errors import CheckpointError
from ..runtime.device import place

__all__ = [
    "CHECKPOINT_FORMAT",
    "LoadedModel",
    "load_model_file",
    "read_checkpoint",
    "rebuild",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class LoadedModel:
    """A network rebuilt from a checkpoint, with what is needed to feed it.

    Attributes:
        model: The network in eval mode on the requested device.
        family: Its model family.
        cnn_config: Its topology.
        mean: Per-channel normalization mean the training batches used.
        std: Per-channel normalization std.
        config: The full checkpoint configuration (definition, params, trial number).
    """

    model: nn.Module
    family: ModelFamily
    cnn_config: CNNConfig
    mean: list[float]
    std: list[float]
    config: dict[str, Any]


def write_checkpoint(
    path: str | os.PathLike[str], state_dict: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """Write ``state_dict`` (moved to the CPU) and ``config`` to ``path``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": config,
    }
    torch.save(payload, path)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str], what: str | None = None) -> dict[str, Any]:
    """Read a checkpoint file (tensors on the CPU).

    Args:
        path: The file.
        what: How to name it in messages (default: its path).

    Raises:
        CheckpointError: Missing, unreadable, not a checkpoint, or another format version.
    """
    what = what or str(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint file {what}") from None
    except Exception as e:  # torch.load fails in many ways on a file that is not a checkpoint
        raise CheckpointError(f"cannot read checkpoint {what}: not a torch checkpoint") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"checkpoint {what} has format {found!r}, expected {CHECKPOINT_FORMAT}"
        )
    return payload


def rebuild(payload: dict[str, Any], device: str | torch.device = "cpu") -> LoadedModel:
    """The network of a checkpoint payload, with its weights, in eval mode on ``device``."""
    config = payload["config"]
    family = ModelFamily(config["model_family"])
    cnn_config = CNNConfig.from_dict(config["cnn_config"])
    model = build_model(family, cnn_config)
    model.load_state_dict(payload["state_dict"])
    place(model, device).eval()
    return LoadedModel(
        model=model,
        family=family,
        cnn_config=cnn_config,
        mean=list(config["mean"]),
        std=list(config["std"]),
        config=config,
    )


def load_model_file(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> LoadedModel:
    """Rebuild the network saved in the checkpoint file ``path`` (see :func:`read_checkpoint`)."""
    return rebuild(read_checkpoint(path), device)
