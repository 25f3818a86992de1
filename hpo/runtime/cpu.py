"""CPU memory for training processes: keep freed tensor memory mapped instead of returning it.

Why: PyTorch's CPU tensors come straight from ``malloc``, with no caching allocator in
between. glibc serves every block above its mmap threshold (128 KiB at first, raised only as
far as the largest block freed so far, at most 32 MiB) with a fresh ``mmap`` and gives it
back to the kernel on ``free``, and it also trims the top of its heap whenever more than
twice that threshold lies free there. A training step allocates and frees the same few
megabyte-sized activations and gradients every step, so every step maps them anew and the
kernel zero-fills each of their 4 KiB pages on first touch: 3,100 page faults per
forward+backward of one 16-channel 28x28 convolution at batch 64, and 2,000-22,000 per
training step of the paper's stack, depending on how far glibc's threshold has adapted.
Raising both thresholds to 1 GiB keeps those pages in the heap for the next step: the faults
drop to zero and a training step of the paper's stack runs 1.24-1.41x faster for the sparse
CNN and 1.05-1.53x for the dense ones, with identical losses (``bench/cpu_allocator.py``,
``docs/performance.md``). The cost is that a process's resident memory stays at its peak
instead of shrinking between steps; for a training worker, whose peak recurs every step,
that costs nothing.

Only glibc (Linux) has these knobs; elsewhere the call does nothing and returns ``False``.
Where another allocator is preloaded (jemalloc, tcmalloc), the call only sets glibc's unused
knobs. Training processes get it through :func:`hpo.cpu_process.prepare_cpu_training`; it
affects allocations made after the call.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["retain_freed_memory"]

# mallopt(3) parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_RETAIN_BELOW = 1 << 30  # 1 GiB: every activation of our networks, at any batch size we tune


def retain_freed_memory() -> bool:
    """Serve tensors below 1 GiB from glibc's heap and never trim it; ``False`` if not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _RETAIN_BELOW)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _RETAIN_BELOW)
    )
