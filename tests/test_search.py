"""The search on a synthetic objective, in-process: who proposes the trials, who stops them.

No training: a trial's per-epoch "validation accuracy" is a smooth function of its
parameters plus seeded noise, so the sampler and the pruners see what they see in a real
study, in milliseconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import optuna
import pytest
from optuna.trial import TrialState

from hpo import records as keys
from hpo.tuning.pruning import EarlyPruner, chance_threshold, make_pruner
from hpo.tuning.search import label_phase, make_sampler
from hpo.tuning.study_setup import planned_queue
from hpo.tuning.trial_loop import optimize
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


def _objective(seed: int) -> Callable[[optuna.Trial], float]:
    """The product's suggest and labelling, with training replaced by ``_curve``."""
    noise = random.Random(seed)

    def objective(trial: optuna.Trial) -> float:
        params = DEFINITION.search_space.suggest(trial)
        label_phase(trial)
        for step in range(1, EPOCHS + 1):
            value = _curve(params, step, noise)
            trial.report(value, step)
            if step < EPOCHS and trial.should_prune():
                raise optuna.TrialPruned()
        return value

    return objective


def _run(study: optuna.Study, n_trials: int, seed: int) -> None:
    """Through the product's loop (``study.optimize`` and its callbacks)."""
    optimize(study, _objective(seed), n_trials)


@pytest.mark.parametrize("workers", [1, 4])
def test_after_the_grid_and_a_few_random_points_the_model_proposes_every_trial(
    workers: int,
) -> None:
    """K threads asking before the others tell (constant liar): a trial asked once the
    study has its startup trials finished is a TPE proposal. With at most K trials running,
    trial t is asked when at least t - (K - 1) trials have finished."""
    study = _study("asha")
    study.optimize(_objective(0), n_trials=40, n_jobs=workers)
    phases = {t.number: t.user_attrs[keys.PHASE] for t in study.trials}
    assert [phases[n] for n in range(len(DEFINITION.grid.points()))] == ["grid"] * 12
    late = [p for n, p in phases.items() if n >= N_STARTUP + workers - 1]
    assert late and set(late) == {keys.PHASE_TPE}
    assert sum(p == keys.PHASE_RANDOM for p in phases.values()) <= 4 + 2 * workers


def test_random_and_model_proposals_are_told_apart() -> None:
    study = _study("none")
    _run(study, N_STARTUP + 3, seed=1)
    phases = [t.user_attrs[keys.PHASE] for t in study.trials]
    assert phases == ["grid"] * 12 + ["random"] * 4 + ["tpe"] * 3


def test_asha_stops_poor_trials_in_the_first_epochs_and_lets_the_rest_finish() -> None:
    study = _study("asha")
    _run(study, 60, seed=2)
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
        study = _study(pruner)
        study.enqueue_trial(diverging)  # behind the grid
        _run(study, 13, seed=3)
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
