"""Running K worker processes of one study on one machine (``python -m hpo.run --workers K``).

Workers share nothing but the storage: each is a fresh ``spawn``-ed interpreter with its own
seed, device, share of the CPU threads and database connections. A worker that dies is not
restarted: the storage heartbeat re-queues its trial. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import EXIT_INTERRUPTED
from .interrupts import Stopped, StopSignals, signals_ignored, stop_with_parent

__all__ = ["WorkerAssignment", "WorkerError", "available_cpu_count", "plan_workers", "run_workers"]

_logger = logging.getLogger(__name__)

SettingsT = TypeVar("SettingsT")

_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


class WorkerError(Exception):
    """Invalid worker request (e.g. ``--workers 0``); the message is one line."""


@dataclass(frozen=True)
class WorkerAssignment:
    """Worker ``index`` (0-based, its log prefix): its seed (``base_seed + index``: workers
    explore differently yet reproducibly), device and intra-op CPU threads."""

    index: int
    seed: int
    device: str
    num_threads: int


def plan_workers(
    n_workers: int, base_seed: int, device: str, cpu_count: int
) -> list[WorkerAssignment]:
    """Split one machine between ``n_workers`` workers: the CPU cores are divided so K workers
    do not oversubscribe the machine with K x cores threads. ``"cuda"`` stays ``"cuda"``: each
    worker claims the least used GPU when it starts (``hpo.runtime.gpu_slots``), so workers of
    separate commands or containers spread over the GPUs too."""
    if n_workers < 1:
        raise WorkerError(f"--workers must be >= 1, got {n_workers}")
    threads = max(1, cpu_count // n_workers)
    return [WorkerAssignment(i, base_seed + i, device, threads) for i in range(n_workers)]


def available_cpu_count() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_workers(
    target: Callable[[SettingsT], None],
    settings: Sequence[SettingsT],
    assignments: Sequence[WorkerAssignment],
    *,
    poll_seconds: float = 0.2,
    terminate_timeout: float = 30.0,
) -> int:
    """Run the picklable ``target(settings[i])`` in one spawned process per assignment.

    A worker that fails does not stop its siblings. On Ctrl-C or SIGTERM every worker gets
    SIGTERM (its trial is recorded FAIL: ``hpo.runtime.interrupts``), and SIGKILL after
    ``terminate_timeout`` seconds. Returns 0, 128 + the signal's number when stopped by one
    (``EXIT_INTERRUPTED`` on Ctrl-C), else the first non-zero exit status in worker order (a
    worker killed by signal N reports 128 + N).
    """
    if len(settings) != len(assignments):
        raise WorkerError(f"{len(settings)} settings for {len(assignments)} workers")
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_main, args=(target, item, a), name=f"hpo-worker-{a.index}")
        for item, a in zip(settings, assignments, strict=True)
    ]
    try:
        with StopSignals().installed():
            for process in processes:
                process.start()
            _logger.info("started %d workers: pids %s", len(processes), [p.pid for p in processes])
            while any(p.is_alive() for p in processes):
                time.sleep(poll_seconds)
    except KeyboardInterrupt as e:
        _logger.warning("%s: stopping %d workers", _reason(e), len(processes))
        # Later signals are ignored while stopping: SIGKILL after the timeout is the backstop
        # for a worker that does not stop.
        with signals_ignored():
            _terminate(processes, terminate_timeout)
        return e.exit_status if isinstance(e, Stopped) else EXIT_INTERRUPTED
    for process in processes:
        process.join()
    status = 0
    for assignment, process in zip(assignments, processes, strict=True):
        code = _exit_status(process.exitcode)
        if code != 0:
            _logger.error(
                "worker %d (pid %s) exited with status %d", assignment.index, process.pid, code
            )
            status = status or code
    return status


# --- inside the child process ----------------------------------------------------------------


def _worker_main(
    target: Callable[[SettingsT], None], settings: SettingsT, assignment: WorkerAssignment
) -> None:
    # Ctrl-C in a terminal reaches every worker and the parent then sends SIGTERM too: the
    # first signal stops the worker (hpo.runtime.interrupts), later ones are ignored.
    _limit_threads(assignment.num_threads)
    stop_with_parent()
    logging.basicConfig(
        level=logging.INFO,
        format=f"[worker {assignment.index}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    a = assignment
    _logger.info(
        "worker %d: pid %d, seed %d, device %s, %d CPU threads",
        *(a.index, os.getpid(), a.seed, a.device, a.num_threads),
    )
    try:
        with StopSignals().installed():
            target(settings)
    except Stopped as e:
        raise SystemExit(e.exit_status) from None
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None


def _limit_threads(num_threads: int) -> None:
    """Give torch ``num_threads`` intra-op threads without importing it here."""
    for name in _THREAD_ENV:  # read by torch's thread pool when it is first imported
        os.environ[name] = str(num_threads)
    torch = sys.modules.get("torch")  # already imported by the target's module: set it now
    if torch is not None:
        torch.set_num_threads(num_threads)


def _reason(error: KeyboardInterrupt) -> str:
    return error.reason if isinstance(error, Stopped) else "interrupted"


def _terminate(processes: Sequence[multiprocessing.process.BaseProcess], timeout: float) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def _exit_status(exitcode: int | None) -> int:
    if exitcode is None:
        return 1
    return 128 - exitcode if exitcode < 0 else exitcode
