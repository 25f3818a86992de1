"""hpo.run end to end on the synthetic MNIST: grid then TPE, budgets, failures, results.

The studies here are the registered ``sparse_mnist`` with options the tiny synthetic data can
satisfy (100 validation images) and a 4-point grid, handed to the real command line in a
registry of their own (``main(argv, registry=...)``) or to the worker in its settings, so that
every run goes through the real command line, storage, objective and artifact code.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

import hpo.runtime.cpu
import hpo.training.loop
import hpo.tuning.estimate
import hpo.tuning.finalize
from data import MNISTOptions
from hpo import records as keys
from hpo.errors import EXIT_INTERRUPTED, EXIT_NO_SPACE, NonFiniteLossError
from hpo.records import StudyRecord, TrialCounts
from hpo.runtime.cpu import denormals_flushed, flush_denormals
from hpo.runtime.storage import StorageOptions, open_storage
from hpo.runtime.storage_url import StorageTarget
from hpo.training import EvalMetrics
from hpo.tuning.artifacts import load_trial_model, open_artifact_store
from hpo.tuning.cli import main as cli_main
from hpo.tuning.estimate import CostEstimate, estimate_line
from hpo.tuning.progress import RunProgress
from hpo.tuning.pruning import make_pruner
from hpo.tuning.search import make_sampler
from hpo.tuning.settings import DRY_RUN, RunSettings
from hpo.tuning.study_setup import open_study, planned_queue
from hpo.tuning.trial_data import (
    eval_batches,
    evaluate_at_sparsities,
    load_trial_data,
    validation_split,
)
from hpo.tuning.worker import run_worker
from models import build_model
from studies import VAL_MASK_SEED, Grid, IntRange, StudyRegistry, default_registry, get_study

STUDY = "tiny_mnist"
GRID = Grid.of(depth=(3, 4), activation=("relu", "elu"), batch_size=(32,), lr=(1e-2,))
SPARSITIES = (0.5, 0.9)
_BASE = get_study("sparse_mnist")
# sparse_mnist on the synthetic data with a 4-point grid.
TINY = dataclasses.replace(
    _BASE,
    name=STUDY,
    description="sparse_mnist on the synthetic test data",
    dataset_options=MNISTOptions(val_size=100),
    test_sparsities=SPARSITIES,
    epochs=1,
    train_size=64,
    eval_batch_size=100,
    # The real space, with depth capped so a TPE trial costs as little as a grid trial.
    search_space=dataclasses.replace(_BASE.search_space, depth=IntRange(3, 4)),
    grid=GRID,
    tpe_random_trials=1,
)
REGISTRY = StudyRegistry([*default_registry(), TINY])


def main(argv: list[str]) -> int:
    """``python -m hpo.run`` with ``tiny_mnist`` registered."""
    return cli_main(argv, registry=REGISTRY)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: the machine's cores are shared, and oversubscribed threads crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    flush_denormals(False)  # a CPU worker switched it on for this process: leave no trace


@pytest.fixture
def env(data_env: Path, tmp_path: Path) -> dict[str, str]:  # noqa: ARG001
    """A SQLite file in tmp_path (``data_env`` points HPO_DATA_DIR at the synthetic data)."""
    return {"storage": f"sqlite:///{tmp_path / 'study.db'}"}


def _argv(env: dict[str, str], n_trials: int, *extra: str) -> list[str]:
    return [
        "--study", STUDY, "--n-trials", str(n_trials), "--storage", env["storage"],
        "--device", "cpu", "--no-progress", "--pruner", "none", *extra,
    ]  # fmt: skip


def _load(env: dict[str, str]) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=open_storage(env["storage"]))


def _settings(env: dict[str, str], n_trials: int, **kw: object) -> RunSettings:
    values: dict[str, object] = {
        "study": TINY,
        "n_trials": n_trials,
        "storage": StorageTarget.parse(env["storage"]),
        "device": "cpu",
        "pruner": "none",
        "show_progress": False,
    }
    values.update(kw)
    return RunSettings(**values)  # type: ignore[arg-type]


def _states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


def count_trials(study: optuna.Study) -> TrialCounts:
    return TrialCounts.of(study.get_trials(deepcopy=False))


# --- the happy path --------------------------------------------------------------------


def test_study_runs_end_to_end_and_stores_everything(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(env, 3, "--seed", "7")) == 0
    study = _load(env)
    trials = study.get_trials(deepcopy=False)[:3]
    assert _states(study) == [TrialState.COMPLETE] * 3 + [TrialState.WAITING]  # grid point 3
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert StudyRecord.from_dict(study.user_attrs[keys.CONFIG]).name == STUDY
    assert study.metric_names == [keys.METRIC_NAME]
    for t in trials:
        assert t.user_attrs[keys.SEED] == 7 + t.number
        assert t.user_attrs[keys.N_PARAMS] > 0
        assert t.user_attrs[keys.TRAIN_SECONDS] > 0
        assert t.user_attrs[keys.DEVICE] == "cpu" and ":" in t.user_attrs[keys.WORKER]
        assert list(t.intermediate_values) == [1]  # one report per epoch, step = epoch
        val = t.user_attrs[keys.VAL_METRICS]
        assert set(val) == {"0.5", "0.9"}
        for m in val.values():
            assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["mae"] <= 2.0 / 10
        # The objective is the best validation accuracy at the training sparsity (0.9).
        assert t.value == pytest.approx(val["0.9"]["accuracy"])
    best = study.best_trial
    assert study.user_attrs[keys.BEST_TRIAL] == best.number
    assert study.user_attrs[keys.BEST_MODEL_ARTIFACT] == best.user_attrs[keys.MODEL_ARTIFACT]
    assert set(study.user_attrs[keys.TEST_METRICS]) == {"0.5", "0.9"}
    out = capsys.readouterr().out
    assert f"best trial {best.number}" in out and "3 complete, 0 pruned, 0 failed" in out
    assert "test acc" in out
    # The final step shows its progress: a line per test sparsity, in order, as it is scored.
    scored = [line.split(":")[0].split()[-1] for line in out.splitlines() if "scored in" in line]
    assert scored == [str(s) for s in SPARSITIES]


def test_model_reloaded_from_the_artifact_reproduces_the_stored_scores(
    env: dict[str, str],
) -> None:
    assert main(_argv(env, 2)) == 0
    study = _load(env)
    settings = _settings(env, 2)
    definition = settings.definition()
    data = load_trial_data(definition, settings.data_dir, settings.download, definition.train_size)
    store = open_artifact_store(env["storage"])
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        loaded = load_trial_model(study, trial.number, store=store)
        assert loaded.cnn_config.depth == trial.params["depth"]
        assert loaded.config.params == trial.params
        batches = {
            s: eval_batches(definition, data, data.val, s, VAL_MASK_SEED, torch.device("cpu"))
            for s in definition.test_sparsities
        }
        again = evaluate_at_sparsities(loaded.model, batches, definition.test_sparsities)
        stored = trial.user_attrs[keys.VAL_METRICS]
        for k, m in again.items():
            assert m.accuracy == stored[k]["accuracy"]
            assert m.mae == pytest.approx(stored[k]["mae"], abs=1e-6)
        # The check can fail: untrained weights of the same shape score differently.
        fresh = build_model(loaded.family, loaded.cnn_config).eval()
        other = evaluate_at_sparsities(fresh, batches, definition.test_sparsities)
        assert any(other[k].mae != pytest.approx(stored[k]["mae"], abs=1e-6) for k in stored)
    # Default: the best trial.
    assert load_trial_model(study, store=store).config.trial_number == study.best_trial.number


# --- grid, TPE, budgets --------------------------------------------------------------------


def test_grid_comes_first_once_then_tpe_and_n_is_exact_across_resumes(
    env: dict[str, str],
) -> None:
    assert main(_argv(env, 2)) == 0
    assert main(_argv(env, 2)) == 0  # same command again: nothing left to do
    study = _load(env)
    assert len(study.get_trials(deepcopy=False)) == len(GRID.points())  # 2 run + 2 waiting
    assert count_trials(study).finished == 2
    assert main(_argv(env, 7)) == 0  # resume with a larger budget
    trials = _load(env).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 7
    grid = [t for t in trials if t.user_attrs[keys.PHASE] == keys.PHASE_GRID]
    assert [t.number for t in grid] == [0, 1, 2, 3]
    assert [t.user_attrs[keys.GRID_ID] for t in grid] == [0, 1, 2, 3]
    assert [t.params for t in grid] == GRID.points()
    assert [p for p, _ in planned_queue(TINY, n_trials=7)] == GRID.points()
    # tpe_random_trials=1: one random startup draw after the grid, then the model proposes.
    assert [t.user_attrs[keys.PHASE] for t in trials[4:]] == [keys.PHASE_RANDOM] + [
        keys.PHASE_TPE
    ] * 2


def test_flush_denormals_switches_the_cpu_mode_both_ways() -> None:
    assert flush_denormals(True)  # x86-64 and arm64 CPUs both have the mode
    assert denormals_flushed()
    assert torch.tensor([1e-39]).mul(1.0).item() == 0.0
    flush_denormals(False)
    assert not denormals_flushed()
    assert torch.tensor([1e-39]).mul(1.0).item() > 0.0


def test_a_cpu_worker_flushes_denormals_and_retains_freed_memory(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Denormal gradients and per-step page faults each made CPU trials much slower
    (hpo.runtime.cpu); every CPU worker switches both off before it trains."""
    retained: list[bool] = []
    monkeypatch.setattr(hpo.runtime.cpu, "retain_freed_memory", lambda: retained.append(True))
    flush_denormals(False)
    run_worker(_settings(env, 1))
    assert denormals_flushed()
    assert retained == [True]


