"""The tables of a study, read from its storage: trial rows, best trials, counts, comparisons.

Everything the report prints comes from here, and everything here is read through the names in
:mod:`hpo.tuning.keys` (by way of :mod:`hpo.reporting.trials`), so the markdown, the CSV files
and the charts cannot disagree with each other or with the storage. Nothing is recomputed:
validation figures are the ones the runner stored on each trial (``keys.VAL_METRICS``), test
figures the ones it stored on the study once (``keys.TEST_METRICS``), so a report of a running
study is as trustworthy as one of a finished study -- it just has fewer rows.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..tuning import keys
from ..tuning.budget import TrialCounts
from .trials import (
    ReportError,
    StudyInfo,
    best_trials,
    metrics_of,
    param_names,
    study_info,
)

__all__ = [
    "ComparisonEntry",
    "FailureGroup",
    "StudyTables",
    "compare_entry",
    "format_value",
    "read_study_tables",
    "trial_row",
    "trial_row_columns",
    "write_csv",
]

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class FailureGroup:
    """Failed or pruned trials that stopped for the same reason (numbers blanked out).

    Attributes:
        state: ``FAIL`` or ``PRUNED``.
        pattern: The reason with every number replaced by ``#``, so "pruned after epoch 2:
            val accuracy 0.11" and "... epoch 3: ... 0.12" fall into one group.
        example: One reason verbatim (the earliest trial's).
        trial_numbers: The trials in the group, ascending.
    """

    state: str
    pattern: str
    example: str
    trial_numbers: tuple[int, ...]


@dataclass(frozen=True)
class StudyTables:
    """Everything ``report.md`` and the CSV files show about one study.

    Attributes:
        info: What the study measures.
        counts: Trials per state.
        failures: Failure reasons grouped, largest group first.
        columns: Column names of ``rows`` / ``best`` (the CSV header).
        rows: One row per trial, by trial number.
        best: The best completed trials, best first, with a ``rank`` column in front.
        test_metrics: ``keys.TEST_METRICS`` of the study ({sparsity key: {metric: value}}), or
            ``None`` while the run has not scored its best trial on the test split.
        test_trial: The trial the test figures belong to (``keys.BEST_TRIAL``).
        best_model_artifact: Artifact id of the saved best model, if any.
    """

    info: StudyInfo
    counts: TrialCounts
    failures: tuple[FailureGroup, ...]
    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]
    best: tuple[dict[str, Any], ...]
    test_metrics: dict[str, dict[str, float]] | None
    test_trial: int | None
    best_model_artifact: str | None


@dataclass(frozen=True)
class ComparisonEntry:
    """One study's best model in a comparison across studies.

    Attributes:
        info: What the study measures.
        trial_number: The best trial.
        params: Its hyperparameters.
        source: ``test`` if the figures are the test split's, ``validation`` otherwise.
        metrics: {sparsity key: {"accuracy": float, "mae": float}}.
        counts: The study's trials per state (how much search stands behind the figures).
    """

    info: StudyInfo
    trial_number: int
    params: dict[str, Any]
    source: str
    metrics: dict[str, dict[str, float]]
    counts: TrialCounts


def trial_row(
    trial: FrozenTrial, params: Sequence[str], sparsity_keys: Sequence[str]
) -> dict[str, Any]:
    """One CSV row: identity, objective, parameters, validation figures, cost, reason."""
    attrs = trial.user_attrs
    row: dict[str, Any] = {
        "trial": trial.number,
        "state": trial.state.name,
        "phase": attrs.get(keys.PHASE),
        "value": trial.value,
    }
    for name in params:
        row[name] = trial.params.get(name)
    metrics = metrics_of(attrs.get(keys.VAL_METRICS))
    for key in sparsity_keys:
        figures = metrics.get(key, {})
        row[f"val_accuracy@{key}"] = figures.get("accuracy")
        row[f"val_mae@{key}"] = figures.get("mae")
    row["n_params"] = attrs.get(keys.N_PARAMS)
    row["train_seconds"] = attrs.get(keys.TRAIN_SECONDS)
    row["epochs_reported"] = len(trial.intermediate_values)
    row["fail_reason"] = attrs.get(keys.FAIL_REASON)
    return row


def read_study_tables(study: optuna.Study, top: int = 5) -> StudyTables:
    """Read every number the report shows about ``study`` (one pass over its trials).

    Args:
        study: A loaded study (finished or still running).
        top: How many best trials to list.
    """
    if top < 1:
        raise ReportError(f"--top must be >= 1, got {top}")
    info = study_info(study)
    trials = study.get_trials(deepcopy=False)
    params = param_names(trials, info.param_order)
    rows = tuple(trial_row(t, params, info.sparsity_keys) for t in trials)
    best = tuple(
        {"rank": rank, **trial_row(t, params, info.sparsity_keys)}
        for rank, t in enumerate(best_trials(study, top), start=1)
    )
    columns = tuple(rows[0]) if rows else tuple(trial_row_columns(params, info.sparsity_keys))
    test_metrics = study.user_attrs.get(keys.TEST_METRICS)
    test_trial = study.user_attrs.get(keys.BEST_TRIAL)
    return StudyTables(
        info=info,
        counts=TrialCounts.of(trials),
        failures=_group_failures(trials),
        columns=columns,
        rows=rows,
        best=best,
        test_metrics=metrics_of(test_metrics) if test_metrics else None,
        test_trial=int(test_trial) if test_trial is not None else None,
        best_model_artifact=study.user_attrs.get(keys.BEST_MODEL_ARTIFACT),
    )


def trial_row_columns(params: Sequence[str], sparsity_keys: Sequence[str]) -> list[str]:
    """The columns :func:`trial_row` produces, for a header without rows."""
    metric_columns = [f"val_{m}@{k}" for k in sparsity_keys for m in ("accuracy", "mae")]
    return [
        "trial",
        "state",
        "phase",
        "value",
        *params,
        *metric_columns,
        "n_params",
        "train_seconds",
        "epochs_reported",
        "fail_reason",
    ]


def compare_entry(study: optuna.Study) -> ComparisonEntry:
    """The best model of ``study`` with its figures at every sparsity (test ones if stored).

    Test figures belong to the trial stored as ``keys.BEST_TRIAL`` when the run last finished;
    while a study is still running its current best may differ, and then the stored test
    figures are still used, for the trial they were measured on (a report never mixes the
    test figures of one trial with the parameters of another).

    Raises:
        ReportError: The study has no completed trial yet.
    """
    info = study_info(study)
    counts = TrialCounts.of(study.get_trials(deepcopy=False))
    test_metrics = metrics_of(study.user_attrs.get(keys.TEST_METRICS))
    test_trial = study.user_attrs.get(keys.BEST_TRIAL)
    if test_metrics and test_trial is not None:
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        trial = by_number.get(int(test_trial))
        if trial is not None:
            return ComparisonEntry(
                info, trial.number, dict(trial.params), "test", test_metrics, counts
            )
    ranked = best_trials(study, 1)
    if not ranked:
        raise ReportError(
            f"study {study.study_name!r} has no completed trial yet: nothing to compare "
            "(run it first: python -m hpo.run --study NAME)"
        )
    best = ranked[0]
    metrics = metrics_of(best.user_attrs.get(keys.VAL_METRICS))
    return ComparisonEntry(info, best.number, dict(best.params), "validation", metrics, counts)


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as CSV with ``columns`` as header; ``None`` becomes an empty cell.

    Floats are written with ``repr`` so the file holds exactly the stored values.
    """
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return path


def format_value(value: Any, kind: str = "") -> str:
    """A cell of a markdown table: 4 decimals for scores, 3 significant digits for a float
    hyperparameter (``kind="param"``: a learning rate reads 0.00251, not 0.0025), etc."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value).replace("|", "\\|")
    if kind == "int" or isinstance(value, int):
        return f"{int(value):,}"
    if not math.isfinite(value):
        return str(value)
    if kind == "param":
        return f"{value:.3g}"
    if kind == "seconds":
        return f"{value:.1f} s"
    return f"{value:.4f}"


# --- helpers ------------------------------------------------------------------------------


def _group_failures(trials: Sequence[FrozenTrial]) -> tuple[FailureGroup, ...]:
    groups: dict[tuple[str, str], list[FrozenTrial]] = {}
    for t in trials:
        if t.state not in (TrialState.FAIL, TrialState.PRUNED):
            continue
        reason = _reason(t)
        groups.setdefault((t.state.name, _NUMBER.sub("#", reason)), []).append(t)
    result = [
        FailureGroup(
            state=state,
            pattern=pattern,
            example=_reason(members[0]),
            trial_numbers=tuple(sorted(m.number for m in members)),
        )
        for (state, pattern), members in groups.items()
    ]
    result.sort(key=lambda g: (g.state != "FAIL", -len(g.trial_numbers), g.pattern))
    return tuple(result)


def _reason(trial: FrozenTrial) -> str:
    reason = trial.user_attrs.get(keys.FAIL_REASON)
    if reason:
        return str(reason).splitlines()[0]
    if trial.state == TrialState.PRUNED:
        last = max(trial.intermediate_values, default=None)
        return f"pruned after epoch {last}" if last is not None else "pruned"
    # Only a worker that died mid-trial leaves a FAIL without a reason: the runner records one
    # for every failure it sees, and a dead worker's trial is failed by heartbeat.
    return "no reason recorded: the worker stopped mid-trial (killed, crashed or lost)"


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value
