"""The pruners: which running trials to stop, and when (``--pruner``).

``asha``: Optuna's ``SuccessiveHalvingPruner`` (rungs at epochs 1, 3, 9, ..., the best third
goes on); ``median``: ``MedianPruner`` (after 5 trials); ``hyperband``: ``HyperbandPruner`` as
the studies used it before 2026-12; ``none``. ``asha`` and ``median`` are wrapped in
:class:`EarlyPruner`: a trial at chance (diverged, learned nothing) stops at once, and the base
rule acts only in the first half of the budget, where stopping still saves most of a trial's
cost. Why this default: ``docs/decisions.md``, "The search".
"""

from __future__ import annotations

import math

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

from .settings import DEFAULT_PRUNER, PRUNERS

__all__ = ["DEFAULT_PRUNER", "PRUNERS", "EarlyPruner", "chance_threshold", "make_pruner"]

# A score more than this many standard errors above chance level is not "at chance".
_CHANCE_Z = 3.0


def chance_threshold(num_classes: int, n_val: int) -> float:
    """Highest validation accuracy indistinguishable from guessing on ``n_val`` images:
    three standard errors above ``1 / num_classes`` (MNIST on 2,000 images: 0.120)."""
    p = 1.0 / num_classes
    return p + _CHANCE_Z * math.sqrt(p * (1.0 - p) / n_val)


class EarlyPruner(BasePruner):
    """``base`` acting up to epoch ``max_step`` (``None``: none), and a trial at or below
    ``chance`` (:func:`chance_threshold`) stopped at any epoch."""

    def __init__(self, base: BasePruner | None, *, max_step: int, chance: float) -> None:
        self._base = base
        self._max_step = max_step
        self._chance = chance

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value) or value <= self._chance:
            return True
        if self._base is None or step > self._max_step:
            return False
        return self._base.prune(study, trial)


def make_pruner(
    name: str, epochs: int, *, num_classes: int, n_val: int
) -> optuna.pruners.BasePruner:
    """The pruner ``name`` (one of :data:`PRUNERS`) for trials of ``epochs`` epochs; the
    chance rule needs the classes and the validation images each epoch is scored on."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(epochs, 1), reduction_factor=3
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "asha":
        base: BasePruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=3, min_early_stopping_rate=0
        )
    elif name == "median":
        base = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    else:
        raise ValueError(f"unknown pruner {name!r}")  # RunSettings validated it already
    chance = chance_threshold(num_classes, n_val)
    return EarlyPruner(base, max_step=max(1, epochs // 2), chance=chance)