def test_tpe_is_seeded(env: dict[str, str], tmp_path: Path) -> None:
    other = {**env, "storage": f"sqlite:///{tmp_path / 'other.db'}"}
    for e in (env, other):
        run_worker(_settings(e, 6, seed=3))
    params = [[t.params for t in _load(e).get_trials(deepcopy=False)] for e in (env, other)]
    assert params[0] == params[1]


def test_a_queue_left_incomplete_is_completed_once_by_the_next_workers(
    env: dict[str, str],
) -> None:
    """A creator that died after two grid points: the next worker to start queues the rest
    (under the storage's lock), and a worker after it finds nothing missing."""
    settings = _settings(env, 4)
    storage = open_storage(
        env["storage"], StorageOptions(heartbeat_interval=None, grace_period=None)
    )
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    study.set_user_attr(keys.CONFIG, settings.record().to_dict())
    for params, attrs in planned_queue(TINY, 4)[:2]:  # died after two grid points
        study.enqueue_trial(params, user_attrs=attrs)
    pruner = make_pruner("none", 1, num_classes=10, n_val=100)
    for seed in (0, 1):
        open_study(storage, settings, make_sampler(settings.definition(), seed), pruner)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.user_attrs[keys.GRID_ID] for t in trials) == [0, 1, 2, 3]
    assert {t.state for t in trials} == {TrialState.WAITING}


