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
