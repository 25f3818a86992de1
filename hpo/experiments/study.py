"""An experiment as an Optuna study: one queued trial per run, trained as tuning trains.

A run is one (recipe, family, training sparsity, seed) of an ``ExperimentDefinition``. Each is
enqueued once with fixed parameters, so any number of processes started with the same command
share the runs through the storage, and a resumed command trains only what no trial holds.
The objective trains with :func:`hpo.training.train_network` (final weights), scores the
whole validation split at the training sparsity (which ranks recipes) and the test split at
every test sparsity (which only reports), on masks fixed once for every model, and uploads
the network as an artifact that ``python -m hpo.export`` writes out and ``hpo.evaluate`` scores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from data import SparseDataset
from models import ModelFamily
from studies import TEST_MASK_SEED, VAL_MASK_SEED, sparsity_key
from studies.experiments import ExperimentDefinition

from .. import records
from ..errors import TrialError, UsageError
from ..records import CheckpointConfig, StudyRecord, TrialCounts
from ..runtime.cpu import prepare_cpu_training
from ..runtime.storage import open_storage, remove_if_unused
from ..runtime.storage_url import StorageTarget
from ..training import TrainingRun, train_network
from ..tuning.artifacts import open_artifact_store, save_checkpoint
from ..tuning.objective import record_failure
from ..tuning.study_setup import QueuedTrial, join_study
from ..tuning.trial_data import eval_batches, evaluate_at_sparsities, load_trial_data
from ..tuning.worker import optimize
from .rows import read_rows, run_key, run_label

__all__ = ["RunObjective", "run_experiment", "run_queue", "study_rows"]


def run_experiment(
    definition: ExperimentDefinition,
    target: StorageTarget,
    csv_path: Path,
    device: torch.device,
    data_dir: str | None = None,
    download: bool = False,
) -> list[dict[str, Any]]:
    """Join the experiment's study, train what is queued; returns the rows of all its runs.

    Raises:
        UsageError: ``csv_path`` holds runs the study does not (checked before any training).
    """
    if device.type == "cpu":
        prepare_cpu_training()  # denormals flushed, freed memory retained (hpo.runtime.cpu)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours
    created = target.sqlite_path is not None and not target.sqlite_path.exists()
    storage = open_storage(target)
    try:
        _refuse_foreign_runs(definition, storage, csv_path, target)
    except UsageError:
        if created:
            remove_if_unused(target.sqlite_path)  # type: ignore[arg-type]
        raise
    record, queue = StudyRecord(definition.to_dict(), kind="experiment"), run_queue(definition)
    study = join_study(
        storage, target, definition.name, record, queue, separate="use another --storage"
    )
    counts = TrialCounts.of(study.get_trials(deepcopy=False))
    print(f"{definition.name}: {counts.complete} runs done, {counts.waiting} queued", flush=True)
    if counts.waiting:
        data = load_trial_data(definition, data_dir, download)
        objective = RunObjective(definition, data, device, open_artifact_store(target))
        optimize(study, objective, n_trials=len(queue), queue_only=True)
    return study_rows(definition, study.get_trials(deepcopy=False))


def _refuse_foreign_runs(
    definition: ExperimentDefinition,
    storage: optuna.storages.BaseStorage,
    csv_path: Path,
    target: StorageTarget,
) -> None:
    """Never replace published runs by a table of fewer: every run of the CSV must be a
    completed trial of the study (a fresh storage pointed at docs/results holds none)."""
    try:
        study = optuna.load_study(study_name=definition.name, storage=storage)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    except KeyError:
        done = []
    foreign = {run_key(r) for r in read_rows(csv_path)} - {run_key(t.params) for t in done}
    if foreign:
        raise UsageError(
            f"{csv_path} holds {len(foreign)} runs that study {definition.name!r} in "
            f"{target.masked} does not (e.g. {run_label(min(foreign))}); pass the --storage "
            "they were run with, or --out another folder; nothing was trained"
        )


def run_queue(definition: ExperimentDefinition) -> list[QueuedTrial]:
    """Every run, seed-major: a partly finished experiment already covers every setting once."""
    points = [
        {"recipe": r.name, "family": ModelFamily(f).value, "train_sparsity": s, "seed": seed}
        for seed in definition.seeds
        for s in definition.train_sparsities
        for r in definition.recipes
        for f in definition.families
    ]
    attrs = {records.PHASE: records.PHASE_EXPERIMENT}
    return [(p, {**attrs, records.GRID_ID: i}) for i, p in enumerate(points)]


class RunObjective:
    """``objective(trial) -> validation accuracy`` of one queued run (see the module doc)."""

    def __init__(
        self,
        d: ExperimentDefinition,
        data: SparseDataset,
        device: torch.device,
        store: FileSystemArtifactStore,
    ) -> None:
        self.definition, self.data, self.device, self.store = d, data, device, store
        self.val = {s: eval_batches(d, data, data.val, s, VAL_MASK_SEED, device)
                    for s in d.train_sparsities}  # fmt: skip
        self.test = {s: eval_batches(d, data, data.test, s, TEST_MASK_SEED, device)
                     for s in d.test_sparsities}  # fmt: skip

    def __call__(self, trial: optuna.Trial) -> float:
        with record_failure(trial):
            run = self._training_run(trial)
            started = time.perf_counter()
            model, _ = train_network(run, self.data, self.device)
            seconds = time.perf_counter() - started
            val = evaluate_at_sparsities(model, self.val, [run.sparsity])
            test = evaluate_at_sparsities(model, self.test, self.definition.test_sparsities)
            for key, value in {
                records.VAL_METRICS: {k: m.to_dict() for k, m in val.items()},
                records.TEST_METRICS: {k: {**m.to_dict(), "n": m.n} for k, m in test.items()},
                records.TRAIN_SECONDS: seconds,
                records.TRAIN_IMAGES: len(self.data.train),
                records.N_PARAMS: sum(p.numel() for p in model.parameters()),
                records.DEVICE: str(self.device),
                records.MODEL_ARTIFACT: self._save(trial, run, model),
            }.items():
                trial.set_user_attr(key, value)
            return val[sparsity_key(run.sparsity)].accuracy

    def _training_run(self, trial: optuna.Trial) -> TrainingRun:
        """The run the trial was queued with (``suggest_*`` returns the enqueued values)."""
        if records.GRID_ID not in trial.user_attrs:  # another process took the last run
            raise TrialError("no queued run was left when this trial started: nothing to train")
        d = self.definition
        recipes = {r.name: r for r in d.recipes}
        recipe = trial.suggest_categorical("recipe", list(recipes))
        family = trial.suggest_categorical("family", [ModelFamily(f).value for f in d.families])
        sparsity = trial.suggest_categorical("train_sparsity", list(d.train_sparsities))
        seed = trial.suggest_categorical("seed", list(d.seeds))
        config = d.cnn_config(self.data.in_channels, self.data.num_classes)
        return TrainingRun(ModelFamily(family), config, recipes[recipe], d.lr, d.batch_size,
                           d.epochs, sparsity, seed)  # fmt: skip

    def _save(self, trial: optuna.Trial, run: TrainingRun, model: torch.nn.Module) -> str:
        """Upload the network with a definition shaped as a study's where hpo.evaluate reads
        it (dataset, options, data seed, test sparsities, eval batch, whole validation split)."""
        d, family = self.definition, run.family.value
        config = CheckpointConfig(
            model_family=family,
            cnn_config=run.cnn_config.to_dict(),
            mean=[float(v) for v in self.data.mean],
            std=[float(v) for v in self.data.std],
            definition={
                **d.to_dict(),
                "model_family": family,
                "train_sparsity": run.sparsity,
                "val_size": None,
            },
            trial_number=trial.number,
            source={
                "experiment": d.name,
                "run": run_label(run_key(trial.params)),
                "seed": run.seed,
            },
        )
        return save_checkpoint(trial, self.store, model.state_dict(), config)


def study_rows(
    definition: ExperimentDefinition, trials: Sequence[FrozenTrial]
) -> list[dict[str, Any]]:
    """The rows of the completed trials (``rows.FIELDS``), in trial order."""
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        if t.state != TrialState.COMPLETE:
            continue
        attrs = t.user_attrs
        for s in definition.test_sparsities:
            m = attrs[records.TEST_METRICS][sparsity_key(s)]
            rows.append({
                "experiment": definition.name, **t.params, "test_sparsity": s,
                "accuracy": m["accuracy"], "mae": m["mae"], "n_test": m["n"],
                "epochs": definition.epochs, "train_images": attrs[records.TRAIN_IMAGES],
                "train_seconds": attrs[records.TRAIN_SECONDS], "device": attrs[records.DEVICE],
                "val_accuracy": t.value,
            })  # fmt: skip
    return rows
