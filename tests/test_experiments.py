"""Experiments as Optuna studies, on the tiny synthetic MNIST: runs, resume, rows, summary.

Each test runs ``python -m hpo.experiments`` (in process, or as real processes) on a tiny
definition found through ``main``'s ``lookup``, against its own SQLite storage, and checks
what a user sees: trial states, the CSV, the tables, the exit status and its one line.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from data import MNISTOptions
from hpo import records
from hpo.checkpoints.evaluate import evaluate_checkpoint
from hpo.experiments import cli
from hpo.experiments.rows import FIELDS
from hpo.tuning.export import main as export_main
from models import ModelFamily
from studies import BASELINE_RECIPE
from studies.experiments import EXPERIMENTS, get_experiment
from studies.recipe import FULL_RECIPE

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
TINY = dataclasses.replace(
    get_experiment("mnist_sparsity"),
    name="tiny",
    dataset_options=MNISTOptions(val_size=100, train_size=200),
    train_sparsities=(0.5, 0.9),
    test_sparsities=(0.5, 0.9),
    seeds=(0, 1),
    epochs=1,
    depth=3,
)
# One run: sparse CNN at 0.9, seed 3.
ONE = dataclasses.replace(
    TINY, name="one", train_sparsities=(0.9,), seeds=(3,), families=(ModelFamily.SPARSE,)
)
TINY_EXPERIMENTS = {d.name: d for d in (TINY, ONE)}


def run(name: str, tmp: Path, *extra: str, db: str = "exp.db", out: str = "out") -> int:
    """``python -m hpo.experiments NAME`` on the tiny definitions, storage and output in tmp."""
    argv = [name, "--storage", f"sqlite:///{tmp / db}", "--out", str(tmp / out), *extra]
    argv.append("--no-png")  # HTML only: a browser per summary would triple the tests' time
    return cli.main([*argv, "--device", "cpu"], lookup=TINY_EXPERIMENTS.__getitem__)


def trials(tmp: Path, name: str, db: str = "exp.db") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / db}").get_trials()


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_run_trains_once_and_a_rerun_trains_nothing(data_env, tmp_path):
    assert run("tiny", tmp_path) == 0
    first = trials(tmp_path, "tiny")
    # 3 families x 2 training sparsities x 2 seeds, one completed trial each, seed-major.
    assert [t.state for t in first] == [TrialState.COMPLETE] * 12
    assert [t.user_attrs[records.GRID_ID] for t in first] == list(range(12))
    assert [t.params["seed"] for t in first] == [0] * 6 + [1] * 6
    combos = {(t.params["family"], t.params["train_sparsity"], t.params["seed"]) for t in first}
    assert len(combos) == 12
    csv_path = tmp_path / "out" / "tiny_runs.csv"
    table = csv_path.read_text()
    assert run("tiny", tmp_path) == 0
    assert [(t.number, t.state, t.datetime_complete) for t in trials(tmp_path, "tiny")] == [
        (t.number, t.state, t.datetime_complete) for t in first
    ]
    assert csv_path.read_text() == table


def test_the_tables_are_the_studys_and_the_csv_gives_the_same_summary(data_env, tmp_path):
    assert run("tiny", tmp_path) == 0
    out = tmp_path / "out"
    written = rows(out / "tiny_runs.csv")
    assert list(written[0]) == list(FIELDS)
    assert len(written) == 12 * 2  # one row per run and test sparsity
    for t in trials(tmp_path, "tiny"):
        mine = [r for r in written if (r["family"], float(r["train_sparsity"]), int(r["seed"]))
                == (t.params["family"], t.params["train_sparsity"], t.params["seed"])]  # fmt: skip
        test = t.user_attrs[records.TEST_METRICS]
        assert {r["test_sparsity"]: float(r["accuracy"]) for r in mine} == {
            s: m["accuracy"] for s, m in test.items()
        }
        assert {float(r["val_accuracy"]) for r in mine} == {t.value}
        assert {r["n_test"] for r in mine} == {"200"}  # every model, the same test images
    assert (out / "tiny_accuracy.html").exists() and (out / "tiny_invariance.html").exists()
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(out / "tiny_runs.csv", copy)
    assert run("tiny", tmp_path, "--summarize-only", out="copy") == 0
    assert (copy / "tiny.md").read_text() == (out / "tiny.md").read_text()
    assert "Invariance" in (out / "tiny.md").read_text()


def test_the_same_seed_gives_the_same_numbers_and_one_point_draws_no_figure(data_env, tmp_path):
    assert run("one", tmp_path, db="a.db", out="a") == 0
    assert run("one", tmp_path, db="b.db", out="b") == 0
    a, b = rows(tmp_path / "a" / "one_runs.csv"), rows(tmp_path / "b" / "one_runs.csv")
    figures = ("accuracy", "mae", "val_accuracy", "n_test")
    assert [[r[k] for k in figures] for r in a] == [[r[k] for k in figures] for r in b]
    assert "| 0.9 |" in (tmp_path / "a" / "one.md").read_text()
    assert not list((tmp_path / "a").glob("*.html"))


def test_an_exported_checkpoint_reproduces_its_row_with_hpo_evaluate(data_env, tmp_path, capsys):
    assert run("one", tmp_path) == 0
    path = tmp_path / "run.pt"
    storage = f"sqlite:///{tmp_path / 'exp.db'}"
    assert (
        export_main(["--study", "one", "--trial", "0", "--out", str(path), "--storage", storage])
        == 0
    )
    row = {float(r["test_sparsity"]): r for r in rows(tmp_path / "out" / "one_runs.csv")}
    scores = evaluate_checkpoint(str(path))
    assert {float(k): m["accuracy"] for k, m in scores.items()} == {
        s: float(r["accuracy"]) for s, r in row.items()
    }
    val = evaluate_checkpoint(str(path), split="val", sparsities=[0.9])["0.9"]["accuracy"]
    assert val == float(row[0.9]["val_accuracy"])


def test_two_processes_share_the_runs_and_train_each_once(data_env, tmp_path):
    """Two real processes on one SQLite storage: every run completes exactly once."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_experiments as t; "
        "from hpo.experiments import cli; "
        "sys.exit(cli.main(sys.argv[2:], lookup=t.TINY_EXPERIMENTS.__getitem__))"
    )
    argv = ["tiny", "--storage", f"sqlite:///{tmp_path / 'exp.db'}", "--device", "cpu", "--no-png"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(Path(__file__).parent), *argv, "--out", str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for out in (tmp_path / "a", tmp_path / "b")
    ]
    for w in workers:
        assert w.wait(timeout=300) == 0, w.stderr.read()[-2000:] if w.stderr else ""
    done = [t for t in trials(tmp_path, "tiny") if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs[records.GRID_ID] for t in done) == list(range(12))
    others = [t for t in trials(tmp_path, "tiny") if t.state != TrialState.COMPLETE]
    # A process that found the queue empty between two runs leaves one trial, untrained.
    assert all(not t.params and t.state == TrialState.FAIL for t in others)


