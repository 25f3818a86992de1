"""The markdown of a study report (``report.md``) and of a comparison (``comparison.md``).

Pure rendering: every number comes from :mod:`hpo.reporting.tables`, already read from the
storage; nothing here touches a study.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from studies import SearchSpace

from .charts import Chart
from .tables import ComparisonEntry, StudyTables, format_value, sorted_sparsity_keys

__all__ = ["render_comparison", "render_study"]


def render_study(
    tables: StudyTables, charts: list[Chart], png_names: set[str], storage_label: str
) -> str:
    info, counts = tables.info, tables.counts
    lines = [f"# Study `{info.name}`", ""]
    if info.description:
        lines += [info.description, ""]
    lines += [
        f"- Objective: {info.objective_label} ({info.direction})",
        f"- Budget: {info.budget or 'not stored with this study'}",
        f"- Storage: `{storage_label}`" if storage_label else "- Storage: (given)",
        f"- Generated: {_now()}",
        f"- Reproduce: `python -m hpo.report --study {info.name}"
        + (f" --storage '{storage_label}'`" if storage_label else "`"),
        "",
    ]
    if counts.total == 0:
        lines += [
            "**This study has no trials yet.** Start it with "
            f"`python -m hpo.run --study {info.name} --n-trials N`, then run the report again.",
            "",
        ]
        return "\n".join(lines)
    if counts.running:
        waiting = f", {counts.waiting} waiting" if counts.waiting else ""
        lines += [
            f"*Still running: {counts.running} trial(s) in progress{waiting}. "
            "The figures below are a snapshot.*",
            "",
        ]
    elif counts.waiting:
        lines += [
            f"*{counts.waiting} queued trial(s) not started yet (grid points beyond the budget "
            "so far: a larger --n-trials runs them).*",
            "",
        ]
    lines += ["## Trials", "", "| state | trials |", "|:---|---:|"]
    lines += [f"| {state} | {n} |" for state, n in counts.as_rows()]
    lines += [f"| **total** | **{counts.total}** |", ""]
    if tables.failures:
        lines += [
            "### Why trials failed or were pruned",
            "",
            "| state | reason (numbers as #) | trials | example |",
            "|:---|:---|:---|:---|",
        ]
        for g in tables.failures:
            numbers = ", ".join(str(n) for n in g.trial_numbers)
            lines.append(
                f"| {g.state} | {_md(g.pattern)} | {len(g.trial_numbers)}: {numbers} | "
                f"{_md(g.example)} |"
            )
        lines.append("")
    lines += _render_test_section(tables)
    lines += _render_best_section(tables)
    lines += ["## Charts", ""]
    for chart in charts:
        if chart.figure is None:
            lines.append(f"- {chart.title}: skipped ({chart.skipped})")
            continue
        lines.append(f"- [{chart.title}]({chart.name}.html)")
        if chart.name in png_names:
            lines += ["", f"  ![{chart.title}]({chart.name}.png)", ""]
    lines += [
        "",
        "All trials: `trials.csv`; the best ones: `best_trials.csv` (exact stored values).",
        "",
    ]
    return "\n".join(lines)


def _render_test_section(tables: StudyTables) -> list[str]:
    info = tables.info
    lines = ["## Best configuration on the test split", ""]
    if not tables.best:
        return lines + ["No completed trial yet.", ""]
    test_row = tables.test_row
    if tables.test_metrics is None or test_row is None:
        best = tables.best[0]
        lines += [
            f"Not scored on the test split yet (the run scores its best trial once, when it "
            f"ends). Current best: trial {best['trial']} with {info.objective_label} "
            f"{format_value(best['value'])}.",
            "",
        ]
        return lines
    lines.append(
        f"Trial {test_row['trial']} ({_params_text(test_row, tables.params)}), "
        f"{format_value(test_row['n_params'], 'int')} parameters, trained in "
        f"{format_value(test_row['train_seconds'], 'seconds')}."
    )
    if tables.best[0]["trial"] != test_row["trial"]:
        lines.append(
            f"*The study's best is now trial {tables.best[0]['trial']}; these test figures are "
            f"for trial {test_row['trial']}, the best when the run last finished.*"
        )
    if tables.best_model_artifact:
        lines.append(f"Saved model: artifact `{tables.best_model_artifact}`.")
    lines += [
        "",
        "| sparsity | test accuracy | test MAE | val accuracy | val MAE |",
        "|---:|---:|---:|---:|---:|",
    ]
    for key in info.sparsity_keys:
        test = tables.test_metrics.get(key, {})
        lines.append(
            f"| {key} | {format_value(test.get('accuracy'))} | {format_value(test.get('mae'))} | "
            f"{format_value(test_row.get(f'val_accuracy@{key}'))} | "
            f"{format_value(test_row.get(f'val_mae@{key}'))} |"
        )
    return lines + [""]


def _render_best_section(tables: StudyTables) -> list[str]:
    info = tables.info
    if not tables.best:
        return []
    params = tables.params
    head = ["rank", "trial", "phase", info.objective_label]
    head += [SearchSpace.label(p) for p in params]
    head += [f"acc / MAE @ {k}" for k in info.sparsity_keys]
    head += ["params", "train time"]
    head_keys = ["rank", "trial", "phase", "value", *params, *info.sparsity_keys, "n", "t"]
    lines = [
        f"## Best {len(tables.best)} trials",
        "",
        "Validation accuracy and MAE at every test sparsity (best-epoch weights).",
        "",
        "| " + " | ".join(head) + " |",
        _separator([c == "phase" or _is_text_param(tables, c) for c in head_keys]),
    ]
    for row in tables.best:
        cells = [str(row["rank"]), str(row["trial"]), str(row["phase"] or "-")]
        cells.append(format_value(row["value"]))
        cells += [format_value(row[p], "param") for p in params]
        cells += [
            f"{format_value(row[f'val_accuracy@{k}'])} / {format_value(row[f'val_mae@{k}'])}"
            for k in info.sparsity_keys
        ]
        cells += [
            format_value(row["n_params"], "int"),
            format_value(row["train_seconds"], "seconds"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def render_comparison(entries: Sequence[ComparisonEntry], has_png: bool, storage_label: str) -> str:
    names = " vs ".join(f"`{e.info.name}`" for e in entries)
    lines = [f"# Comparison: {names}", ""]
    lines += [f"- Storage: `{storage_label}`" if storage_label else "- Storage: (given)"]
    lines += [f"- Generated: {_now()}", ""]
    for e in entries:
        what = "test split" if e.source == "test" else "validation split (not scored on test yet)"
        params = ", ".join(
            f"{SearchSpace.label(k)}={format_value(v, 'param')}" for k, v in e.params.items()
        )
        family = f" [{e.info.model_family}]" if e.info.model_family else ""
        c = e.counts
        lines.append(
            f"- `{e.info.name}`{family}: best trial {e.trial_number} ({params}); {what}; "
            f"{c.total} trials ({c.complete} complete, {c.pruned} pruned, {c.failed} failed); "
            f"budget: {e.info.budget or 'not stored'}"
        )
    lines.append("")
    sparsities = sorted_sparsity_keys(k for e in entries for k in e.metrics)
    head = ["sparsity"]
    for e in entries:
        head += [f"{e.info.name} accuracy ({e.source})", f"{e.info.name} MAE ({e.source})"]
    two = len(entries) == 2
    if two:
        head.append(f"accuracy difference ({entries[0].info.name} - {entries[1].info.name})")
    lines += ["| " + " | ".join(head) + " |", _separator([False] * len(head))]
    for key in sparsities:
        cells = [key]
        for e in entries:
            m = e.metrics.get(key, {})
            cells += [format_value(m.get("accuracy")), format_value(m.get("mae"))]
        if two:
            a = entries[0].metrics.get(key, {}).get("accuracy")
            b = entries[1].metrics.get(key, {}).get("accuracy")
            cells.append(f"{a - b:+.4f}" if a is not None and b is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if len({e.source for e in entries}) > 1:
        lines += [
            "",
            "**Caution:** the studies are scored on different splits (test vs validation).",
        ]
    lines += ["", "Chart: [comparison.html](comparison.html)"]
    if has_png:
        lines += ["", "![accuracy vs sparsity](comparison.png)"]
    lines.append("")
    return "\n".join(lines)


# --- helpers ------------------------------------------------------------------------------


def _params_text(row: dict, params: Sequence[str]) -> str:
    return ", ".join(f"{SearchSpace.label(p)}={format_value(row[p], 'param')}" for p in params)


def _separator(text_columns: Sequence[bool]) -> str:
    """Markdown header separator: text columns left-aligned, numbers right-aligned."""
    return "|" + "".join(":---|" if text else "---:|" for text in text_columns)


def _is_text_param(tables: StudyTables, column: str) -> bool:
    return any(isinstance(row.get(column), str) for row in tables.best)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
