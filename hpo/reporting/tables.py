"""A study read back from its storage: what it measures, its trial rows, counts and best model.

Nothing is recomputed: every figure is one a trial or the run stored (:mod:`hpo.records`), so
the markdown, the CSV files and the charts agree with each other and with the storage.
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
from optuna.trial import FrozenTrial, TrialState, create_trial

from studies import SearchSpace

from .. import records
from ..errors import UsageError
from ..records import StudyRecord, TrialCounts, metrics_of, sparsity_key
from ..runtime.files import written_whole

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class StudyInfo:
    """What a study measures, from its stored :class:`~hpo.records.StudyRecord` if it has one."""

    name: str
    description: str | None
    model_family: str | None
    sparsity_keys: tuple[str, ...]  # ascending: the record's plus any in stored metrics
    direction: str
    objective_label: str  # e.g. ``validation accuracy @ sparsity 0.9``
    param_order: tuple[str, ...]  # the search space's
    budget: str | None  # what one trial was allowed, overrides included; None: not stored


@dataclass(frozen=True)
class FailureGroup:
    """Failed or pruned trials that stopped for the same reason once numbers are blanked (#)."""

    state: str
    pattern: str
    example: str
    trial_numbers: tuple[int, ...]


@dataclass(frozen=True)
class StudyTables:
    """Everything ``report.md`` and the CSV files show about one study."""

    info: StudyInfo
    counts: TrialCounts
    failures: tuple[FailureGroup, ...]
    params: tuple[str, ...]
    columns: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]  # one per trial, by number
    best: tuple[dict[str, Any], ...]  # the best completed, with their ``rank``
    test_metrics: dict[str, dict[str, float]] | None  # None until the run scored its best
    test_row: dict[str, Any] | None  # the row of the trial test_metrics belong to
    best_model_artifact: str | None


@dataclass(frozen=True)
class ComparisonEntry:
    """One study's best model in a comparison; ``source`` is ``test`` or ``validation``."""

    info: StudyInfo
    trial_number: int
    params: dict[str, Any]
    source: str
    metrics: dict[str, dict[str, float]]
    counts: TrialCounts


def study_info(study: optuna.Study) -> StudyInfo:
    """What ``study`` measures; a study without a (readable) stored record still gets labels."""
    if len(study.directions) != 1:
        raise UsageError(
            f"study {study.study_name!r} has {len(study.directions)} objectives; the report "
            "reads single-objective studies (the ones hpo.run creates)"
        )
    stored = study.user_attrs.get(records.CONFIG)
    try:
        record = StudyRecord.from_dict(stored) if stored is not None else None
    except ValueError:  # a study hpo did not create, or cannot read
        record = None
    found = {sparsity_key(s) for s in record.test_sparsities} if record else set()
    for trial in study.get_trials(deepcopy=False):
        found.update(metrics_of(trial.user_attrs.get(records.VAL_METRICS)))
    found.update(metrics_of(study.user_attrs.get(records.TEST_METRICS)))
    definition = record.definition if record else {}
    label = records.METRIC_NAME
    if record and record.train_sparsity is not None:
        label += f" @ sparsity {sparsity_key(record.train_sparsity)}"
    return StudyInfo(
        name=study.study_name,
        description=definition.get("description"),
        model_family=definition.get("model_family"),
        sparsity_keys=sorted_sparsity_keys(found),
        direction="maximize" if study.direction == StudyDirection.MAXIMIZE else "minimize",
        objective_label=label,
        param_order=record.param_order if record else SearchSpace.names(),
        budget=_budget_text(record) if record and "epochs" in definition else None,
    )


def read_study_tables(study: optuna.Study, top: int = 5) -> StudyTables:
    """Every number the report shows about ``study``, in one pass over its trials."""
    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}")
    info = study_info(study)
    trials = study.get_trials(deepcopy=False)
    params = param_names(trials, info.param_order)
    rows = {t.number: _trial_row(t, params, info.sparsity_keys) for t in trials}
    ranked = enumerate(best_trials(study, top), start=1)
    # The header of an empty study: the columns of a row with nothing in it.
    empty = create_trial(state=TrialState.FAIL)
    test_metrics = metrics_of(study.user_attrs.get(records.TEST_METRICS))
    return StudyTables(
        info=info,
        counts=TrialCounts.of(trials),
        failures=_group_failures(trials),
        params=tuple(params),
        columns=tuple(_trial_row(empty, params, info.sparsity_keys)),
        rows=tuple(rows.values()),
        best=tuple({"rank": rank, **rows[t.number]} for rank, t in ranked),
        test_metrics=test_metrics or None,
        test_row=rows.get(study.user_attrs.get(records.BEST_TRIAL)),
        best_model_artifact=study.user_attrs.get(records.BEST_MODEL_ARTIFACT),
    )


