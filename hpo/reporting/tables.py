"""The numbers of a study, read from its storage: trial rows, best trials, counts, comparisons.

Everything the report prints comes from here, and everything here is read through the names in
:mod:`hpo.keys`, so the markdown, the CSV files and the charts cannot disagree with each other or
with the storage. Nothing is recomputed: validation figures are the ones the runner stored on each
trial (``keys.VAL_METRICS``), test figures the ones it stored on the study once
(``keys.TEST_METRICS``), so a report of a running study is as trustworthy as one of a finished
study -- it just has fewer rows.
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
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from . import keys
from .budget import TrialCounts
from .storage import StorageError, mask_url, open_storage, storage_kind

__all__ = [
    "PARAM_LABELS",
    "PARAM_ORDER",
    "ComparisonEntry",
    "FailureGroup",
    "ReportError",
    "StudyInfo",
    "StudyNotFoundError",
    "StudyTables",
    "TrialCounts",
    "best_trials",
    "compare_entry",
    "completed_trials",
    "format_value",
    "load_study",
    "open_existing_storage",
    "param_names",
    "read_study_tables",
    "sorted_sparsity_keys",
    "study_info",
    "trial_row",
    "write_csv",
]

# The tuned hyperparameters in the order every table and chart shows them; parameters a future
# study adds are appended after these, alphabetically.
PARAM_ORDER: tuple[str, ...] = ("depth", "activation", "batch_size", "lr")
PARAM_LABELS: dict[str, str] = {
    "depth": "depth",
    "activation": "activation",
    "batch_size": "batch size",
    "lr": "learning rate",
}

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class ReportError(Exception):
    """The report cannot be written as asked (message is one line saying what to do)."""


class StudyNotFoundError(ReportError):
    """The storage holds no study of that name; the message lists the studies it does hold."""


@dataclass(frozen=True)
class StudyInfo:
    """What a study measures, from its stored definition (``keys.DEFINITION``).

    Attributes:
        name: Study name.
        description: The definition's one-line description, if stored.
        model_family: ``sparse`` / ``dense`` / ``dense_mask``, if stored.
        dataset: Dataset name, if stored.
        train_sparsity: The sparsity the objective is measured at, if stored.
        sparsity_keys: Every test sparsity (``keys.sparsity_key`` form), ascending: the
            definition's plus any found in stored metrics.
        direction: ``maximize`` or ``minimize``.
        objective_label: Human name of the objective, e.g. ``val accuracy @ sparsity 0.9``.
    """

    name: str
    description: str | None
    model_family: str | None
    dataset: str | None
    train_sparsity: float | None
    sparsity_keys: tuple[str, ...]
    direction: str
    objective_label: str


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
    """

    info: StudyInfo
    trial_number: int
    params: dict[str, Any]
    source: str
    metrics: dict[str, dict[str, float]]


def open_existing_storage(url: str) -> optuna.storages.BaseStorage:
    """Open the storage at ``url`` for reading results.

    Unlike the study runner, a reader must not create a database: a SQLite file that does not
    exist (a typo, the wrong working directory) is an error naming the path, not an empty
    storage with "no studies".

    Raises:
        StorageError: The URL is invalid, names a missing SQLite file or an in-memory one, or
            the database cannot be reached (one line, password masked).
    """
    if storage_kind(url) == "sqlite":
        database = make_url(url).database
        if database in (None, "", ":memory:"):
            raise StorageError(
                "an in-memory SQLite storage holds no study another process can read; "
                "pass --storage sqlite:///path/to/hpo.db"
            )
        if not Path(database).exists():
            raise StorageError(
                f"no study storage at {database} (from {mask_url(url)}); pass --storage URL "
                "or set HPO_STORAGE to the storage your study ran on"
            )
    return open_storage(url)


def load_study(storage: optuna.storages.BaseStorage, name: str, storage_label: str) -> optuna.Study:
    """Load study ``name``, or fail with one line naming the studies the storage does hold.

    Args:
        storage: An opened storage.
        name: The study to load.
        storage_label: How to name the storage in the message (a masked URL).

    Raises:
        StudyNotFoundError: No such study.
    """
    names = sorted(s.study_name for s in storage.get_all_studies())
    if name not in names:
        held = ", ".join(names) if names else "none"
        raise StudyNotFoundError(
            f"no study named {name!r} in {storage_label}; studies there: {held} "
            "(pass --storage URL or set HPO_STORAGE to read another storage)"
        )
    return optuna.load_study(study_name=name, storage=storage)


