"""Reading a study back from its storage: what it measures, and its completed trials.

Everything is read through the names in :mod:`hpo.tuning.keys` (what the runner stored) and
the parameter names of ``studies.SearchSpace``, so the tables and the charts built on this
cannot disagree with each other or with the storage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from studies import SearchSpace

from ..tuning import keys

__all__ = [
    "ReportError",
    "StudyInfo",
    "best_trials",
    "budget_text",
    "completed_trials",
    "metrics_of",
    "param_names",
    "sorted_sparsity_keys",
    "study_info",
]


class ReportError(Exception):
    """The report cannot be written as asked (message is one line saying what to do)."""


@dataclass(frozen=True)
class StudyInfo:
    """What a study measures, from its stored definition (``keys.DEFINITION``).

    Attributes:
        name: Study name.
        description: The definition's one-line description, if stored.
        model_family: ``sparse`` / ``dense`` / ``dense_mask``, if stored.
        dataset: Dataset name, if stored.
        train_sparsity: The sparsity the objective is measured at, if stored.
        sparsity_keys: Every test sparsity (``keys.sparsity_key`` form), ascending: the
            definition's plus any found in stored metrics.
        direction: ``maximize`` or ``minimize``.
        objective_label: Human name of the objective, e.g. ``val accuracy @ sparsity 0.9``.
        param_order: The tuned parameters in the order of the stored search space (the
            current ``studies.SearchSpace`` order for a study stored without one).
        budget: What one trial was allowed (epochs, images, validation images, pruner) and
            which command-line overrides changed it; ``None`` for a study stored without it.
    """

    name: str
    description: str | None
    model_family: str | None
    dataset: str | None
    train_sparsity: float | None
    sparsity_keys: tuple[str, ...]
    direction: str
    objective_label: str
    param_order: tuple[str, ...]
    budget: str | None = None


def study_info(study: optuna.Study) -> StudyInfo:
    """What ``study`` measures, from its stored definition (tolerates a study without one)."""
    stored = study.user_attrs.get(keys.DEFINITION) or {}
    # hpo.run stores {"definition": {...}, "overrides": ..., "pruner": ...}; accept a bare
    # definition dict too, so studies written by hand still get labels.
    definition = stored.get("definition", stored) if isinstance(stored, Mapping) else {}
    train_sparsity = definition.get("train_sparsity")
    found: set[str] = {keys.sparsity_key(float(s)) for s in definition.get("test_sparsities", ())}
    for trial in study.get_trials(deepcopy=False):
        found.update(metrics_of(trial.user_attrs.get(keys.VAL_METRICS)))
    found.update(metrics_of(study.user_attrs.get(keys.TEST_METRICS)))
    if len(study.directions) != 1:
        raise ReportError(
            f"study {study.study_name!r} has {len(study.directions)} objectives; the report "
            "reads single-objective studies (the ones hpo.run creates)"
        )
    direction = "maximize" if study.direction == StudyDirection.MAXIMIZE else "minimize"
    if train_sparsity is not None:
        label = f"val accuracy @ sparsity {keys.sparsity_key(float(train_sparsity))}"
    else:
        label = "objective value"
    return StudyInfo(
        name=study.study_name,
        description=definition.get("description"),
        model_family=definition.get("model_family"),
        dataset=definition.get("dataset"),
        train_sparsity=float(train_sparsity) if train_sparsity is not None else None,
        sparsity_keys=sorted_sparsity_keys(found),
        direction=direction,
        objective_label=label,
        param_order=tuple(definition.get("search_space") or SearchSpace.names()),
        budget=budget_text(stored) if definition.get("epochs") is not None else None,
    )


def budget_text(stored: Mapping[str, Any]) -> str:
    """``10 epochs x all training images, 2,000 validation images, pruner asha`` (+ overrides).

    A study run with ``--epochs 2 --train-size 1024`` says so, so a quick study never reads
    like one run at the registered budget.
    """
    definition = stored.get("definition", stored)
    epochs = definition["epochs"]
    images = definition.get("train_size")
    val = definition.get("val_size")
    text = (
        f"{epochs} epoch{'s' if epochs != 1 else ''} x "
        f"{'all' if images is None else f'{images:,}'} training images, "
        f"{'all' if val is None else f'{val:,}'} validation images per trial"
    )
    if stored.get("pruner"):
        text += f", pruner {stored['pruner']}"
    overrides = stored.get("overrides") or {}
    if overrides:
        given = " ".join(
            f"--{k.replace('_', '-')} {'all' if v is None else v}" for k, v in overrides.items()
        )
        text += f" (overridden on the command line: {given})"
    return text


def sorted_sparsity_keys(found: Iterable[str]) -> tuple[str, ...]:
    """Sparsity keys in ascending numeric order (keys that are not numbers go last)."""

    def order(key: str) -> tuple[int, float, str]:
        try:
            return (0, float(key), key)
        except ValueError:
            return (1, 0.0, key)

    return tuple(sorted(set(found), key=order))


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with a finite objective value."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]


def best_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` best completed trials, best first (ties: lower trial number first)."""
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    ranked = sorted(completed_trials(study), key=lambda t: (sign * t.value, t.number))
    return ranked[:top]


def param_names(trials: Sequence[FrozenTrial], order: Sequence[str]) -> list[str]:
    """Parameters appearing in ``trials``: those of ``order`` first, in order, then the rest
    sorted (a parameter the stored search space does not list)."""
    present = {name for t in trials for name in t.params}
    return [p for p in order if p in present] + sorted(present - set(order))


def metrics_of(value: Any) -> dict[str, dict[str, float]]:
    """A stored ``{sparsity: {metric: value}}`` dict, or ``{}`` if absent or malformed."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): dict(v) for k, v in value.items() if isinstance(v, Mapping)}
