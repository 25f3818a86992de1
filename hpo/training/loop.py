"""Training one epoch and evaluating a model: the only code that touches batches.

Every model family is called as ``model(x, mask)`` and every batch source yields
``(x, mask, y)`` already on the device, so nothing here branches on the family or the dataset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import NonFiniteLossError

__all__ = ["EvalMetrics", "evaluate", "train_one_epoch"]

Batches = Iterable[tuple[Tensor, Tensor, Tensor]]


@dataclass(frozen=True)
class EvalMetrics:
    """Scores of one pass over a split.

    Attributes:
        accuracy: Fraction of examples whose arg-max logit is the label.
        mae: Mean absolute error between the softmax probabilities and the one-hot labels,
            averaged over examples *and* classes (the metric the seed work reports; 0 is
            perfect, 2 / num_classes is confidently wrong everywhere).
        n: Number of examples scored.
    """

    accuracy: float
    mae: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "mae": self.mae}


def train_one_epoch(
    model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer, epoch: int
) -> float:
    """One pass of ``batches`` with cross-entropy; returns the mean training loss.

    The loss is summed on the device and checked once at the end of the epoch, so training
    does not synchronize with the GPU on every batch; a NaN anywhere propagates into the sum.

    Raises:
        NonFiniteLossError: The epoch's loss was NaN or infinite.
    """
    model.train()
    total: Tensor | None = None
    count = 0
    for x, mask, y in batches:
        loss = F.cross_entropy(model(x, mask), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        batch_loss = loss.detach() * y.shape[0]
        total = batch_loss if total is None else total + batch_loss
        count += y.shape[0]
    if total is None or count == 0:
        raise ValueError("training split is empty")
    mean = float(total) / count
    if not math.isfinite(mean):
        raise NonFiniteLossError(f"training loss became {mean} in epoch {epoch}")
    return mean


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Batches) -> EvalMetrics:
    """Accuracy and MAE (see :class:`EvalMetrics`) of ``model`` over ``batches``."""
    model.eval()
    correct: Tensor | None = None
    abs_error: Tensor | None = None
    count = 0
    num_classes = 0
    for x, mask, y in batches:
        logits = model(x, mask)  # (B, K)
        num_classes = logits.shape[1]
        probs = logits.float().softmax(dim=1)
        onehot = F.one_hot(y, num_classes).to(probs.dtype)
        hits = (logits.argmax(dim=1) == y).sum()
        err = (probs - onehot).abs().sum()
        correct = hits if correct is None else correct + hits
        abs_error = err if abs_error is None else abs_error + err
        count += y.shape[0]
    if correct is None or abs_error is None or count == 0:
        raise ValueError("evaluation split is empty")
    return EvalMetrics(
        accuracy=int(correct) / count, mae=float(abs_error) / (count * num_classes), n=count
    )
