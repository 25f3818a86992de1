"""CPU training steps under glibc's default malloc settings vs freed memory retained, side by side.

The allocator settings (``hpo.runtime.cpu``) are process-wide, so two child processes, one
with glibc's defaults and one that retains freed memory as every CPU training worker does,
build the same models from the same seed and take turns: every round each child trains each
model family for ``--steps`` steps (Adam, cross-entropy, the paper's stack: depth 6, kernels
11, 7, 5, 3, 3, 1, width 16, batch 64, 1x28x28, 10 % observed) and reports the wall time and
minor page faults of those steps. Rounds alternate which child goes first, so load drifting
on shared cores reaches both alike. Prints per family the median step time of each child,
the median per-round speed-up, the page faults per step, and whether the two children's
losses stayed identical (the allocator may change the speed only).

    .venv/bin/python bench/cpu_allocator.py                   # 8 rounds x 5 steps
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import time
from multiprocessing.connection import Connection

import torch

from hpo.runtime.cpu import flush_denormals, prepare_cpu_training
from hpo.training import train_step
from models import CNNConfig, ModelFamily, build_model

SETTINGS = ("default", "retain")


def _child(conn: Connection, retain: bool, seed: int, threads: int) -> None:
    """Serve requests ``(family, steps)``; answer ``(seconds per step, faults, last loss)``."""
    if retain:
        prepare_cpu_training()  # as every CPU worker does
    else:
        flush_denormals()  # the worker's other setting, so only the allocator differs
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1, 28, 28, generator=gen)
    mask = torch.rand(64, 1, 28, 28, generator=gen) < 0.1
    x = x * mask
    labels = torch.randint(0, 10, (64,), generator=gen)
    torch.manual_seed(seed)
    config = CNNConfig(in_channels=1, num_classes=10, depth=6, activation="relu", width=16)
    models = {family.value: build_model(family, config) for family in ModelFamily}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}
    while (request := conn.recv()) is not None:
        family, steps = request
        model, optimizer = models[family], optimizers[family]
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = []
        for _ in range(steps):
            start = time.perf_counter()
            loss = train_step(model, optimizer, x, mask, labels)
            seconds.append(time.perf_counter() - start)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        conn.send((seconds, faults, loss.item()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds (default: 8)")
    parser.add_argument("--steps", type=int, default=5, help="steps per round (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")  # a fresh interpreter each: no allocator state inherited
    conns: dict[str, Connection] = {}
    procs: list[mp.process.BaseProcess] = []
    for setting in SETTINGS:
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_child, args=(child, setting == "retain", args.seed, args.threads)
        )
        proc.start()
        conns[setting] = parent
        procs.append(proc)

    families = [family.value for family in ModelFamily]
    times = {(s, f): [] for s in SETTINGS for f in families}
    faults = {(s, f): 0 for s in SETTINGS for f in families}
    ratios: dict[str, list[float]] = {f: [] for f in families}
    same_losses = True  # the allocator must change the speed only
    for rnd in range(args.rounds + 1):  # round 0 warms up and is not counted
        for family in families:
            order = SETTINGS if rnd % 2 == 0 else SETTINGS[::-1]
            medians, losses = {}, set()
            for setting in order:
                conns[setting].send((family, args.steps))
                seconds, n_faults, loss = conns[setting].recv()
                medians[setting] = statistics.median(seconds)
                losses.add(loss)
                if rnd > 0:
                    times[setting, family].extend(seconds)
                    faults[setting, family] += n_faults
            same_losses = same_losses and len(losses) == 1
            if rnd > 0:
                ratios[family].append(medians["default"] / medians["retain"])
    for conn in conns.values():
        conn.send(None)
    for proc in procs:
        proc.join()

    steps = args.rounds * args.steps
    print(
        f"training step of the paper stack, batch 64, 1x28x28, 10 % observed, CPU, "
        f"{args.threads} thread(s), {args.rounds} rounds x {args.steps} steps per child"
    )
    print(
        f"{'family':>10} {'default ms':>11} {'retain ms':>10} {'speed-up':>9} "
        f"{'faults/step default':>20} {'retain':>7}"
    )
    for family in families:
        default_ms = statistics.median(times["default", family]) * 1e3
        retain_ms = statistics.median(times["retain", family]) * 1e3
        print(
            f"{family:>10} {default_ms:>11.1f} {retain_ms:>10.1f} "
            f"{statistics.median(ratios[family]):>8.2f}x "
            f"{faults['default', family] / steps:>20.0f} {faults['retain', family] / steps:>7.0f}"
        )
    print(f"identical losses in both children after every round: {same_losses}")


if __name__ == "__main__":
    main()
