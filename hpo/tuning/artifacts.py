"""Trial checkpoints as Optuna artifacts, in the file-system store of their storage, where
optuna-dashboard lists them too; the id is stored on the trial (``records.MODEL_ARTIFACT``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from data import SparseDataset

from .. import records
from ..checkpoints.format import Checkpoint, LoadedModel, read_checkpoint, rebuild, write_checkpoint
from ..errors import CheckpointError
from ..records import CheckpointConfig
from ..runtime.storage_url import ARTIFACT_DIR_ENV, StorageTarget
from ..training import TrainingRun

__all__ = ["load_trial_model", "open_artifact_store", "save_checkpoint", "trial_checkpoint"]


def open_artifact_store(
    target: StorageTarget | str, *, create: bool = False
) -> FileSystemArtifactStore:
    """The artifact store of the storage ``target``; ``create``: make its folder if missing
    (a writer's; a reader leaves the folders as it found them)."""
    target = StorageTarget.parse(target) if isinstance(target, str) else target
    if create:
        target.artifact_dir.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(target.artifact_dir)


def save_checkpoint(
    trial: optuna.Trial,
    store: FileSystemArtifactStore,
    state_dict: dict[str, torch.Tensor],
    run: TrainingRun,
    data: SparseDataset,
    definition: dict[str, Any],
    **optional: Any,
) -> str:
    """Upload the weights of ``run``'s network as an artifact of ``trial``, with what rebuilds
    and feeds it (``CheckpointConfig``: ``definition``, the normalization of ``data``, and any
    of its ``optional`` fields); returns the artifact id."""
    config = CheckpointConfig(
        model_family=run.family.value,
        cnn_config=run.cnn_config.to_dict(),
        mean=[float(v) for v in data.mean],
        std=[float(v) for v in data.std],
        definition=definition,
        trial_number=trial.number,
        **optional,
    )
    with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
        path = write_checkpoint(Path(tmp) / f"trial-{trial.number}.pt", state_dict, config)
        return upload_artifact(
            artifact_store=store,
            file_path=str(path),
            study_or_trial=trial,
            mimetype="application/x-pytorch",
        )


def trial_checkpoint(
    study: optuna.Study, trial_number: int | None, store: FileSystemArtifactStore
) -> Checkpoint:
    """The checkpoint a trial saved; ``None``: the trial whose test figures the run stored,
    else the current best.

    Raises:
        CheckpointError: No such trial, no completed trial yet, or it saved no checkpoint.
    """
    trials = study.get_trials(deepcopy=False)
    if trial_number is None:
        trial_number = study.user_attrs.get(records.BEST_TRIAL)
    if trial_number is None:
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise CheckpointError(
                f"study {study.study_name!r} has no completed trial yet, so no model to take; "
                "wait for its first trial to complete"
            )
        trial_number = study.best_trial.number
    found = [t for t in trials if t.number == trial_number]
    if not found:
        raise CheckpointError(f"study {study.study_name!r} has no trial {trial_number}")
    artifact_id = found[0].user_attrs.get(records.MODEL_ARTIFACT)
    if artifact_id is None:
        raise CheckpointError(
            f"trial {trial_number} of study {study.study_name!r} saved no model "
            f"(state {found[0].state.name}); only completed trials do"
        )
    with tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp:
        path = Path(tmp) / "checkpoint.pt"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except ArtifactNotFound as e:
            raise CheckpointError(
                f"model artifact {artifact_id} of trial {trial_number} is not in the artifact "
                f"folder: set {ARTIFACT_DIR_ENV} to the folder the run saved it in"
            ) from e
        except OSError as e:
            raise CheckpointError(f"cannot read model artifact {artifact_id}: {e}") from e
        return read_checkpoint(path, what=f"model artifact {artifact_id}")


def load_trial_model(
    study: optuna.Study,
    trial_number: int | None = None,
    *,
    store: FileSystemArtifactStore,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Rebuild the network a trial saved (default: the best; see :func:`trial_checkpoint`)."""
    return rebuild(trial_checkpoint(study, trial_number, store), device)
