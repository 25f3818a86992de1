"""Plotly figures of a study, written as HTML (and PNG when possible) or shown on the dashboard.

* **Parallel coordinates** of depth, activation, batch size and learning rate against the
  objective, the seed work's one figure. Built with ``go.Parcoords`` directly rather than
  ``optuna.visualization.plot_parallel_coordinate`` so that every axis is readable on its own
  terms: activation is drawn by *name* (``ticktext``), a numeric categorical such as batch size
  gets one evenly spaced tick per choice, and the learning rate is plotted as ``log10(lr)`` with
  tick labels in real values (``0.001``), because a linear lr axis squeezes three decades into
  its bottom tenth.
* **Optimization history** and **hyperparameter importances** come from
  ``optuna.visualization`` (importances with Optuna's default PED-ANOVA evaluator, which needs no
  scikit-learn); importances need two completed trials that differ in some parameter.
* **Learning curves**: validation accuracy per epoch (the trials' intermediate values) of the
  best few completed trials, to see whether the epoch budget was enough.

Static PNGs use plotly's Kaleido engine, which drives a local Chrome/Chromium; it is optional
(``pip install kaleido``), and :func:`write_pngs` says in one line why it skipped if it cannot.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial

from studies import SearchSpace

from ..errors import one_line
from .tables import ComparisonEntry
from .trials import StudyInfo, best_trials, completed_trials, param_names, study_info

__all__ = [
    "Chart",
    "comparison_figure",
    "learning_curves_figure",
    "parallel_coordinate_figure",
    "study_charts",
    "write_html",
    "write_pngs",
]

# Chart names double as file stems and as optuna-dashboard graph object ids (letters, digits,
# "-", "_", ":" and "." only), so re-attaching a chart replaces it instead of adding a copy.
PARALLEL_COORDINATE = "parallel_coordinate"
OPTIMIZATION_HISTORY = "optimization_history"
PARAM_IMPORTANCES = "param_importances"
LEARNING_CURVES = "learning_curves"


@dataclass(frozen=True)
class Chart:
    """One chart of a study: its figure, or why there is none yet.

    Attributes:
        name: File stem and dashboard id (``parallel_coordinate``, ...).
        title: Human title.
        figure: The figure, or ``None`` if the study cannot support it yet.
        skipped: Why ``figure`` is ``None`` (one line); ``None`` when there is a figure.
    """

    name: str
    title: str
    figure: go.Figure | None
    skipped: str | None = None


def study_charts(study: optuna.Study, top: int = 5) -> list[Chart]:
    """Every chart of ``study``, in report order; charts the study cannot support yet say why.

    Args:
        study: A loaded study, finished or running.
        top: How many of the best trials the learning-curve chart shows.
    """
    info = study_info(study)
    complete = completed_trials(study)
    n = len(complete)
    none_yet = "no completed trial yet"
    charts = [
        Chart(
            PARALLEL_COORDINATE,
            "Parallel coordinates: hyperparameters vs objective",
            parallel_coordinate_figure(study) if n else None,
            None if n else none_yet,
        ),
    ]
    if n:
        history = optuna.visualization.plot_optimization_history(
            study, target_name=info.objective_label
        )
        history.update_layout(title=f"{study.study_name}: optimization history")
        ran = [t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        last = max(ran)  # the axis ends at the last trial that ran, not at the queued grid
        history.update_xaxes(range=[-0.5, last + 0.5], tick0=0, dtick=max(1, math.ceil(last / 10)))
        charts.append(Chart(OPTIMIZATION_HISTORY, "Optimization history", history))
    else:
        charts.append(Chart(OPTIMIZATION_HISTORY, "Optimization history", None, none_yet))
    importances, why = _importances_figure(study, complete, info)
    charts.append(Chart(PARAM_IMPORTANCES, "Hyperparameter importances", importances, why))
    curves = learning_curves_figure(study, top)
    shown = len(curves.data) if curves is not None else top
    charts.append(
        Chart(
            LEARNING_CURVES,
            f"Learning curves of the best {shown} trials"
            if shown > 1
            else "Learning curve of the best trial",
            curves,
            None if curves is not None else "no completed trial reported per-epoch accuracy yet",
        )
    )
    return charts


def parallel_coordinate_figure(study: optuna.Study) -> go.Figure:
    """Parallel coordinates of the completed trials' parameters and objective.

    Raises:
        ValueError: The study has no completed trial (check first: the report does).
    """
    trials = completed_trials(study)
    if not trials:
        raise ValueError(f"study {study.study_name!r} has no completed trial to plot")
    info = study_info(study)
    names = param_names(trials, info.param_order)
    # A trial without one of the plotted parameters (a conditional space) cannot be drawn as a
    # full line; hpo's search space always samples all four, so nothing is dropped there.
    trials = [t for t in trials if all(p in t.params for p in names)]
    dimensions = [_dimension(name, _distribution(trials, name), trials) for name in names]
    values = [t.value for t in trials]
    dimensions.append(
        {
            "label": info.objective_label,
            "values": values,
            "range": [min(values), max(values)] if len(set(values)) > 1 else None,
        }
    )
    figure = go.Figure(
        go.Parcoords(
            dimensions=[{k: v for k, v in d.items() if v is not None} for d in dimensions],
            line={
                "color": values,
                "colorscale": "Viridis",
                "reversescale": info.direction == "minimize",
                "showscale": True,
                "colorbar": {"title": {"text": "objective"}},
            },
            labelangle=0,
        )
    )
    figure.update_layout(
        title=(
            f"{study.study_name}: hyperparameters vs {info.objective_label} "
            f"({len(trials)} completed trials)"
        ),
        margin={"l": 80, "r": 80, "t": 100, "b": 40},
    )
    return figure


def learning_curves_figure(study: optuna.Study, top: int = 5) -> go.Figure | None:
    """Validation accuracy per epoch of the ``top`` best completed trials (``None``: no data)."""
    info = study_info(study)
    traces = []
    for trial in best_trials(study, top):
        steps = sorted(trial.intermediate_values)
        if not steps:
            continue
        traces.append(
            go.Scatter(
                x=steps,
                y=[trial.intermediate_values[s] for s in steps],
                mode="lines+markers",
                name=f"trial {trial.number} (best {trial.value:.4f})",
            )
        )
    if not traces:
        return None
    figure = go.Figure(traces)
    figure.update_layout(
        title=f"{study.study_name}: learning curves of the best {len(traces)} trials",
        xaxis={"title": {"text": "epoch"}, "dtick": 1},
        yaxis={"title": {"text": info.objective_label.replace("val", "validation", 1)}},
        legend={"title": {"text": "trial"}},
    )
    return figure


def comparison_figure(entries: Sequence[ComparisonEntry]) -> go.Figure:
    """Accuracy vs test sparsity of the best model of each study, one line per study."""
    figure = go.Figure()
    for entry in entries:
        sparsities = [k for k in entry.info.sparsity_keys if k in entry.metrics]
        figure.add_trace(
            go.Scatter(
                x=[float(k) for k in sparsities],
                y=[entry.metrics[k].get("accuracy") for k in sparsities],
                mode="lines+markers",
                name=f"{entry.info.name} (trial {entry.trial_number}, {entry.source})",
            )
        )
    sources = sorted({e.source for e in entries})
    figure.update_layout(
        title="Best model per study: accuracy vs missing-pixel fraction "
        f"({' / '.join(sources)} figures)",
        xaxis={
            "title": {"text": "sparsity (fraction of pixels missing)"},
            "tickvals": sorted({float(k) for e in entries for k in e.metrics}),
        },
        yaxis={"title": {"text": "accuracy"}},
    )
    return figure


def write_html(figure: go.Figure, path: Path) -> Path:
    """Write ``figure`` as interactive HTML that works offline.

    plotly.js is written once, as ``plotly.min.js`` next to the HTML files, instead of being
    embedded in every file (4 MB each) or loaded from a CDN (nothing to see offline).
    """
    figure.write_html(path, include_plotlyjs="directory", full_html=True)
    return path


def write_pngs(figures: Sequence[go.Figure], paths: Sequence[Path]) -> str | None:
    """Write static PNGs with Kaleido, all in one browser session.

    Returns:
        ``None`` if every PNG was written, else one line saying why none was (Kaleido not
        installed, no Chrome/Chromium found, the export failed) and how to enable it.
    """
    if not figures:
        return None
    if importlib.util.find_spec("kaleido") is None:
        return (
            "static PNGs skipped: kaleido is not installed "
            "(pip install kaleido, plus Chrome or Chromium; see README 'Looking at results')"
        )
    import plotly.io as pio

    try:
        pio.write_images(list(figures), [str(p) for p in paths], width=1100, height=600)
    except (RuntimeError, OSError, ValueError) as e:
        return f"static PNGs skipped: {one_line(e)} (needs Chrome or Chromium; set BROWSER_PATH)"
    return None


# --- helpers ------------------------------------------------------------------------------


def _importances_figure(
    study: optuna.Study, complete: Sequence[FrozenTrial], info: StudyInfo
) -> tuple[go.Figure | None, str | None]:
    if len(complete) < 2:
        return None, f"needs >= 2 completed trials, have {len(complete)}"
    names = param_names(complete, info.param_order)
    varied = [p for p in names if len({repr(t.params.get(p)) for t in complete}) > 1]
    if not varied:
        return None, "the completed trials all share the same parameters"
    try:
        figure = optuna.visualization.plot_param_importances(
            study, params=varied, target_name=info.objective_label
        )
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return None, f"Optuna could not compute importances: {one_line(e)}"
    figure.update_layout(title=f"{study.study_name}: hyperparameter importances")
    # Readable names, and room between them and the bars (Optuna's "lr" touched its bar).
    for trace in figure.data:
        trace.y = [SearchSpace.label(str(name)) for name in trace.y]
    figure.update_yaxes(ticksuffix="  ", automargin=True)
    return figure, None


def _distribution(trials: Sequence[FrozenTrial], name: str) -> BaseDistribution:
    for trial in reversed(trials):
        if name in trial.distributions:
            return trial.distributions[name]
    raise KeyError(name)


def _dimension(
    name: str, distribution: BaseDistribution, trials: Sequence[FrozenTrial]
) -> dict[str, Any]:
    """A ``go.Parcoords`` dimension for one parameter, readable whatever its type."""
    label = SearchSpace.label(name)
    values = [t.params[name] for t in trials]
    if isinstance(distribution, CategoricalDistribution):
        choices = list(distribution.choices)
        numeric = all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices)
        if numeric:
            choices.sort()
        index = {repr(c): i for i, c in enumerate(choices)}
        return {
            "label": label,
            "values": [index[repr(v)] for v in values],
            "range": [0, max(len(choices) - 1, 1)],
            "tickvals": list(range(len(choices))),
            "ticktext": [str(c) for c in choices],
        }
    assert isinstance(distribution, FloatDistribution | IntDistribution)
    low, high = float(distribution.low), float(distribution.high)
    if distribution.log:
        lo, hi = math.log10(low), math.log10(high)
        ticks = [float(e) for e in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
        if len(ticks) < 2:  # less than a decade: label the ends instead
            ticks = [lo, hi]
        return {
            "label": f"{label} (log scale)",
            "values": [math.log10(v) for v in values],
            "range": [lo, hi],
            "tickvals": ticks,
            "ticktext": [f"{10**t:.3g}" for t in ticks],
        }
    dimension: dict[str, Any] = {"label": label, "values": values, "range": [low, high]}
    if isinstance(distribution, IntDistribution) and (high - low) / distribution.step <= 12:
        ticks = list(range(int(low), int(high) + 1, distribution.step))
        dimension["tickvals"] = ticks
        dimension["ticktext"] = [str(v) for v in ticks]
    return dimension
