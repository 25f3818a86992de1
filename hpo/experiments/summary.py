"""An experiment's summary, from its rows: mean +/- std tables, invariance matrices, figures."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studies.experiments import ExperimentDefinition

from ..reporting import charts
from ..reporting.markdown import table_row
from .rows import Rows

Cells = dict[tuple[str, float, float], dict[str, list[float]]]  # (family, train, test) -> per seed


def summarize(
    definition: ExperimentDefinition, rows: Rows, out_dir: Path, png: bool = True
) -> Path:
    """Rewrite ``<name>.md`` and the figures from the rows of the definition's recipes."""
    recipes = [r.name for r in definition.recipes]
    rows = [r for r in rows if r["recipe"] in recipes]
    families = [str(f) for f in definition.families]
    lines = [f"# {definition.name}", "", definition.description, ""]
    md_path = out_dir / f"{definition.name}.md"
    if len(recipes) > 1:
        md_path.write_text("\n".join(lines + _recipes_md(definition, rows, families)) + "\n")
        return md_path
    cells = cells_of(rows)
    lines += [f"Training recipe: {definition.recipes[0].describe()}.", ""]
    lines += _diagonal_md(definition, cells, families)
    if len(definition.test_sparsities) > 1:  # one row per training sparsity
        lines += _matrices_md(definition, cells, families)
    md_path.write_text("\n".join(lines) + "\n")
    figures = []
    if len(definition.train_sparsities) > 1 or len(families) > 1:  # one point plots nothing
        figures.append(("accuracy", plot_diagonal(definition, cells, families)))
    if len(definition.train_sparsities) > 1:
        figures.append(("invariance", plot_heatmaps(definition, cells, families)))
    write_figures(figures, out_dir, definition.name, png)
    return md_path


def cells_of(rows: Rows) -> Cells:
    cells: Cells = {}
    for row in rows:
        key = (row["family"], float(row["train_sparsity"]), float(row["test_sparsity"]))
        cell = cells.setdefault(key, {"accuracy": [], "mae": []})
        cell["accuracy"].append(float(row["accuracy"]))
        cell["mae"].append(float(row["mae"]))
    return cells


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _diagonal_md(definition: ExperimentDefinition, cells: Cells, families: list[str]) -> list[str]:
    head = table_row(["sparsity", *(f"{f} accuracy | {f} MAE" for f in families)])
    lines = ["## Train sparsity = test sparsity (test split, mean +/- std over seeds)", ""]
    lines += [head, "|---|" + "---|---|" * len(families)]
    for s in definition.train_sparsities:
        out = [f"{s:g}"]
        for cell in (cells.get((f, s, s)) for f in families):
            if cell is None:
                out += ["(pending)", "(pending)"]
                continue
            mae, sd = mean_std(cell["mae"])
            out += [_pct(cell["accuracy"]), f"{mae:.4f} +/- {sd:.4f}"]
        lines.append(table_row(out))
    return lines + [""]


def _matrices_md(definition: ExperimentDefinition, cells: Cells, families: list[str]) -> list[str]:
    trains, tests = definition.train_sparsities, definition.test_sparsities
    lines = ["## Invariance: test accuracy (%) when train and test sparsity differ", ""]
    for f in families:
        mean = {k[1:]: mean_std(c["accuracy"])[0] for k, c in cells.items() if k[0] == f}
        lines += [f"### {f}", "", table_row(["train \\ test", *(f"{t:g}" for t in tests)])]
        lines.append("|---|" + "---|" * len(tests))
        for s in trains:
            out = [f"{100 * mean[s, t]:.2f}" if (s, t) in mean else "-" for t in tests]
            lines.append(table_row([f"{s:g}", *out]))
        drops = [
            f"train {s:g} -> test {t:g}: {100 * (mean[t, t] - mean[s, t]):+.2f}"
            for s in trains for t in tests if s != t and (t, t) in mean and (s, t) in mean
        ]  # fmt: skip
        lines.append("")
        if drops:
            why = "points; positive = worse than training at the test sparsity"
            head = f"Accuracy drop vs the model trained at the test sparsity ({why}): "
            lines += [head + "; ".join(drops), ""]
    return lines


