"""What a run will cost: measured before the first trial, and updated as trials finish.

Before the first trial a worker times a few training steps and one validation pass of a
typical configuration of the study (the middle depth of the search space, the grid's batch
size) on its device, and logs what a full trial and the whole study take there, with the
budget spelled out; on a CPU it also gives the command for a quick study. After every trial
it logs an ETA from the trials that have finished (pruned ones included), which accounts for
pruning, the other workers and the machine's real speed.
"""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import TrialState

from data import SparseBatches, SparseDataset
from models import build_model
from studies import VAL_MASK_SEED, StudyDefinition

from ..runtime.device import place
from ..training import evaluate, train_step
from .trial_data import eval_batches, validation_split

__all__ = [
    "CostEstimate",
    "asha_share",
    "estimate_line",
    "eta_line",
    "format_duration",
    "measure_cost",
]

_TIMED_STEPS = 6
_ETA_WINDOW = 20  # the last finished trials the ETA averages over


@dataclass(frozen=True)
class CostEstimate:
    """Seconds a trial of a study takes on this device, from a short measurement.

    Attributes:
        step_seconds: One training step of the probed configuration.
        steps_per_epoch: Training steps per epoch at the probed batch size.
        validation_seconds: One validation pass at one sparsity.
        epochs: Epochs per trial.
        final_passes: Validation passes after the last epoch (the other test sparsities).
    """

    step_seconds: float
    steps_per_epoch: int
    validation_seconds: float
    epochs: int
    final_passes: int

    @property
    def trial_seconds(self) -> float:
        """A trial that runs its whole budget."""
        epoch = self.step_seconds * self.steps_per_epoch + self.validation_seconds
        return self.epochs * epoch + self.final_passes * self.validation_seconds


def measure_cost(
    definition: StudyDefinition, data: SparseDataset, device: torch.device
) -> tuple[CostEstimate, str]:
    """Time a typical configuration briefly; returns the estimate and what was probed."""
    space, grid = definition.search_space, definition.grid.points()
    depth = (space.depth.low + space.depth.high) // 2
    batch_size = grid[0]["batch_size"] if grid else 64
    params = {"depth": depth, "activation": space.activation.choices[0]}
    torch.manual_seed(0)
    config = definition.cnn_config(data.in_channels, data.num_classes, params)
    model = place(build_model(definition.model_family, config), device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = SparseBatches(
        data.train,
        sparsity=definition.train_sparsity,
        batch_size=batch_size,
        device=device,
        mean=data.mean,
        std=data.std,
        shuffle=True,
    )
    batches = iter(train.epoch(0))
    model.train()
    train_step(model, optimizer, *next(batches))  # warm-up: allocations, kernels
    _sync(device)
    started, steps = time.perf_counter(), 0
    for x, mask, y in batches:
        train_step(model, optimizer, x, mask, y)
        steps += 1
        if steps == _TIMED_STEPS:
            break
    _sync(device)
    step_seconds = (time.perf_counter() - started) / max(steps, 1)
    val = eval_batches(
        definition, data, validation_split(definition, data), definition.train_sparsity,
        VAL_MASK_SEED, device,
    )  # fmt: skip
    started = time.perf_counter()
    evaluate(model, val.epoch(0))
    _sync(device)
    estimate = CostEstimate(
        step_seconds=step_seconds,
        steps_per_epoch=len(train),
        validation_seconds=time.perf_counter() - started,
        epochs=definition.epochs,
        final_passes=len(set(definition.test_sparsities) - {definition.train_sparsity}),
    )
    return estimate, f"depth {depth}, batch {batch_size}"


def estimate_line(
    definition: StudyDefinition,
    estimate: CostEstimate,
    probed: str,
    *,
    n_trials: int,
    finished: int,
    pruner: str,
    device: torch.device,
    n_train: int,
    n_val: int,
) -> str:
    """The estimate as one log line: per trial, for the rest of the study, the budget."""
    remaining = max(0, n_trials - finished)
    full = remaining * estimate.trial_seconds
    epochs = f"{definition.epochs} epoch" + ("s" if definition.epochs != 1 else "")
    budget = (
        f"{epochs} x {n_train:,} images, {n_val:,} validation images at "
        f"{len(definition.test_sparsities)} sparsities, pruner {pruner}"
    )
    where = f"{device}" + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
    line = (
        f"estimate on {where}: a full trial of {definition.name} takes about "
        f"{format_duration(estimate.trial_seconds)} ({budget}; measured on {probed}); "
        f"{remaining} trials to go: at most {format_duration(full)}"
    )
    if pruner == "asha" and asha_share(definition.epochs) < 1:
        line += f", about {format_duration(asha_share(definition.epochs) * full)} with pruning"
    if device.type == "cpu" and estimate.trial_seconds > 600:
        line += (
            f". A quick study on this CPU: python -m hpo.run --study {definition.name} "
            f"--epochs 3 --train-size 10000 --study-name {definition.name}_quick"
        )
    return line


def asha_share(epochs: int) -> float:
    """The share of a full trial's epochs an ASHA-pruned study spends per trial, ideally.

    Rungs at epochs 1, 3, 9, ... up to half the budget (``hpo.tuning.pruning``), a third of the
    trials continuing at each: for 10 epochs 1 + (3 - 1) / 3 + (10 - 3) / 9 = 2.4 epochs, 24 %.
    """
    cap, rungs, rung = max(1, epochs // 2), [], 1
    while rung <= cap and rung < epochs:
        rungs.append(rung)
        rung *= 3
    spent, reached, previous = 0.0, 1.0, 0
    for rung in rungs:
        spent += reached * (rung - previous)
        reached, previous = reached / 3, rung
    spent += reached * (epochs - previous)
    return spent / epochs


def eta_line(study: optuna.Study, n_trials: int) -> str | None:
    """``ETA ...`` for the study's remaining trials, from the trials finished so far."""
    trials = study.get_trials(deepcopy=False)
    done = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        and t.datetime_start is not None
        and t.datetime_complete is not None
    ]
    remaining = n_trials - len(done)
    if not done or remaining <= 0:
        return None
    recent = sorted(done, key=lambda t: t.datetime_complete)[-_ETA_WINDOW:]
    mean = sum(_seconds(t) for t in recent) / len(recent)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    workers = max(1, running)
    return (
        f"{len(done)}/{n_trials} finished; ETA {format_duration(remaining * mean / workers)} "
        f"for the other {remaining} (mean {format_duration(mean)} per trial over the last "
        f"{len(recent)}, {workers} running)"
    )


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``: as precise as a plan needs."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _seconds(trial: optuna.trial.FrozenTrial) -> float:
    delta: datetime.timedelta = trial.datetime_complete - trial.datetime_start
    return delta.total_seconds()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
