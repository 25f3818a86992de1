"""Forward+backward cost of SparseConv2d relative to nn.Conv2d, measured side by side on the CPU.

For batch 64, 16 -> 16 channels, 28x28 inputs with a ~50 % dense mask and 'same' padding,
prints the median time of one forward+backward pass of

- ``nn.Conv2d`` (the reference),
- ``models.SparseConv2d`` (count by one single-channel pass over the mask, fused backward),
- a naive sparse convolution that counts observed pixels with a full C_out x C_in ones-kernel
  convolution of the channel-broadcast mask, written with plain autograd,

and the ratios to ``nn.Conv2d``. The three are interleaved within every repeat, in a fresh
seeded random order; times are medians over repeats and each ratio is the median of the
per-repeat ratios, so load drifting on shared cores affects both sides of a ratio alike.

By default the process first keeps freed memory mapped (``hpo.runtime.cpu``), as every CPU
training worker does; ``--malloc default`` measures under glibc's default allocator settings
instead, where every step page-faults its activations and gradients anew.

    .venv/bin/python bench/layer_overhead.py                # kernels 3, 5, 11; target <= 1.25x
    .venv/bin/python bench/layer_overhead.py --malloc default
    .venv/bin/python bench/layer_overhead.py --repeats 60 --threads 2 --channels-last --networks
    .venv/bin/python bench/layer_overhead.py --repeats 60 --channels-last --kernels 3 --floor
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpo.errors import DeviceError
from hpo.runtime.cpu import retain_freed_memory
from hpo.runtime.device import resolve_device
from models import CNNConfig, ModelFamily, SparseConv2d, build_model, window_count

# --floor only: the layer's own pieces, to time it without its mask side
from models.sparse_conv import _mask_and_scale, _SparseConvFunction

TARGET_RATIO = 1.25  # on the CPU
CPU = torch.device("cpu")


class NaiveSparseConv2d(nn.Module):
    """The sparse convolution as often first written: count with a C_out x C_in ones kernel.

    Same output as :class:`models.SparseConv2d`, but the count is a full
    ``(C_out, C_in, k, k)`` convolution of the mask broadcast to every input channel (so it
    costs as much as the convolution itself), and every step is a separate autograd op.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.register_buffer(
            "ones", torch.ones(channels, channels, kernel_size, kernel_size), persistent=False
        )
        self.kernel_size = kernel_size

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        k = self.kernel_size
        m = mask.to(x.dtype).expand_as(x)  # (N, C_in, H, W)
        count = F.conv2d(m, self.ones, None, 1, k // 2)  # C_in * n, for every output channel
        scale = (k * k * x.shape[1]) / count.clamp(min=1.0) * (count > 0)
        raw = F.conv2d(x * m, self.conv.weight, None, 1, k // 2)
        y = (raw * scale + self.conv.bias.view(1, -1, 1, 1)) * (count > 0)
        new_mask = F.max_pool2d(mask.to(x.dtype), k, 1, k // 2)
        return y, new_mask


def _time_once(step: Callable[[], None], device: torch.device) -> float:
    """Wall time of one call; on a GPU it waits for the queued kernels on both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(
    kernel_size: int,
    repeats: int,
    warmup: int,
    seed: int,
    channels_last: bool = False,
    device: torch.device = CPU,
    batch: int = 64,
    floor: bool = False,
) -> tuple[dict[str, float], dict[str, float]]:
    """Time one forward+backward of the three layers at one kernel size.

    With ``floor`` a fourth step joins the rotation: the layer's own autograd function on a
    count, scale and mask computed once outside the clock, with no input checks. That is the
    layer's convolutions and full-size elementwise passes alone, the least any eager version of
    it could cost, so the gap between it and ``SparseConv2d`` is what the mask-side work costs.

    Returns:
        Median seconds per layer, and per sparse layer the median over repeats of its time
        divided by ``nn.Conv2d``'s time in the same repeat (pairing cancels load that drifts
        between repeats).
    """
    gen = torch.Generator().manual_seed(seed)
    n, c, hw = batch, 16, 28
    x = torch.randn(n, c, hw, hw, generator=gen).to(device).requires_grad_(True)
    # Float mask, as every layer after the first receives it (the previous new_mask).
    mask = (torch.rand(n, 1, hw, hw, generator=gen) < 0.5).float().to(device)
    grad_y = torch.randn(n, c, hw, hw, generator=gen).to(device)

    torch.manual_seed(seed)
    dense = nn.Conv2d(c, c, kernel_size, padding=kernel_size // 2).to(device)
    sparse = SparseConv2d(c, c, kernel_size, padding=kernel_size // 2).to(device)
    naive = NaiveSparseConv2d(c, kernel_size).to(device)
    if channels_last:  # every tensor and weight in NHWC; the layers follow their input's layout
        fmt = torch.channels_last
        x = x.detach().contiguous(memory_format=fmt).requires_grad_(True)
        grad_y = grad_y.contiguous(memory_format=fmt)
        for module in (dense, sparse, naive):
            module.to(memory_format=fmt)

    def run_dense() -> None:
        dense(x).backward(grad_y)

    def run_sparse() -> None:
        sparse(x, mask)[0].backward(grad_y)

    def run_naive() -> None:
        naive(x, mask)[0].backward(grad_y)

    steps = {"nn.Conv2d": run_dense, "SparseConv2d": run_sparse, "naive": run_naive}
    if floor:
        steps["floor"] = _floor_step(sparse, x, mask, grad_y)
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = random.Random(seed)
    for rep in range(warmup + repeats):
        # A fresh order every repeat, so no layer always runs in another's wake (cache, heap).
        names = order.sample(list(steps), k=len(steps))
        for name in names:
            step = steps[name]
            elapsed = _time_once(step, device)
            if rep >= warmup:
                times[name].append(elapsed)
        for module in (dense, sparse, naive):
            module.zero_grad(set_to_none=True)
        x.grad = None
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        name: statistics.median(t / d for t, d in zip(times[name], times["nn.Conv2d"], strict=True))
        for name in steps
        if name != "nn.Conv2d"
    }
    return medians, ratios


def _floor_step(layer: SparseConv2d, x: Tensor, mask: Tensor, grad_y: Tensor) -> Callable[[], None]:
    """One forward+backward of ``layer``'s fused function, its mask-side tensors precomputed.

    Checked once against the layer itself, so the floor is this layer's own computation and
    not a cheaper one: the same output, and the same gradients of input, weight and bias.
    """
    m = mask.to(x.dtype)
    ones = None if x.device.type == "cpu" else layer.ones  # counted as the layer counts
    with torch.no_grad():
        count = window_count(
            m, layer.kernel_size, layer.stride, layer.padding, layer.dilation, ones
        )
        _, scale = _mask_and_scale(count, layer.window_area)
    conv_args = (layer.stride, layer.padding, layer.dilation, False, None)

    def forward() -> Tensor:
        return _SparseConvFunction.apply(x, m, scale, layer.weight, layer.bias, *conv_args)

    def gradients(y: Tensor) -> list[Tensor]:
        return list(torch.autograd.grad(y, (x, layer.weight, layer.bias), grad_y))

    # Loose enough for a GPU's reductions in another order, far too tight for another formula.
    close = {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(forward(), layer(x, mask)[0], **close)
    floor_grads, layer_grads = gradients(forward()), gradients(layer(x, mask)[0])
    torch.testing.assert_close(floor_grads[:2], layer_grads[:2], **close)
    # The bias gradient sums N*H*W (50,176) values: in float32 here, in double in the layer's
    # C++ backward on the CPU, so they differ by float32 rounding of that long sum (~1e-4).
    torch.testing.assert_close(floor_grads[2], layer_grads[2], rtol=1e-3, atol=1e-3)
    return lambda: forward().backward(grad_y)


def measure_networks(
    repeats: int, warmup: int, seed: int, device: torch.device = CPU
) -> dict[str, tuple[float, float]]:
    """Training-step time of the paper's stack per family, and its per-repeat ratio to DENSE.

    Depth 6 (11, 7, 5, 3, 3, 1 with 16 channels), batch 64, 1x28x28, 10 % of pixels observed,
    cross-entropy forward + backward.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1, 28, 28, generator=gen).to(device)
    mask = (torch.rand(64, 1, 28, 28, generator=gen) < 0.1).to(device)
    labels = torch.randint(0, 10, (64,), generator=gen).to(device)
    torch.manual_seed(seed)
    config = CNNConfig(in_channels=1, num_classes=10, depth=6, activation="relu", width=16)
    models = {family: build_model(family, config).to(device) for family in ModelFamily}
    times: dict[str, list[float]] = {family: [] for family in models}
    order = random.Random(seed)
    for rep in range(warmup + repeats):
        for family in order.sample(list(models), k=len(models)):
            model = models[family]

            def step(model: nn.Module = model) -> None:
                F.cross_entropy(model(x, mask), labels).backward()

            elapsed = _time_once(step, device)
            if rep >= warmup:
                times[family].append(elapsed)
            model.zero_grad(set_to_none=True)
    dense = times[ModelFamily.DENSE]
    return {
        family: (
            statistics.median(values),
            statistics.median(t / d for t, d in zip(values, dense, strict=True)),
        )
        for family, values in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kernels",
        type=int,
        nargs="+",
        default=[3, 5, 11],
        help="kernel sizes to measure (default: 3 5 11)",
    )
    parser.add_argument(
        "--repeats", type=int, default=40, help="timed repeats per layer (default: 40)"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed repeats first (default: 5)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default: 1: steadier on shared cores)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.add_argument(
        "--networks",
        action="store_true",
        help="also time a training step of the paper's stack for each model family",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="inputs, gradients and weights in channels_last (NHWC) layout (default: NCHW)",
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu (the target's device, default) or cuda[:N]"
    )
    parser.add_argument(
        "--batch", type=int, default=64, help="batch size of the layer timings (default: 64)"
    )
    parser.add_argument(
        "--malloc",
        choices=("retain", "default"),
        default="retain",
        help="retain: keep freed memory mapped, as CPU training workers do (default); "
        "default: glibc's own settings",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure, in a rotation of its own, the layer's convolutions and full-size "
        "passes alone (mask-side work precomputed): the least an eager layer could cost",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="also print the ratios as one JSON object, the last line (bench/gpu_check.py)",
    )
    args = parser.parse_args()
    for name in ("repeats", "threads", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if any(k < 1 or k % 2 == 0 for k in args.kernels):
        parser.error(f"--kernels must be odd and at least 1 ('same' padding), got {args.kernels}")
    try:
        device = torch.device(resolve_device(args.device))
    except DeviceError as error:
        parser.error(str(error))
    summary: dict[str, object] = {"device": str(args.device), "batch": args.batch}
    retained = args.malloc == "retain" and retain_freed_memory()
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"batch {args.batch}, 16->16 channels, 28x28, mask density 0.5, forward+backward, "
        f"{where}, "
        f"{'channels_last' if args.channels_last else 'NCHW'}, "
        f"{args.threads} thread(s), {args.repeats} interleaved repeats, "
        f"{'freed memory retained' if retained else 'default malloc settings'}; "
        f"times are medians, ratios are medians of the per-repeat ratios"
    )
    print(
        f"{'kernel':>6} {'nn.Conv2d ms':>13} {'Sparse ms':>10} {'ratio':>6} "
        f"{'naive ms':>9} {'naive ratio':>11}"
    )
    worst = 0.0
    for k in args.kernels:
        med, ratios = measure(
            k, args.repeats, args.warmup, args.seed, args.channels_last, device, args.batch
        )
        ratio, naive_ratio = ratios["SparseConv2d"], ratios["naive"]
        summary[f"kernel_{k}"] = round(ratio, 3)
        worst = max(worst, ratio)
        print(
            f"{k:>6} {med['nn.Conv2d'] * 1e3:>13.2f} {med['SparseConv2d'] * 1e3:>10.2f} "
            f"{ratio:>5.2f}x {med['naive'] * 1e3:>9.2f} {naive_ratio:>10.2f}x"
        )
    verdict = "meets" if worst <= TARGET_RATIO else "MISSES"
    print(
        f"worst SparseConv2d / nn.Conv2d ratio {worst:.2f}x: {verdict} the "
        f"<= {TARGET_RATIO}x target" + ("" if device.type == "cpu" else " (set for the CPU)")
    )

    if args.floor:
        print(
            "\nthe layer's floor: its fused function on precomputed mask-side tensors "
            "(a fourth step in the same rotation)"
        )
        print(f"{'kernel':>6} {'Sparse ratio':>13} {'floor ratio':>12} {'mask side':>10}")
        for k in args.kernels:
            _, ratios = measure(
                k, args.repeats, args.warmup, args.seed, args.channels_last, device, args.batch,
                floor=True,
            )  # fmt: skip
            sparse_ratio, floor_ratio = ratios["SparseConv2d"], ratios["floor"]
            summary[f"floor_{k}"] = round(floor_ratio, 3)
            print(
                f"{k:>6} {sparse_ratio:>12.2f}x {floor_ratio:>11.2f}x "
                f"{sparse_ratio - floor_ratio:>+9.2f}x"
            )

    if args.networks:
        print("\nnetworks, paper stack (depth 6), batch 64, 1x28x28, 10 % observed, training step:")
        for family, (seconds, ratio) in measure_networks(
            max(args.repeats // 4, 5), 2, args.seed, device
        ).items():
            print(f"{family.value:>12} {seconds * 1e3:>8.1f} ms {ratio:>5.2f}x DENSE")
            summary[f"network_{family.value}"] = round(ratio, 3)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
