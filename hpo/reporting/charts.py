"""The charts of a study, drawn by ``optuna.visualization`` with our labels and axis order,
the comparison of studies (ours), and :func:`write_figures` (HTML, and PNG via Kaleido)."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import optuna.visualization as vis
import plotly.graph_objects as go
import plotly.offline
from optuna.trial import FrozenTrial

from studies import SearchSpace

from ..errors import one_line
from ..runtime.faults import NoSpaceError, is_disk_full
from ..runtime.files import written_whole
from .tables import ComparisonEntry, StudyInfo, completed_trials, param_names, study_info

_Drawn = tuple[go.Figure | None, str | None]  # a figure, or why the study cannot support it yet


@dataclass(frozen=True)
class Chart:
    """One chart of a study: its figure, or (``skipped``) why the study cannot support it yet."""

    name: str  # also the file stem
    title: str
    figure: go.Figure | None
    skipped: str | None = None


def study_charts(study: optuna.Study, info: StudyInfo | None = None) -> list[Chart]:
    """Every chart of ``study`` in report order, finished or still running."""
    info = info or study_info(study)
    complete = completed_trials(study)
    parallel = history = (None, "no completed trial yet")
    if complete:
        parallel, history = (_parallel(study, complete, info), None), (_history(study, info), None)
    importances = _importances(study, complete, info)
    charts = [
        Chart("parallel_coordinate", "Parallel coordinates", *parallel),
        Chart("optimization_history", "Optimization history", *history),
        Chart("param_importances", "Hyperparameter importances", *importances),
        Chart("learning_curves", "Learning curves (every trial)", *_learning_curves(study, info)),
    ]
    for chart in charts:
        if chart.figure is not None:
            chart.figure.update_layout(title={"text": f"{study.study_name}: {chart.title}"})
    return charts


def comparison_figure(entries: Sequence[ComparisonEntry]) -> go.Figure:
    """Accuracy vs test sparsity of the best model of each study, one line per study."""
    figure = go.Figure()
    for entry in entries:
        sparsities = [k for k in entry.info.sparsity_keys if k in entry.metrics]
        figure.add_scatter(
            x=[float(k) for k in sparsities],
            y=[entry.metrics[k].get("accuracy") for k in sparsities],
            mode="lines+markers",
            name=f"{entry.info.name} (trial {entry.trial_number}, {entry.source})",
        )
    ticks = sorted({float(k) for e in entries for k in e.metrics})
    figure.update_xaxes(title_text="sparsity (fraction of pixels missing)", tickvals=ticks)
    figure.update_yaxes(title_text="accuracy")
    sources = " / ".join(sorted({e.source for e in entries}))
    title = f"Best model per study: accuracy vs missing-pixel fraction ({sources} figures)"
    return figure.update_layout(title=title)


def write_figures(
    figures: Mapping[str, go.Figure], out: Path, png: bool = True
) -> tuple[list[Path], str | None]:
    """``<stem>.html`` and ``.png`` per figure; returns the files and why PNGs were skipped."""
    if not figures:
        return [], None
    written = [out / f"{stem}.html" for stem in figures]
    # Written whole here, so plotly (which copies it only where none exists) never leaves half
    # of one that every later report would keep.
    with written_whole(out / "plotly.min.js") as tmp:
        tmp.write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
    for figure, path in zip(figures.values(), written, strict=True):
        with written_whole(path) as tmp:
            figure.write_html(tmp, include_plotlyjs="directory")  # plotly.min.js beside
    written.append(out / "plotly.min.js")
    if not png:
        return written, None
    if importlib.util.find_spec("kaleido") is None:
        return written, (
            "static PNGs skipped: kaleido is not installed "
            "(pip install kaleido, plus Chrome or Chromium; see README 'Looking at results')"
        )
    import plotly.io as pio

    pngs = [out / f"{stem}.png" for stem in figures]
    width = [f.layout.width or 1100 for f in figures.values()]
    height = [f.layout.height or 600 for f in figures.values()]
    try:
        pio.write_images(list(figures.values()), pngs, width=width, height=height)
    except (RuntimeError, OSError, ValueError) as e:
        if is_disk_full(e):
            raise NoSpaceError(f"the PNG charts in {out}") from e
        why = one_line(e)
        return written, f"static PNGs skipped: {why} (needs Chrome or Chromium; set BROWSER_PATH)"
    return written + pngs, None


def _parallel(study: optuna.Study, complete: list[FrozenTrial], info: StudyInfo) -> go.Figure:
    names = param_names(complete, info.param_order)
    figure = vis.plot_parallel_coordinate(study, params=names, target_name=info.objective_label)
    # Optuna draws the objective's axis at x = 0, then the parameters' sorted by name, and one
    # line per trial through them; reorder each line's points (and the tick labels) to the
    # search space's order. A figure of another shape is left as Optuna drew it.
    by_name = sorted(names)
    if list(figure.layout.xaxis.ticktext or ())[1:] != by_name:
        return figure
    axis = [0, *(1 + by_name.index(p) for p in names)]  # position i shows Optuna's axis axis[i]
    for trace in figure.data:  # the lines carry hover data; the colour bar's trace does not
        if trace.customdata is not None and len(trace.customdata) == len(axis):
            trace.y = [trace.y[a] for a in axis]
            trace.customdata = [trace.customdata[a] for a in axis]
    for note in figure.layout.annotations:
        note.x = axis.index(note.x)
    figure.update_xaxes(ticktext=[info.objective_label, *map(SearchSpace.label, names)])
    return figure


def _history(study: optuna.Study, info: StudyInfo) -> go.Figure:
    figure = vis.plot_optimization_history(study, target_name=info.objective_label)
    # Optuna's best-value line runs on through the queued grid points; end at the last that ran.
    last = max(t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished())
    figure.update_xaxes(range=[-0.5, last + 0.5], tick0=0, dtick=max(1, math.ceil(last / 10)))
    return figure


def _importances(study: optuna.Study, complete: list[FrozenTrial], info: StudyInfo) -> _Drawn:
    if len(complete) < 2:
        return None, f"needs >= 2 completed trials, have {len(complete)}"
    names = param_names(complete, info.param_order)
    varied = [p for p in names if len({repr(t.params.get(p)) for t in complete}) > 1]
    if not varied:
        return None, "the completed trials all share the same parameters"
    try:
        figure = vis.plot_param_importances(study, params=varied, target_name=info.objective_label)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return None, f"Optuna could not compute importances: {one_line(e)}"
    for trace in figure.data:
        trace.y = [SearchSpace.label(str(name)) for name in trace.y]
    figure.update_yaxes(ticksuffix="  ", automargin=True)  # room between a name and its bar
    return figure, None


def _learning_curves(study: optuna.Study, info: StudyInfo) -> _Drawn:
    if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        return None, "no trial reported per-epoch accuracy yet"
    figure = vis.plot_intermediate_values(study)
    figure.update_xaxes(title={"text": "epoch"}, dtick=1)
    figure.update_yaxes(title={"text": info.objective_label})
    return figure, None
