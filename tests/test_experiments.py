"""The comparison-experiment runner on the tiny synthetic MNIST: rows, resume, summary."""

from __future__ import annotations

import csv
import dataclasses
import statistics
from pathlib import Path

import pytest

from data import MNISTOptions
from hpo.experiments import cli
from hpo.experiments.runner import FIELDS, run_experiment
from hpo.experiments.summary import summarize
from models import ModelFamily
from studies import BASELINE_RECIPE
from studies.experiments import get_experiment
from studies.recipe import FULL_RECIPE


@pytest.fixture
def tiny_definition():
    return dataclasses.replace(
        get_experiment("mnist_sparsity"),
        name="tiny",
        dataset_options=MNISTOptions(val_size=100, train_size=200),
        train_sparsities=(0.5, 0.9),
        test_sparsities=(0.5, 0.9),
        seeds=(0, 1),
        epochs=1,
        depth=3,
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_runs_every_combination_once_and_resumes(tiny_definition, data_env, tmp_path):
    out = tmp_path / "results"
    csv_path = run_experiment(tiny_definition, data_dir=None, out_dir=out, device="cpu")
    rows = _rows(csv_path)
    # 3 families x 2 train sparsities x 2 seeds, each scored at 2 test sparsities.
    assert len(rows) == 3 * 2 * 2 * 2
    runs = {(r["family"], r["train_sparsity"], r["seed"]) for r in rows}
    assert len(runs) == 12
    # Every model is scored on the same test images.
    assert {r["n_test"] for r in rows} == {"200"}
    # Resume: nothing is trained again.
    run_experiment(tiny_definition, data_dir=None, out_dir=out, device="cpu")
    assert len(_rows(csv_path)) == len(rows)
    assert not (out / "tiny.md").exists()  # the summary is written once, by the caller

    summarize(tiny_definition, csv_path, out)
    md = (out / "tiny.md").read_text()
    assert (out / "tiny_accuracy.png").stat().st_size > 0
    assert (out / "tiny_invariance.png").stat().st_size > 0
    sparse = [
        float(r["accuracy"])
        for r in rows
        if r["family"] == "sparse" and r["train_sparsity"] == r["test_sparsity"] == "0.9"
    ]
    expected = f"{100 * statistics.fmean(sparse):.2f} +/- {100 * statistics.stdev(sparse):.2f}"
    assert expected in md
    assert "Invariance" in md


def test_same_seed_gives_same_numbers(tiny_definition, data_env, tmp_path):
    one = dataclasses.replace(
        tiny_definition, train_sparsities=(0.9,), seeds=(3,), families=(ModelFamily.SPARSE,)
    )
    a = _rows(run_experiment(one, data_dir=None, out_dir=tmp_path / "a", device="cpu"))
    b = _rows(run_experiment(one, data_dir=None, out_dir=tmp_path / "b", device="cpu"))
    assert [r["accuracy"] for r in a] == [r["accuracy"] for r in b]
    # One family at one training sparsity: the table, but no one-point figure.
    summarize(one, tmp_path / "a" / "tiny_runs.csv", tmp_path / "a")
    assert "| 0.9 |" in (tmp_path / "a" / "tiny.md").read_text()
    assert not list((tmp_path / "a").glob("*.png"))


def test_unknown_experiment_is_one_clear_line(capsys):
    assert cli.main(["nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown experiment 'nope'")
    assert "mnist_sparsity" in err and "\n" not in err


def test_a_recipe_comparison_ranks_on_validation_and_keeps_older_rows(
    tiny_definition, data_env, tmp_path
):
    """Several recipes train every run once each; rows written before recipes were recorded
    (the committed CSVs) are read as the baseline's, so a new recipe retrains rather than
    skipping them, and the file is rewritten in the new columns without losing a row."""
    out = tmp_path / "results"
    out.mkdir()
    legacy = {k: "0" for k in FIELDS if k not in ("recipe", "val_accuracy")}
    legacy.update(family="sparse", train_sparsity="0.9", seed="0", test_sparsity="0.9")
    with (out / "tiny_runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(legacy))
        writer.writeheader()
        writer.writerow({**legacy, "accuracy": "0.5", "mae": "0.1"})
    compared = dataclasses.replace(
        tiny_definition,
        train_sparsities=(0.9,),
        test_sparsities=(0.9,),
        seeds=(0,),
        families=(ModelFamily.SPARSE,),
        recipes=(BASELINE_RECIPE, FULL_RECIPE),
    )
    csv_path = run_experiment(compared, data_dir=None, out_dir=out, device="cpu")
    rows = _rows(csv_path)
    assert [(r["recipe"], r["accuracy"]) for r in rows][0] == ("baseline", "0.5")  # kept
    assert [r["recipe"] for r in rows] == ["baseline", "full"]  # only the new recipe ran
    assert 0.0 <= float(rows[1]["val_accuracy"]) <= 1.0
    md = summarize(compared, csv_path, out).read_text()
    assert "| baseline |" in md and "| full |" in md
    assert "full: AdamW (decay 0.05), 5% warm-up + cosine decay" in md
    with pytest.raises(ValueError, match="recipe names must be distinct"):
        dataclasses.replace(compared, recipes=(FULL_RECIPE, FULL_RECIPE))


def _one_run(tiny_definition):
    return dataclasses.replace(
        tiny_definition, train_sparsities=(0.9,), seeds=(0,), families=(ModelFamily.SPARSE,)
    )


def test_saved_run_checkpoints_reproduce_their_rows_with_hpo_evaluate(
    tiny_definition, data_env, tmp_path
):
    """``--models``: every run's network is a checkpoint that ``hpo.evaluate`` scores to
    exactly the test accuracy the experiment recorded (same masks, same split)."""
    from hpo.checkpoints.evaluate import evaluate_checkpoint
    from hpo.experiments.runner import RunKey, checkpoint_name

    one = _one_run(tiny_definition)
    models = tmp_path / "models"
    rows = _rows(
        run_experiment(one, data_dir=None, out_dir=tmp_path / "r", device="cpu", models_dir=models)
    )
    key = RunKey("baseline", "sparse", 0.9, 0)
    path = models / checkpoint_name("tiny", key)
    assert path.name == "baseline-sparse-0.9-s0.pt"
    scores = evaluate_checkpoint(str(path), sparsities=[0.5, 0.9])
    recorded = {float(r["test_sparsity"]): float(r["accuracy"]) for r in rows}
    assert scores["0.5"]["accuracy"] == pytest.approx(recorded[0.5], abs=1e-9)
    assert scores["0.9"]["accuracy"] == pytest.approx(recorded[0.9], abs=1e-9)
    val = evaluate_checkpoint(str(path), split="val", sparsities=[0.9])["0.9"]["accuracy"]
    assert val == pytest.approx(float(rows[0]["val_accuracy"]), abs=1e-9)


def test_a_run_claimed_by_another_process_is_skipped(tiny_definition, data_env, tmp_path):
    """Two processes share one experiment: a run whose claim is held elsewhere is left to its
    holder; the others run, and their claim files are removed afterwards."""
    from hpo.experiments import runner

    two = dataclasses.replace(_one_run(tiny_definition), seeds=(0, 1))
    out = tmp_path / "results"
    out.mkdir()
    csv_path = out / "tiny_runs.csv"
    held = runner.RunKey("baseline", "sparse", 0.9, 1)
    with runner._claim(csv_path, held) as claimed:
        assert claimed
        run_experiment(two, data_dir=None, out_dir=out, device="cpu")
        with runner._claim(csv_path, held) as again:
            assert not again  # flock is per open file: a second holder is refused
    assert {r["seed"] for r in _rows(csv_path)} == {"0"}
    assert not list(out.glob(".*.lock"))
    run_experiment(two, data_dir=None, out_dir=out, device="cpu")  # the claim is free now
    assert sorted(r["seed"] for r in _rows(csv_path)) == ["0", "0", "1", "1"]
