"""An experiment's rows, one per run and test sparsity: numbers from a study, strings from a CSV."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..runtime.files import written_whole

FIELDS = (
    "experiment", "recipe", "family", "train_sparsity", "seed", "test_sparsity", "accuracy",
    "mae", "n_test", "epochs", "train_images", "train_seconds", "device", "val_accuracy",
)  # fmt: skip
Rows = Sequence[Mapping[str, Any]]
RunKey = tuple[str, str, float, int]  # (recipe, family, train sparsity, seed)


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
    with written_whole(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
