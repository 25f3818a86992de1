"""hpo.runtime.optuna_compat: every behaviour of Optuna's private API the runner relies on.

If an Optuna upgrade moves or changes one of them, the test named after it fails here, before
any study does.
"""

from __future__ import annotations

import re
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.runtime import optuna_compat
from hpo.runtime.storage import StorageOptions, open_storage

NO_HEARTBEAT = StorageOptions(heartbeat_interval=None, grace_period=None)


def _study(tmp_path: Path, options: StorageOptions = NO_HEARTBEAT) -> optuna.Study:
    return optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", options))


def _heartbeats(tmp_path: Path) -> int:
    connection = sqlite3.connect(tmp_path / "s.db")
    try:
        return connection.execute("SELECT COUNT(*) FROM trial_heartbeats").fetchone()[0]
    finally:
        connection.close()


def test_queued_params_tell_enqueued_trials_from_sampled_ones(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.enqueue_trial({"x": 0.25})
    queued, sampled = study.ask(), study.ask()
    assert optuna_compat.queued_params(optuna_compat.frozen_trial(study, queued)) == {"x": 0.25}
    assert optuna_compat.queued_params(optuna_compat.frozen_trial(study, sampled)) is None


def test_a_returned_trial_is_popped_again_with_its_parameters(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.enqueue_trial({"x": 0.5}, user_attrs={"grid_id": 3})
    popped = study.ask()
    optuna_compat.return_to_queue(study, popped)
    assert optuna_compat.frozen_trial(study, popped).state == TrialState.WAITING
    again = study.ask()
    assert again.number == popped.number  # the same trial, not a copy
    assert again.suggest_float("x", 0, 1) == 0.5 and again.user_attrs == {"grid_id": 3}


def test_fail_without_running_fails_once_with_its_reason(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.enqueue_trial({"x": 0.5})
    waiting = study.get_trials()[0]
    assert optuna_compat.fail_without_running(study, waiting, "fail_reason", "duplicate")
    frozen = optuna_compat.frozen_trial(study, waiting)
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["fail_reason"] == "duplicate"
    assert not optuna_compat.fail_without_running(study, waiting, "fail_reason", "again")
    assert optuna_compat.frozen_trial(study, waiting).user_attrs["fail_reason"] == "duplicate"


def test_retried_trials_keep_their_queued_parameters(tmp_path: Path) -> None:
    """RetryHeartbeatStaleTrialCallback's copy of a dead grid trial is still a grid trial."""
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", StorageOptions(max_retry=1))
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({"x": 0.5}, user_attrs={"grid_id": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = optuna_compat.ask(study)
    trial.suggest_float("x", 0, 1)
    storage.get_heartbeat_stale_trial_callback()(study, optuna_compat.frozen_trial(study, trial))
    retry = study.get_trials()[-1]
    assert retry.state == TrialState.WAITING and retry.number != trial.number
    assert optuna_compat.queued_params(retry) == {"x": 0.5}
    assert retry.user_attrs == {"grid_id": 1}


def test_heartbeat_thread_beats_while_the_trial_runs(tmp_path: Path) -> None:
    study = _study(tmp_path, StorageOptions(heartbeat_interval=1, grace_period=3))
    assert optuna_compat.heartbeat_enabled(study)
    assert optuna_compat.heartbeat_grace_period(study) == 3
    trial = optuna_compat.ask(study)
    assert _heartbeats(tmp_path) == 0
    with optuna_compat.heartbeat(study, trial):
        deadline = time.monotonic() + 30
        while _heartbeats(tmp_path) == 0:
            assert time.monotonic() < deadline, "no heartbeat recorded"
            time.sleep(0.05)
    assert optuna_compat.frozen_trial(study, trial).state == TrialState.RUNNING


def test_without_heartbeats_everything_heartbeat_related_is_a_no_op(tmp_path: Path) -> None:
    study = _study(tmp_path)
    assert not optuna_compat.heartbeat_enabled(study)
    assert optuna_compat.heartbeat_grace_period(study) is None
    trial = optuna_compat.ask(study)
    with optuna_compat.heartbeat(study, trial):
        pass
    optuna_compat.fail_stale_trials(study)
    assert optuna_compat.frozen_trial(study, trial).state == TrialState.RUNNING


def test_the_grace_period_defaults_to_twice_the_interval(tmp_path: Path) -> None:
    study = _study(tmp_path, StorageOptions(heartbeat_interval=2, grace_period=None))
    assert optuna_compat.heartbeat_grace_period(study) == 4


def test_record_heartbeat_adopts_an_orphaned_trial(tmp_path: Path) -> None:
    study = _study(tmp_path, StorageOptions(heartbeat_interval=1, grace_period=2))
    trial = optuna_compat.ask(study)
    optuna_compat.record_heartbeat(study, optuna_compat.frozen_trial(study, trial))
    assert _heartbeats(tmp_path) == 1


def test_ask_silences_exactly_the_warning_optuna_gives(tmp_path: Path) -> None:
    study = _study(tmp_path, StorageOptions(heartbeat_interval=1, grace_period=2))
    with pytest.warns(UserWarning, match="Heartbeat of storage is supposed"):
        study.ask()  # the text optuna_compat.ask filters on
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optuna_compat.ask(study)


def test_study_system_attrs_show_attached_dashboard_charts(tmp_path: Path) -> None:
    import optuna_dashboard
    import plotly.graph_objects as go

    study = _study(tmp_path)
    assert optuna_compat.study_system_attrs(study) == {}
    optuna_dashboard.save_plotly_graph_object(study, go.Figure(), graph_object_id="x")
    assert {k.rsplit(":", 1)[0] for k in optuna_compat.study_system_attrs(study)} == {
        "dashboard:plot_data:x"  # optuna-dashboard splits a figure over numbered keys
    }


def test_rdb_write_methods_are_every_method_that_writes() -> None:
    """Each listed name is an RDBStorage method, and the cache calls only listed ones to write.

    The rest of the check -- every INSERT/UPDATE/DELETE Optuna issues runs inside one of them --
    is ``test_sqlite_every_write_runs_in_an_immediate_transaction`` in ``test_storage.py``.
    """
    import inspect

    from optuna.storages import _CachedStorage

    for name in optuna_compat.RDB_WRITE_METHODS:
        assert callable(getattr(optuna.storages.RDBStorage, name)), name
    called = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_CachedStorage)))
    writes = {n for n in called if not n.startswith(("get_", "_get_"))}
    assert writes <= set(optuna_compat.RDB_WRITE_METHODS)


def test_url_template_is_filled_as_rdb_storage_does() -> None:
    from optuna.storages._rdb.models import SCHEMA_VERSION

    filled = optuna_compat.url_template_filled("sqlite:///a-{SCHEMA_VERSION}.db")
    assert filled == f"sqlite:///a-{SCHEMA_VERSION}.db"
