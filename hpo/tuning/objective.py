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
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from data import SparseBatches
from models import CNNConfig, ModelConfigError, build_model
from studies import StudyDefinition

from . import keys
from .artifacts import save_checkpoint
from .errors import OutOfMemoryTrialError, UnsupportedConfigError
from .progress import RunProgress
from .training import EvalMetrics, evaluate, train_one_epoch

__all__ = [
    "TEST_MASK_SEED",
    "VAL_MASK_SEED",
    "Objective",
    "TrialData",
    "eval_batches",
    "evaluate_at_sparsities",
]

# Fixed evaluation masks: one seed for validation, another for test, shared by every trial
# and worker, so scores differ only because the models do.
VAL_MASK_SEED = 1234
TEST_MASK_SEED = 4321


@dataclass(frozen=True)
class TrialData:
    """The splits and input statistics a worker trains with (loaded once per worker).

    Attributes:
        train: Training split (already cut to the definition's ``train_size``).
        val: Validation split.
        test: Test split (only for the final evaluation of the best trial).
        in_channels: Image channels.
        num_classes: Number of classes.
        mean: Per-channel normalization mean over observed pixels.
        std: Per-channel normalization std over observed pixels.
    """

    train: Any
    val: Any
    test: Any
    in_channels: int
    num_classes: int
    mean: Any
    std: Any


class Objective:
    """``objective(trial) -> best validation accuracy`` for one study on one device.

    Args:
        definition: The resolved study definition (overrides applied).
        data: The worker's data.
        device: Torch device to train on (decided once by the entry point).
        seed: The worker seed; the trial trains with ``seed + trial.number``.
        store: Artifact store for the best-epoch checkpoints.
        progress: Progress display (epoch bar).
        worker: ``host:pid`` label stored on each trial.
    """

    def __init__(
        self,
        definition: StudyDefinition,
        data: TrialData,
        device: torch.device,
        seed: int,
        store: FileSystemArtifactStore,
        progress: RunProgress,
        worker: str,
    ) -> None:
        self.definition = definition
        self.data = data
        self.device = device
        self.seed = seed
        self.store = store
        self.progress = progress
        self.worker = worker
        self._val_batches = {
            s: eval_batches(definition, data, data.val, s, VAL_MASK_SEED, device)
            for s in {definition.train_sparsity, *definition.test_sparsities}
        }

    def __call__(self, trial: optuna.Trial) -> float:
        d = self.definition
        seed = self.seed + trial.number
        if keys.PHASE not in trial.user_attrs:
            trial.set_user_attr(keys.PHASE, keys.PHASE_TPE)
        trial.set_user_attr(keys.SEED, seed)
        trial.set_user_attr(keys.WORKER, self.worker)
        trial.set_user_attr(keys.DEVICE, str(self.device))
        params = d.search_space.suggest(trial)
        torch.manual_seed(seed)
        with _out_of_memory_as_trial_error(self.device):
            cnn_config = self._cnn_config(params)
            model = build_model(d.model_family, cnn_config).to(self.device)
            optimizer = torch.optim.Adam(model.parameters(), lr=params["lr"])
            train = SparseBatches(
                self.data.train,
                sparsity=d.train_sparsity,
                batch_size=params["batch_size"],
                device=self.device,
                mean=self.data.mean,
                std=self.data.std,
                shuffle=True,
                seed=seed,
            )
            val = self._val_batches[d.train_sparsity]
            best, best_state, best_metrics = -1.0, None, None
            started = time.perf_counter()
            try:
                with self.progress.epochs(trial.number, d.epochs) as bar:
                    for epoch in range(1, d.epochs + 1):
                        train_one_epoch(model, train.epoch(epoch), optimizer, epoch)
                        metrics = evaluate(model, val.epoch(0))
                        accuracy = metrics.accuracy
                        trial.report(accuracy, epoch)
                        if accuracy > best:
                            best, best_metrics = accuracy, metrics
                            best_state = {
                                k: v.detach().clone() for k, v in model.state_dict().items()
                            }
                        bar.update()
                        bar.set_postfix(val=f"{accuracy:.4f}")
                        # After the last epoch there is nothing left to save: never prune a
                        # finished trial (Hyperband would, with a one-epoch budget).
                        if epoch < d.epochs and trial.should_prune():
                            reason = f"pruned after epoch {epoch}: val accuracy {accuracy:.4f}"
                            trial.set_user_attr(keys.FAIL_REASON, reason)
                            raise optuna.TrialPruned(reason)
            finally:
                trial.set_user_attr(keys.TRAIN_SECONDS, time.perf_counter() - started)
            assert best_state is not None  # epochs >= 1
            model.load_state_dict(best_state)
            started = time.perf_counter()
            # The training sparsity was just scored with these weights and masks: reuse it.
            known = {keys.sparsity_key(d.train_sparsity): best_metrics}
            val_metrics = evaluate_at_sparsities(
                model, self._val_batches, d.test_sparsities, known=known
            )
            trial.set_user_attr(keys.EVAL_SECONDS, time.perf_counter() - started)
        trial.set_user_attr(keys.VAL_METRICS, {k: m.to_dict() for k, m in val_metrics.items()})
        trial.set_user_attr(keys.N_PARAMS, sum(p.numel() for p in model.parameters()))
        artifact_id = save_checkpoint(
            trial, self.store, best_state, self.checkpoint_config(trial.number, params, cnn_config)
        )
        trial.set_user_attr(keys.MODEL_ARTIFACT, artifact_id)
        return best

    def checkpoint_config(
        self, trial_number: int, params: dict[str, Any], cnn_config: CNNConfig
    ) -> dict[str, Any]:
        """What a checkpoint needs to be rebuilt and fed (see ``hpo.artifacts``)."""
        return {
            "trial_number": trial_number,
            "params": params,
            "model_family": self.definition.model_family.value,
            "cnn_config": cnn_config.to_dict(),
            "mean": _as_list(self.data.mean),
            "std": _as_list(self.data.std),
            "definition": self.definition.to_dict(),
        }

    def _cnn_config(self, params: dict[str, Any]) -> CNNConfig:
        try:
            return self.definition.cnn_config(self.data.in_channels, self.data.num_classes, params)
        except ModelConfigError as e:
            raise UnsupportedConfigError(f"unsupported configuration: {e}") from e


