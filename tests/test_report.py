"""``python -m hpo.report``, its charts and ``python -m hpo.dashboard`` on small studies."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from study_fixtures import DISTRIBUTIONS, StudyShape, make_study

from hpo import records
from hpo.records import TrialCounts
from hpo.reporting.charts import study_charts
from hpo.reporting.dashboard import main as dashboard_main
from hpo.reporting.report import main
from hpo.runtime.storage import StorageOptions, open_storage

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


def _axes(figure: dict) -> list[str]:
    return list(figure["layout"]["xaxis"]["ticktext"])


def _lines_follow_the_trials(figure: dict, trials: list, params: list[str]) -> bool:
    """Each trial's line passes its own values on the axes objective, ``params`` (hover text),
    and along every ordered axis the points rise with the trial's value."""

    def shown(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    by_text = {(shown(t.value), *(shown(t.params[p]) for p in params)): t for t in trials}
    lines = [t for t in figure["data"] if len(t.get("customdata") or ()) == len(params) + 1]
    texts = [tuple(text for _label, text in line["customdata"]) for line in lines]
    if sorted(texts) != sorted(by_text):
        return False
    matched = [(by_text[text], line) for text, line in zip(texts, lines, strict=True)]
    ordered = {0: lambda t: t.value}
    ordered.update({i: (lambda t, p=p: t.params[p]) for i, p in enumerate(params, 1)})
    del ordered[1 + params.index("activation")]  # names: no order
    for axis, key in ordered.items():
        ys = [line["y"][axis] for _trial, line in sorted(matched, key=lambda m: key(m[0]))]
        if ys != sorted(ys):
            return False
    return True


def test_parallel_coordinate_has_the_search_space_order(storage_url: str, tmp_path: Path) -> None:
    assert _report(storage_url, tmp_path, "--study", "sparse_mnist") == 0
    figure = _figure_from_html(tmp_path / "parallel_coordinate.html")
    objective = "validation accuracy @ sparsity 0.9"
    assert _axes(figure) == [objective, "depth", "activation", "batch size", "learning rate"]
    complete = _load(storage_url, "sparse_mnist").get_trials(states=(TrialState.COMPLETE,))
    order = ["depth", "activation", "batch_size", "lr"]
    assert _lines_follow_the_trials(figure, complete, order)
    # Control: Optuna's own figure sorts the axes by name, and the check sees it.
    plain = optuna.visualization.plot_parallel_coordinate(_load(storage_url, "sparse_mnist"))
    plain_json = json.loads(plain.to_json())
    assert _axes(plain_json)[1:] == ["activation", "batch_size", "depth", "lr"]
    assert not _lines_follow_the_trials(plain_json, complete, order)
    assert _lines_follow_the_trials(plain_json, complete, sorted(order))


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
        for key, metrics in trial.user_attrs[records.VAL_METRICS].items():
            assert float(row[f"val_accuracy@{key}"]) == metrics["accuracy"]
            assert float(row[f"val_mae@{key}"]) == metrics["mae"]
        assert int(row["n_params"]) == trial.user_attrs[records.N_PARAMS]
        assert float(row["train_seconds"]) == trial.user_attrs[records.TRAIN_SECONDS]

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
    val = top.user_attrs[records.VAL_METRICS]
    for key in ("0.5", "0.7", "0.8", "0.9"):
        assert f"{val[key]['accuracy']:.4f} / {val[key]['mae']:.4f}" in line
    assert f"{top.user_attrs[records.N_PARAMS]:,}" in line
    # Test figures of the best configuration, from the study's attributes.
    test = study.user_attrs[records.TEST_METRICS]
    for key in ("0.5", "0.9"):
        row = f"| {key} | {test[key]['accuracy']:.4f} | {test[key]['mae']:.4f} |"
        assert row in report
    assert "Still running: 1 trial(s)" in report


def test_learning_curves_are_every_trials_intermediate_values(storage_url: str) -> None:
    study = _load(storage_url, "sparse_mnist")
    chart = next(c for c in study_charts(study) if c.name == "learning_curves")
    drawn = sorted((tuple(t.x), tuple(t.y)) for t in chart.figure.data)
    reported = [t for t in study.get_trials() if t.intermediate_values]
    curves = [sorted(t.intermediate_values.items()) for t in reported]
    assert drawn == sorted((tuple(s for s, _ in c), tuple(v for _, v in c)) for c in curves)
    assert {t.state for t in reported} == {
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.RUNNING,
    }


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
    notices = [x for x in capsys.readouterr().out.splitlines() if "skipped" in x]
    assert len(notices) == 1 and "importances" in notices[0].lower()
    report = (tmp_path / "report.md").read_text()
    assert "param_importances.html" not in report and "learning_curves.html" in report
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
    sparse_test = sparse.user_attrs[records.TEST_METRICS]  # sparse: test figures stored
    dense_val = dense.best_trial.user_attrs[records.VAL_METRICS]  # dense: validation only
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


def test_history_ends_at_the_last_trial_that_ran_and_charts_name_parameters(
    storage_url: str,
) -> None:
    study = _load(storage_url, "dense_caltech101")  # 1 complete, 1 pruned, then a queued one
    charts = {c.name: c for c in study_charts(study)}
    assert list(charts["optimization_history"].figure.layout.xaxis.range) == [-0.5, 1.5]
    sparse = {c.name: c for c in study_charts(_load(storage_url, "sparse_mnist"))}
    importances = sparse["param_importances"].figure
    assert set(importances.data[0].y) == {"depth", "activation", "batch size", "learning rate"}
    for chart in sparse.values():
        assert chart.figure.layout.title.text.startswith("sparse_mnist: ")


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
    notices = [x for x in capsys.readouterr().out.splitlines() if "kaleido" in x]
    assert len(notices) == 1
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("kaleido") is None or not Path("/usr/bin/chromium").exists(),
    reason="static export needs kaleido and /usr/bin/chromium",
)
def test_png_written_when_kaleido_and_chromium_exist(storage_url: str, tmp_path: Path) -> None:
    assert main(["--storage", storage_url, "--out", str(tmp_path), "--study", "sparse_mnist"]) == 0
    names = ("parallel_coordinate", "optimization_history", "param_importances", "learning_curves")
    for name in names:
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (1100, 600)
        assert f"]({name}.png)" in (tmp_path / "report.md").read_text()


