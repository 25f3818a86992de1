"""Per-process settings for CPU training: denormals flushed to zero, freed memory kept mapped.

Both fix CPU-only slowdowns found while tuning and change speed only, never results. Every
entry point that trains on the CPU (``hpo.run`` workers, ``hpo.experiments``, the benches)
calls :func:`prepare_cpu_training` first thing, so a new setting of this kind is added here
once.

**Denormals.** While a model trains, some of the gradients flowing back between its layers
fall into the float32 denormal range (|x| < 1.2e-38; ELU's backward multiplies by ``exp(x)``,
which underflows for very negative pre-activations). x86 CPUs process denormal operands in
microcode, many times slower than normal ones, so a trial's backward pass slowed down as it
trained: 4.3x slower per step after 250 steps for one configuration the tuning study samples,
with bit-identical losses (``bench/denormals.py``, ``docs/performance.md``). Values that small
carry no information for a classifier. CUDA GPUs handle denormals at full speed, so this is
for CPU training only. The flag lives in each CPU thread's control register (MXCSR) and
threads inherit it from the thread that creates them, so it must be set before torch starts
its intra-op thread pool.

**Freed memory.** PyTorch's CPU tensors come straight from ``malloc``, with no caching
allocator in between. glibc serves every block above its mmap threshold (128 KiB at first,
raised only as far as the largest block freed so far, at most 32 MiB) with a fresh ``mmap``
and gives it back to the kernel on ``free``, and it also trims the top of its heap whenever
more than twice that threshold lies free there. A training step allocates and frees the same
few megabyte-sized activations and gradients every step, so every step maps them anew and the
kernel zero-fills each of their 4 KiB pages on first touch: 3,100 page faults per
forward+backward of one 16-channel 28x28 convolution at batch 64, and 2,000-22,000 per
training step of the paper's stack. Raising both thresholds to 1 GiB keeps those pages in the
heap for the next step: the faults drop to zero and a training step of the paper's stack runs
1.24-1.41x faster for the sparse CNN and 1.05-1.53x for the dense ones, with identical losses
(``bench/cpu_allocator.py``, ``docs/performance.md``). The cost is that a process's resident
memory stays at its peak instead of shrinking between steps; for a training worker, whose
peak recurs every step, that costs nothing. Only glibc (Linux) has these knobs; elsewhere the
call does nothing and returns ``False``. It affects allocations made after the call.
"""

from __future__ import annotations

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
    """Flush float32/float64 denormals to zero in this thread (and threads it creates later).

    Returns ``False`` where the CPU has no such mode (the call is then harmless).
    """
    return bool(torch.set_flush_denormal(on))


def denormals_flushed() -> bool:
    """Whether this thread currently flushes denormals (probes the CPU, nothing cached)."""
    tiny = torch.tensor([_FLOAT32_DENORMAL], dtype=torch.float32)
    return bool((tiny * 1.0).item() == 0.0)


def retain_freed_memory() -> bool:
    """Serve tensors below 1 GiB from glibc's heap and never trim it; ``False`` if not glibc.

    Where another allocator is preloaded (jemalloc, tcmalloc), this only sets glibc's unused
    knobs.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _RETAIN_BELOW)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _RETAIN_BELOW)
    )


def resident_memory_mb() -> tuple[float | None, float]:
    """This process's resident memory now (``None`` where ``/proc`` is missing) and at its peak.

    Recorded after every trial, so a worker that keeps memory from one trial to the next
    shows it as growth across trials (``bench/trial_throughput.py --memory-trials``).
    """
    now = None
    try:
        with open("/proc/self/statm") as statm:
            now = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return now, peak