def _recipes_md(definition: ExperimentDefinition, rows: Rows, families: list[str]) -> list[str]:
    """Recipes side by side at the training sparsity: validation (which ranks them) and test;
    "all" pools every family and seed, "change" is its difference from the baseline recipe."""
    s = definition.train_sparsities[0]
    header = [f"{f} val" for f in families] + ["all val", "change", "all test"]
    ranks = "validation accuracy % (ranks), test accuracy % (reports)"
    lines = [f"## Recipes at sparsity {s:g}: {ranks}", "", table_row(["recipe", *header])]
    lines.append("|---|" + "---:|" * len(header))
    at_s = {r.name: [x for x in rows if x["recipe"] == r.name and float(x["test_sparsity"]) == s]
            for r in definition.recipes}  # fmt: skip
    reference_name = "baseline" if "baseline" in at_s else definition.recipes[0].name
    reference = _val(at_s[reference_name])
    for name, mine in at_s.items():
        if not mine:
            lines.append(table_row([name, *["(pending)"] * len(header)]))
            continue
        out = [_pct(_val([r for r in mine if r["family"] == f])) for f in families]
        pooled, change = _val(mine), ""
        if reference and pooled and name != reference_name:
            change = f"{100 * (statistics.fmean(pooled) - statistics.fmean(reference)):+.2f}"
        out += [_pct(pooled), change, _pct([float(r["accuracy"]) for r in mine])]
        lines.append(table_row([name, *out]))
    lines += ["", "Recipes:", ""] + [f"- {r.describe()}" for r in definition.recipes]
    return lines + [""]


def _val(rows: Rows) -> list[float]:
    """Validation accuracies of ``rows`` (rows written before it was recorded have none)."""
    return [float(r["val_accuracy"]) for r in rows if r["val_accuracy"] not in ("", None)]


def _pct(values: list[float]) -> str:
    if not values:
        return "-"
    mean, sd = mean_std(values)
    return f"{100 * mean:.2f} +/- {100 * sd:.2f} (n={len(values)})"


def plot_diagonal(definition: ExperimentDefinition, cells: Cells, families: list[str]) -> go.Figure:
    """Test accuracy (mean +/- std over seeds) per family where train = test sparsity."""
    fig = go.Figure()
    for f in families:
        points = [(s, mean_std(cells[f, s, s]["accuracy"])) for s in definition.train_sparsities
                  if (f, s, s) in cells]  # fmt: skip
        fig.add_scatter(
            x=[s for s, _ in points],
            y=[100 * m for _, (m, _) in points],
            error_y={"array": [100 * sd for _, (_, sd) in points]},
            mode="lines+markers",
            name=f,
        )
    fig.update_layout(title=definition.name, width=600, height=420, template="plotly_white")
    fig.update_layout(xaxis_title="sparsity (train = test)", yaxis_title="test accuracy (%)")
    return fig


def plot_heatmaps(definition: ExperimentDefinition, cells: Cells, families: list[str]) -> go.Figure:
    """Test accuracy per (train, test) sparsity; below, the drop vs training at the test one."""
    trains, tests = definition.train_sparsities, definition.test_sparsities
    own_tests = [t for t in tests if t in trains]
    titles = [f"{f}: accuracy" for f in families] + [f"{f}: drop" for f in families]
    fig = make_subplots(rows=2, cols=len(families), subplot_titles=titles, vertical_spacing=0.15)
    for col, f in enumerate(families, 1):
        acc = [[_mean(cells, f, s, t) for t in tests] for s in trains]
        drop = [[_mean(cells, f, t, t) - _mean(cells, f, s, t) for t in own_tests] for s in trains]
        fig.add_trace(_heatmap(acc, trains, tests, "coloraxis", "%{z:.0f}"), row=1, col=col)
        fig.add_trace(_heatmap(drop, trains, own_tests, "coloraxis2", "%{z:+.1f}"), row=2, col=col)
    bar = {"len": 0.4}
    fig.update_layout(
        width=380 * len(families) + 160, height=720, template="plotly_white",
        coloraxis={"cmin": 0, "cmax": 100, "colorscale": "Viridis",
                   "colorbar": {**bar, "y": 0.8, "title": {"text": "test accuracy (%)"}}},
        coloraxis2={"cmin": -15, "cmax": 15, "colorscale": "RdBu", "reversescale": True,
                    "colorbar": {**bar, "y": 0.2, "title": {"text": "points lost"}}},
    )  # fmt: skip
    fig.update_xaxes(type="category")
    fig.update_xaxes(title="test sparsity", row=2)
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_yaxes(title="train sparsity", col=1)
    return fig


def _mean(cells: Cells, family: str, train: float, test: float) -> float:
    """Mean test accuracy (%) of a cell; NaN where no run finished (a blank square)."""
    cell = cells.get((family, train, test))
    return 100 * mean_std(cell["accuracy"])[0] if cell else math.nan


def _heatmap(grid, rows, cols, coloraxis: str, text: str) -> go.Heatmap:
    z = [[None if math.isnan(v) else v for v in row] for row in grid]
    x, y = [f"{t:g}" for t in cols], [f"{s:g}" for s in rows]
    return go.Heatmap(z=z, x=x, y=y, coloraxis=coloraxis, texttemplate=text)


def write_figures(
    figures: Sequence[tuple[str, go.Figure]], out_dir: Path, name: str, png: bool = True
) -> None:
    """``<name>_<kind>.html`` and ``.png`` per figure; one line says why if the PNGs cannot be."""
    named = {f"{name}_{kind}": f for kind, f in figures}
    _, notice = charts.write_figures(named, out_dir, png)
    if notice:
        print(notice)
