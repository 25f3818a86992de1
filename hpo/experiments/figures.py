"""The figures of an experiment: accuracy vs sparsity, and invariance heatmaps (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import torch

from .cells import mean_std

__all__ = ["plot_diagonal", "plot_invariance"]


def plot_diagonal(definition, cells, families, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for f in families:
        xs, ys, es = [], [], []
        for s in definition.train_sparsities:
            cell = cells.get((f, s, s))
            if cell:
                m, sd = mean_std(cell["accuracy"])
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


def plot_invariance(definition, cells, families, path: Path) -> None:
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
                grid[i, j] = 100 * mean_std(cell["accuracy"])[0]
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
