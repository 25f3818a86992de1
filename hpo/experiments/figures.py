"""The figures of an experiment: accuracy vs sparsity, and invariance heatmaps (plotly).

Plotly, as the study report's charts: an HTML page each (``include_plotlyjs="directory"``:
one ``plotly.min.js`` beside them, not 4 MB in every page) and a PNG when Kaleido can drive a
Chrome or Chromium; without one the HTML is still written and one line says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studies.experiments import ExperimentDefinition

from ..errors import one_line
from .rows import Cells, mean_std

__all__ = ["plot_diagonal", "plot_invariance", "write_figures"]


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
    fig.update_xaxes(title="sparsity (train = test)")
    fig.update_yaxes(title="test accuracy (%)")
    return fig


def plot_invariance(
    definition: ExperimentDefinition, cells: Cells, families: list[str]
) -> go.Figure:
    """Top row: test accuracy per (train, test) sparsity; bottom row: the drop vs training at
    the test sparsity (only for test sparsities that are also training sparsities)."""
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
        width=380 * len(families) + 160,
        height=720,
        template="plotly_white",
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
    return go.Heatmap(
        z=z, x=[f"{t:g}" for t in cols], y=[f"{s:g}" for s in rows],
        coloraxis=coloraxis, texttemplate=text,
    )  # fmt: skip


def write_figures(figures: Sequence[tuple[str, go.Figure]], out_dir: Path, name: str) -> None:
    """``<name>_<kind>.html`` for each figure, and the PNGs in one Kaleido session if it can."""
    if not figures:
        return
    for kind, fig in figures:
        fig.write_html(out_dir / f"{name}_{kind}.html", include_plotlyjs="directory")
    try:
        import plotly.io as pio

        figs, paths = [f for _, f in figures], [out_dir / f"{name}_{k}.png" for k, _ in figures]
        sizes = {"width": [f.layout.width for f in figs], "height": [f.layout.height for f in figs]}
        pio.write_images(figs, paths, **sizes)
    except (ImportError, RuntimeError, OSError, ValueError) as e:
        print(f"PNG figures skipped: {one_line(e)} (needs kaleido and Chrome or Chromium)")
