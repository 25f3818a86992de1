"""``python -m hpo.report``: charts, tables and a markdown report of a study, or a comparison.

    python -m hpo.report --study sparse_mnist                   # -> reports/sparse_mnist/
    python -m hpo.report --compare sparse_mnist dense_mnist     # -> reports/compare_..._vs_.../

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
import plotly.graph_objects as go

from ..errors import UsageError, print_usage_error
from ..runtime.storage import load_existing_study, open_existing_storage
from ..runtime.storage_url import (
    STORAGE_DEFAULT_HELP,
    StorageError,
    StorageTarget,
    resolve_storage_url,
)
from .charts import comparison_figure, study_charts, write_html, write_pngs
from .markdown import render_comparison, render_study
from .tables import compare_entry, read_study_tables, write_csv

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
        "--storage", metavar="URL", help=f"study storage (default: {STORAGE_DEFAULT_HELP})"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="output folder (default: reports/<study>, or reports/compare_<a>_vs_<b>)",
    )
    parser.add_argument(
        "--top", type=int, default=5, help="how many best trials to list (default: 5)"
    )
    parser.add_argument(
        "--no-png", action="store_true", help="skip static PNG export even if Kaleido is installed"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (bad input: one line on stderr, status 2)."""
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        target = StorageTarget.parse(resolve_storage_url(args.storage))
        storage = open_existing_storage(target)
        if args.study is not None:
            out = args.out or DEFAULT_OUT_ROOT / args.study
            study = load_existing_study(storage, args.study, target.masked)
            written, notices = write_study_report(
                study, out, top=args.top, png=not args.no_png, storage_label=target.masked
            )
        else:
            if len(args.compare) < 2:
                raise UsageError("--compare needs at least two study names")
            out = args.out or DEFAULT_OUT_ROOT / ("compare_" + "_vs_".join(args.compare))
            studies = [load_existing_study(storage, n, target.masked) for n in args.compare]
            written, notices = write_comparison(
                studies, out, png=not args.no_png, storage_label=target.masked
            )
    except (UsageError, StorageError) as e:
        return print_usage_error(e, prog="hpo.report")
    for notice in notices:
        print(notice)
    print(f"wrote {len(written)} files to {out}:")
    for path in written:
        print(f"  {path}")
    return 0


def write_study_report(
    study: optuna.Study, out: Path, *, top: int = 5, png: bool = True, storage_label: str = ""
) -> tuple[list[Path], list[str]]:
    """Write the report of ``study`` (finished or running) into ``out``.

    Returns:
        The files written, and one-line notices (skipped charts, skipped PNGs).
    """
    tables = read_study_tables(study, top=top)
    out = _make_dir(out)
    written = [
        out / "report.md",
        write_csv(out / "trials.csv", tables.columns, tables.rows),
        write_csv(out / "best_trials.csv", ("rank", *tables.columns), tables.best),
    ]
    if tables.counts.total == 0:  # no charts, and no notice per chart: report.md says why
        notices = [f"study {study.study_name!r} has no trials yet: report.md says so"]
        charts = []
    else:
        charts = study_charts(study, tables.info)
        notices = [f"chart skipped: {c.title}: {c.skipped}" for c in charts if c.skipped]
    drawn = {c.name: c.figure for c in charts if c.figure is not None}
    files, has_png = _write_figures(drawn, out, png, notices)
    (out / "report.md").write_text(
        render_study(tables, charts, set(drawn) if has_png else set(), storage_label),
        encoding="utf-8",
    )
    return written + files, notices


def write_comparison(
    studies: Sequence[optuna.Study], out: Path, *, png: bool = True, storage_label: str = ""
) -> tuple[list[Path], list[str]]:
    """Write ``comparison.md`` and one chart: the best model of each study at every sparsity.

    Raises:
        UsageError: A study has no completed trial yet.
    """
    entries = [compare_entry(s) for s in studies]
    out = _make_dir(out)
    notices: list[str] = []
    files, has_png = _write_figures({"comparison": comparison_figure(entries)}, out, png, notices)
    (out / "comparison.md").write_text(
        render_comparison(entries, has_png, storage_label), encoding="utf-8"
    )
    return [out / "comparison.md", *files], notices


# --- helpers ------------------------------------------------------------------------------


def _write_figures(
    figures: dict[str, go.Figure], out: Path, png: bool, notices: list[str]
) -> tuple[list[Path], bool]:
    """``<name>.html`` (+ ``plotly.min.js``) per figure, and PNGs if asked and possible."""
    if not figures:
        return [], False
    written = [write_html(f, out / f"{name}.html") for name, f in figures.items()]
    written.append(out / "plotly.min.js")
    if not png:
        return written, False
    pngs = [out / f"{name}.png" for name in figures]
    notice = write_pngs(list(figures.values()), pngs)
    if notice:
        notices.append(notice)
        return written, False
    return written + pngs, True


def _make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output folder {path}: {e.strerror or e}") from e
    return path


if __name__ == "__main__":
    sys.exit(main())
