"""An experiment's rows: one per run and test sparsity, from its study or a runs CSV.

``<name>_runs.csv`` is the published form (``docs/results/``); the oldest files lack the
recipe columns. Rows built from a study hold numbers, rows read from a CSV strings: every
reader converts, so the same runs give the same tables either way.
"""

from __future__ import annotations

import csv
import os
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FIELDS", "cells_of", "mean_std", "read_rows", "run_key", "run_label", "write_rows"]

FIELDS = (
    "experiment", "recipe", "family", "train_sparsity", "seed", "test_sparsity", "accuracy",
    "mae", "n_test", "epochs", "train_images", "train_seconds", "device", "val_accuracy",
)  # fmt: skip
Rows = Sequence[Mapping[str, Any]]
RunKey = tuple[str, str, float, int]  # (recipe, family, train sparsity, seed)
# (family, train sparsity, test sparsity) -> {"accuracy": [...per seed], "mae": [...]}
Cells = dict[tuple[str, float, float], dict[str, list[float]]]


def run_key(row: Mapping[str, Any]) -> RunKey:
    """The run a row, or a trial's params, belong to."""
    return row["recipe"], row["family"], float(row["train_sparsity"]), int(row["seed"])


def run_label(key: RunKey) -> str:
    """``full-sparse-0.7-s0``: a run in messages and checkpoints."""
    return f"{key[0]}-{key[1]}-{key[2]:g}-s{key[3]}"


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a runs CSV (rows older than the recipe columns: baseline, no validation)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{"recipe": "baseline", "val_accuracy": "", **row} for row in csv.DictReader(f)]


def write_rows(path: Path, rows: Rows) -> None:
    """Write ``rows`` whole or not at all (a temporary file renamed into place)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the table from other users
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cells_of(rows: Rows) -> Cells:
    """The rows' accuracies and MAEs by (family, train sparsity, test sparsity)."""
    cells: Cells = {}
    for row in rows:
        key = (row["family"], float(row["train_sparsity"]), float(row["test_sparsity"]))
        cell = cells.setdefault(key, {"accuracy": [], "mae": []})
        cell["accuracy"].append(float(row["accuracy"]))
        cell["mae"].append(float(row["mae"]))
    return cells
