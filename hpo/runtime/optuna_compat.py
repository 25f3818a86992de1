"""The one door to Optuna's private API: every access the study runner needs and Optuna hides.

Why the runner does not simply call ``study.optimize`` (see ``docs/design.md``): it keeps the
exact ``--n-trials`` guarantee under concurrency (Optuna's ``MaxTrialsCallback`` lets K
workers overshoot by up to K - 1 trials), hands a popped grid point back to the queue instead
of running it twice, takes over the last slots when another worker's trial fails, and re-queues
a grid point interrupted by Ctrl-C. Each of those needs something Optuna keeps private: the
storage behind a study, a trial's storage id, the parameters a trial was enqueued with, its
heartbeat thread. They are all here, each pinned by ``tests/test_optuna_compat.py``, so an
Optuna upgrade that moves one breaks one test instead of a study.

Everything else the runner does with trials goes through public API (``study.ask/tell``,
``enqueue_trial``, ``optuna.storages.fail_stale_trials``, the ``BaseStorage`` methods).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, Final

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread  # no public equivalent
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "RDB_WRITE_METHODS",
    "ask",
    "fail_stale_trials",
    "fail_without_running",
    "frozen_trial",
    "heartbeat",
    "heartbeat_enabled",
    "heartbeat_grace_period",
    "queued_params",
    "record_heartbeat",
    "return_to_queue",
    "study_system_attrs",
    "url_template_filled",
]

# Every ``RDBStorage`` method that writes to the database. The private two are what Optuna's
# ``_CachedStorage`` (the wrapper every ``Study`` puts around an ``RDBStorage``) calls on its
# backend instead of ``create_new_trial`` and ``set_trial_param``. Every other method only
# reads, so a SQLite storage can run it in a transaction that takes no write lock
# (:mod:`hpo.runtime.sqlite_transactions`).
RDB_WRITE_METHODS: Final = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "create_new_trial",
    "_create_new_trial",
    "set_trial_param",
    "_set_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "record_heartbeat",
    "upgrade",
)

# Where ``Study.enqueue_trial`` keeps a queued trial's parameters (copied to retried trials).
_FIXED_PARAMS = "fixed_params"


def _storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def _trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return trial._trial_id


def heartbeat_enabled(study: optuna.Study) -> bool:
    """Whether the study's storage records heartbeats (and so can fail dead workers' trials)."""
    storage = _storage(study)
    return getattr(storage, "get_heartbeat_interval", lambda: None)() is not None


def heartbeat_grace_period(study: optuna.Study) -> int | None:
    """Seconds without a heartbeat after which a RUNNING trial is stale (``None``: no beats).

    Optuna's default grace period, when none was given, is twice the interval.
    """
    storage = _storage(study)
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is None:
        return None
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDBStorage in a cache
    return getattr(backend, "grace_period", None) or 2 * interval


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail RUNNING trials whose heartbeat is older than the grace period and re-queue them.

    Public but experimental in Optuna; a no-op without heartbeats. ``Study.optimize`` does this
    before every trial, and so do the runner's loop and its wait for a free slot.
    """
    if heartbeat_enabled(study):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()`` without the warning Optuna gives when the caller runs the heartbeat.

    Optuna warns that heartbeats are meant for ``Study.optimize``; the runner starts the
    heartbeat thread itself (:func:`heartbeat`), as ``Study.optimize`` does.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        return study.ask()


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record ``trial``'s heartbeat every interval while the block runs (as ``optimize`` does)."""
    with get_heartbeat_thread(_trial_id(trial), _storage(study)):
        yield


def record_heartbeat(study: optuna.Study, trial: FrozenTrial) -> None:
    """Record one heartbeat for ``trial`` on its behalf (a trial orphaned before its first)."""
    _storage(study).record_heartbeat(_trial_id(trial))


def frozen_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as the storage holds it now (state, values and attributes)."""
    return _storage(study).get_trial(_trial_id(trial))


def queued_params(trial: FrozenTrial) -> dict[str, Any] | None:
    """The parameters ``trial`` was enqueued with, or ``None`` if the sampler proposed it.

    Grid points, retrain copies and the retries of failed queued trials carry them.
    """
    params = trial.system_attrs.get(_FIXED_PARAMS)
    return dict(params) if params is not None else None


def return_to_queue(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> None:
    """Put a popped queued trial back to WAITING, so the next ``ask()`` pops it again."""
    _storage(study).set_trial_state_values(_trial_id(trial), TrialState.WAITING)


def fail_without_running(
    study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, reason: str
) -> bool:
    """Mark a trial that must never run FAIL with ``reason`` stored as user attribute ``key``.

    Optuna has no public way to fail a WAITING trial or one this worker will not run (it can
    neither delete a trial). Returns ``False`` if another process finished it first.
    """
    storage, trial_id = _storage(study), _trial_id(trial)
    try:  # either write fails once another process has finished the trial
        storage.set_trial_user_attr(trial_id, key, reason)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's system attributes (optuna-dashboard keeps attached charts there)."""
    return _storage(study).get_study_system_attrs(study._study_id)


def url_template_filled(url: str) -> str:
    """``url`` with Optuna's ``{SCHEMA_VERSION}`` placeholder filled in, as ``RDBStorage`` does.

    Filled before the URL is parsed: SQLAlchemy would percent-encode the braces of a SQLite
    path, and the file would be named ``x-{SCHEMA_VERSION}.db`` literally.
    """
    return optuna.storages.RDBStorage._fill_storage_url_template(url)
