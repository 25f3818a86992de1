"""The summary of an experiment, from its CSV: mean +/- std tables and invariance matrices.

Rewritten from ``<name>_runs.csv`` alone (``--summarize-only`` does just this), so the tables
and figures always agree with the rows, however many sessions the runs took.
"""

from __future__ import annotations

from pathlib import Path

from studies.experiments import ExperimentDefinition

from .cells import cells_of, mean_std
from .figures import plot_diagonal, plot_invariance
from .runner import read_rows

__all__ = ["summarize"]


def summarize(definition: ExperimentDefinition, csv_path: Path, out_dir: Path) -> Path:
    """Rewrite ``<name>.md`` and the figures from the CSV; returns the markdown path."""
    rows = read_rows(csv_path)
    cells = cells_of(rows)
    families = [str(f) for f in definition.families]
    lines = [f"# {definition.name}", "", definition.description, ""]
    lines += _diagonal_table(definition, cells, families)
    if len(definition.test_sparsities) > 1:  # one row per training sparsity
        lines += _invariance_tables(definition, cells, families)
    md_path = out_dir / f"{definition.name}.md"
    md_path.write_text("\n".join(lines) + "\n")
    plot_diagonal(definition, cells, families, out_dir / f"{definition.name}_accuracy.png")
    if len(definition.train_sparsities) > 1:
        plot_invariance(definition, cells, families, out_dir / f"{definition.name}_invariance.png")
    return md_path


def _diagonal_table(definition, cells, families) -> list[str]:
    lines = [
        "## Train sparsity = test sparsity (test split, mean +/- std over seeds)",
        "",
        "| sparsity | " + " | ".join(f"{f} accuracy | {f} MAE" for f in families) + " |",
        "|---|" + "---|---|" * len(families),
    ]
    for s in definition.train_sparsities:
        out = [f"{s:g}"]
        for f in families:
            cell = cells.get((f, s, s))
            if cell is None:
                out += ["(pending)", "(pending)"]
                continue
            acc, acc_sd = mean_std(cell["accuracy"])
            mae, mae_sd = mean_std(cell["mae"])
            n = len(cell["accuracy"])
            out += [
                f"{100 * acc:.2f} +/- {100 * acc_sd:.2f} (n={n})",
                f"{mae:.4f} +/- {mae_sd:.4f}",
            ]
        lines.append("| " + " | ".join(out) + " |")
    return lines + [""]


def _invariance_tables(definition, cells, families) -> list[str]:
    lines = ["## Invariance: test accuracy (%) when train and test sparsity differ", ""]
    for f in families:
        lines += [
            f"### {f}",
            "",
            "| train \\ test | " + " | ".join(f"{t:g}" for t in definition.test_sparsities) + " |",
            "|---|" + "---|" * len(definition.test_sparsities),
        ]
        for s in definition.train_sparsities:
            out = [f"{s:g}"]
            for t in definition.test_sparsities:
                cell = cells.get((f, s, t))
                out.append("-" if cell is None else f"{100 * mean_std(cell['accuracy'])[0]:.2f}")
            lines.append("| " + " | ".join(out) + " |")
        lines.append("")
        drops = []
        for s in definition.train_sparsities:
            for t in definition.test_sparsities:
                own, cross = cells.get((f, t, t)), cells.get((f, s, t))
                if s != t and own and cross:
                    drop = 100 * (mean_std(own["accuracy"])[0] - mean_std(cross["accuracy"])[0])
                    drops.append(f"train {s:g} -> test {t:g}: {drop:+.2f}")
        if drops:
            lines += [
                "Accuracy drop vs the model trained at the test sparsity (points; positive = "
                "worse than training at the test sparsity): " + "; ".join(drops),
                "",
            ]
    return lines
