"""Training and scoring one network: the one loop every caller shares.

Used by the tuning objective, the experiments and the benchmarks. It imports ``models``,
``data``, ``studies.recipe`` (plain data), :mod:`hpo.errors` and
:mod:`hpo.runtime.execution`, nothing else of ``hpo``.
"""

from .evaluation import Batches, EvalMetrics, evaluate
from .loop import EpochBatches, EpochHook, FitResult, fit, train_one_epoch, train_step
from .network import TrainingRun, train_network
from .recipe import Optimization, build_optimization

__all__ = [
    "Batches",
    "EpochBatches",
    "EpochHook",
    "EvalMetrics",
    "FitResult",
    "Optimization",
    "TrainingRun",
    "build_optimization",
    "evaluate",
    "fit",
    "train_network",
    "train_one_epoch",
    "train_step",
]
