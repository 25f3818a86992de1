"""Per-process settings for CPU training that change speed only, never results: denormals
flushed to zero, freed memory kept mapped (``docs/decisions.md``, "CPU training settings")."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import resource

import torch

__all__ = [
    "denormals_flushed",
    "flush_denormals",
    "prepare_cpu_training",
    "resident_memory_mb",
    "retain_freed_memory",
]

_FLOAT32_DENORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38

# mallopt(3) parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_RETAIN_BELOW = 1 << 30  # 1 GiB: every activation of our networks, at any batch size we tune


def prepare_cpu_training() -> None:
    """Call before torch starts its thread pool and allocates the first training tensors."""
    flush_denormals()  # inherited by threads created later: before the intra-op pool starts
    retain_freed_memory()  # affects allocations after the call: before the first tensors


def flush_denormals(on: bool = True) -> bool:
    """Flush denormals to zero in this thread and threads it creates later (``False``: the
    CPU has no such mode; harmless)."""
    return bool(torch.set_flush_denormal(on))


def denormals_flushed() -> bool:
    """Whether this thread currently flushes denormals (probes the CPU, nothing cached)."""
    tiny = torch.tensor([_FLOAT32_DENORMAL], dtype=torch.float32)
    return bool((tiny * 1.0).item() == 0.0)


def retain_freed_memory() -> bool:
    """Serve tensors below 1 GiB from glibc's heap and never trim it; ``False`` if not glibc
    (a preloaded jemalloc or tcmalloc leaves these knobs unused)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _RETAIN_BELOW)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _RETAIN_BELOW)
    )


def resident_memory_mb() -> tuple[float | None, float]:
    """This process's resident memory now (``None`` without ``/proc``) and at its peak, in
    MiB: recorded after every trial, so memory kept across trials shows as growth."""
    now = None
    with contextlib.suppress(OSError), open("/proc/self/statm") as statm:
        now = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return now, peak
