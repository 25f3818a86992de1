"""CPU floating-point mode for training processes: flush denormal numbers to zero.

Why: while a model trains, some of the gradients flowing back between its layers fall into
the float32 denormal range (|x| < 1.2e-38; ELU's backward multiplies by ``exp(x)``, which
underflows for very negative pre-activations). x86 CPUs process denormal operands in
microcode, many times slower than normal ones, so a trial's backward pass slowed down as it
trained: 4.3x slower per step after 250 steps for one configuration the tuning study samples,
with bit-identical losses (``bench/denormals.py``, ``docs/performance.md``). Values that small
carry no information for a classifier. CUDA GPUs handle denormals at full speed, so this is
switched on for CPU training only.

The flag lives in each CPU thread's control register (MXCSR). Threads inherit it from the
thread that creates them, so it must be set before torch starts its intra-op thread pool:
call :func:`flush_denormals` first thing in a process that trains.
"""

from __future__ import annotations

import torch

__all__ = ["denormals_flushed", "flush_denormals"]

_FLOAT32_DENORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


def flush_denormals(on: bool = True) -> bool:
    """Flush float32/float64 denormals to zero in this thread (and threads it creates later).

    Returns ``False`` where the CPU has no such mode (the call is then harmless).
    """
    return bool(torch.set_flush_denormal(on))


def denormals_flushed() -> bool:
    """Whether this thread currently flushes denormals (probes the CPU, nothing cached)."""
    tiny = torch.tensor([_FLOAT32_DENORMAL], dtype=torch.float32)
    return bool((tiny * 1.0).item() == 0.0)
