"""Run a fixed-budget comparison experiment and write its tables and figures (issue 7).

``python -m hpo.experiments mnist_sparsity --data-dir DIR --out docs/results``

Every run trains one (model family, training sparsity, seed) of the experiment's definition
(``studies/experiments.py``) and scores it on the *test* split at every test sparsity, with the
test masks fixed by one seed for all models (``hpo.objective.TEST_MASK_SEED``), so every model
is judged on exactly the same pixels. Rows are appended to ``<out>/<name>_runs.csv`` as each
run finishes; re-running the same command skips the runs already there, so a long experiment
can be stopped and resumed. The summary (``<name>.md``) and figures (``<name>_*.png``) are
rewritten from the CSV after every run.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from data import DataError, SparseBatches, SparseDataset, load_dataset
from models import build_model
from studies import UnknownStudyError
from studies.experiments import EXPERIMENTS, ExperimentDefinition, get_experiment

from .cpu_process import prepare_cpu_training
from .errors import UsageError
from .objective import TEST_MASK_SEED
from .settings import resolve_device
from .training import evaluate, train_one_epoch

__all__ = ["RunKey", "main", "run_experiment", "summarize"]

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
    """Train every missing run of ``definition``, appending rows to its CSV; returns the CSV."""
    if torch.device(device).type == "cpu":
        prepare_cpu_training()  # denormals flushed, freed memory retained (hpo.cpu_process)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{definition.name}_runs.csv"
    done = {_key(row) for row in _read_rows(csv_path)}
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
        summarize(definition, csv_path, out_dir)
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
    model = model.to(device)
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
    for epoch in range(definition.epochs):
        train_one_epoch(model, train.epoch(epoch), optimizer, epoch)
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


def _read_rows(csv_path: Path) -> list[dict[str, str]]:
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


# --- summary: tables and figures -------------------------------------------------------


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cells(rows: list[dict[str, str]]) -> dict[tuple[str, float, float], dict[str, list[float]]]:
    """(family, train sparsity, test sparsity) -> {"accuracy": [...per seed], "mae": [...]}."""
    cells: dict[tuple[str, float, float], dict[str, list[float]]] = {}
    for row in rows:
        cell = cells.setdefault(
            (row["family"], float(row["train_sparsity"]), float(row["test_sparsity"])),
            {"accuracy": [], "mae": []},
        )
        cell["accuracy"].append(float(row["accuracy"]))
        cell["mae"].append(float(row["mae"]))
    return cells


def summarize(definition: ExperimentDefinition, csv_path: Path, out_dir: Path) -> Path:
    """Rewrite ``<name>.md`` and the figures from the CSV; returns the markdown path."""
    rows = _read_rows(csv_path)
    cells = _cells(rows)
    families = [str(f) for f in definition.families]
    lines = [f"# {definition.name}", "", definition.description, ""]
    lines += _diagonal_table(definition, cells, families)
    if len(definition.test_sparsities) > 1:  # one row per training sparsity
        lines += _invariance_tables(definition, cells, families)
    md_path = out_dir / f"{definition.name}.md"
    md_path.write_text("\n".join(lines) + "\n")
    _plot_diagonal(definition, cells, families, out_dir / f"{definition.name}_accuracy.png")
    if len(definition.train_sparsities) > 1:
        _plot_invariance(definition, cells, families, out_dir / f"{definition.name}_invariance.png")
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
            acc, acc_sd = _mean_std(cell["accuracy"])
            mae, mae_sd = _mean_std(cell["mae"])
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
                out.append("-" if cell is None else f"{100 * _mean_std(cell['accuracy'])[0]:.2f}")
            lines.append("| " + " | ".join(out) + " |")
        lines.append("")
        drops = []
        for s in definition.train_sparsities:
            for t in definition.test_sparsities:
                own, cross = cells.get((f, t, t)), cells.get((f, s, t))
                if s != t and own and cross:
                    drop = 100 * (_mean_std(own["accuracy"])[0] - _mean_std(cross["accuracy"])[0])
                    drops.append(f"train {s:g} -> test {t:g}: {drop:+.2f}")
        if drops:
            lines += [
                "Accuracy drop vs the model trained at the test sparsity (points; positive = "
                "worse than training at the test sparsity): " + "; ".join(drops),
                "",
            ]
    return lines


def _plot_diagonal(definition, cells, families, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for f in families:
        xs, ys, es = [], [], []
        for s in definition.train_sparsities:
            cell = cells.get((f, s, s))
            if cell:
                m, sd = _mean_std(cell["accuracy"])
                xs.append(s)
                ys.append(100 * m)
                es.append(100 * sd)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f)
    ax.set_xlabel("sparsity (train = test)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(definition.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_invariance(definition, cells, families, path: Path) -> None:
    """Top row: test accuracy per (train, test) sparsity; bottom row: the drop vs training at
    the test sparsity (only for test sparsities that are also training sparsities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests, trains = definition.test_sparsities, definition.train_sparsities
    own_tests = [t for t in tests if t in trains]
    fig, axes = plt.subplots(
        2,
        len(families),
        figsize=(4.2 * len(families), 7.0),
        dpi=100,
        squeeze=False,
        layout="constrained",
    )
    for col, f in enumerate(families):
        acc = _accuracy_grid(cells, f, trains, tests)
        own = {t: _accuracy_grid(cells, f, [t], [t])[0, 0] for t in own_tests}
        drop = torch.stack([own[t] - acc[:, tests.index(t)] for t in own_tests], dim=1)
        top = _heatmap(axes[0, col], acc, trains, tests, (0, 100), "viridis", "{:.0f}")
        bottom = _heatmap(axes[1, col], drop, trains, own_tests, (-15, 15), "RdBu_r", "{:+.1f}")
        axes[0, col].set_title(f"{f}: accuracy")
        axes[1, col].set_title(f"{f}: drop")
    for row in axes:
        row[0].set_ylabel("train sparsity")
    fig.colorbar(top, ax=axes[0], shrink=0.8, label="test accuracy (%)")
    fig.colorbar(bottom, ax=axes[1], shrink=0.8, label="points lost vs trained at test sparsity")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _accuracy_grid(cells, family, trains, tests) -> torch.Tensor:
    """Mean test accuracy (%) per (train, test) sparsity; NaN where no run finished."""
    grid = torch.full((len(trains), len(tests)), float("nan"))
    for i, s in enumerate(trains):
        for j, t in enumerate(tests):
            cell = cells.get((family, s, t))
            if cell:
                grid[i, j] = 100 * _mean_std(cell["accuracy"])[0]
    return grid


def _heatmap(ax, grid: torch.Tensor, rows, cols, limits, cmap: str, fmt: str):
    low, high = limits
    image = ax.imshow(grid.numpy(), vmin=low, vmax=high, cmap=cmap, aspect="auto")
    middle, half = (low + high) / 2, (high - low) / 2
    for i in range(len(rows)):
        for j in range(len(cols)):
            value = float(grid[i, j])
            if value == value:  # not NaN
                dark = abs(value - middle) > 0.6 * half if cmap != "viridis" else value < 60
                color = "white" if dark else "black"
                ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(cols)), [f"{t:g}" for t in cols])
    ax.set_yticks(range(len(rows)), [f"{s:g}" for s in rows])
    ax.set_xlabel("test sparsity")
    return image


# --- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpo.experiments",
        description="Run a fixed-budget sparse-vs-dense comparison experiment (resumable).",
    )
    parser.add_argument("name", nargs="?", help=f"experiment: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument(
        "--data-dir", default=None, help="data root (default: $HPO_DATA_DIR, else the cache)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/results"),
        help="output folder (default: %(default)s)",
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--download", action="store_true", help="let torchvision download missing data"
    )
    parser.add_argument(
        "--summarize-only", action="store_true", help="rewrite tables/figures from the CSV"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.list or args.name is None:
        for name in EXPERIMENTS:
            print(f"{name:22s} {get_experiment(name).description}")
        return 0 if args.list else 2
    try:
        definition = get_experiment(args.name)
        if args.summarize_only:
            summarize(definition, args.out / f"{definition.name}_runs.csv", args.out)
            return 0
        device = resolve_device(args.device)
        run_experiment(
            definition,
            data_dir=args.data_dir,
            out_dir=args.out,
            device=device,
            download=args.download,
        )
    except (UnknownStudyError, UsageError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
