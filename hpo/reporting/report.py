"""``python -m hpo.report``: charts, tables and a markdown report of a study, or a comparison.

    python -m hpo.report --study sparse_mnist                   # -> reports/sparse_mnist/
    python -m hpo.report --compare sparse_mnist dense_mnist     # -> reports/compare/...

One study's folder holds ``report.md`` (counts, failure reasons, the best configuration's test
figures, the best trials), ``trials.csv`` (every trial), ``best_trials.csv``, and one
interactive HTML chart per figure (``plotly.min.js`` is written once beside them so the charts
open offline), plus a PNG of each when Kaleido and a Chrome are installed. It works on a study
that is still running: it reads what the storage holds now, and says which trials are running.

Exit status: 0 written, 2 bad input (unknown study, unreachable storage: one line on stderr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna

from .charts import Chart, comparison_figure, study_charts, write_html, write_pngs
from .storage import StorageError, mask_url, resolve_storage_url
from .tables import (
    PARAM_LABELS,
    ComparisonEntry,
    ReportError,
    StudyTables,
    compare_entry,
    format_value,
    load_study,
    open_existing_storage,
    read_study_tables,
    sorted_sparsity_keys,
    write_csv,
)

__all__ = ["EXIT_USAGE", "build_parser", "main", "write_comparison", "write_study_report"]

EXIT_USAGE = 2
DEFAULT_OUT_ROOT = Path("reports")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpo.report",
        description="Write charts, CSV tables and report.md for a study, or compare studies.",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--study", metavar="NAME", help="the study to report on")
    what.add_argument(
        "--compare",
        nargs="+",
        metavar="NAME",
        help="two or more studies whose best models to compare (e.g. sparse_mnist dense_mnist)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="study storage (default: $HPO_STORAGE, else sqlite:///hpo.db)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="output folder (default: reports/<study>, or reports/compare_<a>_vs_<b>)",
    )
    parser.add_argument(
        "--top", type=int, default=5, help="how many best trials to list and plot (default: 5)"
    )
    parser.add_argument(
        "--no-png", action="store_true", help="skip static PNG export even if Kaleido is installed"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (bad input: one line on stderr, status 2)."""
    args = build_parser().parse_args(argv)
    url = resolve_storage_url(args.storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = open_existing_storage(url)
        if args.study is not None:
            out = args.out or DEFAULT_OUT_ROOT / args.study
            study = load_study(storage, args.study, mask_url(url))
            written, notices = write_study_report(
                study, out, top=args.top, png=not args.no_png, storage_label=mask_url(url)
            )
        else:
            if len(args.compare) < 2:
                raise ReportError("--compare needs at least two study names")
            out = args.out or DEFAULT_OUT_ROOT / ("compare_" + "_vs_".join(args.compare))
            studies = [load_study(storage, name, mask_url(url)) for name in args.compare]
            written, notices = write_comparison(
                studies, out, png=not args.no_png, storage_label=mask_url(url)
            )
    except (ReportError, StorageError) as e:
        print(f"hpo.report: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for notice in notices:
        print(notice)
    print(f"wrote {len(written)} files to {out}:")
    for path in written:
        print(f"  {path}")
    return 0


def write_study_report(
    study: optuna.Study,
    out: Path,
    *,
    top: int = 5,
    png: bool = True,
    storage_label: str = "",
) -> tuple[list[Path], list[str]]:
    """Write the report of ``study`` into ``out``.

    Args:
        study: A loaded study (finished or running).
        out: Output folder (created).
        top: How many best trials to list and plot.
        png: Try static PNG export.
        storage_label: How to name the storage in the report (a masked URL).

    Returns:
        The files written, and one-line notices (skipped charts, skipped PNGs).
    """
    tables = read_study_tables(study, top=top)
    out = _make_dir(out)
    written = [
        write_csv(out / "trials.csv", tables.columns, tables.rows),
        write_csv(out / "best_trials.csv", ("rank", *tables.columns), tables.best),
    ]
    notices: list[str] = []
    if tables.counts.total == 0:
        notices.append(f"study {study.study_name!r} has no trials yet: report.md says so")
    # An empty study gets no charts (and no notice per chart): report.md says why.
    charts = study_charts(study, top=top) if tables.counts.total else []
    drawn = [c for c in charts if c.figure is not None]
    for chart in drawn:
        written.append(write_html(chart.figure, out / f"{chart.name}.html"))
    if drawn:
        written.append(out / "plotly.min.js")
    for chart in charts:
        if chart.skipped:
            notices.append(f"chart skipped: {chart.title}: {chart.skipped}")
    png_names: set[str] = set()
    if png and drawn:
        png_paths = [out / f"{c.name}.png" for c in drawn]
        notice = write_pngs([c.figure for c in drawn], png_paths)
        if notice:
            notices.append(notice)
        else:
            written.extend(png_paths)
            png_names = {c.name for c in drawn}
    report = _render_study(tables, charts, png_names, storage_label)
    written.insert(0, out / "report.md")
    (out / "report.md").write_text(report, encoding="utf-8")
    return written, notices


def write_comparison(
    studies: Sequence[optuna.Study],
    out: Path,
    *,
    png: bool = True,
    storage_label: str = "",
) -> tuple[list[Path], list[str]]:
    """Write ``comparison.md`` and one chart: the best model of each study at every sparsity.

    Returns:
        The files written, and one-line notices.

    Raises:
        ReportError: A study has no completed trial yet.
    """
    entries = [compare_entry(s) for s in studies]
    out = _make_dir(out)
    figure = comparison_figure(entries)
    written = [
        write_html(figure, out / "comparison.html"),
        out / "plotly.min.js",
    ]
    notices: list[str] = []
    has_png = False
    if png:
        notice = write_pngs([figure], [out / "comparison.png"])
        if notice:
            notices.append(notice)
        else:
            written.append(out / "comparison.png")
            has_png = True
    (out / "comparison.md").write_text(
        _render_comparison(entries, has_png, storage_label), encoding="utf-8"
    )
    written.insert(0, out / "comparison.md")
    return written, notices


# --- markdown -----------------------------------------------------------------------------


def _render_study(
    tables: StudyTables, charts: list[Chart], png_names: set[str], storage_label: str
) -> str:
    info, counts = tables.info, tables.counts
    lines = [f"# Study `{info.name}`", ""]
    if info.description:
        lines += [info.description, ""]
    lines += [
        f"- Objective: {info.objective_label} ({info.direction})",
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
    rows_by_trial = {row["trial"]: row for row in tables.rows}
    test_row = rows_by_trial.get(tables.test_trial) if tables.test_trial is not None else None
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
        f"Trial {test_row['trial']} ({_params_text(test_row, tables.columns)}), "
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
    params = _param_columns(tables.columns)
    head = ["rank", "trial", "phase", info.objective_label]
    head += [PARAM_LABELS.get(p, p) for p in params]
    head += [f"acc / MAE @ {k}" for k in info.sparsity_keys]
    head += ["params", "train time"]
    head_keys = ["rank", "trial", "phase", "value", *params, *info.sparsity_keys, "n", "t"]
    lines = [
        f"## Best {len(tables.best)} trials",
        "",
        "Validation accuracy and MAE at every test sparsity (best-epoch weights).",
        "",
        "| " + " | ".join(head) + " |",
        _separator([c in ("phase", "activation") or _is_text_param(tables, c) for c in head_keys]),
    ]
    for row in tables.best:
        cells = [str(row["rank"]), str(row["trial"]), str(row["phase"] or "-")]
        cells.append(format_value(row["value"]))
        cells += [format_value(row[p], "lr" if p == "lr" else "") for p in params]
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


def _render_comparison(
    entries: Sequence[ComparisonEntry], has_png: bool, storage_label: str
) -> str:
    names = " vs ".join(f"`{e.info.name}`" for e in entries)
    lines = [f"# Comparison: {names}", ""]
    lines += [f"- Storage: `{storage_label}`" if storage_label else "- Storage: (given)"]
    lines += [f"- Generated: {_now()}", ""]
    for e in entries:
        what = "test split" if e.source == "test" else "validation split (not scored on test yet)"
        params = ", ".join(
            f"{PARAM_LABELS.get(k, k)}={format_value(v, 'lr' if k == 'lr' else '')}"
            for k, v in e.params.items()
        )
        family = f" [{e.info.model_family}]" if e.info.model_family else ""
        lines.append(f"- `{e.info.name}`{family}: best trial {e.trial_number} ({params}); {what}")
    lines.append("")
    keys_union: set[str] = set()
    for e in entries:
        keys_union.update(e.metrics)
    sparsities = sorted_sparsity_keys(keys_union)
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


def _make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create output folder {path}: {e.strerror or e}") from e
    return path


def _param_columns(columns: Sequence[str]) -> list[str]:
    start = columns.index("value") + 1
    end = next(i for i, c in enumerate(columns) if c.startswith("val_") or c == "n_params")
    return list(columns[start:end])


def _params_text(row: dict, columns: Sequence[str]) -> str:
    return ", ".join(
        f"{PARAM_LABELS.get(p, p)}={format_value(row[p], 'lr' if p == 'lr' else '')}"
        for p in _param_columns(columns)
    )


def _separator(text_columns: Sequence[bool]) -> str:
    """Markdown header separator: text columns left-aligned, numbers right-aligned."""
    return "|" + "".join(":---|" if text else "---:|" for text in text_columns)


def _is_text_param(tables: StudyTables, column: str) -> bool:
    return any(isinstance(row.get(column), str) for row in tables.best)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


if __name__ == "__main__":
    sys.exit(main())
