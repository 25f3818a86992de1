"""What a run will cost: a few timed steps of a typical configuration (the study's own recipe
and execution) before the first trial; the ETA from finished trials is :mod:`.eta`'s."""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import optuna
import torch

from data import SparseDataset
from studies import VAL_MASK_SEED, StudyDefinition

from .. import records
from ..errors import one_line
from ..runtime.execution import Execution
from ..runtime.locks import exclusive
from ..runtime.storage_url import StorageTarget
from ..training import TrainingRun, evaluate, prepare_training, train_one_epoch
from .eta import format_duration
from .trial_data import eval_batches, validation_split

if TYPE_CHECKING:
    from .settings import RunSettings

__all__ = [
    "CostEstimate",
    "asha_share",
    "estimate_line",
    "measure_cost",
    "shared_estimate",
]


_TIMED_STEPS = 6
_QUICK_EPOCHS, _QUICK_TRAIN = 3, 10_000  # the quick study advised on a slow CPU


@dataclass(frozen=True)
class CostEstimate:
    """Seconds one step, one epoch's steps and one validation pass take on this device."""

    step_seconds: float
    steps_per_epoch: int
    validation_seconds: float
    epochs: int
    final_passes: int  # validation passes after the last epoch (the other test sparsities)
    probed: str = ""  # the configuration timed
    compile_error: str | None = None  # why compiling failed here: trials run eager
    load: float = 0.0  # the machine's 1-minute load average while it was timed

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, stored: dict[str, object]) -> CostEstimate:
        return cls(**stored)  # type: ignore[arg-type]

    @property
    def trial_seconds(self) -> float:
        """A trial that runs its whole budget."""
        epoch = self.step_seconds * self.steps_per_epoch + self.validation_seconds
        return self.epochs * epoch + self.final_passes * self.validation_seconds


def shared_estimate(
    study: optuna.Study,
    target: StorageTarget,
    definition: StudyDefinition,
    data: SparseDataset,
    device: torch.device,
    execution: Execution,
) -> CostEstimate:
    """The study's cost on this kind of device, probed once: the first worker to start times
    it while the others wait (K workers probing one GPU at once would time the crowd) and
    stores it with the study; the others read it."""
    key = _estimate_key(device, execution)
    with exclusive(target, "cost estimate"):
        stored = dict(study.user_attrs.get(records.COST_ESTIMATE, {}))
        if key in stored:
            return CostEstimate.from_dict(stored[key])
        estimate = _probe(definition, data, device, execution)
        study.set_user_attr(records.COST_ESTIMATE, {**stored, key: estimate.to_dict()})
    return estimate


def _probe(
    definition: StudyDefinition, data: SparseDataset, device: torch.device, execution: Execution
) -> CostEstimate:
    """:func:`measure_cost`; when compiling is what fails, the eager cost and the reason."""
    try:
        return measure_cost(definition, data, device, execution)
    except Exception as e:  # the compiler's errors have no public base class
        if not execution.compile:
            raise
        while (inner := e.__cause__ or e.__context__) is not None:  # the compiler wraps it
            e = inner  # type: ignore[assignment]
        failure = f"{type(e).__name__}: {one_line(e)}"
    eager = measure_cost(definition, data, device, execution.eager())
    return dataclasses.replace(eager, compile_error=failure)


def _estimate_key(device: torch.device, execution: Execution) -> str:
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{device.type}, {torch.get_num_threads()} threads"
    return f"{where}, {execution.precision}" + (", compiled" if execution.compile else "")


