"""Small finished (or half-finished) studies built directly with Optuna: no training, no data.

They carry exactly what ``hpo.run`` stores -- the four tuned parameters with the registered
search space's distributions, the trial attributes named in :mod:`hpo.records`, per-epoch
validation accuracy as intermediate values, and the study's test figures -- so report,
chart and dashboard tests run in well under a second per study.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpo import records
from hpo.records import StudyRecord
from studies import get_study

DISTRIBUTIONS = {
    "depth": IntDistribution(3, 9),
    "activation": CategoricalDistribution(("relu", "leaky_relu", "elu")),
    "batch_size": CategoricalDistribution((32, 64, 128, 256)),
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
}
EPOCHS = 4


@dataclass(frozen=True)
class StudyShape:
    """How many trials of each state :func:`make_study` creates."""

    complete: int = 6
    pruned: int = 2
    failed: int = 2
    running: int = 1
    test_metrics: bool = True


def _params(rng: random.Random) -> dict[str, object]:
    return {
        "depth": rng.randint(3, 9),
        "activation": rng.choice(("relu", "leaky_relu", "elu")),
        "batch_size": rng.choice((32, 64, 128, 256)),
        "lr": 10 ** rng.uniform(-4, -1),
    }


def _val_metrics(best: float, sparsities: tuple[float, ...], train: float, rng: random.Random):
    # Accuracy falls as more pixels are missing; the entry at the training sparsity *is* the
    # objective, as in hpo.tuning.objective.
    metrics = {}
    for s in sparsities:
        accuracy = best if s == train else min(0.999, best + (train - s) * rng.uniform(0.02, 0.1))
        metrics[records.sparsity_key(s)] = {
            "accuracy": accuracy,
            "mae": (1 - accuracy) * 0.2 + rng.uniform(0, 0.01),
        }
    return metrics


def make_study(
    storage: optuna.storages.BaseStorage | str,
    name: str = "sparse_mnist",
    seed: int = 0,
    shape: StudyShape | None = None,
    base_accuracy: float = 0.8,
    overrides: dict | None = None,
) -> optuna.Study:
    """Create study ``name`` (a registered study name) in ``storage`` with synthetic trials.

    Args:
        storage: Storage (object or URL) to create the study in.
        name: Registered study name: its record is stored as ``records.CONFIG``.
        seed: Seed of every number drawn.
        shape: Trials per state; the default has every state the report must show.
        base_accuracy: Typical objective value; the best trial lands near ``base + 0.15``.
        overrides: Command-line budget overrides the study was "run" with (``epochs`` ...).

    Returns:
        The study, whose best trial holds ``records.BEST_TRIAL`` / ``records.TEST_METRICS`` when
        ``shape.test_metrics``.
    """
    shape = shape or StudyShape()
    rng = random.Random(seed)
    definition = get_study(name).with_overrides(overrides or {})
    train = definition.train_sparsity
    sparsities = tuple(definition.test_sparsities)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2; hpo.run sets it too
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([records.METRIC_NAME])
    record = StudyRecord(definition.to_dict(), overrides=overrides or {}, pruner="hyperband")
    study.set_user_attr(records.CONFIG, record.to_dict())
    number = 0
    for i in range(shape.complete):
        best = min(0.99, base_accuracy + rng.uniform(-0.1, 0.15))
        curve = {e: best * (0.7 + 0.3 * e / EPOCHS) for e in range(1, EPOCHS + 1)}
        curve[EPOCHS] = best
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=best,
                params=_params(rng),
                distributions=DISTRIBUTIONS,
                intermediate_values=curve,
                user_attrs={
                    records.PHASE: records.PHASE_GRID if i < 2 else records.PHASE_TPE,
                    records.VAL_METRICS: _val_metrics(best, sparsities, train, rng),
                    records.N_PARAMS: rng.randint(5_000, 90_000),
                    records.TRAIN_SECONDS: rng.uniform(10, 100),
                    records.MODEL_ARTIFACT: f"artifact-{number}",
                },
            )
        )
        number += 1
    for _ in range(shape.pruned):
        epoch = rng.randint(1, EPOCHS - 1)
        curve = {e: rng.uniform(0.1, 0.3) for e in range(1, epoch + 1)}
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params=_params(rng),
                distributions=DISTRIBUTIONS,
                intermediate_values=curve,
                user_attrs={
                    records.PHASE: records.PHASE_TPE,
                    records.FAIL_REASON: (
                        f"pruned after epoch {epoch}: val accuracy {curve[epoch]:.4f}"
                    ),
                    records.TRAIN_SECONDS: rng.uniform(1, 10),
                },
            )
        )
        number += 1
    for i in range(shape.failed):
        reason = (
            "CUDA out of memory while training: lower batch_size"
            if i % 2 == 0
            else "NonFiniteLossError: training loss is nan at epoch 1"
        )
        study.add_trial(
            create_trial(
                state=TrialState.FAIL,
                params=_params(rng),
                distributions=DISTRIBUTIONS,
                user_attrs={records.PHASE: records.PHASE_TPE, records.FAIL_REASON: reason},
            )
        )
        number += 1
    for _ in range(shape.running):
        trial = study.ask(DISTRIBUTIONS)
        trial.set_user_attr(records.PHASE, records.PHASE_TPE)
        trial.report(0.5, 1)
    if shape.test_metrics and shape.complete:
        best_trial = study.best_trial
        study.set_user_attr(records.BEST_TRIAL, best_trial.number)
        study.set_user_attr(
            records.BEST_MODEL_ARTIFACT, best_trial.user_attrs[records.MODEL_ARTIFACT]
        )
        study.set_user_attr(
            records.TEST_METRICS,
            {
                k: {"accuracy": m["accuracy"] - 0.01, "mae": m["mae"] + 0.001}
                for k, m in best_trial.user_attrs[records.VAL_METRICS].items()
            },
        )
    return study
