"""Running a fixed-budget comparison experiment: every (family, sparsity, seed) once, resumable.

Every run trains one (model family, training sparsity, seed) of the experiment's definition
(``studies/experiments.py``) with the one fit loop (:func:`hpo.training.fit`) and scores it on
the *test* split at every test sparsity, with the test masks fixed by one seed for all models
(``studies.TEST_MASK_SEED``), so every model is judged on exactly the same pixels. Rows are
appended to ``<out>/<name>_runs.csv`` as each run finishes; re-running the same command skips
the runs already there, so a long experiment can be stopped and resumed. The summary is
written once, when the runs are done (:mod:`hpo.experiments.summary`).

Several processes may run one experiment at once (one per core, or a second one started when
a core frees up): each run is *claimed* with an ``flock`` on a small lock file next to the CSV
before it is trained, and the CSV is read again under the claim, so no run is trained twice.
The lock is released when the run's rows are written or its process dies, and the file is
removed. With ``models_dir`` every trained network is also written there as a checkpoint in
the format ``python -m hpo.evaluate`` reads (``hpo.checkpoints``), from which the published
winners under ``docs/results/models/`` are copied.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from data import SparseBatches, SparseDataset, TensorSplit, augmentation_for, load_dataset
from models import build_model
from studies import TEST_MASK_SEED, VAL_MASK_SEED, TrainingRecipe
from studies.experiments import ExperimentDefinition

from ..checkpoints.format import write_checkpoint
from ..runtime.cpu import prepare_cpu_training
from ..runtime.device import place
from ..training import build_optimization, evaluate, fit

__all__ = ["FIELDS", "RunKey", "checkpoint_name", "read_rows", "run_experiment"]

FIELDS = (
    "experiment",
    "recipe",
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
    "val_accuracy",
)
# Every experiment draws its train/validation split with this seed (saved with checkpoints).
DATA_SEED = 0
# Rows written before recipes were recorded were all trained with the baseline recipe.
LEGACY_RECIPE = "baseline"


@dataclass(frozen=True, order=True)
class RunKey:
    """One trained model of an experiment."""

    recipe: str
    family: str
    train_sparsity: float
    seed: int

    @property
    def label(self) -> str:
        """``full-sparse-0.7-s0``: names the run's checkpoint and claim files."""
        return f"{self.recipe}-{self.family}-{self.train_sparsity:g}-s{self.seed}"


def checkpoint_name(experiment: str, key: RunKey) -> str:
    """The checkpoint file of one run under ``models_dir``: ``<experiment>/<label>.pt``."""
    return f"{experiment}/{key.label}.pt"


def run_experiment(
    definition: ExperimentDefinition,
    *,
    data_dir: str | None,
    out_dir: Path,
    device: str,
    download: bool = False,
    models_dir: Path | None = None,
) -> Path:
    """Train every missing run of ``definition``, appending rows to its CSV; returns the CSV.

    Runs another process has claimed are skipped (see the module docstring). With
    ``models_dir``, each trained network is saved as ``models_dir / checkpoint_name(...)``.
    The caller writes the summary afterwards (``hpo.experiments.summary.summarize``): once,
    not after every run, whose cost grows with the runs already done.
    """
    if torch.device(device).type == "cpu":
        prepare_cpu_training()  # denormals flushed, freed memory retained (hpo.runtime.cpu)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{definition.name}_runs.csv"
    done = {_key(row) for row in read_rows(csv_path)}
    # Seed-major order: a partly finished experiment already covers every setting once.
    recipes = {r.name: r for r in definition.recipes}
    todo = [
        RunKey(recipe, str(family), s, seed)
        for seed in definition.seeds
        for s in definition.train_sparsities
        for recipe in recipes
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
        seed=DATA_SEED,
        options=definition.dataset_options,
    )
    test_batches = _fixed_batches(ds, ds.test, definition.test_sparsities, TEST_MASK_SEED, device)
    # The validation split ranks recipes (mnist_recipe); the test split only reports.
    val_batches = _fixed_batches(ds, ds.val, definition.train_sparsities, VAL_MASK_SEED, device)
    for i, key in enumerate(todo, 1):
        with _claim(csv_path, key) as claimed:
            if not claimed or key in {_key(row) for row in read_rows(csv_path)}:
                print(f"[{i}/{len(todo)}] {key.label}: done or running elsewhere", flush=True)
                continue
            recipe = recipes[key.recipe]
            model, rows = _train_and_score(
                definition, ds, key, recipe, test_batches, val_batches, device
            )
            if models_dir is not None:
                _save_model(
                    models_dir / checkpoint_name(definition.name, key),
                    model,
                    ds,
                    key,
                    definition,
                    rows,
                )
            _append_rows(csv_path, rows)
        diag = {r["test_sparsity"]: r["accuracy"] for r in rows}.get(key.train_sparsity)
        print(
            f"[{i}/{len(todo)}] {key.recipe} {key.family:10s} train={key.train_sparsity:g} "
            f"seed={key.seed} acc@train-sparsity={diag if diag is None else f'{diag:.4f}'} "
            f"val={rows[0]['val_accuracy']:.4f} ({rows[0]['train_seconds']:.0f} s)",
            flush=True,
        )
    return csv_path


