"""Running a fixed-budget comparison experiment: every (family, sparsity, seed) once, resumable.

Every run trains one (model family, training sparsity, seed) of the experiment's definition
(``studies/experiments.py``) with the one fit loop (:func:`hpo.training.fit`) and scores it on
the *test* split at every test sparsity, with the test masks fixed by one seed for all models
(``studies.TEST_MASK_SEED``), so every model is judged on exactly the same pixels. Rows are
appended to ``<out>/<name>_runs.csv`` as each run finishes; re-running the same command skips
the runs already there, so a long experiment can be stopped and resumed. The summary is
written once, when the runs are done (:mod:`hpo.experiments.summary`).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from data import SparseBatches, SparseDataset, load_dataset
from models import build_model
from studies import TEST_MASK_SEED
from studies.experiments import ExperimentDefinition

from ..runtime.cpu import prepare_cpu_training
from ..runtime.device import place
from ..training import evaluate, fit

__all__ = ["FIELDS", "RunKey", "read_rows", "run_experiment"]

FIELDS = (
    "experiment",
    "family",
    "train_sparsity",
    "seed",
    "test_sparsity",
    "accuracy",
    "mae",
    "n_test",
    "epochs",
    "train_images",
    "train_seconds",
    "device",
)


@dataclass(frozen=True, order=True)
class RunKey:
    """One trained model of an experiment."""

    family: str
    train_sparsity: float
    seed: int


def run_experiment(
    definition: ExperimentDefinition,
    *,
    data_dir: str | None,
    out_dir: Path,
    device: str,
    download: bool = False,
) -> Path:
    """Train every missing run of ``definition``, appending rows to its CSV; returns the CSV.

    The caller writes the summary afterwards (``hpo.experiments.summary.summarize``): once,
    not after every run, whose cost grows with the runs already done.
    """
    if torch.device(device).type == "cpu":
        prepare_cpu_training()  # denormals flushed, freed memory retained (hpo.runtime.cpu)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{definition.name}_runs.csv"
    done = {_key(row) for row in read_rows(csv_path)}
    # Seed-major order: a partly finished experiment already covers every setting once.
    todo = [
        RunKey(str(family), s, seed)
        for seed in definition.seeds
        for s in definition.train_sparsities
        for family in definition.families
    ]
    todo = [k for k in todo if k not in done]
    print(f"{definition.name}: {len(done)} runs done, {len(todo)} to go", flush=True)
    if not todo:
        return csv_path
    ds = load_dataset(
        definition.dataset,
        data_dir=data_dir,
        download=download,
        seed=0,
        options=definition.dataset_options,
    )
    test_batches = {
        s: SparseBatches(
            ds.test,
            sparsity=s,
            batch_size=512,
            device=device,
            mean=ds.mean,
            std=ds.std,
            seed=TEST_MASK_SEED,
            fixed_masks=True,
        )
        for s in definition.test_sparsities
    }
    for i, key in enumerate(todo, 1):
        rows = _train_and_score(definition, ds, key, test_batches, device)
        _append_rows(csv_path, rows)
        diag = {r["test_sparsity"]: r["accuracy"] for r in rows}.get(key.train_sparsity)
        print(
            f"[{i}/{len(todo)}] {key.family:10s} train={key.train_sparsity:g} seed={key.seed} "
            f"acc@train-sparsity={diag if diag is None else f'{diag:.4f}'} "
            f"({rows[0]['train_seconds']:.0f} s)",
            flush=True,
        )
    return csv_path


def _train_and_score(
    definition: ExperimentDefinition,
    ds: SparseDataset,
    key: RunKey,
    test_batches: dict[float, SparseBatches],
    device: str,
) -> list[dict[str, object]]:
    torch.manual_seed(key.seed)
    model = build_model(key.family, definition.cnn_config(ds.in_channels, ds.num_classes))
    model = place(model, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=definition.lr)
    train = SparseBatches(
        ds.train,
        sparsity=key.train_sparsity,
        batch_size=definition.batch_size,
        device=device,
        mean=ds.mean,
        std=ds.std,
        shuffle=True,
        seed=key.seed,
    )
    start = time.perf_counter()
    # Epochs counted from 0, as when the published results were drawn (the masks depend on it).
    fit(model, optimizer, train, definition.epochs, first_epoch=0)
    seconds = time.perf_counter() - start
    rows = []
    for s, batches in test_batches.items():
        metrics = evaluate(model, batches.epoch(0))
        rows.append(
            {
                "experiment": definition.name,
                "family": key.family,
                "train_sparsity": key.train_sparsity,
                "seed": key.seed,
                "test_sparsity": s,
                "accuracy": metrics.accuracy,
                "mae": metrics.mae,
                "n_test": metrics.n,
                "epochs": definition.epochs,
                "train_images": len(ds.train),
                "train_seconds": seconds,
                "device": device,
            }
        )
    return rows


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    if not csv_path.exists():
        return []
    with csv_path.open(newline="") as f:
        return list(csv.DictReader(f))


def _append_rows(csv_path: Path, rows: list[dict[str, object]]) -> None:
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _key(row: dict[str, str]) -> RunKey:
    return RunKey(row["family"], float(row["train_sparsity"]), int(row["seed"]))
