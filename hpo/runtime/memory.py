"""A trial's memory: its own peak on the GPU, and what a failed allocation leaves behind.

Several workers may share one GPU, so a trial that runs out of memory must hand its memory
back before the worker goes on: the failed trial's tensors are still referenced by the
exception's traceback, so the cache is emptied only after that is gone.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

import torch

from ..errors import OutOfMemoryTrialError, one_line
from .cpu import resident_memory_mb

__all__ = [
    "is_allocation_failure",
    "release_memory",
    "run_releasing_memory",
    "start_trial_memory",
    "trial_memory",
]

T = TypeVar("T")

# What allocation failures say when they are not torch.OutOfMemoryError: the CPU allocator,
# and cuBLAS, cuDNN or cuFFT failing to get workspace from a full GPU.
_ALLOCATION_FAILURES = (
    "out of memory",
    "can't allocate memory",
    "ALLOC_FAILED",
    "cudaErrorMemoryAllocation",
    "NOT_ENOUGH_WORKSPACE",
)


def is_allocation_failure(error: BaseException) -> bool:
    """Whether ``error`` means the device had no memory left for this trial."""
    if isinstance(error, torch.cuda.OutOfMemoryError):  # torch.OutOfMemoryError, also on CPU
        return True
    return isinstance(error, RuntimeError) and any(s in str(error) for s in _ALLOCATION_FAILURES)


def start_trial_memory(device: torch.device) -> None:
    """Start a trial's GPU peak from what is allocated now, so neither the cost probe nor an
    earlier trial, whatever its state, shows in this trial's figure."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def trial_memory(device: torch.device) -> dict[str, float | None]:
    """The worker's memory at the end of a trial (MiB): resident now and at its peak (growth
    across trials is a leak), and the GPU peak since :func:`start_trial_memory`."""
    rss, peak = resident_memory_mb()
    gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"rss_mb": rss, "peak_rss_mb": peak, "gpu_peak_mb": gpu}


def release_memory(device: torch.device) -> None:
    """Free what unreachable tensors still hold: cycles first, then (CUDA) the cached blocks
    other processes on the GPU could use."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_releasing_memory(train: Callable[[], T], device: torch.device) -> T:
    """``train()``; an allocation failure becomes :class:`OutOfMemoryTrialError` (a failed
    trial, the study goes on) once the failed trial's memory is released."""
    failure = None
    try:
        return train()
    except RuntimeError as e:
        if not is_allocation_failure(e):
            raise
        failure = one_line(e)
    # Here the exception, its traceback and the frames holding the trial's tensors are gone.
    release_memory(device)
    raise OutOfMemoryTrialError(f"out of memory on {device}: {failure}")
