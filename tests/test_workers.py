"""hpo.runtime.processes: splitting a machine between workers, running and stopping them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from hpo.errors import EXIT_INTERRUPTED
from hpo.runtime.gpu_slots import claim_gpu
from hpo.runtime.processes import (
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
    plan = plan_workers(4, base_seed=10, device="cpu", cpu_count=8)
    assert [a.seed for a in plan] == [10, 11, 12, 13]
    assert [a.index for a in plan] == [0, 1, 2, 3]


def test_cpu_cores_are_divided_between_workers() -> None:
    assert {a.num_threads for a in plan_workers(4, 0, "cpu", cpu_count=16)} == {4}
    assert {a.num_threads for a in plan_workers(3, 0, "cpu", cpu_count=16)} == {5}
    assert {a.num_threads for a in plan_workers(8, 0, "cpu", cpu_count=2)} == {1}


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "cpu"])
def test_the_device_is_passed_on_as_given(device: str) -> None:
    """``cuda`` is resolved by each worker when it starts (below), not by the plan."""
    assert {a.device for a in plan_workers(3, 0, device, 8)} == {device}


_CLAIM = (
    "import sys\n"
    "from pathlib import Path\n"
    "from hpo.runtime.gpu_slots import claim_gpu\n"
    "slot = claim_gpu(int(sys.argv[1]), Path(sys.argv[2]))\n"
    "print(slot.index, flush=True)\n"
    "sys.stdin.read()  # hold the slot until the test closes stdin\n"
)


def _claim_in_processes(n: int, gpus: int, folder: Path) -> list[int]:
    """Start ``n`` separate processes (as compose starts containers) that each claim a GPU
    slot in ``folder`` and hold it; returns the GPU each got."""
    argv = [sys.executable, "-c", _CLAIM, str(gpus), str(folder)]
    processes = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    try:
        return sorted(int(p.stdout.readline()) for p in processes)  # type: ignore[union-attr]
    finally:
        for p in processes:
            p.communicate()


@pytest.mark.parametrize(("workers", "gpus"), [(4, 4), (6, 3), (3, 4)])
def test_separately_started_workers_spread_over_the_gpus(
    tmp_path: Path, workers: int, gpus: int
) -> None:
    got = _claim_in_processes(workers, gpus, tmp_path)
    assert got == sorted(i % gpus for i in range(workers))


def test_a_slot_is_free_again_once_its_worker_is_gone(tmp_path: Path) -> None:
    first = claim_gpu(2, tmp_path)
    second = claim_gpu(2, tmp_path)
    assert (first.index, second.index) == (0, 1)
    first.release()  # as when the worker exits
    again = claim_gpu(2, tmp_path)
    assert (again.index, again.rank) == (0, 0)
    third = claim_gpu(2, tmp_path)
    assert (third.index, third.rank) == (0, 1)  # the least used, lowest index on a tie
    for slot in (second, again, third):
        slot.release()


def test_zero_workers_is_a_clear_error() -> None:
    with pytest.raises(WorkerError, match="--workers must be >= 1"):
        plan_workers(0, 0, "cpu", 4)


# --- run_workers ----------------------------------------------------------------------------


def test_workers_run_in_separate_processes_with_their_thread_share(tmp_path: Path) -> None:
    plan = plan_workers(2, 0, "cpu", cpu_count=2)
    files = [str(tmp_path / f"w{i}") for i in range(2)]
    assert run_workers(_record, files, plan) == 0
    seen = [Path(f).read_text().split() for f in files]
    pids = {pid for pid, _ in seen}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    assert [threads for _, threads in seen] == ["1", "1"]


def test_a_failing_worker_fails_the_run_after_the_others_finish() -> None:
    plan = plan_workers(3, 0, "cpu", 3)
    assert run_workers(_exit_with, [0, 3, 0], plan) == 3
    assert run_workers(_exit_with, [0, 0, 0], plan) == 0


def test_a_killed_worker_reports_its_signal() -> None:
    plan = plan_workers(1, 0, "cpu", 1)
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
    # A shell starts background jobs with SIGINT ignored and Python keeps that: restore the
    # handler an interactive terminal gives, or the signal is lost when CI runs in background.
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from hpo.runtime.processes import plan_workers, run_workers\n"
        "plan = plan_workers(2, 0, 'cpu', 2)\n"
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


# --- integration: the real study runner, several workers, one storage ------------------------

STUDY = "tiny_mnist"
GRID_SIZE = 4  # the launcher's grid: 2 depths x 2 activations (the real one has 12 points)
CAUGHT_RUNNING = ["--epochs", "10"]  # trials long enough for a test to catch one running
TINY = [
    "--epochs",
    "1",
    "--train-size",
    "64",
    "--pruner",
    "none",
    "--no-progress",
    "--device",
    "cpu",
]
HEARTBEAT, GRACE = 1, 3

# `python -m hpo.run` given a registry with one extra study: sparse_mnist (with a 4-point
# grid) sized for the synthetic data. The spawned workers receive the resolved definition in
# their settings, so nothing but the parent needs to know the study.
LAUNCHER = """
import dataclasses
import sys