def test_study_without_a_record_gets_charts_with_default_labels() -> None:
    study = optuna.create_study(direction="maximize")  # made by hand: no stored record
    for value in (0.1, 0.2):
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params={"lr": 0.01, "depth": 3},
                distributions={k: DISTRIBUTIONS[k] for k in ("depth", "lr")},
            )
        )
    charts = {c.name: c for c in study_charts(study)}
    axes = charts["parallel_coordinate"].figure.layout.xaxis.ticktext
    assert list(axes) == [records.METRIC_NAME, "depth", "learning rate"]
    importances = charts["param_importances"]
    assert importances.figure is None  # no parameter varies
    assert importances.skipped and "\n" not in importances.skipped


@pytest.mark.parametrize(
    "modules",
    [
        "hpo.reporting.report, hpo.reporting.dashboard",
        "hpo.tuning.trial_loop",  # a restarted worker's loop starts without torch's import
    ],
)
def test_modules_that_need_no_torch_never_import_it(modules: str) -> None:
    code = f"import {modules}, sys; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True
    )
    assert done.stdout.strip() == "False"


def test_dashboard_on_a_missing_sqlite_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    done = subprocess.run(
        [sys.executable, "-m", "hpo.dashboard", "--storage", f"sqlite:///{missing}"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and str(missing) in done.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no artifact folder


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_dashboard_port_errors_are_one_line(storage_url: str, tmp_path: Path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--storage", storage_url, "--artifact-dir", str(tmp_path)]
        assert dashboard_main([*args, "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"127.0.0.1:{port}" in err
    assert dashboard_main([*args, "--port", "70000"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


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
