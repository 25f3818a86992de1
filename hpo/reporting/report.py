"""``python -m hpo.report --study NAME`` (or ``--compare A B``): charts, tables and a markdown
report of a study, as the storage holds it now. Exit status: 0 written, 2 bad input (one line)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

import optuna

from ..errors import UsageError, print_usage_error
from ..runtime.faults import NoSpaceError, faults_named, print_no_space
from ..runtime.files import written_whole
from ..runtime.storage import close_storage, load_existing_study, open_existing_storage
from ..runtime.storage_url import (
    STORAGE_DEFAULT_HELP,
    StorageError,
    StorageTarget,
    resolve_storage_url,
)
from .charts import comparison_figure, study_charts, write_figures
from .markdown import render_comparison, render_study
from .tables import compare_entry, read_study_tables, write_csv

__all__ = [
    "build_parser",
    "default_out_dir",
    "main",
    "write_comparison",
    "write_study_report",
]

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
    add = parser.add_argument
    add("--storage", metavar="URL", help=f"study storage (default: {STORAGE_DEFAULT_HELP})")
    add(
        "--out",
        metavar="DIR",
        type=Path,
        help="output folder (default: reports/<study>, or reports/compare_<a>_vs_<b>)",
    )
    add("--top", type=int, default=5, help="how many best trials to list (default: 5)")
    add("--no-png", action="store_true", help="skip static PNG export even if Kaleido is installed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (bad input: one line on stderr, status 2)."""
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        target = StorageTarget.parse(resolve_storage_url(args.storage))
        storage = open_existing_storage(target)
        try:
            with faults_named(target.masked):
                out, written, notices = _write(args, storage, target.masked)
        finally:
            close_storage(storage)
    except NoSpaceError as e:
        return print_no_space(e, prog="hpo.report")
    except (UsageError, StorageError) as e:
        return print_usage_error(e, prog="hpo.report")
    for notice in notices:
        print(notice)
    print(f"wrote {len(written)} files to {out}:")
    for path in written:
        print(f"  {path}")
    return 0


def default_out_dir(names: Sequence[str]) -> Path:
    """``reports/<study>`` or ``reports/compare_<a>_vs_<b>``, each name made a safe file name:
    a study name is any string, and ``../x`` must not lead out of ``reports/``."""
    safe = [re.sub(r"[^\w.-]+", "_", name).lstrip(".") or "_" for name in names]
    return DEFAULT_OUT_ROOT / (safe[0] if len(safe) == 1 else "compare_" + "_vs_".join(safe))


def _write(
    args: argparse.Namespace, storage: optuna.storages.BaseStorage, label: str
) -> tuple[Path, list[Path], list[str]]:
    """The report or comparison ``args`` ask for: (folder, files written, notices)."""
    png = not args.no_png
    if args.study is not None:
        out = args.out or default_out_dir([args.study])
        study = load_existing_study(storage, args.study, label)
        return out, *write_study_report(study, out, top=args.top, png=png, storage_label=label)
    if len(args.compare) < 2:
        raise UsageError("--compare needs at least two study names")
    out = args.out or default_out_dir(args.compare)
    studies = [load_existing_study(storage, n, label) for n in args.compare]
    return out, *write_comparison(studies, out, png=png, storage_label=label)


def write_study_report(
    study: optuna.Study, out: Path, *, top: int = 5, png: bool = True, storage_label: str = ""
) -> tuple[list[Path], list[str]]:
    """Write the report of ``study`` into ``out``; returns the files and one-line notices."""
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
    files, png_notice = write_figures(drawn, out, png)
    if png_notice:
        notices.append(png_notice)
    with_png = {p.stem for p in files if p.suffix == ".png"}
    markdown = render_study(tables, charts, with_png, storage_label)
    with written_whole(out / "report.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    return written + files, notices


def write_comparison(
    studies: Sequence[optuna.Study], out: Path, *, png: bool = True, storage_label: str = ""
) -> tuple[list[Path], list[str]]:
    """Write ``comparison.md`` and its chart (raises UsageError if a study has no result)."""
    entries = [compare_entry(s) for s in studies]
    out = _make_dir(out)
    files, png_notice = write_figures({"comparison": comparison_figure(entries)}, out, png)
    has_png = any(p.suffix == ".png" for p in files)
    markdown = render_comparison(entries, has_png, storage_label)
    with written_whole(out / "comparison.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    return [out / "comparison.md", *files], [png_notice] if png_notice else []


def _make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output folder {path}: {e.strerror or e}") from e
    return path
