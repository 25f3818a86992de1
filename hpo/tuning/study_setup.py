"""Creating or joining a study and completing its queue, once, under the storage's lock.

A worker creates or loads the study, stores or checks its ``StudyRecord``, and enqueues every
point of its queue (grid, retrain copies, experiment runs) that no trial holds; a point whose
trials were all stopped by Ctrl-C or SIGTERM is queued again, by the stopped worker on its way
out and else by the next to start. Why a lock: ``docs/decisions.md``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies import StudyDefinition

from .. import records
from ..errors import ConfigMismatchError, UsageError
from ..records import StudyRecord
from ..runtime.locks import exclusive
from ..runtime.storage_url import StorageTarget
from .settings import RunSettings

__all__ = [
    "QueuedTrial",
    "enqueue_missing",
    "open_study",
    "planned_queue",
    "requeue_stopped",
    "retrain_source",
]

# (params, user attributes) of one queued trial; its user attributes hold records.GRID_ID.
QueuedTrial = tuple[dict[str, Any], dict[str, Any]]

_logger = logging.getLogger(__name__)


def open_study(
    storage: optuna.storages.BaseStorage,
    settings: RunSettings,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create or join ``settings``' study and complete its queue.

    Raises:
        ConfigMismatchError, UsageError: Another configuration; a source it cannot retrain.
    """
    source = retrain_source(storage, settings) if settings.retrain_from else None
    queue = planned_queue(settings.definition(), settings.n_trials, source)
    study = join_study(
        storage, settings.storage, settings.optuna_study_name, settings.record(), queue,
        sampler=sampler, pruner=pruner,
    )  # fmt: skip
    if source is not None and records.RETRAIN_SOURCE not in study.user_attrs:
        study.set_user_attr(records.RETRAIN_SOURCE, source)
    return study


def join_study(
    storage: optuna.storages.BaseStorage,
    target: StorageTarget,
    name: str,
    record: StudyRecord,
    queue: Sequence[QueuedTrial],
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    separate: str = "pass --study-name NEW (or another --storage)",
) -> optuna.Study:
    """Create or load study ``name`` with ``record``, enqueue what ``queue`` lacks (locked);
    ``separate`` tells how to start a separate study when the stored record differs."""
    with exclusive(target, f"setup {name}"):
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction="maximize",
            load_if_exists=True,
        )
        stored = study.user_attrs.get(records.CONFIG)
        if stored is None:
            with warnings.catch_warnings():  # experimental since Optuna 3.2; charts read it
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([records.METRIC_NAME])
            study.set_user_attr(records.CONFIG, record.to_dict())
        elif differences := StudyRecord.from_dict(stored).differences(record):
            raise ConfigMismatchError(
                f"study {name!r} already exists with a different configuration: "
                f"{'; '.join(differences)}. Re-run with the original options to resume it, or "
                f"{separate} to start a separate study"
            )
        added = enqueue_missing(study, queue)
    if added:
        _logger.info("study %s: %d trials queued", name, added)
    return study


def requeue_stopped(study: optuna.Study, settings: RunSettings) -> int:
    """After Ctrl-C or SIGTERM (``scancel``, ``docker stop``): queue the stopped trial's point
    again now, under the lock, so the workers still running take it rather than only the next
    worker to start. Returns how many points were queued (0 for a trial outside the queue)."""
    source = study.user_attrs.get(records.RETRAIN_SOURCE) if settings.retrain_from else None
    queue = planned_queue(settings.definition(), settings.n_trials, source)
    with exclusive(settings.storage, f"setup {study.study_name}"):
        added = enqueue_missing(study, queue)
    if added:
        _logger.info("study %s: the stopped trial's point queued again", study.study_name)
    return added


def enqueue_missing(study: optuna.Study, queue: Sequence[QueuedTrial]) -> int:
    """Enqueue every point of ``queue`` that no trial holds (module doc); returns how many."""
    held: set[int] = set()
    for trial in study.get_trials(deepcopy=False):
        grid_id = trial.user_attrs.get(records.GRID_ID)
        if grid_id is not None and _holds_its_point(trial):
            held.add(grid_id)
    missing = [(p, a) for p, a in queue if a[records.GRID_ID] not in held]
    for params, user_attrs in missing:
        study.enqueue_trial(params, user_attrs=user_attrs)
    return len(missing)


def _holds_its_point(trial: FrozenTrial) -> bool:
    """A trial stopped by the user or a full disk leaves its point to run again; a point
    that failed by itself (a bug, out of memory) would only fail again."""
    if trial.state != TrialState.FAIL:
        return True
    reason = str(trial.user_attrs.get(records.FAIL_REASON, ""))
    stopped = reason in (records.INTERRUPTED, records.TERMINATED)
    return not (stopped or reason.startswith(records.NO_SPACE))


def planned_queue(
    definition: StudyDefinition, n_trials: int, source: dict[str, Any] | None = None
) -> list[QueuedTrial]:
    """The queue of a search (the grid) or of a retrain (``n_trials`` copies of the best)."""
    if source is None:
        phase, points = records.PHASE_GRID, definition.grid.points()
    else:
        phase, points = records.PHASE_RETRAIN, [dict(source["params"])] * n_trials
    return [(p, {records.PHASE: phase, records.GRID_ID: i}) for i, p in enumerate(points)]


def retrain_source(storage: optuna.storages.BaseStorage, settings: RunSettings) -> dict[str, Any]:
    """The best trial of study ``settings.retrain_from`` (``records.RETRAIN_SOURCE``).

    Raises:
        UsageError: No such study, no completed trial, or it tuned another definition.
    """
    name = settings.retrain_from
    try:
        source = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UsageError(
            f"--retrain-best {name}: no study of that name in this storage; "
            "run it first or pass the --storage it was run with"
        ) from None
    stored = source.user_attrs.get(records.CONFIG)
    tuned = StudyRecord.from_dict(stored).name if stored else None
    if tuned not in (None, settings.study.name):
        raise UsageError(
            f"--retrain-best {name}: that study tuned the definition {tuned!r}, "
            f"not {settings.study.name!r}; pass --study {tuned}"
        )
    if not source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise UsageError(f"--retrain-best {name}: the study has no completed trial yet")
    best = source.best_trial
    return {"study": name, "trial": best.number, "value": best.value, "params": best.params}
