"""Model checkpoints as Optuna artifacts: saved per completed trial, reloadable by anyone.

A checkpoint is a ``torch.save`` file of plain types only (so ``torch.load(weights_only=True)``
reads it without executing code): the best-epoch ``state_dict`` plus everything needed to
rebuild and feed the network -- model family, :class:`models.CNNConfig`, the input
normalization and the resolved study definition. It is uploaded to a file-system artifact
store next to the storage (``hpo.runtime.storage_url.artifact_dir_for``), where
optuna-dashboard finds it too, and its id is stored on the trial as ``keys.MODEL_ARTIFACT``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from torch import nn

from models import CNNConfig, ModelFamily, build_model

from ..runtime.storage_url import artifact_dir_for
from . import keys

__all__ = [
    "CHECKPOINT_FORMAT",
    "ArtifactError",
    "LoadedModel",
    "load_checkpoint",
    "load_trial_model",
    "open_artifact_store",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1


class ArtifactError(LookupError):
    """A trial has no checkpoint, or the checkpoint cannot be read (message is one line)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


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


def open_artifact_store(storage_url: str) -> FileSystemArtifactStore:
    """The artifact store that belongs to the storage at ``storage_url`` (created if missing)."""
    path = artifact_dir_for(storage_url)
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(path)


def save_checkpoint(
    trial: optuna.Trial,
    store: FileSystemArtifactStore,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
) -> str:
    """Upload ``state_dict`` + ``config`` as an artifact of ``trial``; returns its artifact id."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": config,
    }
    with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
        path = Path(tmp) / f"trial-{trial.number}.pt"
        torch.save(payload, path)
        return upload_artifact(
            artifact_store=store,
            file_path=str(path),
            study_or_trial=trial,
            mimetype="application/x-pytorch",
        )


def load_checkpoint(store: FileSystemArtifactStore, artifact_id: str) -> dict[str, Any]:
    """Download and read one checkpoint (tensors on the CPU)."""
    with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
        path = Path(tmp) / "checkpoint.pt"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except (FileNotFoundError, OSError) as e:
            raise ArtifactError(f"cannot read model artifact {artifact_id}: {e}") from e
        payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(
            f"model artifact {artifact_id} has format {payload.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT}"
        )
    return payload


def load_trial_model(
    study: optuna.Study,
    trial_number: int | None = None,
    *,
    store: FileSystemArtifactStore,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Rebuild the network a trial saved (default: the study's best trial).

    Args:
        study: The study, loaded from its storage.
        trial_number: Which trial; ``None`` for the best one (``keys.BEST_TRIAL`` if the run
            has finished, else ``study.best_trial``).
        store: The artifact store (``open_artifact_store(storage_url)``).
        device: Where to put the model.

    Raises:
        ArtifactError: The trial saved no checkpoint (not complete) or it cannot be read.
    """
    if trial_number is None:
        trial_number = study.user_attrs.get(keys.BEST_TRIAL, None)
        if trial_number is None:
            trial_number = study.best_trial.number
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
    if not trials:
        raise ArtifactError(f"study {study.study_name!r} has no trial {trial_number}")
    artifact_id = trials[0].user_attrs.get(keys.MODEL_ARTIFACT)
    if artifact_id is None:
        raise ArtifactError(
            f"trial {trial_number} of study {study.study_name!r} saved no model "
            f"(state {trials[0].state.name}); only completed trials do"
        )
    payload = load_checkpoint(store, artifact_id)
    config = payload["config"]
    family = ModelFamily(config["model_family"])
    cnn_config = CNNConfig.from_dict(config["cnn_config"])
    model = build_model(family, cnn_config)
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return LoadedModel(
        model=model,
        family=family,
        cnn_config=cnn_config,
        mean=list(config["mean"]),
        std=list(config["std"]),
        config=config,
    )
