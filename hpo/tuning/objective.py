"""The objective: train one configuration, score it on validation data, keep its best weights.

The score is the best validation accuracy over the epochs at the training sparsity, on fixed
validation images and masks; the test split is scored once, for the best trial, at the end.
How trials end: ``docs/decisions.md``, "Built on Optuna".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import optuna
import torch

from data import SparseDataset
from models import ModelConfigError
from studies import VAL_MASK_SEED, StudyDefinition

from .. import records
from ..errors import NonFiniteLossError, TrialError, UnsupportedConfigError, one_line
from ..runtime.execution import Execution
from ..runtime.faults import NoSpaceError
from ..runtime.interrupts import Stopped, StopSignals
from ..runtime.memory import run_releasing_memory, start_trial_memory, trial_memory
from ..training import EvalMetrics, FitResult, TrainingRun, train_network
from .artifacts import ArtifactFolder, save_checkpoint
from .progress import RunProgress
from .search import label_phase
from .trial_data import eval_batches, evaluate_at_sparsities, validation_split

__all__ = ["Objective", "record_failure"]


class Objective:
    """``objective(trial) -> best validation accuracy`` for one study on one device; trial
    ``i`` trains with ``seed + i``; ``queue_only`` (a retrain) fails a trial the sampler made."""

    def __init__(
        self,
        definition: StudyDefinition,
        data: SparseDataset,
        device: torch.device,
        seed: int,
        store: ArtifactFolder,
        progress: RunProgress,
        worker: str,
        execution: Execution | None = None,
        *,
        queue_only: bool = False,
        signals: StopSignals | None = None,
    ) -> None:
        self.queue_only, self.signals = queue_only, signals
        self.definition, self.data, self.device, self.seed = definition, data, device, seed
        self.store, self.progress, self.worker = store, progress, worker
        self.execution = execution or Execution()
        val = validation_split(data, definition.val_size)
        self.val_batches = {
            s: eval_batches(definition, data, val, s, VAL_MASK_SEED, device)
            for s in {definition.train_sparsity, *definition.test_sparsities}
        }

    def __call__(self, trial: optuna.Trial) -> float:
        stoppable = self.signals.in_trial() if self.signals else contextlib.nullcontext()
        with record_failure(trial), stoppable, _memory_recorded(trial, self.device):
            return run_releasing_memory(lambda: self._train_and_score(trial), self.device)

    def _train_and_score(self, trial: optuna.Trial) -> float:
        d = self.definition
        params = d.search_space.suggest(trial)
        run = self._training_run(trial, params)
        started = time.perf_counter()
        with self.progress.trial(trial.number, d.epochs) as shown:
            model, result = train_network(
                run,
                self.data,
                self.device,
                execution=self.execution,
                validation=self.val_batches[d.train_sparsity],
                on_epoch=self._report_and_prune(trial, shown.epoch_done),
                track=shown.track,
            )
        trial.set_user_attr(records.TRAIN_SECONDS, time.perf_counter() - started)
        if result.stopped:
            raise optuna.TrialPruned(
                f"pruned after epoch {result.epochs_run}: val accuracy "
                f"{result.last_metrics.accuracy:.4f}"  # type: ignore[union-attr]
            )
        model.load_state_dict(result.state)
        self._record(trial, run, model, result)
        return result.best_metrics.accuracy  # type: ignore[union-attr]

    def _training_run(self, trial: optuna.Trial, params: dict[str, Any]) -> TrainingRun:
        """The network ``params`` describe; who trains it is recorded on the trial."""
        d, seed = self.definition, self.seed + trial.number
        if self.queue_only and records.PHASE not in trial.user_attrs:
            raise TrialError("no queued copy was left when this trial started: nothing to train")
        label_phase(trial)
        who = {records.SEED: seed, records.WORKER_SEED: self.seed, records.WORKER: self.worker}
        how = {records.DEVICE: str(self.device), records.EXECUTION: asdict(self.execution)}
        records.store_attrs(trial, {**who, **how})
        try:
            config = d.cnn_config(self.data.in_channels, self.data.num_classes, params)
        except ModelConfigError as e:
            raise UnsupportedConfigError(f"unsupported configuration: {e}") from e
        return TrainingRun(
            d.model_family, config, d.recipe, params["lr"], params["batch_size"], d.epochs,
            d.train_sparsity, seed,
        )  # fmt: skip

    def _report_and_prune(self, trial: optuna.Trial, shown: Any) -> Any:
        last = self.definition.epochs

        def on_epoch(step: int, metrics: EvalMetrics) -> bool:
            if self.signals is not None:
                self.signals.check()  # a stop swallowed by a garbage collector's callback
            trial.report(metrics.accuracy, step)
            shown(step, metrics.accuracy)
            # Never prune a finished trial: nothing is left to save (Hyperband would).
            return step < last and trial.should_prune()

        return on_epoch

    def _record(
        self, trial: optuna.Trial, run: TrainingRun, model: torch.nn.Module, result: FitResult
    ) -> None:
        """Store the trial's figures, cost and best-epoch checkpoint."""
        started = time.perf_counter()
        d = self.definition
        known = {records.sparsity_key(d.train_sparsity): result.best_metrics}
        val = evaluate_at_sparsities(
            model, self.val_batches, d.test_sparsities, known, self.execution.autocast_dtype
        )
        artifact = save_checkpoint(
            trial, self.store, result.state, run, self.data, d.to_dict(), params=trial.params
        )
        attrs = {
            records.VAL_METRICS: {k: m.to_dict() for k, m in val.items()},
            records.EVAL_SECONDS: time.perf_counter() - started,
            records.VALIDATION_SECONDS: result.validation_seconds,
            records.TRAIN_LOSSES: list(result.train_losses),
            records.N_PARAMS: sum(p.numel() for p in model.parameters()),
            records.MODEL_ARTIFACT: artifact,
        }
        records.store_attrs(trial, attrs)


@contextlib.contextmanager
def record_failure(trial: optuna.Trial) -> Iterator[None]:
    """Store why a trial did not complete (``records.FAIL_REASON``); a diverged loss is
    PRUNED (TPE should see it as poor). Optuna records the state; ``catch=`` decides the rest."""
    try:
        yield
    except optuna.TrialPruned as e:
        trial.set_user_attr(records.FAIL_REASON, str(e) or "pruned")
        raise
    except NonFiniteLossError as e:
        trial.set_user_attr(records.FAIL_REASON, one_line(e))
        raise optuna.TrialPruned(one_line(e)) from e
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (hpo.runtime.interrupts)
        reason = e.reason if isinstance(e, Stopped) else records.INTERRUPTED
        trial.set_user_attr(records.FAIL_REASON, reason)
        raise
    except (TrialError, NoSpaceError) as e:
        trial.set_user_attr(records.FAIL_REASON, one_line(e))
        raise
    except Exception as e:  # a bug: recorded, then it stops the worker
        trial.set_user_attr(records.FAIL_REASON, f"{type(e).__name__}: {one_line(e)}")
        raise


@contextlib.contextmanager
def _memory_recorded(trial: optuna.Trial, device: torch.device) -> Iterator[None]:
    """Record the trial's own memory figures (``records.MEMORY``) whatever its state."""
    start_trial_memory(device)
    try:
        yield
    finally:
        trial.set_user_attr(records.MEMORY, trial_memory(device))
