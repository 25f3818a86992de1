"""Which GPU a worker trains on when it was told only ``cuda`` and sees several.

Workers of one host are often started apart and know nothing of each other (compose's
``--scale worker=N``, the K processes of ``--workers K``, several ``hpo.run`` commands), yet N
of them on N GPUs should take one GPU each, and 2N two each. So each takes the first free slot
in a folder they all see: slot ``(r, g)`` is the ``r``-th worker on GPU ``g``, held by an
``flock`` that the kernel drops when the worker exits, crash included. Nothing here imports
torch.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SLOT_DIR_ENV", "GpuSlot", "claim_gpu", "slot_folder"]

SLOT_DIR_ENV = "HPO_GPU_SLOT_DIR"  # compose mounts one volume here in every worker container


@dataclass
class GpuSlot:
    """A claimed slot: GPU ``index``, the ``rank``-th worker on it; held until :meth:`release`
    or the process ends."""

    index: int
    rank: int
    _fd: int

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def slot_folder() -> Path:
    """``$HPO_GPU_SLOT_DIR``, else a folder in the system's temporary directory (shared by the
    processes of one host, not by containers: compose mounts a volume instead)."""
    folder = Path(os.environ.get(SLOT_DIR_ENV) or Path(tempfile.gettempdir()) / "hpo-gpu-slots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def claim_gpu(device_count: int, folder: Path) -> GpuSlot:
    """The least used GPU (lowest index on a tie), as far as live workers' slots say."""
    if device_count < 1:
        raise ValueError(f"device_count must be >= 1, got {device_count}")
    for rank in itertools.count():
        for index in range(device_count):
            fd = os.open(folder / f"gpu{index}-{rank}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return GpuSlot(index, rank, fd)
    raise AssertionError("unreachable")