def test_a_csv_with_runs_the_study_lacks_is_refused_before_training(data_env, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    published = out / "one_runs.csv"
    published.write_text(
        "experiment,family,train_sparsity,seed,test_sparsity,accuracy,mae\n"
        "one,sparse,0.9,7,0.9,0.5,0.1\n"
    )
    before = published.read_text()
    assert run("one", tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert str(published) in err and "baseline-sparse-0.9-s7" in err and "\n" not in err
    assert published.read_text() == before
    assert not (tmp_path / "exp.db").exists()  # nothing trained, no database left behind


def test_unknown_experiment_is_one_clear_line(capsys):
    assert cli.main(["nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown experiment 'nope'")
    assert "mnist_sparsity" in err and "\n" not in err


def test_a_recipe_comparison_trains_each_recipe_and_ranks_them(data_env, tmp_path):
    compared = dataclasses.replace(ONE, name="recipes", recipes=(BASELINE_RECIPE, FULL_RECIPE))
    assert cli.main(
        ["recipes", "--storage", f"sqlite:///{tmp_path / 'r.db'}", "--out", str(tmp_path)]
        + ["--no-png"],
        lookup={"recipes": compared}.__getitem__,
    ) == 0  # fmt: skip
    assert [r["recipe"] for r in rows(tmp_path / "recipes_runs.csv")] == ["baseline"] * 2 + [
        "full"
    ] * 2
    md = (tmp_path / "recipes.md").read_text()
    assert "| baseline |" in md and "| full |" in md
    with pytest.raises(ValueError, match="recipe names must be distinct"):
        dataclasses.replace(compared, recipes=(FULL_RECIPE, FULL_RECIPE))


PUBLISHED = [n for n in EXPERIMENTS if (RESULTS / f"{n}_runs.csv").exists()]


@pytest.mark.parametrize("name", PUBLISHED)
def test_a_published_csv_regenerates_its_committed_summary(name: str, tmp_path, monkeypatch):
    """``--summarize-only`` reads the committed CSVs (the oldest lack the recipe columns)."""
    monkeypatch.setattr("hpo.experiments.summary.write_figures", lambda *a: None)  # md only
    shutil.copy(RESULTS / f"{name}_runs.csv", tmp_path)
    assert cli.main([name, "--summarize-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{name}.md").read_text() == (RESULTS / f"{name}.md").read_text()
