"""How fast each search strategy finds a good configuration, at equal compute (anytime).

Every run tunes ``sparse_mnist`` on the real MNIST with the product's own pieces -- the
storage, the objective (training, per-epoch validation, checkpoints), the trial runner of
``hpo.tuning.worker`` (pruning, failures), the sampler and pruner factories -- at a reduced
fidelity that fits a CPU (``--train-size`` images x ``--epochs`` epochs, the study's 10 by
default, scored on ``--val-size`` validation images), until it has spent ``--budget`` CPU
seconds. Each run is a fresh process with one torch thread, so its CPU time is its compute,
whatever else the shared machine does; ``--parallel`` runs go side by side.

Strategies (``--strategies``):

* ``default`` -- what ``python -m hpo.run`` does now: the study's grid, then TPE, pruner
  ``asha`` (successive halving in the first half of the epochs, chance-level trials stopped).
* ``tpe_median`` -- the same with the ``median`` pruner (a candidate).
* ``tpe_no_grid`` -- the default without the grid: TPE's own 10 random startup points
  (a candidate: does the grid pay?).
* ``random`` -- random search with the default's pruner, no grid.
* ``gp_train_loss`` -- the earlier work's method: random points, then Gaussian-process BO
  (Optuna's ``GPSampler``), no pruning, minimizing the final *training loss*; its curve shows
  the validation accuracy of the configuration it would pick (lowest training loss so far).
* ``tpe_hyperband`` -- the previous default: the grid, then TPE, Hyperband as configured.

Writes ``<out>/runs/<strategy>-<seed>.jsonl`` (one line per trial: state, value, cost,
epochs, phase; a finished run is skipped when the command is repeated), then
``<out>/search_efficiency.png`` (best validation accuracy so far vs cumulative CPU seconds:
median and range over seeds, one line per strategy) and ``<out>/search_efficiency.md`` (best
at 25 / 50 / 100 % of the budget; the compute each strategy needed to reach random search's
final best; epochs run by pruned trials).

    .venv/bin/pip install -e '.[bench]'      # GPSampler needs scipy
    nohup .venv/bin/python bench/search_efficiency.py --data-dir ../shared/data \\
        --out docs/results/search_efficiency > search_efficiency.log 2>&1 &
    .venv/bin/python bench/search_efficiency.py --out docs/results/search_efficiency --analyze-only
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna

from data import DATA_DIR_ENV

STRATEGIES = ("default", "tpe_median", "tpe_no_grid", "random", "gp_train_loss", "tpe_hyperband")
LABELS = {
    "default": "grid + TPE + ASHA (new default)",
    "tpe_median": "grid + TPE + median",
    "tpe_no_grid": "TPE (10 random starts) + ASHA, no grid",
    "random": "random + ASHA",
    "gp_train_loss": "random + GP on training loss (earlier work)",
    "tpe_hyperband": "grid + TPE + Hyperband (previous default)",
}
FRACTIONS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class RunSpec:
    """One run: a strategy, a seed, and the fidelity and budget every run shares."""

    strategy: str
    seed: int
    data_dir: str
    out: str
    study: str
    epochs: int
    train_size: int
    val_size: int
    budget: float

    @property
    def path(self) -> Path:
        return Path(self.out) / "runs" / f"{self.strategy}-{self.seed}.jsonl"


# --- one run, in its own process ----------------------------------------------------------


def run(spec: RunSpec) -> str:
    """Tune until ``spec.budget`` CPU seconds are spent; write one JSON line per trial."""
    import torch

    from hpo.runtime.cpu import prepare_cpu_training

    prepare_cpu_training()
    torch.set_num_threads(1)  # the run's CPU time is then its compute
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from hpo.runtime.storage import StorageOptions, open_storage
    from hpo.tuning.artifacts import open_artifact_store
    from hpo.tuning.objective import Objective
    from hpo.tuning.progress import RunProgress
    from hpo.tuning.trial_data import load_trial_data, validation_split
    from hpo.tuning.worker import run_one_trial
    from studies import get_study

    overrides = {"epochs": spec.epochs, "train_size": spec.train_size, "val_size": spec.val_size}
    definition = get_study(spec.study).with_overrides(overrides)
    data = load_trial_data(definition, spec.data_dir, download=False)
    n_val = len(validation_split(definition, data))
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'study.db'}"
        storage = open_storage(url, StorageOptions(heartbeat_interval=None, grace_period=None))
        study = _create_study(spec, definition, storage, data.num_classes, n_val)
        objective = Objective(
            definition,
            data,
            torch.device("cpu"),
            spec.seed,
            open_artifact_store(url),
            RunProgress(study.study_name, 1, 0, enabled=False),
            worker=f"bench:{os.getpid()}",
        )
        costed = CostedObjective(objective, minimize_train_loss=spec.strategy == "gp_train_loss")
        while costed.spent < spec.budget:
            run_one_trial(study, costed, n_trials=10**9)  # type: ignore[arg-type]
        trials = study.get_trials(deepcopy=False)
        records = [_record(spec, t) for t in trials if t.state.is_finished()]
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    partial = spec.path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(r) + "\n" for r in records))
    partial.replace(spec.path)
    return f"{spec.strategy} seed {spec.seed}: {len(records)} trials"


class CostedObjective:
    """The product's objective, timed in CPU seconds, optionally returning the training loss.

    The earlier work minimized the final training loss; that strategy gets it as the value
    while the validation figures are still recorded by the objective.
    """

    def __init__(self, objective: Callable[[optuna.Trial], float], minimize_train_loss: bool):
        self._objective = objective
        self._train_loss = minimize_train_loss
        self.spent = 0.0

    def __call__(self, trial: optuna.Trial) -> float:
        from hpo.tuning import keys

        cpu, wall = time.process_time(), time.perf_counter()
        try:
            value = self._objective(trial)
        finally:
            seconds = time.process_time() - cpu
            self.spent += seconds
            trial.set_user_attr("bench_cpu_seconds", seconds)
            trial.set_user_attr("bench_wall_seconds", time.perf_counter() - wall)
        return trial.user_attrs[keys.TRAIN_LOSSES][-1] if self._train_loss else value


def _create_study(spec: RunSpec, definition, storage, num_classes: int, n_val: int) -> optuna.Study:
    from hpo.tuning.pruning import DEFAULT_PRUNER, make_pruner
    from hpo.tuning.search import make_sampler
    from hpo.tuning.study_setup import planned_queue

    pruner_name = {"tpe_median": "median", "gp_train_loss": "none", "tpe_hyperband": "hyperband"}
    pruner = make_pruner(
        pruner_name.get(spec.strategy, DEFAULT_PRUNER),
        definition.epochs,
        num_classes=num_classes,
        n_val=n_val,
    )
    if spec.strategy == "random":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=spec.seed)
    elif spec.strategy == "tpe_no_grid":
        no_grid = dataclasses.replace(definition, tpe_random_trials=10)
        sampler = make_sampler(no_grid, spec.seed, queued=0)
    elif spec.strategy == "gp_train_loss":
        sampler = optuna.samplers.GPSampler(seed=spec.seed, n_startup_trials=10)
    else:
        sampler = make_sampler(definition, spec.seed)
    direction = "minimize" if spec.strategy == "gp_train_loss" else "maximize"
    study = optuna.create_study(
        storage=storage, sampler=sampler, pruner=pruner, direction=direction, study_name="bench"
    )
    if spec.strategy in ("default", "tpe_median", "tpe_hyperband"):
        for params, attrs in planned_queue(definition, n_trials=0):
            study.enqueue_trial(params, user_attrs=attrs)
    return study


def _record(spec: RunSpec, trial: optuna.trial.FrozenTrial) -> dict:
    from hpo.tuning import keys

    steps = trial.intermediate_values
    return {
        "strategy": spec.strategy,
        "seed": spec.seed,
        "number": trial.number,
        "state": trial.state.name,
        "params": trial.params,
        "value": trial.value,
        "best_val_accuracy": max(steps.values()) if steps else None,
        "epochs": len(steps),
        "phase": trial.user_attrs.get(keys.PHASE),
        "cpu_seconds": trial.user_attrs.get("bench_cpu_seconds", 0.0),
        "wall_seconds": trial.user_attrs.get("bench_wall_seconds", 0.0),
    }


# --- analysis -----------------------------------------------------------------------------


def incumbent_curve(records: Sequence[dict]) -> list[tuple[float, float]]:
    """``(cumulative CPU seconds, validation accuracy of the configuration picked so far)``.

    The pick is the completed trial with the best objective value (for the training-loss
    strategy: the lowest final training loss); its validation accuracy is what the curve
    shows, one point per finished trial, in the order the trials ran.
    """
    spent, curve = 0.0, []
    best_value, picked = None, None
    for r in sorted(records, key=lambda r: r["number"]):
        spent += r["cpu_seconds"]
        if r["state"] == "COMPLETE" and r["value"] is not None:
            better = (
                best_value is None
                or (r["strategy"] == "gp_train_loss" and r["value"] < best_value)
                or (r["strategy"] != "gp_train_loss" and r["value"] > best_value)
            )
            if better:
                best_value, picked = r["value"], r["best_val_accuracy"]
        curve.append((spent, picked if picked is not None else float("nan")))
    return curve


def value_at(curve: Sequence[tuple[float, float]], seconds: float) -> float:
    """The curve's value at ``seconds`` (its last point at or before them; NaN before any)."""
    value = float("nan")
    for spent, v in curve:
        if spent > seconds:
            break
        value = v
    return value


