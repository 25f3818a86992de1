"""The one training loop (a step, an epoch, a fit with per-epoch validation and a hook) that
tuning, the experiments and the benchmarks share. Every model is ``model(x, mask)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import NonFiniteLossError
from .evaluation import Batches, EvalMetrics, evaluate
from .recipe import Optimization

__all__ = ["EpochBatches", "EpochHook", "FitResult", "fit", "train_one_epoch", "train_step"]

# Called after each validated epoch with (step, its scores); True stops training (pruned).
EpochHook = Callable[[int, EvalMetrics], bool]


class EpochBatches(Protocol):
    """A batch source that draws one epoch at a time (``data.SparseBatches``)."""

    def epoch(self, epoch: int) -> Batches: ...


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` leaves behind."""

    state: dict[str, Tensor]  # copies of the best validated epoch's weights, else the final ones
    best_epoch: int  # the step ``state`` belongs to
    best_metrics: EvalMetrics | None
    last_metrics: EvalMetrics | None
    epochs_run: int
    stopped: bool  # by the hook
    validation_seconds: float
    train_losses: tuple[float, ...]  # each epoch's mean


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    mask: Tensor,
    y: Tensor,
    *,
    label_smoothing: float = 0.0,
    autocast: torch.dtype | None = None,
) -> Tensor:
    """One optimizer step of cross-entropy on one batch; returns the loss (detached, on the
    device). The caller steps the schedule, so a benchmark can time bare steps.

    ``autocast`` (a dtype) covers this step's forward pass and loss only: autocast caches its
    low-precision copies of the weights until its context closes, so the optimizer must step
    outside it, or every later step would run on stale copies."""
    with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
        logits = model(x, mask)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    optimization: Optimization,
    epoch: int,
    autocast: torch.dtype | None = None,
) -> float:
    """One pass of ``batches``, stepping the schedule after every step; returns the mean
    (smoothed, as minimized) loss. It is summed on the device, so training does not wait for
    the GPU, and checked once per epoch: a NaN anywhere raises ``NonFiniteLossError``."""
    model.train()
    total: Tensor | float = 0.0
    count = 0
    optimizer, scheduler = optimization.optimizer, optimization.scheduler
    smoothing = optimization.label_smoothing
    for x, mask, y in batches:
        loss = train_step(
            model, optimizer, x, mask, y, label_smoothing=smoothing, autocast=autocast
        )
        if scheduler is not None:
            scheduler.step()
        total = total + loss * y.shape[0]
        count += y.shape[0]
    if count == 0:
        raise ValueError("training split is empty")
    mean = float(total) / count
    if not math.isfinite(mean):
        raise NonFiniteLossError(f"training loss became {mean} in epoch {epoch}")
    return mean


def fit(
    model: nn.Module,
    optimization: Optimization,
    train: EpochBatches,
    epochs: int,
    *,
    validation: EpochBatches | None = None,
    on_epoch: EpochHook | None = None,
    autocast: torch.dtype | None = None,
) -> FitResult:
    """Train ``epochs`` epochs, scoring ``validation`` after each and keeping the best epoch's
    weights (without validation: the final ones). Epoch ``e`` draws ``train.epoch(e)`` and is
    reported as step ``e + 1``, the epochs trained so far (Optuna's and the pruners' unit).
    ``autocast``: the dtype of the forward passes (see :func:`train_step`)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    best_step, best, metrics, state = 0, None, None, None
    validating, losses = 0.0, []
    for epoch in range(epochs):
        step = epoch + 1
        losses.append(train_one_epoch(model, train.epoch(epoch), optimization, step, autocast))
        if validation is None:
            continue
        started = time.perf_counter()
        metrics = evaluate(model, validation.epoch(0), autocast)
        if best is None or metrics.accuracy > best.accuracy:
            best_step, best, state = step, metrics, _copy_state(model)
        validating += time.perf_counter() - started
        if on_epoch is not None and on_epoch(step, metrics):
            return FitResult(state, best_step, best, metrics, step, True, validating, (*losses,))
    if validation is None:
        best_step, state = epochs, _copy_state(model)
    assert state is not None  # epochs >= 1
    return FitResult(state, best_step, best, metrics, epochs, False, validating, (*losses,))


def _copy_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
