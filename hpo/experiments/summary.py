"""An experiment's summary, from its rows: mean +/- std tables, invariance matrices, figures.

The same rows -- a study's or a runs CSV's (``--summarize-only``) -- give the same summary,
however many sessions or processes the runs took.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from studies.experiments import ExperimentDefinition

from .figures import plot_diagonal, plot_invariance, write_figures
from .rows import Cells, Rows, cells_of, mean_std

__all__ = ["summarize"]


def summarize(definition: ExperimentDefinition, rows: Rows, out_dir: Path) -> Path:
    """Rewrite ``<name>.md`` and the figures from ``rows``; returns the markdown path.

    Only the rows of the definition's recipes count: a CSV may also hold rows of a recipe
    the experiment was run with before.
    """
    recipes = [r.name for r in definition.recipes]
    rows = [r for r in rows if r["recipe"] in recipes]
    families = [str(f) for f in definition.families]
    lines = [f"# {definition.name}", "", definition.description, ""]
    md_path = out_dir / f"{definition.name}.md"
    if len(recipes) > 1:
        md_path.write_text("\n".join(lines + recipe_table(definition, rows, families)) + "\n")
        return md_path
    cells = cells_of(rows)
    lines += [f"Training recipe: {definition.recipes[0].describe()}.", ""]
    lines += _diagonal_table(definition, cells, families)
    if len(definition.test_sparsities) > 1:  # one row per training sparsity
        lines += _invariance_tables(definition, cells, families)
    md_path.write_text("\n".join(lines) + "\n")
    figures = []
    if len(definition.train_sparsities) > 1 or len(families) > 1:  # one point plots nothing
        figures.append(("accuracy", plot_diagonal(definition, cells, families)))
    if len(definition.train_sparsities) > 1:
        figures.append(("invariance", plot_invariance(definition, cells, families)))
    write_figures(figures, out_dir, definition.name)
    return md_path


def _diagonal_table(
    definition: ExperimentDefinition, cells: Cells, families: list[str]
) -> list[str]:
    lines = [
        "## Train sparsity = test sparsity (test split, mean +/- std over seeds)",
        "",
        _row(["sparsity", *(f"{f} accuracy | {f} MAE" for f in families)]),
        "|---|" + "---|---|" * len(families),
    ]
    for s in definition.train_sparsities:
        out = [f"{s:g}"]
        for cell in (cells.get((f, s, s)) for f in families):
            if cell is None:
                out += ["(pending)", "(pending)"]
                continue
            mae, sd = mean_std(cell["mae"])
            out += [_pct(cell["accuracy"]), f"{mae:.4f} +/- {sd:.4f}"]
        lines.append(_row(out))
    return lines + [""]


def _invariance_tables(
    definition: ExperimentDefinition, cells: Cells, families: list[str]
) -> list[str]:
    trains, tests = definition.train_sparsities, definition.test_sparsities
    lines = ["## Invariance: test accuracy (%) when train and test sparsity differ", ""]
    for f in families:
        mean = {k[1:]: mean_std(c["accuracy"])[0] for k, c in cells.items() if k[0] == f}
        lines += [f"### {f}", "", _row(["train \\ test", *(f"{t:g}" for t in tests)])]
        lines.append("|---|" + "---|" * len(tests))
        for s in trains:
            out = [f"{100 * mean[s, t]:.2f}" if (s, t) in mean else "-" for t in tests]
            lines.append(_row([f"{s:g}", *out]))
        drops = [
            f"train {s:g} -> test {t:g}: {100 * (mean[t, t] - mean[s, t]):+.2f}"
            for s in trains for t in tests if s != t and (t, t) in mean and (s, t) in mean
        ]  # fmt: skip
        lines.append("")
        if drops:
            lines += [
                "Accuracy drop vs the model trained at the test sparsity (points; positive = "
                "worse than training at the test sparsity): " + "; ".join(drops),
                "",
            ]
    return lines


def recipe_table(definition: ExperimentDefinition, rows: Rows, families: list[str]) -> list[str]:
    """Recipes side by side at the training sparsity: validation (which ranks them) and test.

    Each cell is mean +/- std over seeds; "all" pools every family and seed; "change" is its
    difference from the baseline recipe (or, without one, the first).
    """
    s = definition.train_sparsities[0]
    header = [f"{f} val" for f in families] + ["all val", "change", "all test"]
    lines = [
        f"## Recipes at sparsity {s:g}: validation accuracy % (ranks), test accuracy % (reports)",
        "",
        _row(["recipe", *header]),
        "|---|" + "---:|" * len(header),
    ]
    at_s = {r.name: [x for x in rows if x["recipe"] == r.name and float(x["test_sparsity"]) == s]
            for r in definition.recipes}  # fmt: skip
    reference_name = "baseline" if "baseline" in at_s else definition.recipes[0].name
    reference = _val(at_s[reference_name])
    for name, mine in at_s.items():
        if not mine:
            lines.append(_row([name, *["(pending)"] * len(header)]))
            continue
        out = [_pct(_val([r for r in mine if r["family"] == f])) for f in families]
        pooled, change = _val(mine), ""
        if reference and pooled and name != reference_name:
            change = f"{100 * (statistics.fmean(pooled) - statistics.fmean(reference)):+.2f}"
        out += [_pct(pooled), change, _pct([float(r["accuracy"]) for r in mine])]
        lines.append(_row([name, *out]))
    lines += ["", "Recipes:", ""] + [f"- {r.describe()}" for r in definition.recipes]
    return lines + [""]


def _val(rows: Rows) -> list[float]:
    """Validation accuracies of ``rows`` (rows written before it was recorded have none)."""
    return [float(r["val_accuracy"]) for r in rows if r["val_accuracy"] not in ("", None)]


def _pct(values: list[float]) -> str:
    if not values:
        return "-"
    mean, sd = mean_std(values)
    return f"{100 * mean:.2f} +/- {100 * sd:.2f} (n={len(values)})"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
