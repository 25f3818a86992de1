"""hpo.runtime.trial_count and the budget built on it: the database's count is Optuna's."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.runtime.storage import close_storage, open_storage
from hpo.runtime.trial_count import trial_counter
from hpo.tuning.trial_loop import FINISHED, optimize

# _fill asks and tells by hand on a worker's storage, which beats for Study.optimize.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

# Trials to leave in each state; another study's trials must not be counted.
STATES = {
    TrialState.COMPLETE: 3,
    TrialState.PRUNED: 2,
    TrialState.FAIL: 1,
    TrialState.RUNNING: 1,
    TrialState.WAITING: 2,
}


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'count.db'}"
    return request.getfixturevalue("postgres_url")


def _fill(study: optuna.Study) -> None:
    for state, n in STATES.items():
        for _ in range(n):
            if state == TrialState.WAITING:
                study.enqueue_trial({"x": 0.5})
                continue
            trial = study.ask()
            if state == TrialState.RUNNING:
                continue
            value = 1.0 if state == TrialState.COMPLETE else None
            study.tell(trial, value, state=state)


def test_the_count_is_the_number_of_trials_optuna_reads(storage_url: str) -> None:
    storage = open_storage(storage_url)
    try:
        study = optuna.create_study(study_name="counted", storage=storage)
        _fill(study)
        other = optuna.create_study(study_name="other", storage=storage)
        for _ in range(4):
            other.tell(other.ask(), 1.0)
        for states in (FINISHED, (TrialState.WAITING,), (TrialState.FAIL, TrialState.RUNNING)):
            count = trial_counter(storage, "counted", states)
            assert count is not None
            expected = sum(STATES[state] for state in states)
            assert count() == expected == len(study.get_trials(states=states))
        count = trial_counter(storage, "counted", FINISHED)
        study.tell(study.ask(), 2.0)  # counted when it happens: nothing is cached
        assert count is not None and count() == 6
    finally:
        close_storage(storage)


def test_a_storage_that_is_not_a_database_has_no_count() -> None:
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="memory", storage=storage)
    assert trial_counter(storage, "memory", FINISHED) is None


@pytest.mark.parametrize("with_storage", [True, False], ids=["counted", "optuna-read"])
def test_the_budget_stops_at_n_finished_either_way(tmp_path: Path, with_storage: bool) -> None:
    """One worker: exactly N finished (pruned ones count, failed ones do not), whether the
    budget is counted by the database or read by MaxTrialsCallback."""
    storage = open_storage(f"sqlite:///{tmp_path / 'budget.db'}")
    try:
        study = optuna.create_study(study_name="budget", storage=storage)
        _fill(study)  # 5 finished; the 2 queued run first

        def objective(trial: optuna.Trial) -> float:
            x = trial.suggest_float("x", 0.0, 1.0)
            if trial.number % 3 == 0:
                raise optuna.TrialPruned()
            return x

        optimize(study, objective, 12, storage=storage if with_storage else None)
        states = [trial.state for trial in study.get_trials()]
        assert sum(state in FINISHED for state in states) == 12
        assert states.count(TrialState.WAITING) == 0
        assert states.count(TrialState.RUNNING) == 1  # the one _fill left, never touched
    finally:
        close_storage(storage)


class _Bar:
    """What a progress bar is told: the study's finished count after each trial."""

    def __init__(self) -> None:
        self.finished: list[int] = []

    def set_finished(self, n: int) -> None:
        self.finished.append(n)

    def set_eta(self, text: str) -> None:
        pass


@pytest.mark.parametrize(
    ("with_storage", "shown"), [(True, [2, 4, 6, 8]), (False, [2, 3, 4, 5])], ids=str
)
def test_the_bar_counts_other_workers_trials_after_every_trial(
    tmp_path: Path, with_storage: bool, shown: list[int]
) -> None:
    """Another worker finishes a trial during each of ours. Counted by the database, the bar
    shows the study's count after every trial; without a count (the control) it adds only this
    worker's own trials to the study read after the first, until the next read a minute on."""
    url = f"sqlite:///{tmp_path / 'bar.db'}"
    storage, other_storage = open_storage(url), open_storage(url)
    try:
        study = optuna.create_study(study_name="bar", storage=storage)
        other = optuna.load_study(study_name="bar", storage=other_storage)

        def objective(trial: optuna.Trial) -> float:
            other.tell(other.ask(), 1.0)  # the other worker's trial ends meanwhile
            return trial.suggest_float("x", 0.0, 1.0)

        bar = _Bar()
        counted = storage if with_storage else None
        optimize(study, objective, 8, progress=bar, storage=counted)  # type: ignore[arg-type]
        assert bar.finished == shown
    finally:
        close_storage(storage)
        close_storage(other_storage)
