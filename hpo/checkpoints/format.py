"""The checkpoint file: ``{"format": 1, "state_dict": {name: tensor}, "config": {...}}``, plain
types only, so ``torch.load(weights_only=True)`` reads it without executing code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from models import CNNConfig, ModelConfigError, ModelFamily, build_model

from ..errors import CheckpointError, one_line
from ..records import CheckpointConfig
from ..runtime.device import place
from ..runtime.files import written_whole

__all__ = [
    "Checkpoint",
    "LoadedModel",
    "load_model_file",
    "read_checkpoint",
    "rebuild",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = 1
StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read: its weights (on the CPU) and its typed config."""

    state_dict: dict[str, Tensor]
    config: CheckpointConfig


@dataclass(frozen=True)
class LoadedModel:
    """A network rebuilt from a checkpoint (eval mode, on the requested device), with what is
    needed to feed it: the normalization its training batches used, and its config."""

    model: nn.Module
    family: ModelFamily
    cnn_config: CNNConfig
    mean: list[float]
    std: list[float]
    config: CheckpointConfig


def write_checkpoint(
    path: StrPath, state_dict: dict[str, Tensor], config: CheckpointConfig
) -> Path:
    """Write ``state_dict`` (moved to the CPU) and ``config`` to ``path`` whole or not at all
    (a temporary file renamed into place)."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": config.to_dict(),
    }
    # Through a Python file: torch.save to a path reports a full disk as an iostream error.
    with written_whole(path, mode=0o600) as tmp, tmp.open("wb") as f:
        torch.save(payload, f)
    return path


def read_checkpoint(path: StrPath, what: str | None = None) -> Checkpoint:
    """Read a checkpoint file (tensors on the CPU); ``CheckpointError`` in one line if it is
    missing, unreadable, of another format version or not written by hpo."""
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
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {what} holds no weights; not written by hpo")
    return Checkpoint(state, CheckpointConfig.from_dict(payload.get("config"), what))


def rebuild(checkpoint: Checkpoint, device: str | torch.device = "cpu") -> LoadedModel:
    """The network of a checkpoint, with its weights, in eval mode on ``device``;
    ``CheckpointError`` if the config builds no network or the weights do not fit it."""
    config = checkpoint.config
    try:
        family = ModelFamily(config.model_family)
        cnn_config = CNNConfig.from_dict(config.cnn_config)
        model = build_model(family, cnn_config)
        _check_dtypes(model.state_dict(), checkpoint.state_dict)
        model.load_state_dict(checkpoint.state_dict)
    except (ValueError, ModelConfigError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint does not rebuild its network: {one_line(e)}") from e
    place(model, device).eval()
    return LoadedModel(model, family, cnn_config, list(config.mean), list(config.std), config)


def _check_dtypes(expected: dict[str, Tensor], found: dict[str, Tensor]) -> None:
    """``load_state_dict`` casts silently: integer "weights" would load as zeros and score as
    chance, so a tensor of another dtype than the network's is refused (``ValueError``)."""
    wrong = [k for k, v in found.items() if k in expected and v.dtype != expected[k].dtype]
    if wrong:
        k = wrong[0]
        raise ValueError(f"{k} is {found[k].dtype}, the network's is {expected[k].dtype}")


def load_model_file(path: StrPath, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network saved in the checkpoint file ``path``."""
    return rebuild(read_checkpoint(path), device)
