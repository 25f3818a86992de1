"""The per-process settings a CPU training process needs, applied in one place.

Both fix CPU-only slowdowns found while tuning and change speed only, never results:
denormal floats flushed to zero (``hpo.numerics``) and freed tensor memory kept mapped
(``hpo.cpu_allocator``). Every entry point that trains on the CPU (``hpo.run`` workers,
``hpo.experiments``, the benches) calls :func:`prepare_cpu_training` first thing, so a
new setting of this kind is added here once.
"""

from __future__ import annotations

from .cpu_allocator import retain_freed_memory
from .numerics import flush_denormals

__all__ = ["prepare_cpu_training"]


def prepare_cpu_training() -> None:
    """Call before torch starts its thread pool and allocates the first training tensors."""
    flush_denormals()  # inherited by threads created later: before the intra-op pool starts
    retain_freed_memory()  # affects allocations after the call: before the first tensors
