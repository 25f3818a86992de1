"""The search: what is proposed once the queue (:mod:`hpo.tuning.study_setup`) is empty."""

from __future__ import annotations

import warnings

import optuna

from studies import StudyDefinition

from .. import records

__all__ = ["ModelledTPESampler", "label_phase", "make_sampler", "proposal_phase"]


class ModelledTPESampler(optuna.samplers.TPESampler):
    """TPE that remembers which trials its model proposed (below ``n_startup_trials``
    finished trials it draws at random), so a report -- and a test -- can count them."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._modelled: set[int] = set()

    def sample_relative(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, object]:
        params = super().sample_relative(study, trial, search_space)
        if params:  # empty below the startup count: the parameters are drawn at random
            self._modelled.add(trial.number)
        return params

    def proposed_by_model(self, trial_number: int) -> bool:
        return trial_number in self._modelled


def proposal_phase(sampler: optuna.samplers.BaseSampler, trial_number: int) -> str:
    """``records.PHASE_TPE`` if TPE's model proposed the trial, else ``records.PHASE_RANDOM``."""
    if isinstance(sampler, ModelledTPESampler) and sampler.proposed_by_model(trial_number):
        return records.PHASE_TPE
    return records.PHASE_RANDOM


def label_phase(trial: optuna.Trial) -> None:
    """Store what proposed ``trial`` unless the queue gave it a phase. Call it after
    suggesting: Optuna samples the parameters lazily, at the first ``suggest_*``."""
    if records.PHASE not in trial.user_attrs:
        trial.set_user_attr(records.PHASE, proposal_phase(trial.study.sampler, trial.number))


def make_sampler(
    definition: StudyDefinition, seed: int, *, queued: int | None = None
) -> ModelledTPESampler:
    """Seeded multivariate TPE (batch size and learning rate interact) with the constant
    liar (parallel workers do not all propose the same point), modelling after the queued grid
    (``queued``: its size) and ``definition.tpe_random_trials`` random points."""
    queued = len(definition.grid.points()) if queued is None else queued
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return ModelledTPESampler(
            seed=seed,
            multivariate=True,
            constant_liar=True,
            n_startup_trials=queued + definition.tpe_random_trials,
        )