from data import MNISTOptions
from studies import Grid, StudyRegistry, default_registry, get_study

if __name__ == "__main__":
    import signal

    # As in test_ctrl_c_stops_all_workers_and_exits_130: Ctrl-C as an interactive terminal has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from hpo.tuning.cli import main

    tiny = dataclasses.replace(
        get_study("sparse_mnist"),
        name="tiny_mnist",
        description="sparse_mnist on the synthetic test data",
        dataset_options=MNISTOptions(val_size=100),
        eval_batch_size=100,
        tpe_random_trials=1,
        grid=Grid.of(depth=(3, 6), activation=("relu", "elu"), batch_size=(64,), lr=(1e-2,)),
    )
    sys.exit(main(sys.argv[1:], registry=StudyRegistry([*default_registry(), tiny])))
"""


def _runner_env(tmp_path: Path, synthetic_data_root: Path) -> dict[str, str]:
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    env = dict(os.environ)
    env.update(
        HPO_DATA_DIR=str(synthetic_data_root),
        HPO_CACHE_DIR=str(tmp_path / "cache"),
        HPO_ARTIFACT_DIR=str(tmp_path / "artifacts"),
        HPO_HEARTBEAT_INTERVAL=str(HEARTBEAT),
        HPO_HEARTBEAT_GRACE=str(GRACE),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    env.pop("HPO_STORAGE", None)
    return env


def _hpo_run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(cwd / "launcher.py"), "--study", STUDY, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(processes: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "database is locked" not in output, output[-3000:]
    return outputs


def _load(url: str, study_name: str):
    import optuna

    from hpo.runtime.storage import open_storage

    return optuna.load_study(study_name=study_name, storage=open_storage(url))


def _trial(study, number: int):
    return next(t for t in study.get_trials() if t.number == number)


def _assert_budget_and_grid_once(
    study, n_trials: int, workers: int, grid_first: bool = True
) -> list:
    """N to N + K - 1 finished (Optuna's MaxTrialsCallback with K workers), none RUNNING, every
    grid point run or queued exactly once, and (``grid_first``) the grid run before the rest."""
    from optuna.trial import TrialState

    from hpo import records as keys

    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    states = [(t.number, t.state) for t in trials]
    assert n_trials <= len(finished) <= n_trials + workers - 1, states
    assert not [t for t in trials if t.state == TrialState.RUNNING], "trial stuck in RUNNING"
    ran = [t.user_attrs[keys.GRID_ID] for t in finished if keys.GRID_ID in t.user_attrs]
    queued = [
        t.user_attrs[keys.GRID_ID]
        for t in trials
        if t.state == TrialState.WAITING and keys.GRID_ID in t.user_attrs
    ]
    if grid_first:
        assert len(ran) == min(len(finished), GRID_SIZE), "the grid runs before TPE"
    assert sorted(ran + queued) == list(range(GRID_SIZE)), "a grid point was lost or run twice"
    return trials


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_four_workers_on_one_sqlite_file(tmp_path: Path, synthetic_data_root: Path) -> None:
    from optuna.trial import TrialState

    from hpo import records as keys

    url = f"sqlite:///{tmp_path / 'study.db'}"
    n_trials = GRID_SIZE + 2
    env = _runner_env(tmp_path, synthetic_data_root)
    args = ["--n-trials", str(n_trials), "--storage", url, "--workers", "4", *TINY]
    (output,) = _finish([_hpo_run(args, env, tmp_path)])
    # Each worker logs its own seed: a fresh one for the run (no --seed given), plus k.
    seeds = {int(k): int(s) for k, s in re.findall(r"worker (\d): pid \d+, seed (\d+),", output)}
    assert sorted(seeds) == [0, 1, 2, 3], output[-3000:]
    assert [seeds[k] - seeds[0] for k in range(4)] == [0, 1, 2, 3]
    trials = _assert_budget_and_grid_once(_load(url, STUDY), n_trials, workers=4)
    assert not [t for t in trials if t.state == TrialState.FAIL]
    ran_on = {t.user_attrs.get(keys.WORKER) for t in trials if t.state.is_finished()}
    assert len(ran_on) >= 2, "trials should be shared between the worker processes"


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_three_workers_on_postgresql(tmp_path: Path, synthetic_data_root: Path) -> None:
    """Three independent runner processes, as on three machines, against one database."""
    import optuna

    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("HPO_TEST_POSTGRES_URL is unset; start a server with .ci/postgres.sh (CI does)")
    name = f"test-{uuid.uuid4().hex[:10]}"
    n_trials = GRID_SIZE + 1
    env = _runner_env(tmp_path, synthetic_data_root)
    args = ["--n-trials", str(n_trials), "--storage", url, "--study-name", name, *TINY]
    runs = [_hpo_run([*args, "--seed", str(seed)], env, tmp_path) for seed in (0, 100, 200)]
    _finish(runs)
    study = _load(url, name)
    try:
        _assert_budget_and_grid_once(study, n_trials, workers=3)
    finally:
        from hpo.runtime.storage import open_storage

        optuna.delete_study(study_name=name, storage=open_storage(url))


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_sigkilled_worker_trial_is_failed_retried_and_the_budget_still_met(
    tmp_path: Path, synthetic_data_root: Path
) -> None:
    """Two runner processes; one is SIGKILLed in the middle of its first trial."""
    import optuna
    from optuna.trial import TrialState

    from hpo import records as keys

    url = f"sqlite:///{tmp_path / 'study.db'}"
    n_trials = 4
    env = _runner_env(tmp_path, synthetic_data_root)
    args = ["--n-trials", str(n_trials), "--storage", url, *TINY, *CAUGHT_RUNNING]
    victim = _hpo_run(args, env, tmp_path)
    survivor = _hpo_run([*args, "--seed", "1"], env, tmp_path)

    # Kill the victim as soon as it runs a trial (its heartbeat thread is already beating).
    victim_trial = None
    deadline = time.monotonic() + 240
    while victim_trial is None:
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the victim never started a trial"
        try:
            trials = _load(url, STUDY).get_trials()
        except KeyError:  # the study does not exist yet
            trials = []
        mine = [t for t in trials if str(t.user_attrs.get(keys.WORKER)).endswith(f":{victim.pid}")]
        if any(t.state == TrialState.RUNNING for t in mine):
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            victim_trial = next(t for t in mine if t.state == TrialState.RUNNING)
        time.sleep(0.05)
    study = _load(url, STUDY)
    (output,) = _finish([survivor])
    # A dead worker's grid point is re-queued once its heartbeat is stale: the survivor may
    # sample a point before that, and the grid point then waits in the queue (not lost).
    trials = _assert_budget_and_grid_once(_load(url, STUDY), n_trials, 1, grid_first=False)
    killed = _trial(study, victim_trial.number)
    assert killed.state == TrialState.FAIL, "the killed worker's trial was never failed"
    assert killed.user_attrs[keys.WORKER].endswith(f":{victim.pid}")  # never finished by anyone
    assert "database is locked" not in output

    retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    retries = [t for t in trials if retried(t) == victim_trial.number]
    assert len(retries) == 1, "the killed trial must be re-queued exactly once"
    (retry,) = retries
    # Run, or still queued if the budget was used up by grid points queued before it.
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)
    assert retry.params == victim_trial.params
    assert retry.user_attrs[keys.GRID_ID] == victim_trial.user_attrs[keys.GRID_ID]


def _wait_for_a_running_trial(
    run: subprocess.Popen, url: str, each: Callable[[], object] = lambda: None
) -> None:
    """Until a trial of ``run`` is training (its worker recorded), calling ``each`` meanwhile."""
    from optuna.trial import TrialState

    from hpo import records as keys

    deadline = time.monotonic() + 240
    while True:
        assert run.poll() is None, run.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no trial started"
        each()
        try:
            trials = _load(url, STUDY).get_trials()
        except KeyError:
            trials = []
        if any(t.state == TrialState.RUNNING and keys.WORKER in t.user_attrs for t in trials):
            return
        time.sleep(0.1)


STOPS = {
    # Ctrl-C in a terminal: SIGINT to the whole process group.
    "ctrl-c": (lambda pid: os.killpg(pid, signal.SIGINT), EXIT_INTERRUPTED, "interrupted"),
    # docker stop, scancel, Kubernetes: SIGTERM to the command.
    "sigterm": (lambda pid: os.kill(pid, signal.SIGTERM), 128 + signal.SIGTERM, "terminated"),
    # The command killed outright: its workers notice their parent is gone.
    "parent killed": (lambda pid: os.kill(pid, signal.SIGKILL), -signal.SIGKILL, "terminated"),
}


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("stop", list(STOPS))
def test_a_stopped_workers_run_stops_everything_and_records_the_trials(
    tmp_path: Path, synthetic_data_root: Path, stop: str
) -> None:
    """`--workers 2` stopped while a trial runs: no worker outlives it, no trial is left
    RUNNING, the stopped trials say why, and nothing prints a traceback."""
    from optuna.trial import TrialState

    from hpo import records as keys

    send, status, reason = STOPS[stop]
    url = f"sqlite:///{tmp_path / 'study.db'}"
    env = _runner_env(tmp_path, synthetic_data_root)
    args = ["--n-trials", "20", "--storage", url, "--workers", "2", *TINY, "--epochs", "10"]
    run = subprocess.Popen(
        [sys.executable, str(tmp_path / "launcher.py"), "--study", STUDY, *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a shell job
    )
    workers: set[int] = set()
    _wait_for_a_running_trial(
        run, url, lambda: workers.update(p for p in _children(run.pid) if _is_spawn(p))
    )
    send(run.pid)
    output = run.communicate(timeout=120)[0]
    assert run.returncode == status, output[-3000:]
    deadline = time.monotonic() + 60  # workers of a killed parent notice within seconds
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) == 2 and not any(_alive(p) for p in workers), "a worker outlived it"
    assert "Traceback" not in output and "OSError" not in output, output[-3000:]
    trials = _load(url, STUDY).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING], "trial left RUNNING"
    stopped = [t for t in trials if t.user_attrs.get(keys.FAIL_REASON) == reason]
    assert stopped, [(t.number, t.state, t.user_attrs.get(keys.FAIL_REASON)) for t in trials]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigterm_to_a_single_worker_records_the_trial_and_the_same_command_resumes(
    tmp_path: Path, synthetic_data_root: Path
) -> None:
    from optuna.trial import TrialState

    from hpo import records as keys

    url = f"sqlite:///{tmp_path / 'study.db'}"
    env = _runner_env(tmp_path, synthetic_data_root)
    args = ["--n-trials", str(GRID_SIZE), "--storage", url, *TINY, *CAUGHT_RUNNING]
    run = _hpo_run(args, env, tmp_path)
    _wait_for_a_running_trial(run, url)
    run.send_signal(signal.SIGTERM)
    output = run.communicate(timeout=120)[0]
    assert run.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "Traceback" not in output and "\nterminated: " in output
    trials = _load(url, STUDY).get_trials()
    assert TrialState.RUNNING not in {t.state for t in trials}
    (stopped,) = [t for t in trials if t.user_attrs.get(keys.FAIL_REASON) == "terminated"]
    assert stopped.state == TrialState.FAIL
    (output,) = _finish([_hpo_run(args, env, tmp_path)])  # the same command resumes
    _assert_budget_and_grid_once(_load(url, STUDY), GRID_SIZE, 1)