# --- pruning and failures ----------------------------------------------------------------


def _fake_scores_by_depth(monkeypatch: pytest.MonkeyPatch, deep: float = 0.1) -> None:
    """No training; the shallowest networks score 0.9 and deeper ones ``deep`` every epoch."""

    def evaluate(model: torch.nn.Module, batches: object, autocast: object = None) -> EvalMetrics:
        convs = sum(1 for m in model.modules() if getattr(m, "weight", None) is not None
                    and m.weight.dim() == 4)  # fmt: skip
        return EvalMetrics(accuracy=0.9 if convs <= 3 else deep, mae=0.1, n=1)

    monkeypatch.setattr(hpo.training.loop, "train_one_epoch", lambda *a, **k: 0.0)
    monkeypatch.setattr(hpo.training.loop, "evaluate", evaluate)


@pytest.mark.parametrize(("pruner", "expected_pruned"), [("median", [5, 6]), ("none", [])])
def test_median_pruner_prunes_poor_trials(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, pruner: str, expected_pruned: list[int]
) -> None:
    _fake_scores_by_depth(monkeypatch, deep=0.5)  # poor, but well above chance
    # Grid: depth 3, 3, 3, 3; then TPE. Trials 0-4 are the median rule's 5 startup trials.
    grid = Grid.of(depth=(3,), activation=("relu", "elu"), batch_size=(32, 64), lr=(1e-2,))
    tiny = dataclasses.replace(TINY, grid=grid, epochs=2)
    # Trials 0-3: depth 3 (0.9); trial 4 onwards: enqueue depth 4 so they score 0.1.
    settings = _settings(env, 4, pruner=pruner, study=tiny)
    run_worker(settings)
    study = _load(env)
    for _ in range(3):
        study.enqueue_trial({"depth": 4, "activation": "relu", "batch_size": 32, "lr": 1e-2})
    run_worker(dataclasses.replace(settings, n_trials=7))
    trials = _load(env).get_trials(deepcopy=False)
    assert [t.number for t in trials if t.state == TrialState.PRUNED] == expected_pruned
    for n in expected_pruned:
        assert trials[n].user_attrs[keys.FAIL_REASON] == (
            "pruned after epoch 1: val accuracy 0.5000"
        )
        assert trials[n].intermediate_values == {1: 0.5}
    assert count_trials(_load(env)).finished == 7


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, error: BaseException, call: int) -> None:
    real = hpo.training.loop.train_one_epoch
    calls = {"n": 0}

    def train_one_epoch(*args: object, **kwargs: object) -> float:
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(hpo.training.loop, "train_one_epoch", train_one_epoch)


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried 2 GiB"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    ],
)
def test_out_of_memory_is_recorded_as_failed_and_the_study_continues(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, error: RuntimeError
) -> None:
    _fail_on_call(monkeypatch, error, 2)
    assert main(_argv(env, 3)) == 0
    trials = _load(env).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL] + [
        TrialState.COMPLETE
    ] * 2
    assert trials[1].user_attrs[keys.FAIL_REASON] == f"out of memory on cpu: {error}"
    # Every trial records its own memory, whatever its state.
    assert all(t.user_attrs[keys.MEMORY]["peak_rss_mb"] > 0 for t in trials)


