"""The search: seeded multivariate TPE after the grid, and the pruner that stops poor trials.

What runs first -- the coarse grid, or the copies of a retrained configuration -- is queued by
:mod:`hpo.tuning.study_setup`; this module decides what is proposed after the queue is empty
and when a running trial is stopped.
"""

from __future__ import annotations

import warnings

import optuna

from studies import StudyDefinition

__all__ = ["make_pruner", "make_sampler"]


def make_sampler(definition: StudyDefinition, seed: int) -> optuna.samplers.TPESampler:
    """Seeded multivariate TPE with the constant liar, for many workers on one study.

    ``multivariate`` models the parameters jointly (batch size and learning rate interact);
    ``constant_liar`` makes running trials count as bad results so parallel workers do not
    all propose the same point. The grid already provides well-spread startup observations,
    so TPE starts modelling after the grid plus ``definition.tpe_random_trials`` random points.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            constant_liar=True,
            n_startup_trials=len(definition.grid.points()) + definition.tpe_random_trials,
        )


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """The pruner called ``name``; trials report validation accuracy once per epoch (step 1..E).

    Hyperband's resource is the epoch; its maximum is the study's epoch budget (explicit, not
    "auto", so pruning behaves the same from the first trial on). The median rule waits for 5
    finished trials and one epoch, so one noisy first epoch cannot kill a trial.
    """
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(epochs, 1), reduction_factor=3
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")  # RunSettings validated it already