def seconds_to_reach(curve: Sequence[tuple[float, float]], target: float) -> float:
    """The first cumulative CPU seconds at which the curve reaches ``target`` (inf: never)."""
    for spent, v in curve:
        if v == v and v >= target:
            return spent
    return float("inf")


def analyze(out: Path, budget: float) -> str:
    runs: dict[str, dict[int, list[dict]]] = {}
    for path in sorted((out / "runs").glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line]
        if rows:
            runs.setdefault(rows[0]["strategy"], {})[rows[0]["seed"]] = rows
    if not runs:
        raise SystemExit(f"no runs in {out / 'runs'}; run the benchmark first")
    curves = {
        s: {seed: incumbent_curve(r) for seed, r in seeds.items()} for s, seeds in runs.items()
    }
    at = " | ".join(f"best at {int(100 * f)} %" for f in FRACTIONS)
    lines = [
        f"| strategy | seeds | trials (complete / pruned) | {at} | "
        "CPU s to reach random's final best | pruned trials: median epochs |",
        "|:---|---:|---:|" + "---:|" * len(FRACTIONS) + "---:|---:|",
    ]
    target = None
    if "random" in curves:
        target = statistics.median(value_at(c, budget) for c in curves["random"].values())
    reach: dict[str, float] = {}
    for strategy in [s for s in STRATEGIES if s in runs]:
        seeds = runs[strategy]
        trials = [r for rows in seeds.values() for r in rows]
        complete = sum(r["state"] == "COMPLETE" for r in trials)
        pruned = [r["epochs"] for r in trials if r["state"] == "PRUNED"]
        cells = []
        for f in FRACTIONS:
            values = [value_at(c, f * budget) for c in curves[strategy].values()]
            cells.append(_median_range(values))
        if target is not None:
            times = [seconds_to_reach(c, target) for c in curves[strategy].values()]
            reach[strategy] = statistics.median(times)
            reach_cell = _seconds(reach[strategy])
        else:
            reach_cell = "-"
        lines.append(
            f"| {LABELS.get(strategy, strategy)} | {len(seeds)} | "
            f"{len(trials)} ({complete} / {len(pruned)}) | " + " | ".join(cells) + " | "
            f"{reach_cell} | {statistics.median(pruned) if pruned else '-'} |"
        )
    summary = [
        f"Budget {budget:.0f} CPU seconds per run; cells are the median over seeds "
        "[min - max] of the validation accuracy of the configuration each strategy picks.",
        "",
        *lines,
        "",
    ]
    if target is not None:
        summary.append(f"Random search's final best (median over seeds): {target:.4f}.")
        if "default" in reach and math.isinf(reach.get("random", 0)):
            summary.append("Random search itself reached it in fewer than half of its seeds.")
        elif "default" in reach and math.isinf(reach["default"]):
            summary.append("The default did not reach it (median over seeds).")
        elif "default" in reach and reach.get("random", 0) > 0:
            ratio = reach["default"] / reach["random"]
            summary.append(
                f"The default reached it with {100 * ratio:.0f} % of random search's compute "
                f"({_seconds(reach['default'])} vs {_seconds(reach['random'])}, medians)."
            )
    _plot(curves, budget, out / "search_efficiency.png")
    text = "\n".join(summary) + "\n"
    (out / "search_efficiency.md").write_text(text)
    return text