def measure_cost(
    definition: StudyDefinition, data: SparseDataset, device: torch.device, execution: Execution
) -> CostEstimate:
    """Time a typical configuration briefly, with the study's recipe and ``execution``."""
    d, grid = definition, definition.grid.points()
    depth = (d.search_space.depth.low + d.search_space.depth.high) // 2
    batch_size = grid[0]["batch_size"] if grid else 64
    params = {"depth": depth, "activation": d.search_space.activation.choices[0]}
    config = d.cnn_config(data.in_channels, data.num_classes, params)
    run = TrainingRun(
        d.model_family, config, d.recipe, 1e-3, batch_size, d.epochs, d.train_sparsity, seed=0
    )
    model, train, optimization = prepare_training(run, data, device, execution)
    batches = itertools.chain.from_iterable(train.epoch(e) for e in itertools.count())
    autocast = execution.autocast_dtype
    train_one_epoch(model, itertools.islice(batches, 1), optimization, 0, autocast)  # warm-up
    _sync(device)
    started = time.perf_counter()
    steps = min(_TIMED_STEPS, len(train))  # no more than an epoch: tiny data, few steps
    train_one_epoch(model, itertools.islice(batches, steps), optimization, 0, autocast)
    _sync(device)
    step_seconds = (time.perf_counter() - started) / steps
    val = eval_batches(
        definition, data, validation_split(data, definition.val_size),
        definition.train_sparsity, VAL_MASK_SEED, device,
    )  # fmt: skip
    started = time.perf_counter()
    evaluate(model, val.epoch(0), autocast)
    _sync(device)
    return CostEstimate(
        step_seconds=step_seconds,
        steps_per_epoch=len(train),
        validation_seconds=time.perf_counter() - started,
        epochs=definition.epochs,
        final_passes=len(set(definition.test_sparsities) - {definition.train_sparsity}),
        probed=f"depth {depth}, batch {batch_size}",
        load=os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0,
    )


def estimate_line(
    definition: StudyDefinition,
    estimate: CostEstimate,
    settings: RunSettings,
    finished: int,
    n_train: int,
    n_val: int,
) -> str:
    """The estimate as one log line: per trial, for the rest of the study on one worker
    (workers that share a device do not divide it: the ETA after each trial tells)."""
    remaining = max(0, settings.n_trials - finished)
    full = remaining * estimate.trial_seconds
    epochs = f"{definition.epochs} epoch" + ("s" if definition.epochs != 1 else "")
    budget = (
        f"{epochs} x {n_train:,} images, {n_val:,} validation images at "
        f"{len(definition.test_sparsities)} sparsities, pruner {settings.pruner}"
    )
    device = torch.device(settings.device)
    where = str(device) + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
    line = (
        f"estimate on {where}: a full trial of {definition.name} takes about "
        f"{format_duration(estimate.trial_seconds)} ({budget}; measured on {estimate.probed}); "
        f"{remaining} trials to go: at most {format_duration(full)} for one worker"
    )
    share = asha_share(definition.epochs)
    if settings.pruner == "asha" and share < 1:
        line += f", about {format_duration(share * full)} with pruning"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device.type == "cpu" and estimate.load > 0.75 * (cores or 1):
        line += (
            f" (timed while the machine was busy: load average {estimate.load:.1f} on {cores} "
            "cores; expect the times to vary with the load)"
        )
    if device.type == "cpu" and estimate.trial_seconds > 600:
        quick = _quick_trial_seconds(estimate, n_train)
        n_quick = max(4, int(3600 // quick))  # about an hour
        line += (
            f". A quick study on this CPU, about an hour: {sys.executable} -m hpo.run --study "
            f"{definition.name} --epochs {_QUICK_EPOCHS} --train-size {_QUICK_TRAIN} "
            f"--n-trials {n_quick} --study-name {definition.name}_quick"
        )
    return line


def _quick_trial_seconds(estimate: CostEstimate, n_train: int) -> float:
    """A trial of the quick study: fewer epochs on fewer images, the same validation."""
    steps = estimate.steps_per_epoch * min(1.0, _QUICK_TRAIN / max(1, n_train))
    epoch = estimate.step_seconds * steps + estimate.validation_seconds
    return _QUICK_EPOCHS * epoch + estimate.final_passes * estimate.validation_seconds


def asha_share(epochs: int) -> float:
    """The share of a full trial's epochs an ASHA-pruned study spends per trial, ideally:
    rungs at 1, 3, 9, ... up to half the budget, a third going on at each (10 epochs: 24 %)."""
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
