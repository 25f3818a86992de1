"""The objective: train one configuration, score it on validation data, keep its best weights.

The score is the *best* validation accuracy over the epochs, at the study's training sparsity,
on a validation split carved from the training data with masks fixed once for all trials (so
every trial is judged on the same pixels). Training masks are redrawn every epoch. The test
split is never touched here; it is scored once, for the best trial, when the run ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from data import SparseBatches, SparseDataset, augmentation_for
from models import CNNConfig, ModelConfigError, build_model
from studies import VAL_MASK_SEED, StudyDefinition

from ..errors import OutOfMemoryTrialError, UnsupportedConfigError, one_line
from ..runtime.cpu import resident_memory_mb
from ..runtime.execution import Execution
from ..training import EpochHook, EvalMetrics, build_optimization, fit
from . import keys
from .artifacts import save_checkpoint
from .progress import RunProgress, TrialProgress
from .search import proposal_phase
from .trial_data import eval_batches, evaluate_at_sparsities, validation_split

__all__ = ["Objective"]


class Objective:
    """``objective(trial) -> best validation accuracy`` for one study on one device.

    Args:
        definition: The resolved study definition (overrides applied).
        data: The worker's data (``load_trial_data``: loaded once per worker).
        device: Torch device to train on (decided once by the entry point).
        seed: The worker seed; the trial trains with ``seed + trial.number``.
        store: Artifact store for the best-epoch checkpoints.
        progress: Progress display (epoch bar).
        worker: ``host:pid`` label stored on each trial.
        execution: Precision and compilation of the networks.
    """

    def __init__(
        self,
        definition: StudyDefinition,
        data: SparseDataset,
        device: torch.device,
        seed: int,
        store: FileSystemArtifactStore,
        progress: RunProgress,
        worker: str,
        execution: Execution | None = None,
    ) -> None:
        self.definition = definition
        self.execution = execution or Execution()
        self.data = data
        self.device = device
        self.seed = seed
        self.store = store
        self.progress = progress
        self.worker = worker
        val = validation_split(definition, data)
        self._val_batches = {
            s: eval_batches(definition, data, val, s, VAL_MASK_SEED, device)
            for s in {definition.train_sparsity, *definition.test_sparsities}
        }

    def __call__(self, trial: optuna.Trial) -> float:
        d = self.definition
        params = d.search_space.suggest(trial)
        seed = self._label(trial)  # after suggesting: Optuna samples the parameters lazily
        torch.manual_seed(seed)
        with _out_of_memory_as_trial_error(self.device):
            cnn_config = self._cnn_config(params)
            model = self.execution.prepare(build_model(d.model_family, cnn_config), self.device)
            train = self._train_batches(params["batch_size"], seed)
            optimization = build_optimization(
                d.recipe, model, params["lr"], steps_per_epoch=len(train), epochs=d.epochs
            )
            started = time.perf_counter()
            try:
                autocast = self.execution.autocast(self.device)
                with self.progress.trial(trial.number, d.epochs, len(train)) as shown, autocast:
                    result = fit(
                        model,
                        optimization,
                        shown.track(train),
                        d.epochs,
                        validation=self._val_batches[d.train_sparsity],
                        on_epoch=self._report_and_prune(trial, shown),
                    )
            finally:
                trial.set_user_attr(keys.TRAIN_SECONDS, time.perf_counter() - started)
            trial.set_user_attr(keys.VALIDATION_SECONDS, result.validation_seconds)
            trial.set_user_attr(keys.TRAIN_LOSSES, list(result.train_losses))
            assert result.best_metrics is not None and result.last_metrics is not None
            if result.stopped:
                last = result.last_metrics.accuracy
                reason = f"pruned after epoch {result.epochs_run}: val accuracy {last:.4f}"
                trial.set_user_attr(keys.FAIL_REASON, reason)
                raise optuna.TrialPruned(reason)
            model.load_state_dict(result.state)
            with self.execution.autocast(self.device):
                val_metrics = self._score_best(trial, model, result.best_metrics)
        trial.set_user_attr(keys.VAL_METRICS, {k: m.to_dict() for k, m in val_metrics.items()})
        trial.set_user_attr(keys.N_PARAMS, sum(p.numel() for p in model.parameters()))
        trial.set_user_attr(keys.MEMORY, _memory(self.device))
        config = self.checkpoint_config(trial.number, params, cnn_config)
        artifact_id = save_checkpoint(trial, self.store, result.state, config)
        trial.set_user_attr(keys.MODEL_ARTIFACT, artifact_id)
        return result.best_metrics.accuracy

    def checkpoint_config(
        self, trial_number: int, params: dict[str, Any], cnn_config: CNNConfig
    ) -> dict[str, Any]:
        """What a checkpoint needs to be rebuilt and fed (see ``hpo.tuning.artifacts``)."""
        return {
            "trial_number": trial_number,
            "params": params,
            "model_family": self.definition.model_family.value,
            "cnn_config": cnn_config.to_dict(),
            "mean": [float(v) for v in self.data.mean],
            "std": [float(v) for v in self.data.std],
            "definition": self.definition.to_dict(),
        }

    def _label(self, trial: optuna.Trial) -> int:
        """Record who ran ``trial``, where and with which seed; returns that seed."""
        seed = self.seed + trial.number
        if keys.PHASE not in trial.user_attrs:  # queued trials came with theirs
            trial.set_user_attr(keys.PHASE, proposal_phase(trial.study.sampler, trial.number))
        trial.set_user_attr(keys.SEED, seed)
        trial.set_user_attr(keys.WORKER_SEED, self.seed)
        trial.set_user_attr(keys.WORKER, self.worker)
        trial.set_user_attr(keys.DEVICE, str(self.device))
        return seed

    def _train_batches(self, batch_size: int, seed: int) -> SparseBatches:
        return SparseBatches(
            self.data.train,
            sparsity=self.definition.train_sparsity,
            batch_size=batch_size,
            device=self.device,
            mean=self.data.mean,
            std=self.data.std,
            shuffle=True,
            seed=seed,
            drop_last=self.execution.compile,  # one batch shape for the compiled graphs
            augment=augmentation_for(self.data.name) if self.definition.recipe.augment else None,
        )

    def _report_and_prune(self, trial: optuna.Trial, shown: TrialProgress) -> EpochHook:
        last_epoch = self.definition.epochs

        def on_epoch(epoch: int, metrics: EvalMetrics) -> bool:
            trial.report(metrics.accuracy, epoch)
            shown.epoch_done(epoch, metrics.accuracy)
            # After the last epoch there is nothing left to save: never prune a finished
            # trial (Hyperband would, with a one-epoch budget).
            return epoch < last_epoch and trial.should_prune()

        return on_epoch

    def _score_best(
        self, trial: optuna.Trial, model: torch.nn.Module, best: EvalMetrics
    ) -> dict[str, EvalMetrics]:
        """The best-epoch weights at every test sparsity (the training one is already known)."""
        started = time.perf_counter()
        known = {keys.sparsity_key(self.definition.train_sparsity): best}
        metrics = evaluate_at_sparsities(
            model, self._val_batches, self.definition.test_sparsities, known=known
        )
        trial.set_user_attr(keys.EVAL_SECONDS, time.perf_counter() - started)
        return metrics

    def _cnn_config(self, params: dict[str, Any]) -> CNNConfig:
        try:
            return self.definition.cnn_config(self.data.in_channels, self.data.num_classes, params)
        except ModelConfigError as e:
            raise UnsupportedConfigError(f"unsupported configuration: {e}") from e


@contextlib.contextmanager
def _out_of_memory_as_trial_error(device: torch.device) -> Iterator[None]:
    """Turn CUDA out-of-memory into a :class:`OutOfMemoryTrialError` after freeing the cache."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        _free(device)
        raise OutOfMemoryTrialError(f"out of memory on {device}: {one_line(e)}") from e
    except RuntimeError as e:
        if "out of memory" not in str(e):
            raise
        _free(device)
        raise OutOfMemoryTrialError(f"out of memory on {device}: {one_line(e)}") from e


def _memory(device: torch.device) -> dict[str, float | None]:
    """The worker's memory after a trial (a leak shows as growth across trials)."""
    rss, peak = resident_memory_mb()
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # per trial
    return {"rss_mb": rss, "peak_rss_mb": peak, "gpu_peak_mb": gpu}


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
