"""The summary of an experiment, from its CSV: mean +/- std tables and invariance matrices.

Rewritten from ``<name>_runs.csv`` alone (``--summarize-only`` does just this), so the tables
and figures always agree with the rows, however many sessions the runs took.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from studies.experiments import ExperimentDefinition

from .cells import cells_of, mean_std
from .figures import plot_diagonal, plot_invariance
from .runner import read_rows

__all__ = ["summarize"]


def summarize(definition: ExperimentDefinition, csv_path: Path, out_dir: Path) -> Path:
    """Rewrite ``<name>.md`` and the figures from the CSV; returns the markdown path.

    Only the rows of the definition's recipes count: a CSV may also hold rows of a recipe
    the experiment was run with before.
    """
    recipes = [r.name for r in definition.recipes]
    rows = [r for r in read_rows(csv_path) if r["recipe"] in recipes]
    families = [str(f) for f in definition.families]
    lines = [f"# {definition.name}", "", definition.description, ""]
    md_path = out_dir / f"{definition.name}.md"
    if len(recipes) > 1:
        md_path.write_text("\n".join(lines + recipe_table(definition, rows, families)) + "\n")
        return md_path
    lines.append(f"Training recipe: {definition.recipes[0].describe()}.")
    lines.append("")
    cells = cells_of(rows)
    lines += _diagonal_table(definition, cells, families)
    if len(definition.test_sparsities) > 1:  # one row per training sparsity
        lines += _invariance_tables(definition, cells, families)
    md_path.write_text("\n".join(lines) + "\n")
    if len(definition.train_sparsities) > 1 or len(families) > 1:  # one point plots nothing
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


def recipe_table(definition, rows, families) -> list[str]:
    """Recipes side by side at the training sparsity: validation (which ranks them) and test.

    Each cell is mean +/- std over seeds; "all" pools every family and seed; "change" is its
    difference from the baseline recipe (or, without one, the first).
    """
    s = definition.train_sparsities[0]
    header = [f"{f} val" for f in families] + ["all val", "change", "all test"]
    lines = [
        f"## Recipes at sparsity {s:g}: validation accuracy % (ranks), test accuracy % (reports)",
        "",
        "| recipe | " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(header),
    ]
    names = [r.name for r in definition.recipes]
    reference_name = "baseline" if "baseline" in names else names[0]
    reference = _pooled_val(rows, reference_name, s)
    for recipe in definition.recipes:
        mine = [r for r in rows if r["recipe"] == recipe.name and float(r["test_sparsity"]) == s]
        if not mine:
            lines.append(f"| {recipe.name} | " + " | ".join(["(pending)"] * len(header)) + " |")
            continue
        out = [_pct(_val([r for r in mine if r["family"] == f])) for f in families]
        pooled = _pooled_val(rows, recipe.name, s)
        skip = reference is None or pooled is None or recipe.name == reference_name
        change = "" if skip else f"{100 * (pooled - reference):+.2f}"
        out += [_pct(_val(mine)), change]
        out.append(_pct([float(r["accuracy"]) for r in mine]))
        lines.append(f"| {recipe.name} | " + " | ".join(out) + " |")
    lines += ["", "Recipes:", ""] + [f"- {r.describe()}" for r in definition.recipes]
    return lines + [""]


def _val(rows) -> list[float]:
    """Validation accuracies of ``rows`` (rows written before it was recorded have none)."""
    return [float(r["val_accuracy"]) for r in rows if r["val_accuracy"] != ""]


def _pooled_val(rows, recipe: str, sparsity: float) -> float | None:
    mine = [r for r in rows if r["recipe"] == recipe and float(r["test_sparsity"]) == sparsity]
    values = _val(mine)
    return statistics.fmean(values) if values else None


def _pct(values: list[float]) -> str:
    if not values:
        return "-"
    mean, sd = mean_std(values)
    return f"{100 * mean:.2f} +/- {100 * sd:.2f} (n={len(values)})"
