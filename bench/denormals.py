"""Denormal numbers on the CPU: training speed with and without flush-to-zero.

Trains two copies of the same sparse MNIST model (same seed, same batches) in lockstep, one
step each in turn, the first with the CPU's default denormal handling and the second with
denormals flushed to zero (``hpo.runtime.cpu.flush_denormals``, which ``hpo.run`` and
``hpo.experiments`` switch on for CPU training). Both sides of each ratio run under the same
load. Every ``--every`` steps it prints each copy's milliseconds per step, their ratio, both
losses (they should agree: values below 1e-38 carry no information) and how many values
of the gradients flowing between the unflushed copy's layers were denormal on the last batch.

The default configuration is one the tuning study samples (depth 3, ELU, batch 64, lr 0.01):
its trials took 4x longer than their neighbours' before the fix.

    .venv/bin/python bench/denormals.py --data-dir ../shared/data
    .venv/bin/python bench/denormals.py --data-dir ../shared/data --activation relu --steps 200
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data import DatasetName, MNISTOptions, SparseBatches, load_dataset
from hpo.runtime.cpu import flush_denormals
from hpo.training import train_step
from models import build_model
from studies import get_study

_SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def _count_denormal(tensors: list[Tensor]) -> int:
    return sum(int(((t.abs() > 0) & (t.abs() < _SMALLEST_NORMAL)).sum()) for t in tensors)


def _denormal_gradients(model: nn.Module, batch: tuple) -> int:
    """Denormal values in the gradients flowing between layers, for one extra backward pass.

    The pass is untimed and leaves no trace: the next training step clears the gradients.
    """
    found: list[int] = []

    def hook(_module: nn.Module, grad_inputs: tuple, _grad_outputs: tuple) -> None:
        found.append(_count_denormal([g for g in grad_inputs if g is not None]))

    modules = [m for m in model.modules() if m is not model]
    handles = [m.register_full_backward_hook(hook) for m in modules]
    x, mask, y = batch
    F.cross_entropy(model(x.requires_grad_(), mask), y).backward()
    for handle in handles:
        handle.remove()
    x.requires_grad_(False)
    return sum(found)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple, flush: bool) -> float:
    flush_denormals(flush)
    x, mask, y = batch
    return float(train_step(model, optimizer, x, mask, y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $HPO_DATA_DIR)")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--activation", default="elu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the flag is per thread; one thread keeps the comparison exact

    study = get_study("sparse_mnist")
    ds = load_dataset(
        DatasetName.MNIST,
        data_dir=args.data_dir,
        cache_dir=None,
        download=False,
        seed=0,
        options=MNISTOptions(),
    )
    params = {"depth": args.depth, "activation": args.activation}
    config = study.cnn_config(ds.in_channels, ds.num_classes, params)
    copies = []
    for _ in range(2):
        torch.manual_seed(args.seed)
        model = build_model(study.model_family, config)
        copies.append((model, torch.optim.Adam(model.parameters(), lr=args.lr)))
    batches = SparseBatches(
        ds.train,
        sparsity=study.train_sparsity,
        batch_size=args.batch_size,
        device=torch.device("cpu"),
        mean=ds.mean,
        std=ds.std,
        shuffle=True,
        seed=args.seed,
    )
    print(
        f"sparse CNN depth {args.depth} {args.activation} batch {args.batch_size} lr {args.lr}, "
        f"sparsity {study.train_sparsity}, 1 thread"
    )
    print("steps     default ms  flushed ms  ratio  loss default  loss flushed  denormal gradients")
    seconds = [0.0, 0.0]
    losses = [0.0, 0.0]
    step = 0
    epoch = 1
    while step < args.steps:
        for batch in batches.epoch(epoch):
            for i, (model, optimizer) in enumerate(copies):
                started = time.perf_counter()
                losses[i] = _step(model, optimizer, batch, flush=(i == 1))
                seconds[i] += time.perf_counter() - started
            step += 1
            if step % args.every == 0:
                flush_denormals(False)
                ms = [1000 * s / args.every for s in seconds]
                print(
                    f"{step - args.every + 1:4d}-{step:<4d} {ms[0]:11.1f} {ms[1]:11.1f} "
                    f"{ms[0] / ms[1]:5.2f}x {losses[0]:13.4f} {losses[1]:13.4f} "
                    f"{_denormal_gradients(copies[0][0], batch):15d}"
                )
                seconds = [0.0, 0.0]
            if step >= args.steps:
                break
        epoch += 1
    flush_denormals(False)


if __name__ == "__main__":
    main()