def _fixed_batches(
    ds: SparseDataset, split: TensorSplit, sparsities: tuple[float, ...], seed: int, device: str
) -> dict[float, SparseBatches]:
    """Evaluation batches with one fixed mask per image and sparsity, the same for every model."""
    return {
        s: SparseBatches(
            split,
            sparsity=s,
            batch_size=512,
            device=device,
            mean=ds.mean,
            std=ds.std,
            seed=seed,
            fixed_masks=True,
        )
        for s in sparsities
    }


def _train_and_score(
    definition: ExperimentDefinition,
    ds: SparseDataset,
    key: RunKey,
    recipe: TrainingRecipe,
    test_batches: dict[float, SparseBatches],
    val_batches: dict[float, SparseBatches],
    device: str,
) -> tuple[torch.nn.Module, list[dict[str, object]]]:
    torch.manual_seed(key.seed)
    model = build_model(key.family, definition.cnn_config(ds.in_channels, ds.num_classes))
    model = place(model, device)
    train = SparseBatches(
        ds.train,
        sparsity=key.train_sparsity,
        batch_size=definition.batch_size,
        device=device,
        mean=ds.mean,
        std=ds.std,
        shuffle=True,
        seed=key.seed,
        augment=augmentation_for(ds.name) if recipe.augment else None,
    )
    optimization = build_optimization(
        recipe, model, definition.lr, steps_per_epoch=len(train), epochs=definition.epochs
    )
    start = time.perf_counter()
    # Epochs counted from 0, as when the published results were drawn (the masks depend on it).
    fit(model, optimization, train, definition.epochs, first_epoch=0)
    seconds = time.perf_counter() - start
    val_accuracy = evaluate(model, val_batches[key.train_sparsity].epoch(0)).accuracy
    rows = []
    for s, batches in test_batches.items():
        metrics = evaluate(model, batches.epoch(0))
        rows.append(
            {
                "experiment": definition.name,
                "recipe": key.recipe,
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
                "val_accuracy": val_accuracy,
            }
        )
    return model, rows


@contextlib.contextmanager
def _claim(csv_path: Path, key: RunKey) -> Iterator[bool]:
    """Hold a non-blocking ``flock`` on the run's lock file; yields whether it was obtained.

    The file is removed by the holder when it is done. A process that opened it just before
    that locks an unlinked file, but it then finds the run's rows in the CSV and skips it.
    """
    lock_path = csv_path.parent / f".{csv_path.stem}.{key.label}.lock"
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            lock_path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _save_model(
    path: Path,
    model: torch.nn.Module,
    ds: SparseDataset,
    key: RunKey,
    definition: ExperimentDefinition,
    rows: list[dict[str, object]],
) -> None:
    """Write the run's network as a checkpoint that ``hpo.evaluate`` rebuilds and scores.

    ``definition`` is shaped as a study's is where ``hpo.evaluate`` reads it (dataset, its
    options, data seed, test sparsities), with the experiment's own fields alongside.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    cnn_config = definition.cnn_config(ds.in_channels, ds.num_classes)
    config = {
        "model_family": key.family,
        "cnn_config": cnn_config.to_dict(),
        "mean": [float(v) for v in ds.mean],
        "std": [float(v) for v in ds.std],
        "definition": {
            **definition.to_dict(),
            "model_family": key.family,
            "train_sparsity": key.train_sparsity,
            "data_seed": DATA_SEED,
            "val_size": None,  # experiments score the whole validation split
        },
        "source": {
            "experiment": definition.name,
            "run": key.label,
            "seed": key.seed,
            "val_accuracy": rows[0]["val_accuracy"],
            "test_accuracy": {str(r["test_sparsity"]): r["accuracy"] for r in rows},
        },
    }
    write_checkpoint(path, model.state_dict(), config)


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """The rows of ``csv_path`` in the current columns (older files lack the recipe ones)."""
    if not csv_path.exists():
        return []
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{"recipe": LEGACY_RECIPE, "val_accuracy": "", **row} for row in rows]


def _append_rows(csv_path: Path, rows: list[dict[str, object]]) -> None:
    """Append ``rows``; a file written with older columns is first rewritten in the current ones."""
    if csv_path.exists() and _header(csv_path) != FIELDS:
        _write_rows(csv_path, read_rows(csv_path))
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _header(csv_path: Path) -> tuple[str, ...]:
    with csv_path.open(newline="") as f:
        return tuple(next(csv.reader(f), ()))


def _write_rows(csv_path: Path, rows: list[dict[str, str]]) -> None:
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _key(row: dict[str, str]) -> RunKey:
    return RunKey(row["recipe"], row["family"], float(row["train_sparsity"]), int(row["seed"]))
