"""hpo.training and how a network is placed on its device: the same numbers in every layout."""

from __future__ import annotations

import pytest
import torch

from hpo.errors import InvalidSettingError
from hpo.runtime.device import memory_format, place
from hpo.runtime.execution import Execution
from hpo.training import train_step
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
    with execution.autocast("cpu"):
        return [float(train_step(model, optimizer, *b)) for b in _batches(steps)]


def test_bf16_autocast_trains_float32_parameters_to_nearly_the_same_losses() -> None:
    fp32, bf16 = _losses(Execution("fp32")), _losses(Execution("bf16"))
    assert bf16 != fp32  # the forward really ran in bfloat16
    assert bf16 == pytest.approx(fp32, rel=0.05)
    with Execution("bf16").autocast("cpu"):
        model = build_model(ModelFamily.SPARSE, CONFIG)
        x, mask, _ = _batches(1)[0]
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


def test_a_bad_precision_is_a_clear_error() -> None:
    with pytest.raises(InvalidSettingError, match="--precision must be one of fp32, bf16"):
        Execution("fp16")