def eval_batches(
    definition: StudyDefinition,
    data: TrialData,
    split: Any,
    sparsity: float,
    mask_seed: int,
    device: torch.device,
) -> SparseBatches:
    """Batches of ``split`` at ``sparsity`` with masks fixed by ``mask_seed`` (evaluation)."""
    return SparseBatches(
        split,
        sparsity=sparsity,
        batch_size=definition.eval_batch_size,
        device=device,
        mean=data.mean,
        std=data.std,
        seed=mask_seed,
        fixed_masks=True,
    )


def evaluate_at_sparsities(
    model: torch.nn.Module,
    batches: dict[float, SparseBatches],
    sparsities: tuple[float, ...],
    known: dict[str, EvalMetrics | None] | None = None,
) -> dict[str, EvalMetrics]:
    """Score ``model`` at every sparsity, keyed by ``keys.sparsity_key``.

    ``known`` holds scores already computed for this model on the same batches; they are
    reused instead of evaluated again.
    """
    known = known or {}
    out: dict[str, EvalMetrics] = {}
    for s in sparsities:
        k = keys.sparsity_key(s)
        cached = known.get(k)
        out[k] = cached if cached is not None else evaluate(model, batches[s].epoch(0))
    return out


@contextlib.contextmanager
def _out_of_memory_as_trial_error(device: torch.device) -> Iterator[None]:
    """Turn CUDA out-of-memory into a :class:`OutOfMemoryTrialError` after freeing the cache."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as e:
        _free(device)
        raise OutOfMemoryTrialError(f"out of memory on {device}: {_first_line(e)}") from e
    except RuntimeError as e:
        if "out of memory" not in str(e):
            raise
        _free(device)
        raise OutOfMemoryTrialError(f"out of memory on {device}: {_first_line(e)}") from e


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _as_list(value: Any) -> list[float]:
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.flatten().tolist()]
    if isinstance(value, list | tuple):
        return [float(v) for v in value]
    return [float(value)]
