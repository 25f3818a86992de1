"""A study's trials in some states, counted by the database: one ``COUNT`` instead of a read.

Optuna's storage API has no count that reaches the database (``BaseStorage.get_n_trials`` is
``len(get_all_trials(...))``), and a study read through Optuna's cache re-reads every trial
that is not finished: with 256 workers, 256 running trials, their parameters and attributes,
26 ms of a worker's CPU for every read (``docs/performance.md``, "Issue 32"). The trial budget
is checked after every trial of every worker, so it counts here instead. The query names
Optuna's ``trials`` table and its ``study_id`` and ``state`` columns, whose schema
``open_storage`` has checked is this Optuna's (``docs/decisions.md``, "The budget counted by
the database").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import optuna
import sqlalchemy
from optuna.trial import TrialState

__all__ = ["trial_counter"]

_COUNT = sqlalchemy.text(
    "SELECT count(*) FROM trials WHERE study_id = :study_id AND state IN :states"
).bindparams(sqlalchemy.bindparam("states", expanding=True))


def trial_counter(
    storage: optuna.storages.BaseStorage, study_name: str, states: Iterable[TrialState]
) -> Callable[[], int] | None:
    """A function that counts the study's trials in ``states``, or ``None`` for a storage that
    is not a database (in memory, a journal: Optuna's own reads are what there is)."""
    if not isinstance(storage, optuna.storages.RDBStorage):
        return None
    engine = storage.engine
    parameters = {
        "study_id": storage.get_study_id_from_name(study_name),
        "states": sorted(state.name for state in states),  # stored as the enum's name
    }

    def count() -> int:
        with engine.connect() as connection:
            return int(connection.execute(_COUNT, parameters).scalar_one())

    return count