def test_non_finite_loss_is_pruned_with_its_reason(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_on_call(monkeypatch, NonFiniteLossError("training loss became nan in epoch 1"), 1)
    assert main(_argv(env, 2)) == 0
    trials = _load(env).get_trials(deepcopy=False)
    assert [t.state for t in trials[:2]] == [TrialState.PRUNED, TrialState.COMPLETE]
    assert trials[0].user_attrs[keys.FAIL_REASON] == "training loss became nan in epoch 1"
    assert keys.MEMORY in trials[0].user_attrs  # a pruned trial's memory is recorded too


def test_unexpected_error_is_recorded_then_raised(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_on_call(monkeypatch, ValueError("bug in the objective"), 1)
    with pytest.raises(ValueError, match="bug in the objective"):
        main(_argv(env, 2))
    trial = _load(env).get_trials(deepcopy=False)[0]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[keys.FAIL_REASON] == "ValueError: bug in the objective"


def test_ctrl_c_fails_the_running_trial_and_the_same_command_resumes(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fail_on_call(monkeypatch, KeyboardInterrupt(), 2)
    assert main(_argv(env, 3)) == EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err
    study = _load(env)
    interrupted = study.get_trials(deepcopy=False)[1]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs[keys.FAIL_REASON] == "interrupted"
    assert TrialState.RUNNING not in _states(study)
    # The stopped worker queued the interrupted grid point again on its way out, for the
    # workers still running; the same command resumes, so the whole grid still runs first.
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert interrupted.user_attrs[keys.GRID_ID] in [t.user_attrs[keys.GRID_ID] for t in waiting]
    assert main(_argv(env, 4)) == 0
    trials = _load(env).get_trials(deepcopy=False)
    assert count_trials(_load(env)).finished == 4
    done = [t.user_attrs.get(keys.GRID_ID) for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(done) == [0, 1, 2, 3]


def test_create_only_creates_the_study_and_its_queue_once_and_trains_nothing(
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = os.environ["HPO_DATA_DIR"]
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "no-data"))  # it needs none
    for _ in range(2):  # the second run finds the study and queues nothing more
        assert main(_argv(env, 3, "--create-only")) == 0
        assert "ready, 0/3 finished, 4 queued" in capsys.readouterr().out
        assert _states(_load(env)) == [TrialState.WAITING] * len(GRID.points())
    assert main(_argv(env, 3, "--create-only", "--epochs", "2")) == 2
    assert "already exists with a different configuration" in capsys.readouterr().err
    assert main(_argv(env, 3, "--create-only", "--dry-run")) == 2
    monkeypatch.setenv("HPO_DATA_DIR", data_dir)  # the workers' command runs the trials
    assert main(_argv(env, 3)) == 0
    assert count_trials(_load(env)).finished == 3


def test_resume_with_different_overrides_is_refused(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(env, 1)) == 0
    capsys.readouterr()
    assert main(_argv(env, 2, "--epochs", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: study 'tiny_mnist' already exists with a different configuration")
    assert "definition.epochs=1 (now 2)" in err and "--study-name" in err
    assert count_trials(_load(env)).finished == 1  # nothing ran with the other budget
    # Giving the value the study already has is not a difference; a new name is a new study.
    assert main(_argv(env, 1, "--epochs", "1")) == 0
    assert main(_argv(env, 1, "--epochs", "2", "--study-name", "tiny_quick")) == 0


def test_retrain_best_trains_copies_of_the_best_configuration_and_scores_them(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(env, 4)) == 0
    best = _load(env).best_trial
    capsys.readouterr()
    assert main(_argv(env, 2, "--retrain-best", STUDY, "--epochs", "2")) == 0
    out = capsys.readouterr().out
    name = f"{STUDY}_retrain"
    study = optuna.load_study(study_name=name, storage=open_storage(env["storage"]))
    trials = study.get_trials(deepcopy=False)
    assert _states(study) == [TrialState.COMPLETE] * 2  # no grid, no TPE point
    assert all(t.params == best.params for t in trials)
    assert [t.user_attrs[keys.PHASE] for t in trials] == [keys.PHASE_RETRAIN] * 2
    assert [t.user_attrs[keys.SEED] for t in trials] == [0, 1]  # one seed per copy
    assert all(list(t.intermediate_values) == [1, 2] for t in trials)  # the new budget
    assert StudyRecord.from_dict(study.user_attrs[keys.CONFIG]).definition["epochs"] == 2
    source = study.user_attrs[keys.RETRAIN_SOURCE]
    assert (source["study"], source["trial"], source["params"]) == (STUDY, best.number, best.params)
    assert set(study.user_attrs[keys.TEST_METRICS]) == {"0.5", "0.9"}
    assert f"retraining trial {best.number} of study {STUDY}" in out
    # A larger --n-trials adds another seed of the same configuration, never a TPE point.
    assert main(_argv(env, 3, "--retrain-best", STUDY, "--epochs", "2")) == 0
    trials = optuna.load_study(study_name=name, storage=open_storage(env["storage"])).trials
    assert [t.params == best.params for t in trials] == [True] * 3
    assert count_trials(_load(env)).finished == 4  # the source study is untouched


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (None, "--retrain-best tiny_mnist: no study of that name in this storage"),
        ("other_definition", "that study tuned the definition 'sparse_mnist', not 'tiny_mnist'"),
        ("empty", "--retrain-best tiny_mnist: the study has no completed trial yet"),
    ],
)
def test_retrain_best_refuses_a_source_it_cannot_use(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], setup: str | None, message: str
) -> None:
    storage = open_storage(env["storage"])
    if setup == "other_definition":
        study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
        study.set_user_attr(keys.CONFIG, {"definition": {"name": "sparse_mnist"}})
    elif setup == "empty":
        optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    assert main(_argv(env, 1, "--retrain-best", STUDY)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert f"{STUDY}_retrain" not in names  # nothing was created


def test_retrain_study_stops_instead_of_searching_when_a_copy_fails(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(_argv(env, 1)) == 0
    _fail_on_call(monkeypatch, torch.cuda.OutOfMemoryError("CUDA out of memory"), call=1)
    assert main(_argv(env, 2, "--retrain-best", STUDY)) == 0
    study = optuna.load_study(study_name=f"{STUDY}_retrain", storage=open_storage(env["storage"]))
    assert _states(study) == [TrialState.FAIL, TrialState.COMPLETE]
    assert all(t.user_attrs[keys.PHASE] == keys.PHASE_RETRAIN for t in study.trials)


def test_dry_run_leaves_nothing_behind(
    data_env: Path,  # noqa: ARG001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    assert main(["--study", STUDY, "--dry-run", "--device", "cpu", "--no-progress"]) == 0
    assert "2 complete" in capsys.readouterr().out
    assert list(work.iterdir()) == []  # no hpo.db, no artifacts


def test_dry_run_scores_the_best_trial_on_a_test_subset(
    data_env: Path,  # noqa: ARG001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The whole test split at four sparsities was most of a dry run's time.
    scored: list[int] = []
    real_eval_batches = hpo.tuning.finalize.eval_batches

    def recording_eval_batches(definition, data, split, *args, **kwargs):  # noqa: ANN001, ANN202
        scored.append(len(split))
        return real_eval_batches(definition, data, split, *args, **kwargs)

    monkeypatch.setitem(DRY_RUN, "test_size", 12)
    monkeypatch.setattr(hpo.tuning.finalize, "eval_batches", recording_eval_batches)
    monkeypatch.chdir(tmp_path)
    assert main(["--study", STUDY, "--dry-run", "--device", "cpu", "--no-progress"]) == 0
    assert scored and set(scored) == {12}  # every test sparsity, on the subset only
    assert "test figures on 12 test images" in capsys.readouterr().out


def test_timeout_starts_no_new_trial(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Optuna's timeout: no trial starts once it has passed (the running one finishes)."""
    assert main(_argv(env, 3, "--timeout", "0.001")) == 0
    assert count_trials(_load(env)).finished <= 1
    assert "(target 3 finished)" in capsys.readouterr().out


def test_a_trial_is_never_pruned_after_its_last_epoch(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One epoch: nothing left to save, so even Hyperband and poor scores must not prune.
    _fake_scores_by_depth(monkeypatch)
    for pruner in ("asha", "hyperband", "median"):
        run_worker(_settings(env, 7, pruner=pruner, study_name=f"{STUDY}_{pruner}"))
        study = optuna.load_study(
            study_name=f"{STUDY}_{pruner}", storage=open_storage(env["storage"])
        )
        assert count_trials(study).complete == 7


# --- seeds and validation size ---------------------------------------------------------------


def test_workers_started_without_a_seed_get_distinct_ones_stored_on_their_trials(
    env: dict[str, str],
) -> None:
    assert main(_argv(env, 1)) == 0
    assert main(_argv(env, 2)) == 0  # a second worker joining the same study, no --seed
    trials = [t for t in _load(env).get_trials(deepcopy=False) if t.state.is_finished()]
    worker_seeds = [t.user_attrs[keys.WORKER_SEED] for t in trials]
    assert worker_seeds[0] != worker_seeds[1]
    assert [t.user_attrs[keys.SEED] for t in trials] == [s + t.number for s, t in zip(
        worker_seeds, trials, strict=True)]  # fmt: skip
    assert main(_argv(env, 3, "--seed", "5")) == 0
    assert _load(env).trials[2].user_attrs[keys.WORKER_SEED] == 5


def _denominators(study: optuna.Study) -> set[int]:
    """The smallest n for which every stored validation accuracy is a multiple of 1 / n."""
    values = [
        m["accuracy"]
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for m in t.user_attrs[keys.VAL_METRICS].values()
    ] + [v for t in study.trials for v in t.intermediate_values.values()]
    return {min(n for n in range(1, 101) if abs(v * n - round(v * n)) < 1e-9) for v in values}


def test_val_size_scores_every_trial_on_that_many_images(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The synthetic MNIST has 100 validation images; --val-size 40 scores trials on 40."""
    with caplog.at_level(logging.INFO, logger="hpo.run"):
        assert main(_argv(env, 2, "--val-size", "40", "--study-name", "forty")) == 0
    assert "40 validation images at 2 sparsities" in caplog.text
    forty = optuna.load_study(study_name="forty", storage=open_storage(env["storage"]))
    assert all(40 % n == 0 for n in _denominators(forty))  # every score is k / 40
    assert StudyRecord.from_dict(forty.user_attrs[keys.CONFIG]).definition["val_size"] == 40
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hpo.run"):
        assert main(_argv(env, 1, "--val-size", "all", "--study-name", "all")) == 0
    assert "100 validation images at 2 sparsities" in caplog.text
    whole = optuna.load_study(study_name="all", storage=open_storage(env["storage"]))
    assert StudyRecord.from_dict(whole.user_attrs[keys.CONFIG]).definition["val_size"] is None
    assert all(100 % n == 0 for n in _denominators(whole))


def test_the_validation_subset_is_fixed_and_stratified(data_env: Path) -> None:  # noqa: ARG001
    data = load_trial_data(TINY, None, False)
    subset = validation_split(data, 40)
    again = validation_split(load_trial_data(TINY, None, False), 40)
    assert len(subset) == 40 and torch.equal(subset.images, again.images)
    assert torch.bincount(subset.labels, minlength=10).tolist() == [4] * 10  # 10 balanced classes
    assert validation_split(data, None) is data.val


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("0", "--val-size must be an integer >= 1"),
        ("few", "--val-size must be an integer >= 1 or 'all'"),
    ],
)
def test_a_bad_val_size_is_one_line(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], value: str, fragment: str
) -> None:
    assert main(_argv(env, 1, "--val-size", value)) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err


# --- the best model as a file -----------------------------------------------------------------


def test_export_and_evaluate_reproduce_the_stored_test_figures(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hpo.checkpoints.evaluate import main as evaluate_main
    from hpo.checkpoints.format import load_model_file
    from hpo.tuning.export import main as export_main

    assert main(_argv(env, 2)) == 0
    study = _load(env)
    best = tmp_path / "best.pt"
    assert export_main(["--study", STUDY, "--out", str(best), "--storage", env["storage"]]) == 0
    assert f"trial {study.user_attrs[keys.BEST_TRIAL]} of study {STUDY}" in capsys.readouterr().out
    loaded = load_model_file(best)
    assert loaded.config.source["trial"] == study.user_attrs[keys.BEST_TRIAL]
    assert evaluate_main([str(best), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores == study.user_attrs[keys.TEST_METRICS]  # exactly what the run stored
    # Another draw of the test masks gives other (but close) figures.
    assert evaluate_main([str(best), "--json", "--mask-seed", "7", "--sparsities", "0.9"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert set(other) == {"0.9"} and other["0.9"] != scores["0.9"]
    # The validation images the study scored: the stored validation figures of that trial.
    assert evaluate_main([str(best), "--json", "--split", "val"]) == 0
    trial = study.trials[loaded.config.trial_number]
    assert json.loads(capsys.readouterr().out) == trial.user_attrs[keys.VAL_METRICS]


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        (["evaluate", "{tmp}/missing.pt"], "no checkpoint file"),
        (["evaluate", "{tmp}/not-a-checkpoint.pt"], "not a torch checkpoint"),
        (["export", "--study", "nope", "--out", "{tmp}/x.pt"], "no study named 'nope'"),
        (["export", "--study", STUDY, "--out", "{tmp}/no/such/x.pt"], "does not exist"),
        (["export", "--study", STUDY, "--trial", "99", "--out", "{tmp}/x.pt"], "has no trial 99"),
    ],
)
def test_export_and_evaluate_refuse_bad_input_in_one_line(
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    fragment: str,
) -> None:
    from hpo.checkpoints.evaluate import main as evaluate_main
    from hpo.tuning.export import main as export_main

    assert main(_argv(env, 1)) == 0
    (tmp_path / "not-a-checkpoint.pt").write_text("hello")
    capsys.readouterr()
    args = [a.format(tmp=tmp_path) for a in command[1:]]
    run = evaluate_main if command[0] == "evaluate" else export_main
    if command[0] == "export":
        args += ["--storage", env["storage"]]
    assert run(args) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and "Traceback" not in err


# --- a full disk: one line, the trial FAIL with its reason, nothing partial, the study resumes


def _artifact_files(env: dict[str, str]) -> set[str]:
    folder = StorageTarget.parse(env["storage"]).artifact_dir
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def _referenced_artifacts(study: optuna.Study) -> set[str]:
    return {
        t.user_attrs[keys.MODEL_ARTIFACT]
        for t in study.get_trials(deepcopy=False)
        if keys.MODEL_ARTIFACT in t.user_attrs
    }


def test_a_full_disk_under_the_checkpoints_fails_the_trial_in_one_line_and_the_run_resumes(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checkpoint's write fills the disk half-way: the trial FAILs with the reason, the
    half-written file is gone, the run stops (every next trial would fail alike) with one
    line and EXIT_NO_SPACE, and the same command, once space is free, runs that grid point
    again (queued after the grid's other points: Optuna runs queued trials in order)."""
    write = FileSystemArtifactStore.write

    def half_then_full(store: FileSystemArtifactStore, artifact_id: str, body: BinaryIO) -> None:
        write(store, artifact_id, io.BytesIO(body.read(4096)))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileSystemArtifactStore, "write", half_then_full)
    assert main(_argv(env, 2)) == EXIT_NO_SPACE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no space left on device writing trial 0's checkpoint in ")
    assert "\n" not in err and err.endswith("the study resumes")
    failed = _load(env).get_trials(deepcopy=False)[0]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs[keys.FAIL_REASON].startswith(keys.NO_SPACE)
    assert _artifact_files(env) == set()  # no half-written checkpoint left

    monkeypatch.setattr(FileSystemArtifactStore, "write", write)
    assert main(_argv(env, len(GRID.points()))) == 0  # the point re-queued after the others
    study = _load(env)
    again = [t for t in study.get_trials(deepcopy=False)[1:] if t.params == failed.params]
    assert [t.state for t in again] == [TrialState.COMPLETE]  # its grid point ran after all
    assert _artifact_files(env) == _referenced_artifacts(study)


def test_a_really_full_disk_under_the_database_is_one_line_and_no_trial_stays_running(
    data_env: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite, its WAL and the checkpoints on a real disk that fills up while the study runs:
    one line naming the storage (no traceback, not Optuna's "exceeding max length"), exit
    EXIT_NO_SPACE; once the disk is larger, the same command finishes the study and leaves no
    trial RUNNING and no checkpoint file that no trial refers to."""
    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "2")
    env = {"storage": f"sqlite:///{small_disk / 'study.db'}"}
    command = [sys.executable, "-c", f"import sys, {__name__} as t; sys.exit(t.main(sys.argv[1:]))"]
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (os.statvfs(small_disk).f_bavail * 4096 - 160 * 1024))
    ran = subprocess.run(
        [*command, *_argv(env, 4)], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    lines = ran.stderr.strip().splitlines()
    assert ran.returncode == EXIT_NO_SPACE, ran.stderr[-2000:]
    assert lines[-1].startswith("error: no space left on device writing ")
    assert "Traceback" not in ran.stderr and "max length" not in ran.stderr

    filler.unlink()
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    time.sleep(3)  # the heartbeat grace: a trial whose FAIL could not be written goes stale
    assert main(_argv(env, 4)) == 0
    study = _load(env)
    assert count_trials(study).finished == 4 and count_trials(study).running == 0
    assert _artifact_files(env) == _referenced_artifacts(study)


# --- what a run costs, and what it tells on the way ---------------------------------------


def test_the_run_logs_an_estimate_before_its_first_trial_and_an_eta_after_each(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="hpo.run"):
        run_worker(_settings(env, 2))
    lines = [r.getMessage() for r in caplog.records if r.name == "hpo.run"]
    estimate = next(i for i, line in enumerate(lines) if line.startswith("estimate on cpu"))
    first_trial = next(i for i, line in enumerate(lines) if line.startswith("trial 0 "))
    assert estimate < first_trial
    assert "a full trial of tiny_mnist takes about" in lines[estimate]
    assert (
        "1 epoch x 64 images, 100 validation images at 2 sparsities, pruner none"
        in (lines[estimate])
    )
    assert "2 trials to go: at most" in lines[estimate]
    etas = [line for line in lines if "finished; ETA" in line]
    assert len(etas) == 1 and etas[0].startswith("1/2 finished; ETA")  # none after the last


@pytest.mark.parametrize(("read_every", "etas"), [(None, 1), (0.0, 5)])
def test_quick_trials_read_the_study_for_the_eta_at_most_every_few_seconds(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, read_every, etas: int
) -> None:
    """Every trial gets its line; the ETA, which reads the whole study, follows the first trial
    and then one ending STUDY_READ_SECONDS later (with trials of minutes: every trial). The
    control (0 s) shows the count can fail: an ETA after every trial but the last."""
    from hpo.tuning.trial_loop import optimize

    if read_every is not None:
        monkeypatch.setattr("hpo.tuning.trial_loop._TrialLog.STUDY_READ_SECONDS", read_every)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with caplog.at_level(logging.INFO, logger="hpo.run"):
        optimize(study, lambda trial: trial.suggest_float("x", 0.0, 1.0), 6)
    lines = [r.getMessage() for r in caplog.records if r.name == "hpo.run"]
    assert sum(line.startswith("trial ") for line in lines) == 6
    assert sum("finished; ETA" in line for line in lines) == etas


def test_the_cost_is_probed_once_per_study_and_device(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """K workers starting together would each time the device while the others do too: the
    first probes alone and stores the estimate, the others (and later runs) read it."""
    probes: list[str] = []
    real = hpo.tuning.estimate.measure_cost

    def counted(*args: object) -> CostEstimate:
        probes.append("probe")
        return real(*args)

    monkeypatch.setattr(hpo.tuning.estimate, "measure_cost", counted)
    settings = _settings(env, 1)
    run_worker(settings)
    run_worker(dataclasses.replace(settings, n_trials=2, seed=1))
    assert probes == ["probe"]
    stored = _load(env).user_attrs[keys.COST_ESTIMATE]
    assert list(stored) == [f"cpu, {torch.get_num_threads()} threads, fp32"]
    assert set(stored[next(iter(stored))]) >= {"step_seconds", "steps_per_epoch", "probed"}


def test_when_compiling_fails_the_trials_run_eager_and_say_why_in_one_line(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_compiler(graph: torch.fx.GraphModule, example_inputs: object) -> object:
        raise RuntimeError("no C compiler found\nsecond line")

    compile_ = torch.nn.Module.compile
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda m, **kw: compile_(m, backend=no_compiler)
    )
    with caplog.at_level(logging.INFO, logger="hpo.run"):
        run_worker(dataclasses.replace(_settings(env, 2), compile=True))
    said = [r.getMessage() for r in caplog.records if "--compile" in r.getMessage()]
    assert len(said) == 1 and "no C compiler found" in said[0] and "\n" not in said[0]
    trials = _load(env).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    assert all(t.user_attrs[keys.EXECUTION]["compile"] is False for t in trials)


def test_the_estimate_line_spells_out_the_budget_and_a_quick_study_on_a_slow_cpu() -> None:
    slow = CostEstimate(
        step_seconds=0.1,
        steps_per_epoch=860,
        validation_seconds=1,
        epochs=10,
        final_passes=3,
        probed="depth 6, batch 64",
    )
    assert slow.trial_seconds == pytest.approx(10 * (86 + 1) + 3)
    base = _BASE
    cpu = RunSettings(study=base, n_trials=100, storage=StorageTarget.parse("sqlite:///x.db"))
    line = estimate_line(base, slow, cpu, 40, 55000, 2000)
    assert "takes about 15 min (10 epochs x 55,000 images, 2,000 validation images" in line
    assert "60 trials to go: at most 14.6 h for one worker, about 3.6 h with pruning" in line
    # The advice runs with this interpreter, for about an hour: 3 x (0.1 s x 156 steps + 1 s
    # validation) + 3 final passes = 53 s a trial, 68 trials.
    assert f"{sys.executable} -m hpo.run --study sparse_mnist --epochs 3" in line
    assert "--train-size 10000 --n-trials 68 --study-name sparse_mnist_quick" in line
    assert "busy" not in line
    busy = estimate_line(base, dataclasses.replace(slow, load=64.0), cpu, 40, 55000, 2000)
    assert "timed while the machine was busy: load average 64.0" in busy
    gpu = dataclasses.replace(cpu, device="cuda", pruner="none")
    on_gpu = estimate_line(base, slow, gpu, 0, 55000, 2000)
    assert "quick study" not in on_gpu and "with pruning" not in on_gpu


def test_progress_inside_a_trial_is_logged_at_most_every_interval_without_a_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    progress = RunProgress("s", 10, 0, enabled=False, log_every=30.0, clock=lambda: now[0])

    class Source:
        def __len__(self) -> int:
            return 10

        def epoch(self, epoch: int):
            for _ in range(10):
                now[0] += 7.0  # one batch of 8 images every 7 s
                yield torch.zeros(8), torch.zeros(8), torch.zeros(8)

    with caplog.at_level(logging.INFO, logger="hpo.run"):
        with progress.trial(5, epochs=2) as shown:
            tracked = shown.track(Source())
            for epoch in (0, 1):
                for _ in tracked.epoch(epoch):
                    pass
                shown.epoch_done(epoch + 1, 0.5 * (epoch + 1))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 140 // 30  # 20 batches x 7 s, one line per 30 s
    assert lines[0] == "trial 5: epoch 1/2, batch 5/10, 1 images/s"
    assert lines[-1].startswith("trial 5: epoch 2/2, batch 10/10,") and "val 0.5000" in lines[-1]


def test_a_sqlite_file_in_a_missing_folder_is_refused_and_nothing_is_created(
    data_env: Path,  # noqa: ARG001
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"sqlite:///{tmp_path / 'typo' / 'study.db'}"
    argv = ["--study", STUDY, "--n-trials", "1", "--storage", url, "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and "typo" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_fails_before_its_first_trial_leaves_no_database(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    synthetic = os.environ["HPO_DATA_DIR"]
    monkeypatch.setenv("HPO_DATA_DIR", str(empty))
    assert main(_argv(env, 1)) == 2  # MNIST not found
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "study-artifacts").exists()
    # A database that holds a study is never removed, whatever goes wrong afterwards.
    monkeypatch.setenv("HPO_DATA_DIR", synthetic)
    assert main(_argv(env, 1)) == 0
    monkeypatch.setenv("HPO_DATA_DIR", str(empty))
    assert main(_argv(env, 2)) == 2
    assert count_trials(_load(env)).finished == 1


def test_the_final_step_runs_once_per_study(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Of several workers finishing the same study, one scores it; the others say so."""
    from hpo.runtime.locks import exclusive
    from hpo.tuning.finalize import finalize_study

    assert main(_argv(env, 2)) == 0
    assert "best trial" in capsys.readouterr().out
    settings = _settings(env, 2)
    finalize_study(settings)  # a worker that finishes later: nothing left to do
    out = capsys.readouterr().out
    assert "its final step already ran for these 2 trials" in out and "test acc" not in out
    folder = tmp_path / "study-artifacts"
    name = f"final step {STUDY}"
    with exclusive(settings.storage, name, wait=False, folder=folder) as mine:
        assert mine  # as a worker in the middle of the final step holds it
        finalize_study(dataclasses.replace(settings, n_trials=3))
        assert "another worker is running its final step; skipped" in capsys.readouterr().out
        with exclusive(settings.storage, name, wait=False, folder=folder) as again:
            assert not again


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_the_final_step_leaves_no_trial_running_for_good(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed between Optuna creating its trial and the trial's first heartbeat
    leaves a RUNNING trial that never goes stale by itself; the final step, once the budget
    is met, makes it stale (one heartbeat on its behalf), fails it and re-queues it."""
    from hpo.tuning.finalize import finalize_study

    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "2")
    assert main(_argv(env, 1)) == 0
    orphan = _load(env).ask()  # RUNNING, and nobody beats for it
    finalize_study(_settings(env, 1))
    trials = _load(env).get_trials(deepcopy=False)
    assert trials[orphan.number].state == TrialState.FAIL
    assert TrialState.RUNNING not in [t.state for t in trials]
    assert trials[-1].state == TrialState.WAITING  # re-queued: nothing lost


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_the_final_step_queues_a_retry_that_a_killed_worker_lost(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna fails a stale trial, then queues its retry: a worker killed in between leaves it
    FAIL without one. The final step queues it (once it failed a grace period ago), and leaves
    alone a trial failed for a reason and one that used up its retries."""
    from hpo.tuning.finalize import finalize_study

    monkeypatch.setenv("HPO_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPO_HEARTBEAT_GRACE", "2")
    assert main(_argv(env, 1)) == 0
    study = _load(env)
    lost, failed = study.ask(), study.ask()
    failed.set_user_attr(keys.FAIL_REASON, "out of memory")
    for trial in (lost, failed):
        study.tell(trial, state=TrialState.FAIL)  # failed as stale; its retry never queued
    spent = optuna.trial.create_trial(
        state=TrialState.FAIL, system_attrs={"failed_trial": 0, "retry_history": [0, 1, 2]}
    )
    study.add_trial(spent)  # a third retry that went stale too: no fourth (max_retry 3)
    finalize_study(_settings(env, 1))
    trials = _load(env).get_trials(deepcopy=False)
    retries = [optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t) for t in trials]
    assert [h for h in retries if h] == [[0, 1, 2], [lost.number]]
    assert trials[-1].state == TrialState.WAITING


def test_the_summary_explains_waiting_grid_points_and_announces_the_test_scoring(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(env, 2)) == 0  # a 4-point grid, a budget of 2
    out = capsys.readouterr().out
    assert "2 waiting" in out and "a larger --n-trials runs them first" in out
    assert "final step: scoring trial" in out
    assert out.index("final step: scoring trial") < out.index("test acc")


def test_the_study_bar_shows_the_estimates_eta_before_the_first_trial_ends(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[str] = []
    monkeypatch.setattr(RunProgress, "set_eta", lambda self, eta: shown.append(eta))
    read_every = "hpo.tuning.trial_loop._TrialLog.STUDY_READ_SECONDS"
    monkeypatch.setattr(read_every, 0.0)  # as for long trials
    run_worker(_settings(env, 3))
    assert shown[0].startswith("~") and shown[0].endswith("(estimate)")
    assert len(shown) == 3  # then after each trial but the last, from the finished trials
    assert "estimate" not in shown[1]