def _median_range(values: Sequence[float]) -> str:
    finite = [v for v in values if v == v]
    if not finite:
        return "-"
    return f"{statistics.median(finite):.4f} [{min(finite):.4f} - {max(finite):.4f}]"


def _seconds(value: float) -> str:
    return "not reached" if value == float("inf") else f"{value:.0f}"


def _plot(curves: dict[str, dict[int, list]], budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.linspace(0, budget, 200)
    # Left: the whole range; right: the same curves zoomed onto the top, where they differ.
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    finals = []
    for strategy in [s for s in STRATEGIES if s in curves]:
        per_seed = np.array([[value_at(c, t) for t in grid] for c in curves[strategy].values()])
        with np.errstate(all="ignore"):
            valid = ~np.isnan(per_seed).any(axis=0)
            median = np.median(per_seed, axis=0)
        finals.append(median[-1])
        for ax in axes:
            (line,) = ax.plot(grid[valid], median[valid], label=LABELS.get(strategy, strategy))
            ax.fill_between(
                grid[valid],
                per_seed[:, valid].min(axis=0),
                per_seed[:, valid].max(axis=0),
                color=line.get_color(),
                alpha=0.15,
            )
    top = float(np.nanmax(finals))
    axes[1].set_ylim(min(finals) - 0.04, top + 0.01)
    for ax in axes:
        ax.set_xlabel("cumulative CPU seconds (one thread)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy of the picked configuration")
    axes[0].set_title("best so far: median and range over seeds")
    axes[1].set_title("the same, zoomed onto the top")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle("sparse_mnist at reduced fidelity, equal CPU budget per run")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV),
                        help=f"MNIST root (default: ${DATA_DIR_ENV})")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("docs/results/search_efficiency"))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=700.0, help="CPU seconds per run")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=2048)
    parser.add_argument("--val-size", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (one core each)")
    parser.add_argument("--study", default="sparse_mnist")
    parser.add_argument("--analyze-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.analyze_only:
        if not args.data_dir:
            parser.error(f"pass --data-dir or set {DATA_DIR_ENV}")
        specs = [
            RunSpec(
                s,
                seed,
                args.data_dir,
                str(args.out),
                args.study,
                args.epochs,
                args.train_size,
                args.val_size,
                args.budget,
            )  # fmt: skip
            for seed in args.seeds
            for s in args.strategies
        ]
        todo = [s for s in specs if not s.path.exists()]
        print(f"{len(specs) - len(todo)} runs done, {len(todo)} to go", flush=True)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.parallel, mp_context=context) as pool:
            started = time.perf_counter()
            for done in pool.map(run, todo):
                print(f"[{time.perf_counter() - started:7.0f} s] {done}", flush=True)
    print(analyze(args.out, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
