"""An experiment's rows grouped by (family, train sparsity, test sparsity), with seed statistics."""

from __future__ import annotations

import statistics

__all__ = ["Cells", "cells_of", "mean_std"]

# (family, train sparsity, test sparsity) -> {"accuracy": [...per seed], "mae": [...]}
Cells = dict[tuple[str, float, float], dict[str, list[float]]]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cells_of(rows: list[dict[str, str]]) -> Cells:
    """(family, train sparsity, test sparsity) -> {"accuracy": [...per seed], "mae": [...]}."""
    cells: Cells = {}
    for row in rows:
        cell = cells.setdefault(
            (row["family"], float(row["train_sparsity"]), float(row["test_sparsity"])),
            {"accuracy": [], "mae": []},
        )
        cell["accuracy"].append(float(row["accuracy"]))
        cell["mae"].append(float(row["mae"]))
    return cells
