"""Training and scoring one network: the one loop every caller shares.

Used by the tuning objective, the fixed-configuration experiments and the benchmarks; it
imports nothing from the rest of ``hpo`` except :mod:`hpo.errors`, and from ``studies`` only
the plain-data ``TrainingRecipe`` it turns into an optimizer and schedule.
"""

from .evaluation import Batches, EvalMetrics, evaluate
from .loop import EpochBatches, EpochHook, FitResult, fit, train_one_epoch, train_step
from .recipe import Optimization, build_optimization

__all__ = [
    "Batches",
    "EpochBatches",
    "EpochHook",
    "EvalMetrics",
    "FitResult",
    "Optimization",
    "build_optimization",
    "evaluate",
    "fit",
    "train_one_epoch",
    "train_step",
]
