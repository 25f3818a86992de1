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
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna

from ..errors import print_usage_error
from ..runtime.storage import load_existing_study, open_existing_storage
from ..runtime.storage_url import (
    STORAGE_DEFAULT_HELP,
    StorageError,
    mask_url,
    resolve_storage_url,
)
from .charts import comparison_figure, study_charts, write_html, write_pngs
from .markdown import render_comparison, render_study
from .tables import compare_entry, read_study_tables, write_csv
from .trials import ReportError

__all__ = ["build_parser", "main", "write_comparison", "write_study_report"]

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
        help=f"study storage (default: {STORAGE_DEFAULT_HELP})",
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
            study = load_existing_study(storage, args.study, mask_url(url))
            written, notices = write_study_report(
                study, out, top=args.top, png=not args.no_png, storage_label=mask_url(url)
            )
        else:
            if len(args.compare) < 2:
                raise ReportError("--compare needs at least two study names")
            out = args.out or DEFAULT_OUT_ROOT / ("compare_" + "_vs_".join(args.compare))
            studies = [load_existing_study(storage, name, mask_url(url)) for name in args.compare]
            written, notices = write_comparison(
                studies, out, png=not args.no_png, storage_label=mask_url(url)
            )
    except (ReportError, StorageError) as e:
        return print_usage_error(e, prog="hpo.report")
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
    report = render_study(tables, charts, png_names, storage_label)
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
        render_comparison(entries, has_png, storage_label), encoding="utf-8"
    )
    written.insert(0, out / "comparison.md")
    return written, notices


# --- helpers ------------------------------------------------------------------------------


def _make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create output folder {path}: {e.strerror or e}") from e
    return path


if __name__ == "__main__":
    sys.exit(main())
