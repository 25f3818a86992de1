"""An experiment as an Optuna study: one enqueued trial per (recipe, family, sparsity, seed).

Validation accuracy at the training sparsity ranks recipes; the test figures only report.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from data import SparseDataset
from models import ModelFamily
from studies import TEST_MASK_SEED, VAL_MASK_SEED, sparsity_key
from studies.experiments import ExperimentDefinition

from .. import records
from ..errors import TrialError, UsageError
from ..records import StudyRecord, TrialCounts
from ..runtime.cpu import prepare_cpu_training
from ..runtime.interrupts import StopSignals
from ..runtime.storage import open_storage, remove_if_unused
from ..runtime.storage_url import StorageTarget
from ..training import TrainingRun, train_network
from ..tuning.artifacts import ArtifactFolder, open_artifact_store, save_checkpoint
from ..tuning.objective import record_failure
from ..tuning.study_setup import QueuedTrial, join_study
from ..tuning.trial_data import eval_batches, evaluate_at_sparsities, load_trial_data
from ..tuning.trial_loop import optimize
from .rows import RunKey, read_rows, run_key, run_label


def run_experiment(
    definition: ExperimentDefinition,
    target: StorageTarget,
    csv_path: Path,
    device: torch.device,
    data_dir: str | None = None,
    download: bool = False,
) -> list[dict[str, Any]]:
    """Join the experiment's study, train what is queued; returns the rows of all its runs."""
    if device.type == "cpu":
        prepare_cpu_training()  # denormals flushed, freed memory retained (hpo.runtime.cpu)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours
    created = target.sqlite_path is not None and not target.sqlite_path.exists()
    storage = open_storage(target)
    foreign = _foreign_runs(definition.name, storage, csv_path)
    if foreign:  # never replace published runs by fewer
        if created:
            remove_if_unused(target.sqlite_path)  # type: ignore[arg-type]
        raise UsageError(
            f"{csv_path} holds {len(foreign)} runs that study {definition.name!r} in "
            f"{target.masked} does not (e.g. {run_label(min(foreign))}); pass the --storage "
            "they were run with, or --out another folder; nothing was trained"
        )
    record, queue = StudyRecord(definition.to_dict(), kind="experiment"), run_queue(definition)
    study = join_study(
        storage, target, definition.name, record, queue, separate="use another --storage"
    )
    counts = TrialCounts.of(study.get_trials(deepcopy=False))
    print(f"{definition.name}: {counts.complete} runs done, {counts.waiting} queued", flush=True)
    if counts.waiting:
        data = load_trial_data(definition, data_dir, download)
        store = open_artifact_store(target, create=True)
        with StopSignals().installed() as signals:  # SIGTERM stops a run as Ctrl-C does
            objective = RunObjective(definition, data, device, store, signals)
            optimize(study, objective, n_trials=len(queue), queue_only=True, signals=signals)
    return study_rows(definition, study)


def _foreign_runs(name: str, storage: optuna.storages.BaseStorage, csv_path: Path) -> set[RunKey]:
    """The runs of the CSV that are not completed trials of study ``name``."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    except KeyError:
        done = []
    return {run_key(r) for r in read_rows(csv_path)} - {run_key(t.params) for t in done}


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
        store: ArtifactFolder,
        signals: StopSignals | None = None,
    ) -> None:
        self.definition, self.data, self.device, self.store = d, data, device, store
        self.signals = signals
        self.val = {s: eval_batches(d, data, data.val, s, VAL_MASK_SEED, device)
                    for s in d.train_sparsities}  # fmt: skip
        self.test = {s: eval_batches(d, data, data.test, s, TEST_MASK_SEED, device)
                     for s in d.test_sparsities}  # fmt: skip

    def __call__(self, trial: optuna.Trial) -> float:
        stoppable = self.signals.in_trial() if self.signals else contextlib.nullcontext()
        with record_failure(trial), stoppable:
            run = self._training_run(trial)
            started = time.perf_counter()
            model, _ = train_network(run, self.data, self.device)
            seconds = time.perf_counter() - started
            val = evaluate_at_sparsities(model, self.val, [run.sparsity])
            test = evaluate_at_sparsities(model, self.test, self.definition.test_sparsities)
            records.store_attrs(trial, {
                records.VAL_METRICS: {k: m.to_dict() for k, m in val.items()},
                records.TEST_METRICS: {k: {**m.to_dict(), "n": m.n} for k, m in test.items()},
                records.TRAIN_SECONDS: seconds,
                records.TRAIN_IMAGES: len(self.data.train),
                records.N_PARAMS: sum(p.numel() for p in model.parameters()),
                records.DEVICE: str(self.device),
                records.MODEL_ARTIFACT: self._save(trial, run, model),
            })  # fmt: skip
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
        """Upload the network, its definition shaped as a study's for ``hpo.evaluate``."""
        d, family, label = self.definition, run.family.value, run_label(run_key(trial.params))
        definition = {**d.to_dict(), "model_family": family, "train_sparsity": run.sparsity}
        definition["val_size"] = None  # the whole validation split
        source = {"experiment": d.name, "run": label, "seed": run.seed}
        state = model.state_dict()
        return save_checkpoint(trial, self.store, state, run, self.data, definition, source=source)


def study_rows(definition: ExperimentDefinition, study: optuna.Study) -> list[dict[str, Any]]:
    """The rows of the completed trials (``rows.FIELDS``), in trial order."""
    rows = []
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in sorted(done, key=lambda t: t.number):
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
