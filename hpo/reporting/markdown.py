"""The markdown of a study report (``report.md``) and of a comparison (``comparison.md``).

Pure rendering of what :mod:`hpo.reporting.tables` read; nothing here touches a study.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from studies import SearchSpace

from .charts import Chart
from .tables import ComparisonEntry, StudyTables, format_value, sorted_sparsity_keys


def render_study(
    tables: StudyTables, charts: list[Chart], png_names: set[str], storage_label: str
) -> str:
    info, counts = tables.info, tables.counts
    lines = [f"# Study `{info.name}`", ""]
    if info.description:
        lines += [info.description, ""]
    storage = f" --storage '{storage_label}'" if storage_label else ""
    lines += [
        f"- Objective: {info.objective_label} ({info.direction})",
        f"- Budget: {info.budget or 'not stored with this study'}",
        *_provenance(storage_label),
        f"- Reproduce: `python -m hpo.report --study {info.name}{storage}`",
        "",
    ]
    if counts.total == 0:
        start = f"Start it with `python -m hpo.run --study {info.name} --n-trials N`"
        lines += [f"**This study has no trials yet.** {start}, then run the report again.", ""]
        return "\n".join(lines)
    if counts.running:
        waiting = f", {counts.waiting} waiting" if counts.waiting else ""
        running = f"{counts.running} trial(s) in progress{waiting}"
        lines += [f"*Still running: {running}. The figures below are a snapshot.*", ""]
    elif counts.waiting:
        why = "grid points beyond the budget so far: a larger --n-trials runs them"
        lines += [f"*{counts.waiting} queued trial(s) not started yet ({why}).*", ""]
    lines += ["## Trials", "", "| state | trials |", "|:---|---:|"]
    lines += [f"| {state} | {n} |" for state, n in counts.as_rows()]
    lines += [f"| **total** | **{counts.total}** |", ""]
    lines += _failures_section(tables) + _test_section(tables) + _best_section(tables)
    lines += ["## Charts", ""]
    for chart in charts:
        if chart.figure is None:
            lines.append(f"- {chart.title}: skipped ({chart.skipped})")
            continue
        lines.append(f"- [{chart.title}]({chart.name}.html)")
        if chart.name in png_names:
            lines += ["", f"  ![{chart.title}]({chart.name}.png)", ""]
    csvs = "All trials: `trials.csv`; the best ones: `best_trials.csv` (exact stored values)."
    return "\n".join([*lines, "", csvs, ""])


def _failures_section(tables: StudyTables) -> list[str]:
    if not tables.failures:
        return []
    lines = ["### Why trials failed or were pruned", ""]
    lines += ["| state | reason (numbers as #) | trials | example |", "|:---|:---|:---|:---|"]
    for g in tables.failures:
        numbers = f"{len(g.trial_numbers)}: {', '.join(map(str, g.trial_numbers))}"
        lines.append(
            table_row([g.state, format_value(g.pattern), numbers, format_value(g.example)])
        )
    return lines + [""]


def _test_section(tables: StudyTables) -> list[str]:
    info, row = tables.info, tables.test_row
    lines = ["## Best configuration on the test split", ""]
    if not tables.best:
        return lines + ["No completed trial yet.", ""]
    if tables.test_metrics is None or row is None:
        best = f"trial {tables.best[0]['trial']} with {info.objective_label}"
        when = "the run scores its best trial once, when it ends"
        value = format_value(tables.best[0]["value"])
        return lines + [
            f"Not scored on the test split yet ({when}). Current best: {best} {value}.",
            "",
        ]
    lines.append(
        f"Trial {row['trial']} ({_params_text({p: row[p] for p in tables.params})}), "
        f"{format_value(row['n_params'], 'int')} parameters, trained in "
        f"{format_value(row['train_seconds'], 'seconds')}."
    )
    if tables.best[0]["trial"] != row["trial"]:
        lines.append(
            f"*The study's best is now trial {tables.best[0]['trial']}; these test figures are "
            f"for trial {row['trial']}, the best when the run last finished.*"
        )
    if tables.best_model_artifact:
        lines.append(f"Saved model: artifact `{tables.best_model_artifact}`.")
    lines += ["", "| sparsity | test accuracy | test MAE | val accuracy | val MAE |"]
    lines.append("|---:|---:|---:|---:|---:|")
    for key in info.sparsity_keys:
        test = tables.test_metrics.get(key, {})
        val = [row.get(f"val_accuracy@{key}"), row.get(f"val_mae@{key}")]
        cells = map(format_value, [test.get("accuracy"), test.get("mae"), *val])
        lines.append(table_row([key, *cells]))
    return lines + [""]


def _best_section(tables: StudyTables) -> list[str]:
    info, params = tables.info, tables.params
    if not tables.best:
        return []
    head = ["rank", "trial", "phase", info.objective_label, *map(SearchSpace.label, params)]
    head += [f"acc / MAE @ {k}" for k in info.sparsity_keys] + ["params", "train time"]
    head_keys = ["rank", "trial", "phase", "value", *params, *info.sparsity_keys, "n", "t"]
    text = [c == "phase" or any(isinstance(r.get(c), str) for r in tables.best) for c in head_keys]
    lines = [f"## Best {len(tables.best)} trials", ""]
    lines += ["Validation accuracy and MAE at every test sparsity (best-epoch weights).", ""]
    lines += [table_row(head), _separator(text)]
    for row in tables.best:
        cells = [str(row["rank"]), str(row["trial"]), str(row["phase"] or "-")]
        cells += [format_value(row["value"]), *(format_value(row[p], "param") for p in params)]
        pairs = [(row[f"val_accuracy@{k}"], row[f"val_mae@{k}"]) for k in info.sparsity_keys]
        cells += [f"{format_value(acc)} / {format_value(mae)}" for acc, mae in pairs]
        cells.append(format_value(row["n_params"], "int"))
        cells.append(format_value(row["train_seconds"], "seconds"))
        lines.append(table_row(cells))
    return lines + [""]


def render_comparison(entries: Sequence[ComparisonEntry], has_png: bool, storage_label: str) -> str:
    names = " vs ".join(f"`{e.info.name}`" for e in entries)
    lines = [f"# Comparison: {names}", "", *_provenance(storage_label), ""]
    for e in entries:
        what = "test split" if e.source == "test" else "validation split (not scored on test yet)"
        family = f" [{e.info.model_family}]" if e.info.model_family else ""
        c = e.counts
        lines.append(
            f"- `{e.info.name}`{family}: best trial {e.trial_number} ({_params_text(e.params)}); "
            f"{what}; {c.total} trials ({c.complete} complete, {c.pruned} pruned, {c.failed} "
            f"failed); budget: {e.info.budget or 'not stored'}"
        )
    head = ["sparsity"]
    for e in entries:
        head += [f"{e.info.name} accuracy ({e.source})", f"{e.info.name} MAE ({e.source})"]
    two = len(entries) == 2
    if two:
        head.append(f"accuracy difference ({entries[0].info.name} - {entries[1].info.name})")
    lines += ["", table_row(head), _separator([False] * len(head))]
    for key in sorted_sparsity_keys(k for e in entries for k in e.metrics):
        cells = [key]
        for e in entries:
            m = e.metrics.get(key, {})
            cells += [format_value(m.get("accuracy")), format_value(m.get("mae"))]
        if two:
            a = entries[0].metrics.get(key, {}).get("accuracy")
            b = entries[1].metrics.get(key, {}).get("accuracy")
            cells.append(f"{a - b:+.4f}" if a is not None and b is not None else "-")
        lines.append(table_row(cells))
    if len({e.source for e in entries}) > 1:
        caution = "the studies are scored on different splits (test vs validation)."
        lines += ["", f"**Caution:** {caution}"]
    lines += ["", "Chart: [comparison.html](comparison.html)"]
    if has_png:
        lines += ["", "![accuracy vs sparsity](comparison.png)"]
    return "\n".join(lines) + "\n"


def _provenance(storage_label: str) -> list[str]:
    storage = f"`{storage_label}`" if storage_label else "(given)"
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [f"- Storage: {storage}", f"- Generated: {now}"]


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{SearchSpace.label(k)}={format_value(v, 'param')}" for k, v in params.items()
    )


def table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _separator(text_columns: Sequence[bool]) -> str:
    """Markdown header separator: text columns left-aligned, numbers right-aligned."""
    return "|" + "".join(":---|" if text else "---:|" for text in text_columns)
