"""hpo.training and how a network is placed on its device: the same numbers in every layout."""

from __future__ import annotations

import contextlib

import pytest
import torch
from stripes import stripes_task

from hpo.errors import InvalidSettingError
from hpo.runtime.device import memory_format, place
from hpo.runtime.execution import Execution
from hpo.training import evaluate, fit, train_step
from hpo.training.recipe import Optimization
from models import CNNConfig, ModelFamily, build_model

CONFIG = CNNConfig(
    in_channels=1, num_classes=10, depth=5, activation="elu", width=16, pool_after=(1,), head_grid=4
)


def _batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        mask = (torch.rand(32, 1, 28, 28, generator=gen) < 0.2).float()
        x = torch.randn(32, 1, 28, 28, generator=gen) * mask
        out.append((x, mask, torch.randint(0, 10, (32,), generator=gen)))
    return out


@pytest.mark.parametrize("family", list(ModelFamily))
def test_channels_last_training_gives_the_float32_losses_of_the_default_layout(
    family: ModelFamily,
) -> None:
    """The CPU trains in channels_last (faster); the losses of 8 Adam steps must match NCHW's."""
    losses = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(3)
        model = build_model(family, CONFIG).to(memory_format=layout)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses[layout] = [float(train_step(model, optimizer, *b)) for b in _batches(8)]
    plain, fast = losses[torch.contiguous_format], losses[torch.channels_last]
    assert fast == pytest.approx(plain, rel=1e-4, abs=1e-5)
    assert max(plain) - min(plain) > 1e-3  # it trains: the comparison is not of two constants


def test_networks_are_placed_in_channels_last_on_the_cpu() -> None:
    assert memory_format("cpu") == torch.channels_last
    assert memory_format("cuda:0") == torch.contiguous_format  # not measured: left as it is
    model = place(build_model(ModelFamily.SPARSE, CONFIG), "cpu")
    conv = model.convs[1].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x, mask, _ = _batches(1)[0]
    assert model(x, mask).shape == (32, 10)  # NCHW batches need no conversion


def _losses(execution: Execution, steps: int = 4) -> list[float]:
    torch.manual_seed(3)
    model = execution.prepare(build_model(ModelFamily.SPARSE, CONFIG), "cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    dtype = execution.autocast_dtype
    return [float(train_step(model, optimizer, *b, autocast=dtype)) for b in _batches(steps)]


class _Repeated:
    """The same batches every epoch (``fit``'s batch source)."""

    def __init__(self, batches: list[tuple[torch.Tensor, ...]]) -> None:
        self.batches = batches

    def epoch(self, epoch: int) -> list[tuple[torch.Tensor, ...]]:
        return self.batches


def _fit_losses(family: ModelFamily, autocast: torch.dtype | None, *, outer: bool) -> list[float]:
    """12 epochs x 4 Adam steps of the stripes task through ``fit``; ``outer`` also opens one
    bf16 autocast around the whole fit, as the product did before (the control)."""
    x, mask, labels = stripes_task(n=128, hw=12, seed=0)
    batches = [
        (x[i : i + 32], mask[i : i + 32].float(), labels[i : i + 32]) for i in (0, 32, 64, 96)
    ]
    torch.manual_seed(0)
    model = place(
        build_model(family, CNNConfig(1, 2, depth=3, kernel_schedule=(3, 3, 1), width=8)), "cpu"
    )
    optimization = Optimization(torch.optim.Adam(model.parameters(), lr=1e-2))
    around = torch.autocast("cpu", dtype=torch.bfloat16) if outer else contextlib.nullcontext()
    with around:
        result = fit(model, optimization, _Repeated(batches), 12, autocast=autocast)
    return list(result.train_losses)


@pytest.mark.parametrize("family", [ModelFamily.DENSE, ModelFamily.SPARSE])
def test_bf16_training_follows_the_float32_losses_over_many_steps(family: ModelFamily) -> None:
    """Autocast caches bf16 copies of the weights while its context is open: the steps must
    run outside it, or training uses the first step's weights (dense: all of them)."""
    fp32 = _fit_losses(family, None, outer=False)
    bf16 = _fit_losses(family, torch.bfloat16, outer=False)
    assert fp32[-1] < 0.1 * fp32[0]  # the task is learned
    assert bf16 == pytest.approx(fp32, rel=0.05, abs=0.01)
    stale = _fit_losses(family, torch.bfloat16, outer=True)
    assert stale != pytest.approx(fp32, rel=0.05, abs=0.01)  # the control: the check can fail


def test_bf16_runs_the_forward_in_bfloat16_and_keeps_float32_parameters() -> None:
    fp32, bf16 = _losses(Execution("fp32")), _losses(Execution("bf16"))
    assert bf16 != fp32  # the forward really ran in bfloat16
    assert bf16 == pytest.approx(fp32, rel=0.05)
    model = build_model(ModelFamily.SPARSE, CONFIG)
    x, mask, _ = _batches(1)[0]
    with torch.autocast("cpu", dtype=Execution("bf16").autocast_dtype):
        assert model(x, mask).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_compile_traces_the_networks_and_gives_the_same_losses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """torch.compile of the whole network, sparse layer included; the eager backend here (the
    product uses inductor, with CUDA graphs on a GPU), so only tracing is tested."""
    modes: list[str] = []
    compile_ = torch.nn.Module.compile

    def eager(self: torch.nn.Module, *args: object, mode: str = "default", **kw: object) -> None:
        modes.append(mode)
        compile_(self, backend="eager")

    monkeypatch.setattr(torch.nn.Module, "compile", eager)
    assert _losses(Execution(compile=True)) == _losses(Execution())
    assert modes == ["default"]  # "reduce-overhead" (CUDA graphs) on a GPU only


def test_compile_compiles_every_trial_of_a_study(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seven trial-shaped networks (new modules of the same classes, other depths and batch
    sizes, trained and evaluated) in one process, one backend as with inductor: each trial's
    forward is compiled; none falls back to eager after Dynamo's recompile limit (8 graphs per
    code object, reached at the sixth trial here without a reset)."""
    graphs: list[int] = []

    def backend(graph: torch.fx.GraphModule, example_inputs: object) -> object:
        graphs[-1] += 1
        return graph.forward

    compile_ = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda m, **kw: compile_(m, backend=backend))
    execution = Execution(compile=True)
    for trial in range(7):
        graphs.append(0)
        family = (ModelFamily.SPARSE, ModelFamily.DENSE)[trial % 2]
        torch.manual_seed(trial)
        config = CNNConfig(1, 10, depth=3 + trial % 3, width=8, head_grid=2)
        model = execution.prepare(build_model(family, config), "cpu")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        size = 8 + 4 * (trial % 3)
        for x, mask, y in _batches(2, seed=trial):
            model.train()
            train_step(model, optimizer, x[:size], mask[:size], y[:size])
            evaluate(model, [(x[:size], mask[:size], y[:size]), (x[:5], mask[:5], y[:5])])
    assert all(count >= 2 for count in graphs), graphs  # training and evaluation, every trial


def test_a_bad_precision_is_a_clear_error() -> None:
    with pytest.raises(InvalidSettingError, match="--precision must be one of fp32, tf32, bf16"):
        Execution("fp16")
