"""Train one network of a study trial or an experiment run: the one function both share, so
the two train the same network, bit for bit, from the same :class:`TrainingRun`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from data import SparseBatches, SparseDataset, augmentation_for
from models import CNNConfig, ModelFamily, build_model
from studies.recipe import TrainingRecipe

from ..runtime.execution import Execution
from .loop import EpochBatches, EpochHook, FitResult, fit
from .recipe import Optimization, build_optimization

__all__ = ["TrainingRun", "prepare_training", "train_network"]


@dataclass(frozen=True)
class TrainingRun:
    """One network to train: everything that decides its trained weights."""

    family: ModelFamily
    cnn_config: CNNConfig
    recipe: TrainingRecipe
    lr: float  # the peak learning rate
    batch_size: int
    epochs: int
    sparsity: float  # fraction of pixels dropped in training
    seed: int  # of the initial weights, the batch order, the masks and the augmentation


def train_network(
    run: TrainingRun,
    data: SparseDataset,
    device: torch.device,
    *,
    execution: Execution | None = None,
    validation: EpochBatches | None = None,
    on_epoch: EpochHook | None = None,
    track: Callable[[SparseBatches], EpochBatches] | None = None,
) -> tuple[nn.Module, FitResult]:
    """Build and train ``run``'s network on ``data``; returns it (final weights) and the fit,
    which keeps the best validated epoch's weights (:func:`fit`). ``track`` wraps the training
    batches (a progress display counts them)."""
    execution = execution or Execution()
    model, train, optimization = prepare_training(run, data, device, execution)
    batches = track(train) if track is not None else train
    result = fit(
        model, optimization, batches, run.epochs, validation=validation, on_epoch=on_epoch,
        autocast=execution.autocast_dtype,
    )  # fmt: skip
    return model, result


def prepare_training(
    run: TrainingRun, data: SparseDataset, device: torch.device, execution: Execution
) -> tuple[nn.Module, SparseBatches, Optimization]:
    """``run``'s seeded network on ``device``, its training batches and its optimization (the
    cost estimate times steps of exactly these)."""
    torch.manual_seed(run.seed)
    model = execution.prepare(build_model(run.family, run.cnn_config), device)
    train = SparseBatches(
        data.train,
        sparsity=run.sparsity,
        batch_size=run.batch_size,
        device=device,
        mean=data.mean,
        std=data.std,
        shuffle=True,
        seed=run.seed,
        drop_last=execution.compile,  # one batch shape for the compiled graphs
        augment=augmentation_for(data.name) if run.recipe.augment else None,
    )
    optimization = build_optimization(
        run.recipe, model, run.lr, steps_per_epoch=len(train), epochs=run.epochs
    )
    return model, train, optimization
