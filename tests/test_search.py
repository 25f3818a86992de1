"""The search on a synthetic objective, in-process: who proposes the trials, who stops them.

No training: a trial's per-epoch "validation accuracy" is a smooth function of its
parameters plus seeded noise, so the sampler and the pruners see what they see in a real
study, in milliseconds.
"""

from __future__ import annotations

import math
import random

import optuna
import pytest
from optuna.trial import TrialState

from hpo.tuning import keys
from hpo.tuning.pruning import EarlyPruner, chance_threshold, make_pruner
from hpo.tuning.search import make_sampler, proposal_phase
from hpo.tuning.study_setup import planned_queue
from studies import get_study

EPOCHS = 10
DEFINITION = get_study("sparse_mnist").with_overrides({"epochs": EPOCHS})
N_STARTUP = len(DEFINITION.grid.points()) + DEFINITION.tpe_random_trials


def _curve(params: dict, epoch: int, noise: random.Random) -> float:
    """Accuracy after ``epoch``: best near lr 3e-3 and depth 6, learning faster for larger lr."""
    quality = 0.9 - 0.12 * abs(math.log10(params["lr"] / 3e-3)) - 0.02 * abs(params["depth"] - 6)
    if params["lr"] > 0.05:
        return 0.1  # diverged: stuck at chance
    speed = 1 - math.exp(-epoch * min(1.0, params["lr"] * 300))
    return max(0.1, min(0.99, 0.1 + (quality - 0.1) * speed + noise.gauss(0, 0.005)))


def _study(pruner: str, seed: int = 0) -> optuna.Study:
    study = optuna.create_study(
        direction="maximize",
        sampler=make_sampler(DEFINITION, seed),
        pruner=make_pruner(pruner, EPOCHS, num_classes=10, n_val=2000),
    )
    for params, attrs in planned_queue(DEFINITION, n_trials=0):
        study.enqueue_trial(params, user_attrs=attrs)
    return study


def _run(study: optuna.Study, trial: optuna.Trial, noise: random.Random) -> None:
    """What the objective does with a trial: label it, report per epoch, obey the pruner."""
    params = DEFINITION.search_space.suggest(trial)
    if keys.PHASE not in trial.user_attrs:  # after suggesting: Optuna samples lazily
        trial.set_user_attr(keys.PHASE, proposal_phase(study.sampler, trial.number))
    for epoch in range(1, EPOCHS + 1):
        value = _curve(params, epoch, noise)
        trial.report(value, epoch)
        if epoch < EPOCHS and trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return
    study.tell(trial, value)


@pytest.mark.parametrize("workers", [1, 4])
def test_after_the_grid_and_a_few_random_points_the_model_proposes_every_trial(
    workers: int,
) -> None:
    """With K workers asking before the others tell (constant liar), still every trial asked
    once the study has its startup trials finished is a TPE proposal."""
    study, noise = _study("asha"), random.Random(0)
    asked_after_startup: list[int] = []
    for _ in range(40 // workers):
        finished = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
        batch = [study.ask() for _ in range(workers)]  # K workers ask at once
        if finished >= N_STARTUP:
            asked_after_startup += [t.number for t in batch]
        for trial in batch:
            _run(study, trial, noise)
    phases = {t.number: t.user_attrs[keys.PHASE] for t in study.trials}
    assert [phases[n] for n in range(len(DEFINITION.grid.points()))] == ["grid"] * 12
    assert {phases[n] for n in asked_after_startup} == {keys.PHASE_TPE}
    assert len(asked_after_startup) >= 40 - N_STARTUP - 2 * workers
    assert sum(p == keys.PHASE_RANDOM for p in phases.values()) <= 4 + 2 * workers


def test_random_and_model_proposals_are_told_apart() -> None:
    study, noise = _study("none"), random.Random(1)
    for _ in range(N_STARTUP + 3):
        _run(study, study.ask(), noise)
    phases = [t.user_attrs[keys.PHASE] for t in study.trials]
    assert phases == ["grid"] * 12 + ["random"] * 4 + ["tpe"] * 3


def test_asha_stops_poor_trials_in_the_first_epochs_and_lets_the_rest_finish() -> None:
    study, noise = _study("asha"), random.Random(2)
    for _ in range(60):
        _run(study, study.ask(), noise)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(pruned) > len(complete) > 0
    # Rungs at epochs 1 and 3; nothing is stopped in the second half of its budget.
    assert {len(t.intermediate_values) for t in pruned} <= {1, 3}
    assert sorted(len(t.intermediate_values) for t in pruned)[len(pruned) // 2] <= 3
    assert all(len(t.intermediate_values) == EPOCHS for t in complete)


def test_a_trial_at_chance_is_stopped_at_once_whatever_the_rule() -> None:
    diverging = {"depth": 6, "activation": "relu", "batch_size": 64, "lr": 0.09}
    for pruner in ("asha", "median"):
        study, noise = _study(pruner), random.Random(3)
        study.enqueue_trial(diverging)  # behind the grid
        for _ in range(13):
            _run(study, study.ask(), noise)
        last = study.trials[12]
        assert last.params["lr"] == 0.09
        assert last.state == TrialState.PRUNED and list(last.intermediate_values) == [1]


def test_the_chance_rule_and_the_cap() -> None:
    threshold = chance_threshold(num_classes=10, n_val=2000)
    assert threshold == pytest.approx(0.1 + 3 * math.sqrt(0.09 / 2000))
    always = optuna.pruners.ThresholdPruner(lower=1.0)  # would prune everything
    pruner = EarlyPruner(always, max_step=5, chance=threshold)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    trial.report(0.5, 5)
    assert trial.should_prune()  # the base rule, within the cap
    trial.report(0.5, 6)
    assert not trial.should_prune()  # past the cap
    trial.report(threshold, 7)
    assert trial.should_prune()  # at chance: at any epoch
    trial.report(float("nan"), 8)
    assert trial.should_prune()


def test_hyperband_is_kept_as_it_was() -> None:
    pruner = make_pruner("hyperband", EPOCHS, num_classes=10, n_val=2000)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert isinstance(
        make_pruner("none", EPOCHS, num_classes=10, n_val=9), optuna.pruners.NopPruner
    )
