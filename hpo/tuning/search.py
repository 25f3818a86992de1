"""The search: what is proposed once the queue (:mod:`hpo.tuning.study_setup`) is empty."""

from __future__ import annotations

import warnings

import optuna

from studies import StudyDefinition

from .. import records

__all__ = ["ModelledTPESampler", "label_phase", "make_sampler", "proposal_phase"]


class ModelledTPESampler(optuna.samplers.TPESampler):
    """TPE that remembers which trials it proposed from its model.

    Until the study has ``n_startup_trials`` finished trials TPE draws at random; after that
    its model proposes. Which of the two chose a trial is stored on the trial
    (:func:`proposal_phase`), so a report -- and a test -- can count model proposals.
    """

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
    """Seeded multivariate TPE with the constant liar, for many workers on one study.

    ``multivariate`` models the parameters jointly (batch size and learning rate interact);
    ``constant_liar`` makes running trials count as bad results so parallel workers do not
    all propose the same point. The grid already provides well-spread startup observations,
    so TPE starts modelling after the grid plus ``definition.tpe_random_trials`` random points.

    Args:
        definition: The study (its grid size and ``tpe_random_trials``).
        seed: The worker's seed.
        queued: Startup trials queued before TPE samples (default: the grid's points).
    """
    queued = len(definition.grid.points()) if queued is None else queued
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return ModelledTPESampler(
            seed=seed,
            multivariate=True,
            constant_liar=True,
            n_startup_trials=queued + definition.tpe_random_trials,
        )