def compare_entry(study: optuna.Study) -> ComparisonEntry:
    """The best model of ``study``: the trial the run scored on test, else the best validated."""
    info = study_info(study)
    trials = study.get_trials(deepcopy=False)
    counts = TrialCounts.of(trials)
    test_metrics = metrics_of(study.user_attrs.get(records.TEST_METRICS))
    test_trial = study.user_attrs.get(records.BEST_TRIAL)
    tested = [t for t in trials if test_metrics and t.number == test_trial]
    if tested:
        return ComparisonEntry(info, test_trial, tested[0].params, "test", test_metrics, counts)
    ranked = best_trials(study, 1)
    if not ranked:
        raise UsageError(
            f"study {study.study_name!r} has no completed trial yet: nothing to compare "
            "(run it first: python -m hpo.run --study NAME)"
        )
    metrics = metrics_of(ranked[0].user_attrs.get(records.VAL_METRICS))
    return ComparisonEntry(info, ranked[0].number, ranked[0].params, "validation", metrics, counts)


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with a finite objective value."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in trials if t.value is not None and math.isfinite(t.value)]


def best_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` best completed trials, best first (ties: lower trial number first)."""
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    return sorted(completed_trials(study), key=lambda t: (sign * t.value, t.number))[:top]


def param_names(trials: Sequence[FrozenTrial], order: Sequence[str]) -> list[str]:
    """The trials' parameters: those of ``order`` in that order, then any others sorted."""
    present = {name for t in trials for name in t.params}
    return [p for p in order if p in present] + sorted(present - set(order))


def sorted_sparsity_keys(found: Iterable[str]) -> tuple[str, ...]:
    """Sparsity keys in ascending numeric order (keys that are not numbers go last)."""

    def order(key: str) -> tuple[int, float, str]:
        try:
            return (0, float(key), key)
        except ValueError:
            return (1, 0.0, key)

    return tuple(sorted(set(found), key=order))


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``rows`` under the header ``columns``; floats as ``repr``: the exact stored value."""
    with written_whole(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return path


def format_value(value: Any, kind: str = "") -> str:
    """A markdown cell: 4 decimals for a score, 3 significant digits for a ``kind="param"``."""
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


def _budget_text(record: StudyRecord) -> str:
    """``10 epochs x all training images, ...``: a quick study must not read like a full one."""
    definition = record.definition
    epochs, images, val = (definition.get(k) for k in ("epochs", "train_size", "val_size"))
    text = (
        f"{epochs} epoch{'s' if epochs != 1 else ''} x "
        f"{'all' if images is None else f'{images:,}'} training images, "
        f"{'all' if val is None else f'{val:,}'} validation images per trial"
    )
    if record.pruner:
        text += f", pruner {record.pruner}"
    if record.overrides:
        given = " ".join(
            f"--{k.replace('_', '-')} {'all' if v is None else v}"
            for k, v in record.overrides.items()
        )
        text += f" (overridden on the command line: {given})"
    return text


def _trial_row(
    trial: FrozenTrial, params: Sequence[str], sparsity_keys: Sequence[str]
) -> dict[str, Any]:
    """One CSV row: identity, objective, parameters, validation figures, cost, reason."""
    attrs = trial.user_attrs
    row: dict[str, Any] = {
        "trial": trial.number,
        "state": trial.state.name,
        "phase": attrs.get(records.PHASE),
        "value": trial.value,
    }
    row.update({name: trial.params.get(name) for name in params})
    metrics = metrics_of(attrs.get(records.VAL_METRICS))
    for key in sparsity_keys:
        row[f"val_accuracy@{key}"] = metrics.get(key, {}).get("accuracy")
        row[f"val_mae@{key}"] = metrics.get(key, {}).get("mae")
    row["n_params"] = attrs.get(records.N_PARAMS)
    row["train_seconds"] = attrs.get(records.TRAIN_SECONDS)
    row["epochs_reported"] = len(trial.intermediate_values)
    row["fail_reason"] = attrs.get(records.FAIL_REASON)
    return row


def _group_failures(trials: Sequence[FrozenTrial]) -> tuple[FailureGroup, ...]:
    groups: dict[tuple[str, str], list[FrozenTrial]] = {}
    for t in trials:
        if t.state in (TrialState.FAIL, TrialState.PRUNED):
            groups.setdefault((t.state.name, _NUMBER.sub("#", _reason(t))), []).append(t)
    result = [
        FailureGroup(state, pattern, _reason(members[0]), tuple(m.number for m in members))
        for (state, pattern), members in groups.items()
    ]
    result.sort(key=lambda g: (g.state != "FAIL", -len(g.trial_numbers), g.pattern))
    return tuple(result)


def _reason(trial: FrozenTrial) -> str:
    reason = trial.user_attrs.get(records.FAIL_REASON)
    if reason:
        return str(reason).splitlines()[0]
    if trial.state == TrialState.PRUNED:
        last = max(trial.intermediate_values, default=None)
        return f"pruned after epoch {last}" if last is not None else "pruned"
    # The runner records a reason for every failure it sees; only a worker that died
    # mid-trial (failed later by heartbeat) leaves none.
    return "no reason recorded: the worker stopped mid-trial (killed, crashed or lost)"


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else value
