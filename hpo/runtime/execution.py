"""How trials run on their device beyond the device itself: precision and compilation.

Plain settings (torch is imported only when they are applied), so the command line can
validate and describe them without importing torch.
"""

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
    """How trials run on their device, beyond the device itself.

    Attributes:
        precision: ``fp32``, or ``bf16`` for bfloat16 autocast of the forward passes (the
            parameters, the optimizer and the loss stay float32). Measured on the CPU only;
            the default stays fp32 until a GPU run shows equal validation accuracy.
        compile: Compile each network's forward with ``torch.compile`` (on CUDA in
            ``reduce-overhead`` mode, i.e. CUDA graphs, against the launch overhead of many
            small kernels). Shapes must then be static: training drops each epoch's last,
            smaller batch. Not timed here (no GPU).
    """

    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InvalidSettingError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    def autocast(self, device: torch.device | str) -> contextlib.AbstractContextManager[object]:
        """The context the forward passes run in."""
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
