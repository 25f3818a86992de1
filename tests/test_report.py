"""``python -m hpo.report``, the charts and ``attach_to_dashboard`` on small synthetic studies."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import socket
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from study_fixtures import DISTRIBUTIONS, StudyShape, make_study

from hpo.reporting.charts import study_charts
from hpo.reporting.dashboard import attach_to_dashboard
from hpo.reporting.dashboard import main as dashboard_main
from hpo.reporting.report import main
from hpo.runtime import optuna_compat
from hpo.runtime.storage import StorageOptions, open_storage
from hpo.tuning import keys
from hpo.tuning.budget import TrialCounts

STUDY_FILES = {
    "report.md",
    "trials.csv",
    "best_trials.csv",
    "parallel_coordinate.html",
    "optimization_history.html",
    "param_importances.html",
    "learning_curves.html",
    "plotly.min.js",
}
NO_HEARTBEAT = StorageOptions(heartbeat_interval=None, grace_period=None)


@pytest.fixture(scope="module")
def storage_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite file with a finished sparse study, a dense one without test figures, an
    empty one and one with a single completed trial (built once: tests only read it)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'hpo.db'}"
    storage = open_storage(url, NO_HEARTBEAT)
    make_study(storage, "sparse_mnist", seed=1)
    make_study(
        storage,
        "dense_mnist",
        seed=2,
        shape=StudyShape(test_metrics=False),
        base_accuracy=0.7,
        overrides={"epochs": 2, "train_size": 1024},  # a quick study
    )
    make_study(storage, "sparse_caltech101", shape=StudyShape(0, 0, 0, 0, False))
    one = make_study(storage, "dense_caltech101", shape=StudyShape(1, 1, 0, 0, False))
    one.enqueue_trial({"depth": 3, "activation": "elu", "batch_size": 64, "lr": 0.01})
    return url


def _load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url, NO_HEARTBEAT))


def _figure_from_html(path: Path) -> dict:
    """The figure (data + layout) that plotly embedded in ``path``, parsed as JSON."""
    text = path.read_text(encoding="utf-8")
    start = text.index('"', text.index("Plotly.newPlot("))
    decoder = json.JSONDecoder()
    _div_id, end = decoder.raw_decode(text, start)
    data, end = decoder.raw_decode(text, text.index("[", end))
    layout, _ = decoder.raw_decode(text, text.index("{", end))
    return {"data": data, "layout": layout}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _report(url: str, out: Path, *args: str) -> int:
    return main(["--storage", url, "--out", str(out), "--no-png", *args])


def test_report_writes_every_file(storage_url: str, tmp_path: Path, capsys) -> None:
    assert _report(storage_url, tmp_path, "--study", "sparse_mnist") == 0
    assert STUDY_FILES <= {p.name for p in tmp_path.iterdir()}
    for name in STUDY_FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    out = capsys.readouterr().out
    assert f"to {tmp_path}" in out and "report.md" in out


def test_parallel_coordinate_holds_the_four_parameters(storage_url: str, tmp_path: Path) -> None:
    assert _report(storage_url, tmp_path, "--study", "sparse_mnist") == 0
    figure = _figure_from_html(tmp_path / "parallel_coordinate.html")
    (trace,) = figure["data"]
    assert trace["type"] == "parcoords"
    dims = {d["label"].split(" (")[0]: d for d in trace["dimensions"]}
    assert list(dims)[:4] == ["depth", "activation", "batch size", "learning rate"]
    assert list(dims)[4] == "val accuracy @ sparsity 0.9"

    complete = _load(storage_url, "sparse_mnist").get_trials(states=(TrialState.COMPLETE,))
    assert dims["depth"]["values"] == [t.params["depth"] for t in complete]
    # Activation by name: the tick labels are the names, each line sits on its trial's name.
    act = dims["activation"]
    names = [act["ticktext"][act["tickvals"].index(v)] for v in act["values"]]
    assert names == [t.params["activation"] for t in complete]
    assert set(act["ticktext"]) == {"relu", "leaky_relu", "elu"}
    # Batch size: one tick per choice, ascending.
    batch = dims["batch size"]
    sizes = [int(batch["ticktext"][batch["tickvals"].index(v)]) for v in batch["values"]]
    assert sizes == [t.params["batch_size"] for t in complete]
    assert batch["ticktext"] == ["32", "64", "128", "256"]
    # Learning rate: log10 on the axis, real values on the tick labels.
    lr = dims["learning rate"]
    assert lr["label"] == "learning rate (log scale)"
    assert lr["values"] == pytest.approx([math.log10(t.params["lr"]) for t in complete])
    assert lr["range"] == pytest.approx([-4, -1])
    assert [float(x) for x in lr["ticktext"]] == pytest.approx([10**v for v in lr["tickvals"]])
    assert "0.001" in lr["ticktext"]
    objective = dims["val accuracy @ sparsity 0.9"]
    assert objective["values"] == pytest.approx([t.value for t in complete])
    assert trace["line"]["color"] == pytest.approx([t.value for t in complete])


def test_tables_match_the_storage(storage_url: str, tmp_path: Path) -> None:
    assert _report(storage_url, tmp_path, "--study", "sparse_mnist", "--top", "3") == 0
    study = _load(storage_url, "sparse_mnist")
    trials = study.get_trials()
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)

    rows = _read_csv(tmp_path / "trials.csv")
    assert [int(r["trial"]) for r in rows] == [t.number for t in trials]
    assert [r["state"] for r in rows] == [t.state.name for t in trials]

    best = _read_csv(tmp_path / "best_trials.csv")
    assert [int(r["trial"]) for r in best] == [t.number for t in complete[:3]]
    for row, trial in zip(best, complete, strict=False):
        assert float(row["value"]) == trial.value  # exact: CSV holds repr of the stored float
        assert int(row["depth"]) == trial.params["depth"]
        assert row["activation"] == trial.params["activation"]
        assert int(row["batch_size"]) == trial.params["batch_size"]
        assert float(row["lr"]) == trial.params["lr"]
        for key, metrics in trial.user_attrs[keys.VAL_METRICS].items():
            assert float(row[f"val_accuracy@{key}"]) == metrics["accuracy"]
            assert float(row[f"val_mae@{key}"]) == metrics["mae"]
        assert int(row["n_params"]) == trial.user_attrs[keys.N_PARAMS]
        assert float(row["train_seconds"]) == trial.user_attrs[keys.TRAIN_SECONDS]

    report = (tmp_path / "report.md").read_text()
    # Counts: 6 complete, 2 pruned, 2 failed, 1 running (the fixture's shape).
    for state, n in [("COMPLETE", 6), ("PRUNED", 2), ("FAIL", 2), ("RUNNING", 1)]:
        assert f"| {state} | {n} |" in report
    # Failure reasons, grouped with numbers blanked: both pruned trials fall into one group.
    assert "| PRUNED | pruned after epoch #: val accuracy # | 2: 6, 7 |" in report
    assert "CUDA out of memory while training" in report
    # The best trials table: first row is the best trial with its stored numbers.
    top = complete[0]
    line = next(x for x in report.splitlines() if x.startswith(f"| 1 | {top.number} |"))
    assert f"{top.value:.4f}" in line
    val = top.user_attrs[keys.VAL_METRICS]
    for key in ("0.5", "0.7", "0.8", "0.9"):
        assert f"{val[key]['accuracy']:.4f} / {val[key]['mae']:.4f}" in line
    assert f"{top.user_attrs[keys.N_PARAMS]:,}" in line
    # Test figures of the best configuration, from the study's attributes.
    test = study.user_attrs[keys.TEST_METRICS]
    for key in ("0.5", "0.9"):
        row = f"| {key} | {test[key]['accuracy']:.4f} | {test[key]['mae']:.4f} |"
        assert row in report
    assert "Still running: 1 trial(s)" in report


def test_learning_curves_are_the_best_trials_intermediate_values(storage_url: str) -> None:
    study = _load(storage_url, "sparse_mnist")
    charts = {c.name: c for c in study_charts(study, top=2)}
    best = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: -t.value)[:2]
    traces = charts["learning_curves"].figure.data
    assert len(traces) == 2
    for trace, trial in zip(traces, best, strict=True):
        assert list(trace.x) == sorted(trial.intermediate_values)
        assert list(trace.y) == [trial.intermediate_values[s] for s in trace.x]
        assert f"trial {trial.number}" in trace.name


def test_study_without_test_figures_says_so(storage_url: str, tmp_path: Path) -> None:
    assert _report(storage_url, tmp_path, "--study", "dense_mnist") == 0
    report = (tmp_path / "report.md").read_text()
    assert "Not scored on the test split yet" in report


def test_trial_of_a_dead_worker_is_explained(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dead.db'}"
    study = make_study(
        url, "sparse_mnist", shape=StudyShape(complete=2, pruned=0, failed=0, running=0)
    )
    # What heartbeat expiry leaves behind: FAIL, no reason (the worker died before writing one).
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params={"depth": 3},
            distributions={"depth": DISTRIBUTIONS["depth"]},
        )
    )
    assert _report(url, tmp_path / "out", "--study", "sparse_mnist") == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| FAIL | no reason recorded: the worker stopped mid-trial" in report


def test_empty_study_reports_no_trials(storage_url: str, tmp_path: Path, capsys) -> None:
    assert _report(storage_url, tmp_path, "--study", "sparse_caltech101") == 0
    report = (tmp_path / "report.md").read_text()
    assert "no trials yet" in report
    assert not list(tmp_path.glob("*.html"))
    lines = (tmp_path / "trials.csv").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trial,state,phase,value")  # header only
    assert "no trials yet" in capsys.readouterr().out


def test_one_complete_trial_skips_importances_only(
    storage_url: str, tmp_path: Path, capsys
) -> None:
    assert _report(storage_url, tmp_path, "--study", "dense_caltech101") == 0
    html = {p.name for p in tmp_path.glob("*.html")}
    assert html == {
        "parallel_coordinate.html",
        "optimization_history.html",
        "learning_curves.html",
    }
    out = capsys.readouterr().out
    assert "chart skipped: Hyperparameter importances: needs >= 2 completed trials, have 1" in out
    report = (tmp_path / "report.md").read_text()
    assert "Hyperparameter importances: skipped" in report
    assert "1 queued trial(s) not started yet" in report and "Still running" not in report


def test_unknown_study_lists_the_studies(storage_url: str, tmp_path: Path, capsys) -> None:
    assert _report(storage_url, tmp_path / "x", "--study", "sparse_mnsit") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no study named 'sparse_mnsit'" in err
    assert "studies there: dense_caltech101, dense_mnist, sparse_caltech101, sparse_mnist" in err
    assert not (tmp_path / "x").exists()


def test_missing_sqlite_file_is_an_error_not_a_new_database(tmp_path: Path, capsys) -> None:
    db = tmp_path / "nope.db"
    assert _report(f"sqlite:///{db}", tmp_path / "out", "--study", "sparse_mnist") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"no study storage at {db}" in err
    assert not db.exists()


def test_compare_puts_best_models_side_by_side(storage_url: str, tmp_path: Path) -> None:
    assert _report(storage_url, tmp_path, "--compare", "sparse_mnist", "dense_mnist") == 0
    sparse, dense = _load(storage_url, "sparse_mnist"), _load(storage_url, "dense_mnist")
    sparse_test = sparse.user_attrs[keys.TEST_METRICS]  # sparse: test figures stored
    dense_val = dense.best_trial.user_attrs[keys.VAL_METRICS]  # dense: validation only
    table = (tmp_path / "comparison.md").read_text()
    assert "sparse_mnist accuracy (test)" in table and "dense_mnist accuracy (validation)" in table
    assert "different splits" in table
    for key in ("0.5", "0.7", "0.8", "0.9"):
        a, b = sparse_test[key]["accuracy"], dense_val[key]["accuracy"]
        assert f"| {key} | {a:.4f} | {sparse_test[key]['mae']:.4f} | {b:.4f} |" in table
        assert f"{a - b:+.4f} |" in table
    figure = _figure_from_html(tmp_path / "comparison.html")
    by_name = {t["name"].split(" ")[0]: t for t in figure["data"]}
    assert by_name["sparse_mnist"]["x"] == [0.5, 0.7, 0.8, 0.9]
    assert by_name["sparse_mnist"]["y"] == pytest.approx(
        [sparse_test[k]["accuracy"] for k in ("0.5", "0.7", "0.8", "0.9")]
    )
    assert by_name["dense_mnist"]["y"] == pytest.approx(
        [dense_val[k]["accuracy"] for k in ("0.5", "0.7", "0.8", "0.9")]
    )


def test_reports_say_what_budget_a_study_ran_with(storage_url: str, tmp_path: Path) -> None:
    assert _report(storage_url, tmp_path / "sparse", "--study", "sparse_mnist") == 0
    sparse = (tmp_path / "sparse" / "report.md").read_text()
    assert "- Budget: 10 epochs x all training images, 2,000 validation images per trial, " in (
        sparse
    )
    assert "overridden" not in sparse
    assert _report(storage_url, tmp_path / "dense", "--study", "dense_mnist") == 0
    dense = (tmp_path / "dense" / "report.md").read_text()
    assert "- Budget: 2 epochs x 1,024 training images, 2,000 validation images per trial, " in (
        dense
    )
    assert "(overridden on the command line: --epochs 2 --train-size 1024)" in dense
    assert _report(storage_url, tmp_path / "cmp", "--compare", "sparse_mnist", "dense_mnist") == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    counts = TrialCounts.of(_load(storage_url, "dense_mnist").get_trials())
    line = next(x for x in table.splitlines() if x.startswith("- `dense_mnist`"))
    assert f"{counts.total} trials ({counts.complete} complete, {counts.pruned} pruned" in line
    assert "budget: 2 epochs x 1,024 training images" in line


def test_history_ends_at_the_last_trial_that_ran_and_headings_count_what_is_drawn(
    storage_url: str,
) -> None:
    study = _load(storage_url, "dense_caltech101")  # 1 complete, 1 pruned, then a queued one
    charts = {c.name: c for c in study_charts(study)}
    assert list(charts["optimization_history"].figure.layout.xaxis.range) == [-0.5, 1.5]
    assert charts["learning_curves"].title == "Learning curve of the best trial"
    sparse = {c.name: c for c in study_charts(_load(storage_url, "sparse_mnist"), top=3)}
    assert sparse["learning_curves"].title == "Learning curves of the best 3 trials"
    importances = sparse["param_importances"].figure
    assert set(importances.data[0].y) <= {"depth", "activation", "batch size", "learning rate"}


def test_compare_errors_are_one_line(storage_url: str, tmp_path: Path, capsys) -> None:
    assert _report(storage_url, tmp_path, "--compare", "sparse_mnist", "sparse_caltech101") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "'sparse_caltech101' has no completed trial yet" in err
    assert _report(storage_url, tmp_path, "--compare", "sparse_mnist") == 2
    assert "at least two" in capsys.readouterr().err


def test_png_skipped_with_one_line_without_kaleido(
    storage_url: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "kaleido", None)  # find_spec() now says "not installed"
    assert main(["--storage", storage_url, "--out", str(tmp_path), "--study", "dense_mnist"]) == 0
    out = capsys.readouterr().out
    assert "static PNGs skipped: kaleido is not installed (pip install kaleido" in out
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("kaleido") is None or not Path("/usr/bin/chromium").exists(),
    reason="static export needs kaleido and /usr/bin/chromium",
)
def test_png_written_when_kaleido_and_chromium_exist(storage_url: str, tmp_path: Path) -> None:
    assert main(["--storage", storage_url, "--out", str(tmp_path), "--study", "sparse_mnist"]) == 0
    for name in ("parallel_coordinate", "optimization_history", "param_importances"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (1100, 600)
    assert "![Parallel coordinates" in (tmp_path / "report.md").read_text()


def test_attach_to_dashboard_replaces_instead_of_piling_up(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    study = make_study(storage, "sparse_mnist", seed=3)

    def plot_ids() -> set[str]:
        attrs = optuna_compat.study_system_attrs(study)
        return {k.split(":")[2] for k in attrs if k.startswith("dashboard:plot_data:")}

    attach_to_dashboard(study)
    first = dict(optuna_compat.study_system_attrs(study))
    attach_to_dashboard(study)
    assert plot_ids() == {
        "parallel_coordinate",
        "optimization_history",
        "param_importances",
        "learning_curves",
    }
    assert optuna_compat.study_system_attrs(study).keys() == first.keys()
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    graphs = get_plotly_graph_objects(optuna_compat.study_system_attrs(study))
    parcoords = json.loads(graphs["parallel_coordinate"])
    assert parcoords["data"][0]["type"] == "parcoords"


def test_attach_to_dashboard_is_safe_on_small_studies() -> None:
    storage = optuna.storages.InMemoryStorage()
    empty = make_study(storage, "sparse_mnist", shape=StudyShape(0, 0, 0, 0, False))
    attach_to_dashboard(empty)
    assert not optuna_compat.study_system_attrs(empty)
    one = make_study(storage, "dense_mnist", shape=StudyShape(1, 2, 1, 0, True))
    attach_to_dashboard(one)
    ids = {k.split(":")[2] for k in optuna_compat.study_system_attrs(one)}
    assert ids == {"parallel_coordinate", "optimization_history", "learning_curves"}


def test_importances_skipped_when_no_parameter_varies() -> None:
    study = optuna.create_study(direction="maximize")
    for value in (0.1, 0.2):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"depth": 3, "lr": 0.01},
                distributions={k: DISTRIBUTIONS[k] for k in ("depth", "lr")},
            )
        )
    chart = next(c for c in study_charts(study) if c.name == "param_importances")
    assert chart.figure is None
    assert chart.skipped == "the completed trials all share the same parameters"


def test_dashboard_cli_errors_are_one_line(storage_url: str, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.db"
    assert dashboard_main(["--storage", f"sqlite:///{missing}", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no study storage at" in err
    assert not missing.exists()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = dashboard_main(
            ["--storage", storage_url, "--port", str(port), "--artifact-dir", str(tmp_path)]
        )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err and "pick another --port" in err


@pytest.mark.postgres
def test_report_and_compare_on_postgresql(postgres_url: str, tmp_path: Path, capsys) -> None:
    storage = open_storage(postgres_url, NO_HEARTBEAT)
    make_study(storage, "sparse_mnist", seed=1)
    make_study(storage, "dense_mnist", seed=2)
    assert _report(postgres_url, tmp_path / "one", "--study", "sparse_mnist") == 0
    rows = _read_csv(tmp_path / "one" / "trials.csv")
    assert len(rows) == len(_load(postgres_url, "sparse_mnist").get_trials())
    assert _report(postgres_url, tmp_path / "two", "--compare", "sparse_mnist", "dense_mnist") == 0
    assert "dense_mnist accuracy (test)" in (tmp_path / "two" / "comparison.md").read_text()
    assert _report(postgres_url, tmp_path / "x", "--study", "nope") == 2
    err = capsys.readouterr().err
    assert "studies there: dense_mnist, sparse_mnist" in err
    assert _password_of(postgres_url) not in err  # the password is masked


def _password_of(url: str) -> str:
    return sqlalchemy.engine.make_url(url).password or "<no password>"
