"""The one training loop: a step, an epoch, and a fit with per-epoch validation and a hook.

Tuning (validation, report / prune, best-epoch weights), the experiments (final weights) and
the benchmarks (single steps) all train through here, so a change to how a network trains is
made once. Every model is ``model(x, mask)`` and every batch ``(x, mask, y)`` on the device.
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
    """What :func:`fit` leaves behind: ``state``, the weights to keep (the best validated
    epoch's, or the final ones without validation; detached copies on the device), the step
    they belong to and their scores, the last epoch's scores, the epochs trained, whether the
    hook stopped training, the seconds spent validating, and each epoch's mean loss."""

    state: dict[str, Tensor]
    best_epoch: int
    best_metrics: EvalMetrics | None
    last_metrics: EvalMetrics | None
    epochs_run: int
    stopped: bool
    validation_seconds: float
    train_losses: tuple[float, ...]


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    mask: Tensor,
    y: Tensor,
    *,
    label_smoothing: float = 0.0,
) -> Tensor:
    """One optimizer step of cross-entropy on one batch; returns the loss (detached, on the
    device). The caller steps the schedule, so a benchmark can time bare steps."""
    loss = F.cross_entropy(model(x, mask), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_one_epoch(
    model: nn.Module, batches: Batches, optimization: Optimization, epoch: int
) -> float:
    """One pass of ``batches``, stepping the schedule after every step; returns the mean
    (smoothed, as minimized) loss. It is summed on the device and checked once per epoch, so
    training does not wait for the GPU every batch; a NaN anywhere reaches the sum.

    Raises:
        NonFiniteLossError: The epoch's loss was NaN or infinite.
    """
    model.train()
    total: Tensor | None = None
    count = 0
    optimizer, scheduler = optimization.optimizer, optimization.scheduler
    smoothing = optimization.label_smoothing
    for x, mask, y in batches:
        loss = train_step(model, optimizer, x, mask, y, label_smoothing=smoothing)
        if scheduler is not None:
            scheduler.step()
        batch_loss = loss * y.shape[0]
        total = batch_loss if total is None else total + batch_loss
        count += y.shape[0]
    if total is None or count == 0:
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
) -> FitResult:
    """Train ``epochs`` epochs, validating after each and keeping the best epoch's weights.

    Epoch ``e`` (0-based) draws its training masks and order as ``train.epoch(e)``; it is
    reported as step ``e + 1`` (the epochs trained so far, Optuna's and the pruners' unit).

    Args:
        model: The network, on the training device.
        optimization: Its optimizer, schedule and loss, built for this many ``epochs``.
        train: Training batches.
        epochs: How many epochs to train (>= 1).
        validation: Fixed-mask batches scored after every epoch (the same masks each time);
            ``None`` skips validation and keeps the final weights.
        on_epoch: Called after each validated epoch with its step; ``True`` stops training.

    Raises:
        NonFiniteLossError: An epoch's training loss was NaN or infinite.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    best_step, best, metrics, state = 0, None, None, None
    validating, losses = 0.0, []
    for epoch in range(epochs):
        step = epoch + 1
        losses.append(train_one_epoch(model, train.epoch(epoch), optimization, step))
        if validation is None:
            continue
        started = time.perf_counter()
        metrics = evaluate(model, validation.epoch(0))
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
