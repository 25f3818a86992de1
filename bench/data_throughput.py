"""Throughput of the data pipeline, and its share of a training step of the default model.

Prints, on the CPU (or ``--device``):

1. the load time of each dataset from a warm decode cache (median of ``--loads`` calls; the
   first call of the run decodes the archives if the cache is cold, and that time is printed
   too), on the real archives given by ``--data-dir`` (e.g. ../shared/data);
2. batches per second of :class:`data.SparseBatches` over the MNIST training split at batch
   128, masks drawn per batch (training) and fixed (evaluation), normalization included;
3. the data pipeline's share of a training step of the default sparse MNIST model
   (``ModelFamily.SPARSE``, ``CNNConfig(in_channels=1, num_classes=10, depth=6,
   activation="relu")``, Adam, batch 128): in one training loop fed by ``SparseBatches``, the
   time to produce each batch and the forward+backward+step that consumes it are measured side
   by side; share = data / (data + step), median over ``--repeats`` rounds. Target <= 5 %.

    .venv/bin/python bench/data_throughput.py --data-dir ../shared/data
    .venv/bin/python bench/data_throughput.py --data-dir ../shared/data --skip-caltech --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from data import (
    Caltech101Options,
    DatasetName,
    MNISTOptions,
    SparseBatches,
    SparseDataset,
    load_dataset,
)
from hpo.training import train_step
from models import CNNConfig, ModelFamily, build_model

TARGET_SHARE = 0.05


def _time_loads(
    name: DatasetName, options, data_dir: str | None, cache_dir: str | None, loads: int
) -> tuple[SparseDataset, float, float]:
    """(dataset, first-call seconds, median warm seconds)."""
    started = time.perf_counter()
    ds = load_dataset(name, data_dir=data_dir, cache_dir=cache_dir, options=options)
    first = time.perf_counter() - started
    warm = []
    for _ in range(loads):
        started = time.perf_counter()
        ds = load_dataset(name, data_dir=data_dir, cache_dir=cache_dir, options=options)
        warm.append(time.perf_counter() - started)
    return ds, first, statistics.median(warm)


def _batches_per_second(batches: SparseBatches, epochs: int, device: torch.device) -> float:
    started = time.perf_counter()
    count = 0
    for epoch in range(epochs):
        for _batch in batches.epoch(epoch):
            count += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def _step_time_share(
    ds: SparseDataset, device: torch.device, steps: int, repeats: int, batch_size: int
) -> tuple[float, float, float]:
    """(median ms to produce a batch, median ms of a training step, median data share).

    One training loop fed by ``SparseBatches``; each iteration times the ``next()`` that
    produces the batch and the forward+backward+step that consumes it, side by side (with a
    device synchronization between them on CUDA, where kernels run asynchronously). The
    share of a round is data / (data + step); the median over rounds is reported.
    """
    torch.manual_seed(0)
    config = CNNConfig(in_channels=1, num_classes=10, depth=6, activation="relu")
    model = build_model(ModelFamily.SPARSE, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = SparseBatches(
        ds.train, sparsity=0.5, batch_size=batch_size, device=device, mean=ds.mean, std=ds.std,
        shuffle=True, seed=0,
    )  # fmt: skip

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def round_(epoch: int) -> tuple[float, float]:
        data_s = step_s = 0.0
        it = iter(train.epoch(epoch))
        for _ in range(steps):
            t0 = time.perf_counter()
            x, mask, y = next(it)
            sync()
            t1 = time.perf_counter()
            train_step(model, optimizer, x, mask, y)
            sync()
            t2 = time.perf_counter()
            data_s += t1 - t0
            step_s += t2 - t1
        return data_s / steps, step_s / steps

    round_(0)  # warm-up (allocator, kernels)
    data_times, step_times, shares = [], [], []
    for r in range(1, repeats + 1):
        data_s, step_s = round_(r)
        data_times.append(data_s)
        step_times.append(step_s)
        shares.append(data_s / (data_s + step_s))
    return statistics.median(data_times), statistics.median(step_times), statistics.median(shares)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="real archives (default: $HPO_DATA_DIR)")
    p.add_argument("--cache-dir", default=None, help="decode cache (default: $HPO_CACHE_DIR)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--loads", type=int, default=5, help="warm loads to time (default: 5)")
    p.add_argument("--epochs", type=int, default=2, help="MNIST epochs for batches/s (default: 2)")
    p.add_argument("--steps", type=int, default=10, help="training steps per round (default: 10)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of --steps (default: 3)")
    p.add_argument("--caltech-size", type=int, default=150, help="image size (default: 150)")
    p.add_argument("--skip-caltech", action="store_true", help="do not time Caltech-101")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} torch threads={torch.get_num_threads()}")

    mnist, first, warm = _time_loads(
        DatasetName.MNIST, MNISTOptions(), args.data_dir, args.cache_dir, args.loads
    )
    print(
        f"load mnist           : first call {first:6.2f} s, warm cache {warm:5.2f} s "
        f"(train/val/test {len(mnist.train)}/{len(mnist.val)}/{len(mnist.test)})"
    )
    if not args.skip_caltech:
        options = Caltech101Options(image_size=args.caltech_size)
        caltech, first, warm = _time_loads(
            DatasetName.CALTECH101, options, args.data_dir, args.cache_dir, args.loads
        )
        n = len(caltech.train) + len(caltech.val) + len(caltech.test)
        print(
            f"load caltech101 ({args.caltech_size:>3}): first call {first:6.2f} s, warm cache "
            f"{warm:5.2f} s ({n} images, {caltech.num_classes} classes)"
        )

    for label, kwargs in (
        ("train (shuffle, fresh masks)", {"shuffle": True, "fixed_masks": False}),
        ("eval  (fixed masks)         ", {"shuffle": False, "fixed_masks": True}),
    ):
        batches = SparseBatches(
            mnist.train, sparsity=0.9, batch_size=128, device=device, mean=mnist.mean,
            std=mnist.std, seed=0, **kwargs,
        )  # fmt: skip
        rate = _batches_per_second(batches, args.epochs, device)
        print(f"mnist batch 128 {label}: {rate:8.0f} batches/s ({1e3 / rate:.2f} ms/batch)")

    data_s, step_s, share = _step_time_share(mnist, device, args.steps, args.repeats, 128)
    verdict = "OK" if share <= TARGET_SHARE else "ABOVE TARGET"
    print(
        f"sparse MNIST training step (batch 128, sparsity 0.5): data {data_s * 1e3:.2f} ms + "
        f"fwd/bwd/step {step_s * 1e3:.1f} ms -> data share {share * 100:.2f} % "
        f"(target <= {TARGET_SHARE * 100:.0f} %: {verdict})"
    )


if __name__ == "__main__":
    main()
