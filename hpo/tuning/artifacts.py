"""Trial checkpoints as Optuna artifacts: saved per completed trial, reloadable by anyone.

Each completed trial uploads its best-epoch weights, in the self-describing checkpoint format
of :mod:`hpo.checkpoints.format`, to a file-system artifact store next to the storage
(``hpo.runtime.storage_url.artifact_dir_for``), where optuna-dashboard finds it too; the
artifact id is stored on the trial as ``keys.MODEL_ARTIFACT``. ``python -m hpo.export``
copies one to a named file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

from ..checkpoints.format import LoadedModel, read_checkpoint, rebuild, write_checkpoint
from ..errors import CheckpointError
from ..runtime.storage_url import artifact_dir_for
from . import keys

__all__ = [
    "load_checkpoint",
    "load_trial_model",
    "open_artifact_store",
    "save_checkpoint",
    "trial_checkpoint",
]


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
    with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
        path = write_checkpoint(Path(tmp) / f"trial-{trial.number}.pt", state_dict, config)
        return upload_artifact(
            artifact_store=store,
            file_path=str(path),
            study_or_trial=trial,
            mimetype="application/x-pytorch",
        )


def load_checkpoint(store: FileSystemArtifactStore, artifact_id: str) -> dict[str, Any]:
    """Download and read one checkpoint (tensors on the CPU).

    Raises:
        CheckpointError: The artifact is missing or not a checkpoint of this format.
    """
    with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
        path = Path(tmp) / "checkpoint.pt"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except (FileNotFoundError, OSError) as e:
            raise CheckpointError(f"cannot read model artifact {artifact_id}: {e}") from e
        return read_checkpoint(path, what=f"model artifact {artifact_id}")


def trial_checkpoint(
    study: optuna.Study, trial_number: int | None, store: FileSystemArtifactStore
) -> dict[str, Any]:
    """The checkpoint a trial saved (default: the study's best trial).

    ``trial_number=None`` means ``keys.BEST_TRIAL`` if the run has finished (the trial whose
    test figures are stored), else ``study.best_trial``.

    Raises:
        CheckpointError: No such trial, or it saved no checkpoint (only completed trials do).
    """
    if trial_number is None:
        trial_number = study.user_attrs.get(keys.BEST_TRIAL, None)
        if trial_number is None:
            trial_number = study.best_trial.number
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
    if not trials:
        raise CheckpointError(f"study {study.study_name!r} has no trial {trial_number}")
    artifact_id = trials[0].user_attrs.get(keys.MODEL_ARTIFACT)
    if artifact_id is None:
        raise CheckpointError(
            f"trial {trial_number} of study {study.study_name!r} saved no model "
            f"(state {trials[0].state.name}); only completed trials do"
        )
    return load_checkpoint(store, artifact_id)


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
        trial_number: Which trial; ``None`` for the best one (see :func:`trial_checkpoint`).
        store: The artifact store (``open_artifact_store(storage_url)``).
        device: Where to put the model.

    Raises:
        CheckpointError: The trial saved no checkpoint (not complete) or it cannot be read.
    """
    return rebuild(trial_checkpoint(study, trial_number, store), device)
