"""A training recipe (``studies.TrainingRecipe``, plain data) turned into the optimizer and
per-step schedule of one run (augmentation is the batch source's: it precedes the mask)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from studies.recipe import TrainingRecipe

__all__ = ["Optimization", "build_optimization", "lr_factor"]


@dataclass(frozen=True)
class Optimization:
    """How one run updates its weights."""

    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None = None  # stepped after every optimizer step; None: constant
    label_smoothing: float = 0.0  # of the cross-entropy loss


def build_optimization(
    recipe: TrainingRecipe, model: nn.Module, lr: float, *, steps_per_epoch: int, epochs: int
) -> Optimization:
    """The optimizer and schedule of ``recipe`` for a run of ``epochs`` x ``steps_per_epoch``;
    ``lr`` is the peak rate, reached at the end of the warm-up, so a study's learning-rate range
    means the same under every recipe."""
    params = model.parameters()
    if recipe.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=lr, weight_decay=recipe.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = None
    if recipe.schedule == "cosine":
        total = max(1, steps_per_epoch * epochs)
        warmup = round(recipe.warmup_fraction * total)
        scheduler = LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))
    return Optimization(optimizer, scheduler, recipe.label_smoothing)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Share of the peak rate at optimizer step ``step`` (0-based) of ``total``: a linear
    warm-up over ``warmup`` steps (from 1/warmup, never 0, so the first step learns), then a
    half cosine to 0 at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))
