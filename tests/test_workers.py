"""hpo.workers: splitting a machine between workers, running and stopping worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo.workers import (
    EXIT_INTERRUPTED,
    WorkerAssignment,
    WorkerError,
    plan_workers,
    run_workers,
)

ROOT = Path(__file__).resolve().parent.parent


def _exit_with(code: int) -> None:
    """Worker target: exit with ``code`` (runs in a spawned child)."""
    raise SystemExit(code)


def _kill_self(signum: int) -> None:
    os.kill(os.getpid(), signum)


def _record(path: str) -> None:
    """Worker target: write what the worker sees, for the parent to check."""
    import torch

    Path(path).write_text(f"{os.getpid()} {torch.get_num_threads()}")


# --- plan_workers ---------------------------------------------------------------------------


def test_each_worker_gets_its_own_seed() -> None:
    plan = plan_workers(4, base_seed=10, device="cpu", cuda_device_count=0, cpu_count=8)
    assert [a.seed for a in plan] == [10, 11, 12, 13]
    assert [a.index for a in plan] == [0, 1, 2, 3]


def test_cpu_cores_are_divided_between_workers() -> None:
    assert {a.num_threads for a in plan_workers(4, 0, "cpu", 0, cpu_count=16)} == {4}
    assert {a.num_threads for a in plan_workers(3, 0, "cpu", 0, cpu_count=16)} == {5}
    assert {a.num_threads for a in plan_workers(8, 0, "cpu", 0, cpu_count=2)} == {1}


def test_gpus_are_assigned_round_robin() -> None:
    plan = plan_workers(5, 0, "cuda", cuda_device_count=2, cpu_count=16)
    assert [a.device for a in plan] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]


@pytest.mark.parametrize(("device", "count"), [("cuda", 1), ("cuda:1", 4), ("cpu", 4)])
def test_single_gpu_or_explicit_device_is_shared(device: str, count: int) -> None:
    assert {a.device for a in plan_workers(3, 0, device, count, 8)} == {device}


def test_zero_workers_is_a_clear_error() -> None:
    with pytest.raises(WorkerError, match="--workers must be >= 1"):
        plan_workers(0, 0, "cpu", 0, 4)


# --- run_workers ----------------------------------------------------------------------------


def test_workers_run_in_separate_processes_with_their_thread_share(tmp_path: Path) -> None:
    plan = plan_workers(2, 0, "cpu", 0, cpu_count=2)
    files = [str(tmp_path / f"w{i}") for i in range(2)]
    assert run_workers(_record, files, plan) == 0
    seen = [Path(f).read_text().split() for f in files]
    pids = {pid for pid, _ in seen}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    assert [threads for _, threads in seen] == ["1", "1"]


def test_a_failing_worker_fails_the_run_after_the_others_finish() -> None:
    plan = plan_workers(3, 0, "cpu", 0, 3)
    assert run_workers(_exit_with, [0, 3, 0], plan) == 3
    assert run_workers(_exit_with, [0, 0, 0], plan) == 0


def test_a_killed_worker_reports_its_signal() -> None:
    plan = plan_workers(1, 0, "cpu", 0, 1)
    assert run_workers(_kill_self, [signal.SIGKILL], plan) == 128 + signal.SIGKILL


def test_settings_and_assignments_must_match() -> None:
    with pytest.raises(WorkerError):
        run_workers(_exit_with, [0, 0], [WorkerAssignment(0, 0, "cpu", 1)])


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # fields: state, ppid, ...
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process table from /proc")
def test_ctrl_c_stops_all_workers_and_exits_130() -> None:
    code = (
        "import sys, time\n"
        "from hpo.workers import plan_workers, run_workers\n"
        "plan = plan_workers(2, 0, 'cpu', 0, 2)\n"
        "sys.exit(run_workers(time.sleep, [600, 600], plan, terminate_timeout=10))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while len(workers) < 2:  # the resource tracker is a child too; _is_spawn skips it
        assert parent.poll() is None and time.monotonic() < deadline
        workers = {p for p in _children(parent.pid) if _is_spawn(p)}
        time.sleep(0.1)
    time.sleep(1.0)  # let them import and reach the sleep
    parent.send_signal(signal.SIGINT)  # only the parent: it must stop the workers itself
    assert parent.wait(timeout=30) == EXIT_INTERRUPTED
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers):
        assert time.monotonic() < deadline, "workers outlived the interrupted parent"
        time.sleep(0.1)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _is_spawn(pid: int) -> bool:
    cmdline = _cmdline(pid)
    return "multiprocessing.spawn" in cmdline and "resource_tracker" not in cmdline
