"""Creating or joining a study: its stored configuration and its queue, exactly once.

**Grid once, whatever the concurrency.** Several workers may start together on a fresh
storage, or resume a study whose creator died. ``optuna.create_study`` without
``load_if_exists`` succeeds in exactly one process (the study name is unique in the database)
and raises ``DuplicatedStudyError`` in all others. The creator stores the resolved
configuration (``keys.DEFINITION``), enqueues every grid point (user attributes ``keys.PHASE``
and ``keys.GRID_ID``) and then sets ``keys.GRID_ENQUEUED``; every other process loads the study
and waits (bounded) for that flag before asking for a trial, so no worker runs TPE while the
queue is still being filled. Enqueued trials are WAITING and ``study.ask()`` pops WAITING
trials before sampling, so the grid runs first.

If the flag never appears (the creator died half-way), the waiting process *repairs* the queue:
it enqueues the grid ids no trial carries yet, then, should two processes have repaired at the
same moment, keeps the lowest-numbered trial per grid id and fails the other WAITING copies.
Both steps are deterministic, so concurrent repairers converge on one trial per grid point.

**Retraining the best configuration** (``--retrain-best SOURCE``) is the same machinery with a
different queue: instead of the grid, the creator queues ``n_trials`` copies of the best
parameters of study SOURCE in the same storage (phase ``retrain``), typically with a larger
``--epochs`` / ``--train-size``. Each copy trains with its own seed, so ``--n-trials 3`` gives
three seeds of the tuned configuration, and the runner's final step scores the best of them
on the test split like any study. Every process tops the queue up to ``n_trials`` copies, so
raising ``--n-trials`` later adds seeds, never TPE points.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from studies import BASELINE_RECIPE, StudyDefinition

from ..errors import ConfigMismatchError, UsageError
from ..runtime import optuna_compat
from . import keys
from .settings import RunSettings

__all__ = ["QueuedTrial", "config_differences", "open_study", "planned_queue", "retrain_source"]

# (params, user attributes) of one trial the study is created with.
QueuedTrial = tuple[dict[str, Any], dict[str, Any]]

_logger = logging.getLogger(__name__)


def open_study(
    storage: optuna.storages.BaseStorage,
    settings: RunSettings,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    *,
    poll_seconds: float = 0.5,
) -> optuna.Study:
    """Create the study (and its grid) or join it, exactly once per study; see module doc.

    Raises:
        ConfigMismatchError: The stored study was run with a different definition, overrides
            or pruner than ``settings`` describe.
    """
    name = settings.optuna_study_name
    config = _json_roundtrip(settings.resolved_config())
    definition = settings.definition()
    source = retrain_source(storage, settings) if settings.retrain_from else None
    queue = planned_queue(definition, settings.n_trials, source)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction="maximize",
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    else:
        study.set_user_attr(keys.DEFINITION, config)
        if source is not None:
            study.set_user_attr(keys.RETRAIN_SOURCE, source)
        n_points = _enqueue(study, queue)
        study.set_user_attr(keys.GRID_ENQUEUED, n_points)
        _logger.info("created study %s with %d trials queued", name, n_points)
        return study

    deadline = time.monotonic() + settings.grid_wait_seconds
    stored = _wait_for_user_attr(study, keys.DEFINITION, deadline, poll_seconds)
    if stored is None:
        _logger.warning("study %s has no stored configuration (creator died?); storing it", name)
        study.set_user_attr(keys.DEFINITION, config)
    elif differences := config_differences(stored, config):
        raise ConfigMismatchError(_mismatch_message(name, differences))
    if _wait_for_user_attr(study, keys.GRID_ENQUEUED, deadline, poll_seconds) is None:
        _logger.warning("study %s: queue incomplete (creator died?); repairing it", name)
        study.set_user_attr(keys.GRID_ENQUEUED, _repair(study, queue))
    elif source is not None and len(queue) > study.user_attrs[keys.GRID_ENQUEUED]:
        study.set_user_attr(keys.GRID_ENQUEUED, _repair(study, queue))  # --n-trials was raised
    return study


def planned_queue(
    definition: StudyDefinition, n_trials: int, source: dict[str, Any] | None = None
) -> list[QueuedTrial]:
    """The trials a study is created with: the grid, or ``n_trials`` retrain copies."""
    if source is None:
        return [
            (params, {keys.PHASE: keys.PHASE_GRID, keys.GRID_ID: i})
            for i, params in enumerate(definition.grid.points())
        ]
    return [
        (dict(source["params"]), {keys.PHASE: keys.PHASE_RETRAIN, keys.GRID_ID: i})
        for i in range(n_trials)
    ]


def retrain_source(storage: optuna.storages.BaseStorage, settings: RunSettings) -> dict[str, Any]:
    """The best trial of study ``settings.retrain_from``, as stored in ``keys.RETRAIN_SOURCE``.

    Raises:
        UsageError: The study does not exist, has no completed trial, or was run with another
            study definition (its parameters would not fit this search space).
    """
    name = settings.retrain_from
    try:
        source = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UsageError(
            f"--retrain-best {name}: no study of that name in this storage; "
            "run it first or pass the --storage it was run with"
        ) from None
    stored = source.user_attrs.get(keys.DEFINITION) or {}
    source_definition = stored.get("definition", {}).get("name")
    if source_definition not in (None, settings.study.name):
        raise UsageError(
            f"--retrain-best {name}: that study tuned the definition {source_definition!r}, "
            f"not {settings.study.name!r}; pass --study {source_definition}"
        )
    complete = [t for t in source.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise UsageError(f"--retrain-best {name}: the study has no completed trial yet")
    best = source.best_trial
    return {"study": name, "trial": best.number, "value": best.value, "params": best.params}


def _enqueue(study: optuna.Study, queue: list[QueuedTrial]) -> int:
    for params, user_attrs in queue:
        study.enqueue_trial(params, user_attrs=user_attrs)
    return len(queue)


def _repair(study: optuna.Study, queue: list[QueuedTrial]) -> int:
    present = {t.user_attrs.get(keys.GRID_ID) for t in _grid_trials(study)}
    for params, user_attrs in queue:
        if user_attrs[keys.GRID_ID] not in present:
            study.enqueue_trial(params, user_attrs=user_attrs)
    kept: set[int] = set()
    for trial in sorted(_grid_trials(study), key=lambda t: t.number):
        if trial.state == TrialState.FAIL:
            continue  # failed trials (and the originals of retried ones) hold no slot
        grid_id = trial.user_attrs[keys.GRID_ID]
        if grid_id not in kept:
            kept.add(grid_id)
        elif trial.state == TrialState.WAITING:
            # False when another repairer got there first: nothing left to do.
            optuna_compat.fail_without_running(
                study, trial, keys.FAIL_REASON, f"duplicate of grid point {grid_id}"
            )
    return len(queue)


def _grid_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get(keys.PHASE) in (keys.PHASE_GRID, keys.PHASE_RETRAIN)
        and keys.GRID_ID in t.user_attrs
    ]


def _wait_for_user_attr(
    study: optuna.Study, key: str, deadline: float, poll_seconds: float
) -> Any | None:
    while True:
        value = study.user_attrs.get(key)
        if value is not None or time.monotonic() >= deadline:
            return value
        time.sleep(poll_seconds)


def _comparable(config: Any) -> Any:
    """What must match between a stored configuration and this run's.

    Which options were *given* does not matter, only what they resolved to: ``--epochs 10``
    on a study whose definition says 10 epochs is the same study. A definition field that is
    ``None`` counts as absent, so a field added later (whose ``None`` keeps the earlier
    behaviour) does not stop a study stored before it from resuming. A definition stored
    before recipes were recorded was trained with the baseline recipe, and says so here.
    """
    if not isinstance(config, dict):
        return config
    out = {k: v for k, v in config.items() if k != "overrides"}
    if isinstance(out.get("definition"), dict):
        definition = {"recipe": BASELINE_RECIPE.to_dict(), **out["definition"]}
        out["definition"] = {k: v for k, v in definition.items() if v is not None}
    return out


def _json_roundtrip(value: Any) -> Any:
    # Compare like with like: what comes back from storage went through JSON.
    return json.loads(json.dumps(value))


def config_differences(stored: Any, wanted: Any) -> list[str]:
    """``key=old (now new)`` for every setting in which two stored configurations differ.

    Empty when a run with configuration ``wanted`` may resume the study stored with
    ``stored`` (see :func:`_comparable` for what does not count).
    """
    old, new = _flatten(_comparable(stored)), _flatten(_comparable(wanted))
    return [
        f"{k}={old.get(k, '<unset>')!r} (now {new.get(k, '<unset>')!r})"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


def _mismatch_message(name: str, differences: list[str]) -> str:
    return (
        f"study {name!r} already exists with a different configuration: "
        f"{'; '.join(differences)}. "
        "Re-run with the original options to resume it, or pass --study-name NEW "
        "(or another --storage) to start a separate study"
    )


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}
