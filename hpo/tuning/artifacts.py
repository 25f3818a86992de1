"""Trial checkpoints as Optuna artifacts, in the file-system store of their storage, where
optuna-dashboard lists them too; the id is stored on the trial (``records.MODEL_ARTIFACT``)."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from data import SparseDataset

from .. import records
from ..checkpoints.format import Checkpoint, LoadedModel, read_checkpoint, rebuild, write_checkpoint
from ..errors import CheckpointError
from ..records import CheckpointConfig
from ..runtime.faults import writing
from ..runtime.storage_url import ARTIFACT_DIR_ENV, StorageTarget
from ..training import TrainingRun

__all__ = [
    "ArtifactFolder",
    "load_trial_model",
    "open_artifact_store",
    "save_checkpoint",
    "trial_checkpoint",
]


def open_artifact_store(target: StorageTarget | str, *, create: bool = False) -> ArtifactFolder:
    """The artifact store of the storage ``target``; ``create``: make its folder if missing
    (a writer's; a reader leaves the folders as it found them)."""
    target = StorageTarget.parse(target) if isinstance(target, str) else target
    if create:
        target.artifact_dir.mkdir(parents=True, exist_ok=True)
    return ArtifactFolder(target.artifact_dir)


class ArtifactFolder(FileSystemArtifactStore):
    """Optuna's file-system store, which keeps its folder private: ours says where it is
    (a full disk is named by it)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.folder = folder


def save_checkpoint(
    trial: optuna.Trial,
    store: ArtifactFolder,
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
    written = _WrittenArtifacts(store)
    with (
        writing(f"trial {trial.number}'s checkpoint in {store.folder}"),
        tempfile.TemporaryDirectory(prefix="hpo-ckpt-") as tmp,
    ):
        path = write_checkpoint(Path(tmp) / f"trial-{trial.number}.pt", state_dict, config)
        try:
            return upload_artifact(
                artifact_store=written,
                file_path=str(path),
                study_or_trial=trial,
                mimetype="application/x-pytorch",
            )
        except BaseException:
            written.remove_all()  # a partial file, or a whole one no trial refers to
            raise


class _WrittenArtifacts:
    """An artifact store that remembers what it wrote, so a failed upload (a full disk while
    writing the file, or after it, while the trial's reference is stored) leaves nothing
    behind: Optuna's upload writes in place and does not clean up."""

    def __init__(self, store: ArtifactFolder) -> None:
        self._store = store
        self._written: list[str] = []

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._written.append(artifact_id)
        self._store.write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self._store.remove(artifact_id)

    def remove_all(self) -> None:
        for artifact_id in self._written:
            with contextlib.suppress(OSError, ArtifactNotFound):
                self._store.remove(artifact_id)


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
        checkpoint = read_checkpoint(path, what=f"model artifact {artifact_id}")
    saved_by = checkpoint.config.trial_number
    if saved_by not in (None, trial_number):
        raise CheckpointError(
            f"model artifact {artifact_id} of trial {trial_number} holds trial {saved_by}'s "
            f"checkpoint: the artifact folder is not this study's ({ARTIFACT_DIR_ENV})"
        )
    config = dataclasses.replace(checkpoint.config, trial_number=trial_number)
    return dataclasses.replace(checkpoint, config=config)


def load_trial_model(
    study: optuna.Study,
    trial_number: int | None = None,
    *,
    store: FileSystemArtifactStore,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Rebuild the network a trial saved (default: the best; see :func:`trial_checkpoint`)."""
    return rebuild(trial_checkpoint(study, trial_number, store), device)
