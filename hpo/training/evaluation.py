"""Scoring a model on a pass of batches: accuracy and MAE."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Batches", "EvalMetrics", "evaluate"]

# Every batch source yields (x, mask, y) already on the device; every model is model(x, mask).
Batches = Iterable[tuple[Tensor, Tensor, Tensor]]


@dataclass(frozen=True)
class EvalMetrics:
    """Scores of one pass over a split. ``mae``: softmax probabilities against one-hot labels,
    averaged over examples *and* classes, as the seed work reports it (2 / K: wrong everywhere).
    """

    accuracy: float
    mae: float
    n: int  # examples scored

    def to_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "mae": self.mae}


@torch.inference_mode()
def evaluate(
    model: nn.Module, batches: Batches, autocast: torch.dtype | None = None
) -> EvalMetrics:
    """Accuracy and MAE (see :class:`EvalMetrics`) of ``model`` over ``batches``, its forward
    passes autocast to ``autocast`` if given (as in training)."""
    model.eval()
    correct: Tensor | int = 0  # summed on the device: no wait for the GPU every batch
    abs_error: Tensor | float = 0.0
    count = 0
    num_classes = 0
    for x, mask, y in batches:
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            logits = model(x, mask)  # (B, K)
        num_classes = logits.shape[1]
        probs = logits.float().softmax(dim=1)
        onehot = F.one_hot(y, num_classes).to(probs.dtype)
        correct = correct + (logits.argmax(dim=1) == y).sum()
        abs_error = abs_error + (probs - onehot).abs().sum()
        count += y.shape[0]
    if count == 0:
        raise ValueError("evaluation split is empty")
    return EvalMetrics(
        accuracy=int(correct) / count, mae=float(abs_error) / (count * num_classes), n=count
    )