def study_info(study: optuna.Study) -> StudyInfo:
    """What ``study`` measures, from its stored definition (tolerates a study without one)."""
    stored = study.user_attrs.get(keys.DEFINITION) or {}
    # hpo.run stores {"definition": {...}, "overrides": ..., "pruner": ...}; accept a bare
    # definition dict too, so studies written by hand still get labels.
    definition = stored.get("definition", stored) if isinstance(stored, Mapping) else {}
    train_sparsity = definition.get("train_sparsity")
    found: set[str] = {keys.sparsity_key(float(s)) for s in definition.get("test_sparsities", ())}
    for trial in study.get_trials(deepcopy=False):
        found.update(_metrics_of(trial.user_attrs.get(keys.VAL_METRICS)))
    found.update(_metrics_of(study.user_attrs.get(keys.TEST_METRICS)))
    if len(study.directions) != 1:
        raise ReportError(
            f"study {study.study_name!r} has {len(study.directions)} objectives; the report "
            "reads single-objective studies (the ones hpo.run creates)"
        )
    direction = "maximize" if study.direction == StudyDirection.MAXIMIZE else "minimize"
    if train_sparsity is not None:
        label = f"val accuracy @ sparsity {keys.sparsity_key(float(train_sparsity))}"
    else:
        label = "objective value"
    return StudyInfo(
        name=study.study_name,
        description=definition.get("description"),
        model_family=definition.get("model_family"),
        dataset=definition.get("dataset"),
        train_sparsity=float(train_sparsity) if train_sparsity is not None else None,
        sparsity_keys=sorted_sparsity_keys(found),
        direction=direction,
        objective_label=label,
    )


def sorted_sparsity_keys(found: Iterable[str]) -> tuple[str, ...]:
    """Sparsity keys in ascending numeric order (keys that are not numbers go last)."""

    def order(key: str) -> tuple[int, float, str]:
        try:
            return (0, float(key), key)
        except ValueError:
            return (1, 0.0, key)

    return tuple(sorted(set(found), key=order))


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with a finite objective value."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]


def best_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` best completed trials, best first (ties: lower trial number first)."""
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    ranked = sorted(completed_trials(study), key=lambda t: (sign * t.value, t.number))
    return ranked[:top]


def param_names(trials: Sequence[FrozenTrial]) -> list[str]:
    """Parameters appearing in ``trials``: the known four in order, then the rest sorted."""
    present = {name for t in trials for name in t.params}
    return [p for p in PARAM_ORDER if p in present] + sorted(present - set(PARAM_ORDER))


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
    metrics = _metrics_of(attrs.get(keys.VAL_METRICS))
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
    params = param_names(trials)
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
        test_metrics=_metrics_of(test_metrics) if test_metrics else None,
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
    test_metrics = _metrics_of(study.user_attrs.get(keys.TEST_METRICS))
    test_trial = study.user_attrs.get(keys.BEST_TRIAL)
    if test_metrics and test_trial is not None:
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        trial = by_number.get(int(test_trial))
        if trial is not None:
            return ComparisonEntry(info, trial.number, dict(trial.params), "test", test_metrics)
    ranked = best_trials(study, 1)
    if not ranked:
        raise ReportError(
            f"study {study.study_name!r} has no completed trial yet: nothing to compare "
            "(run it first: python -m hpo.run --study NAME)"
        )
    best = ranked[0]
    metrics = _metrics_of(best.user_attrs.get(keys.VAL_METRICS))
    return ComparisonEntry(info, best.number, dict(best.params), "validation", metrics)


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
    """A cell of a markdown table: 4 decimals for scores, 3 significant digits for lr, etc."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value).replace("|", "\\|")
    if kind == "int" or (isinstance(value, int) and kind != "lr"):
        return f"{int(value):,}"
    if not math.isfinite(value):
        return str(value)
    if kind == "lr":
        return f"{value:.3g}"
    if kind == "seconds":
        return f"{value:.1f} s"
    return f"{value:.4f}"


# --- helpers ------------------------------------------------------------------------------


def _metrics_of(value: Any) -> dict[str, dict[str, float]]:
    """A stored ``{sparsity: {metric: value}}`` dict, or ``{}`` if absent or malformed."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): dict(v) for k, v in value.items() if isinstance(v, Mapping)}


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
