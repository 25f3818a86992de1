"""Precision and compilation of trials; torch is imported only when they are applied."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InvalidSettingError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["PRECISIONS", "Execution"]

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Execution:
    """Precision and compilation of the trials (``docs/decisions.md``, "Execution")."""

    precision: str = "fp32"  # or bf16: autocast forward passes; weights and loss stay float32
    compile: bool = False  # torch.compile each forward (CUDA: CUDA graphs); drops short batches

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InvalidSettingError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    def autocast(self, device: torch.device | str) -> contextlib.AbstractContextManager[object]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)

    def prepare(self, model: nn.Module, device: torch.device | str) -> nn.Module:
        """``model`` placed on ``device`` (``device.place``), compiled if asked for."""
        import torch

        from .device import place

        model = place(model, device)
        if self.compile:
            cuda = torch.device(device).type == "cuda"
            model.compile(mode="reduce-overhead" if cuda else "default")
        return model
