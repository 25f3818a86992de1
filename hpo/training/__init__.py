"""Training and scoring one network: the one loop the tuning objective, the experiments and the
benchmarks share. Of ``hpo`` it imports only :mod:`hpo.errors` and :mod:`hpo.runtime.execution`.
"""

from .evaluation import EvalMetrics, evaluate
from .loop import FitResult, fit, train_one_epoch, train_step
from .network import TrainingRun, prepare_training, train_network
from .recipe import build_optimization

__all__ = [
    "EvalMetrics",
    "FitResult",
    "TrainingRun",
    "build_optimization",
    "evaluate",
    "fit",
    "prepare_training",
    "train_network",
    "train_one_epoch",
    "train_step",
]
