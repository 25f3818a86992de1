"""How a trial's arithmetic runs: precision, layout, compilation and cuDNN's choices.

torch is imported only when a setting is applied. Why each default: ``docs/decisions.md``,
"Execution on a GPU".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InvalidSettingError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["LAYOUTS", "PRECISIONS", "Execution"]

# fp32: IEEE float32 everywhere (TF32 off); tf32: float32 storage, TF32 convolutions and
# matrix products on GPUs that have them; bf16: bfloat16 autocast of the forward passes.
PRECISIONS = ("fp32", "tf32", "bf16")
LAYOUTS = ("auto", "channels_last", "contiguous")  # auto: channels_last on the CPU only


@dataclass(frozen=True)
class Execution:
    """The arithmetic of the trials; none of it changes what a trial means, only its speed
    and (for tf32 and bf16) its rounding, which is why a study records its precision."""

    precision: str = "fp32"
    compile: bool = False  # torch.compile every trial's network (CUDA: CUDA graphs)
    layout: str = "auto"
    cudnn_benchmark: bool = False  # let cuDNN time its algorithms per shape (CUDA only)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InvalidSettingError(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.layout not in LAYOUTS:
            raise InvalidSettingError(
                f"--layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}"
            )

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype forward passes autocast to, or ``None`` (no autocast).

        The training loop opens autocast around each forward pass and loss only: autocast
        keeps a low-precision copy of every weight for as long as its context is open, so a
        context around the whole fit would train against the first step's weights."""
        if self.precision != "bf16":
            return None
        import torch

        return torch.bfloat16

    def apply(self, device: torch.device | str) -> None:
        """Set this process's TF32 and cuDNN switches for ``device`` (once, at the start of a
        worker: they are process-wide). cuDNN stays free to pick nondeterministic algorithms:
        a seed reproduces a trial exactly on the CPU, closely on a GPU."""
        import torch

        if torch.device(device).type != "cuda":
            return
        tf32 = self.precision == "tf32"
        if hasattr(torch.backends.cudnn, "conv"):  # the switches of torch >= 2.9
            torch.backends.cuda.matmul.fp32_precision = "tf32" if tf32 else "ieee"
            torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
        else:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = self.cudnn_benchmark

    def memory_format(self, device: torch.device | str) -> torch.memory_format:
        import torch

        from .device import memory_format

        if self.layout == "auto":
            return memory_format(device)
        return torch.channels_last if self.layout == "channels_last" else torch.contiguous_format

    def prepare(self, model: nn.Module, device: torch.device | str) -> nn.Module:
        """``model`` on ``device`` in this layout, compiled if asked for.

        Compiling starts from a clean slate (``torch.compiler.reset``): every trial's network
        is a new module of the same class, so without it each trial's graphs count against
        Dynamo's recompile limit for that class's ``forward`` (8), and from about the fifth
        trial on the networks would silently run eager."""
        import torch

        model = model.to(device=torch.device(device), memory_format=self.memory_format(device))
        if self.compile:
            torch.compiler.reset()
            cuda = torch.device(device).type == "cuda"
            model.compile(mode="reduce-overhead" if cuda else "default")
        return model

    def eager(self) -> Execution:
        """The same without compilation (what a worker falls back to when compiling fails)."""
        return dataclasses.replace(self, compile=False)
