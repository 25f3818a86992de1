"""The search: a coarse grid enqueued exactly once, then seeded multivariate TPE, plus a pruner.

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
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from studies import StudyDefinition

from . import keys
from .errors import ConfigMismatchError
from .settings import RunSettings

__all__ = ["enqueue_grid", "make_pruner", "make_sampler", "open_study", "repair_grid"]

_logger = logging.getLogger(__name__)


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
        n_points = enqueue_grid(study, definition)
        study.set_user_attr(keys.GRID_ENQUEUED, n_points)
        _logger.info("created study %s with %d grid points queued", name, n_points)
        return study

    deadline = time.monotonic() + settings.grid_wait_seconds
    stored = _wait_for_user_attr(study, keys.DEFINITION, deadline, poll_seconds)
    if stored is None:
        _logger.warning("study %s has no stored configuration (creator died?); storing it", name)
        study.set_user_attr(keys.DEFINITION, config)
    elif _comparable(stored) != _comparable(config):
        raise ConfigMismatchError(_mismatch_message(name, stored, config))
    if _wait_for_user_attr(study, keys.GRID_ENQUEUED, deadline, poll_seconds) is None:
        _logger.warning("study %s: grid queue incomplete (creator died?); repairing it", name)
        study.set_user_attr(keys.GRID_ENQUEUED, repair_grid(study, definition))
    return study


def enqueue_grid(study: optuna.Study, definition: StudyDefinition) -> int:
    """Queue every grid point of ``definition`` (WAITING trials); returns the number queued."""
    points = definition.grid.points()
    for grid_id, params in enumerate(points):
        study.enqueue_trial(params, user_attrs={keys.PHASE: keys.PHASE_GRID, keys.GRID_ID: grid_id})
    return len(points)


def repair_grid(study: optuna.Study, definition: StudyDefinition) -> int:
    """Queue the grid points no trial carries yet and drop duplicate WAITING copies.

    Returns the number of grid points (the value stored as ``keys.GRID_ENQUEUED``).
    """
    points = definition.grid.points()
    present = {t.user_attrs.get(keys.GRID_ID) for t in _grid_trials(study)}
    for grid_id, params in enumerate(points):
        if grid_id not in present:
            study.enqueue_trial(
                params, user_attrs={keys.PHASE: keys.PHASE_GRID, keys.GRID_ID: grid_id}
            )
    kept: set[int] = set()
    storage = study._storage  # no public API to fail a WAITING trial
    for trial in sorted(_grid_trials(study), key=lambda t: t.number):
        if trial.state == TrialState.FAIL:
            continue  # failed trials (and the originals of retried ones) hold no slot
        grid_id = trial.user_attrs[keys.GRID_ID]
        if grid_id not in kept:
            kept.add(grid_id)
        elif trial.state == TrialState.WAITING:
            storage.set_trial_user_attr(
                trial._trial_id, keys.FAIL_REASON, f"duplicate of grid point {grid_id}"
            )
            try:
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another repairer got there first
    return len(points)


def _grid_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get(keys.PHASE) == keys.PHASE_GRID and keys.GRID_ID in t.user_attrs
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
    # Which options were *given* does not matter, only what they resolved to: `--epochs 10`
    # on a study whose definition says 10 epochs is the same study.
    return (
        {k: v for k, v in config.items() if k != "overrides"}
        if isinstance(config, dict)
        else config
    )


def _json_roundtrip(value: Any) -> Any:
    # Compare like with like: what comes back from storage went through JSON.
    return json.loads(json.dumps(value))


def _mismatch_message(name: str, stored: Any, wanted: Any) -> str:
    old, new = _flatten(stored), _flatten(wanted)
    diffs = [
        f"{k}={old.get(k, '<unset>')!r} (now {new.get(k, '<unset>')!r})"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and not k.startswith("overrides.")
    ]
    return (
        f"study {name!r} already exists with a different configuration: {'; '.join(diffs)}. "
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
