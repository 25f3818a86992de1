"""``deploy/slurm`` on a real Slurm cluster: the project's own submit script (the study created
once, an array of workers, the final step after them) against PostgreSQL, and an array task
cancelled with ``scancel`` in the middle of a trial.

The cluster is ``.ci/slurm.sh``'s one node, which CI starts (``eval "$(bash .ci/slurm.sh
start)"`` exports ``SLURM_CONF``); tests marked ``slurm`` skip without it. The jobs run the CPU
form of the worker script with the test's environment (data, Python, ``PYTHONPATH``), and read
the storage URL from an env file, as the README tells users to. The static checks at the end
need no cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from synthetic import write_mnist

ROOT = Path(__file__).resolve().parent.parent
SLURM = ROOT / "deploy" / "slurm"
TASKS = 3
# The registered study on the synthetic MNIST (sparse_mnist keeps 5,000 training images for
# validation), trials of a second or two, on the CPU.
STUDY = "sparse_mnist"
GRID_SIZE = 12
TINY = "--epochs 1 --train-size 64 --val-size 100 --device cpu"


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slurm-data")
    write_mnist(root, n_train=5300, n_test=200)
    return root


@pytest.fixture
def cluster() -> None:
    if not (shutil.which("sbatch") and os.environ.get("SLURM_CONF")):
        pytest.skip('no Slurm cluster: eval "$(bash .ci/slurm.sh start)" starts one (CI does)')


def _job_env(tmp_path: Path, mnist_root: Path, url: str, n_trials: int, args: str) -> dict:
    """The submitting shell's environment; the storage URL only in the env file (mode 600)."""
    env_file = tmp_path / "slurm.env"
    env_file.write_text(f"HPO_STORAGE='{url}'\n")
    env_file.chmod(0o600)
    env = dict(os.environ)
    env.pop("HPO_STORAGE", None)
    env.update(
        STUDY=STUDY,
        N_TRIALS=str(n_trials),
        TASKS=str(TASKS),
        HPO_RUN_ARGS=args,
        HPO_ENV_FILE=str(env_file),
        HPO_PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        HPO_DATA_DIR=str(mnist_root),
        HPO_CACHE_DIR=str(tmp_path / "cache"),
        HPO_ARTIFACT_DIR=str(tmp_path / "artifacts"),
    )
    return env


def _submit(env: dict, cwd: Path) -> dict[str, str]:
    """``submit.sh --cpu``: the ids of the create job, the worker array and the final job."""
    done = subprocess.run(
        ["bash", str(SLURM / "submit.sh"), "--cpu"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ids = dict(line.split() for line in done.stdout.splitlines())
    assert set(ids) == {"create", "workers", "final"}, done.stdout
    return ids


def _wait_until_gone(ids: dict[str, str]) -> None:
    """Poll until Slurm knows none of the jobs as queued or running; a hang is ended by the
    test's own ``timeout`` mark, not by a duration asserted here."""
    while True:
        queued = subprocess.run(
            ["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids.values())],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if not queued:
            return
        time.sleep(1)


def _jobs(job_id: str) -> list[dict[str, str]]:
    """``scontrol show job``'s records (one per array task): a finished job stays known for
    MinJobAge (no accounting database here)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
    ).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line]


def _states(job_id: str) -> dict[str, str]:
    """``task id`` (or ``job``) -> ``JobState ExitCode``."""
    return {
        job.get("ArrayTaskId", "job"): f"{job['JobState']} {job['ExitCode']}"
        for job in _jobs(job_id)
    }


def _logs(cwd: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(cwd.glob("slurm-hpo-*.out"))}


def _tails(logs: dict[str, str]) -> str:
    return "\n".join(f"== {name}\n{text[-1500:]}" for name, text in logs.items())


@pytest.fixture
def storage(postgres_url: str) -> Iterator:
    """The test's own reader of the jobs' storage (one pool for all its polls)."""
    from hpo.runtime.storage import open_storage

    opened = open_storage(postgres_url)
    yield opened
    opened.engine.dispose()


def _trials(storage) -> tuple:
    """The study and its trials; ``(None, [])`` before the create job made it."""
    import optuna

    try:
        study = optuna.load_study(study_name=STUDY, storage=storage)
    except KeyError:
        return None, []
    return study, study.get_trials(deepcopy=False)


def _cancel_all(ids: dict[str, str]) -> None:
    subprocess.run(["scancel", *ids.values()], capture_output=True)


def _assert_budget_and_final_step(study, trials: list, n_trials: int, logs: dict) -> list:
    """N to N + TASKS - 1 finished, none RUNNING, the final step's figures stored once for
    the last count: scored by one worker, and the final job found them."""
    from optuna.trial import TrialState

    from hpo import records

    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert n_trials <= len(finished) <= n_trials + TASKS - 1, [(t.number, t.state) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING], "a trial left RUNNING"
    best = study.best_trial.number
    assert study.user_attrs[records.FINAL_STEP] == {"finished": len(finished), "best": best}
    assert study.user_attrs[records.BEST_TRIAL] == best
    assert set(study.user_attrs[records.TEST_METRICS]) == {"0.5", "0.7", "0.8", "0.9"}
    scored = [name for name, text in logs.items() if "final step: scoring" in text]
    assert len(scored) == 1 and scored[0].startswith("slurm-hpo-worker-"), scored
    return finished


@pytest.mark.slurm
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_submit_script_runs_a_study_once_created_then_its_workers_then_the_final_step(
    cluster: None, postgres_url: str, storage, mnist_root: Path, tmp_path: Path
) -> None:
    from optuna.trial import TrialState

    n_trials = 4
    env = _job_env(tmp_path, mnist_root, postgres_url, n_trials, f"{TINY} --pruner none")
    ids = _submit(env, tmp_path)
    try:
        _wait_until_gone(ids)
    finally:
        _cancel_all(ids)
    logs = _logs(tmp_path)
    everything = _tails(logs)
    assert _states(ids["create"]) == {"job": "COMPLETED 0:0"}, everything
    assert _states(ids["workers"]) == {str(i): "COMPLETED 0:0" for i in range(TASKS)}, everything
    assert _states(ids["final"]) == {"job": "COMPLETED 0:0"}, everything
    # The create job made the study and its queue before any worker ran.
    created = logs[f"slurm-hpo-create-{ids['create']}.out"]
    assert f"ready, 0/{n_trials} finished, {GRID_SIZE} queued" in created
    study, trials = _trials(storage)
    _assert_budget_and_final_step(study, trials, n_trials, logs)
    assert not [t for t in trials if t.state == TrialState.FAIL], everything
    # The password never reached a job's log (only the env file holds it).
    password = re.search(r"://[^:]+:([^@]+)@", postgres_url).group(1)
    assert not [name for name, text in logs.items() if password in text]


@pytest.mark.slurm
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_task_cancelled_with_scancel_fails_its_trial_which_another_task_runs_again(
    cluster: None, postgres_url: str, storage, mnist_root: Path, tmp_path: Path
) -> None:
    """The budget is the grid, so the cancelled grid point must run again before it is met."""
    from optuna.trial import TrialState

    from hpo import records

    # Trials of a second or more (the synthetic set has 300 training images).
    args = "--epochs 1 --train-size 256 --val-size 100 --device cpu --pruner none"
    env = _job_env(tmp_path, mnist_root, postgres_url, GRID_SIZE, args)
    ids = _submit(env, tmp_path)
    try:
        task, pid = _cancel_a_task_in_a_trial(ids["workers"], storage, tmp_path)
        _wait_until_gone(ids)
    finally:
        _cancel_all(ids)
    logs = _logs(tmp_path)
    everything = _tails(logs)
    states = _states(ids["workers"])
    assert states.pop(task).startswith("CANCELLED"), everything
    assert states == {str(i): "COMPLETED 0:0" for i in range(TASKS) if str(i) != task}, everything
    assert _states(ids["final"]) == {"job": "COMPLETED 0:0"}, everything

    study, trials = _trials(storage)
    finished = _assert_budget_and_final_step(study, trials, GRID_SIZE, logs)
    # The cancelled task's trial: FAIL, with the reason SIGTERM gives (not killed, not stale).
    (stopped,) = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped.user_attrs[records.FAIL_REASON] == records.TERMINATED
    assert stopped.user_attrs[records.WORKER].endswith(f":{pid}")
    # ... queued again and run by another task, with the same parameters; every grid point ran.
    point = stopped.user_attrs[records.GRID_ID]
    (again,) = [t for t in finished if t.user_attrs.get(records.GRID_ID) == point]
    assert again.number > stopped.number and again.params == stopped.params
    assert not again.user_attrs[records.WORKER].endswith(f":{pid}")
    grid = [t.user_attrs.get(records.GRID_ID) for t in finished]
    assert sorted(g for g in grid if g is not None) == list(range(GRID_SIZE))


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_a_create_job_that_fails_takes_the_workers_and_the_final_job_with_it(
    cluster: None, mnist_root: Path, tmp_path: Path
) -> None:
    """Bad input fails the create job (exit 2, one line); no worker and no final step start."""
    env = _job_env(tmp_path, mnist_root, "postgresql+psycopg://hpo@127.0.0.1:1/hpo", 4, TINY)
    env["STUDY"] = "no_such_study"
    ids = _submit(env, tmp_path)
    try:
        _wait_until_gone(ids)
    finally:
        _cancel_all(ids)
    logs = _logs(tmp_path)
    assert _states(ids["create"]) == {"job": "FAILED 2:0"}, _tails(logs)
    assert logs[f"slurm-hpo-create-{ids['create']}.out"].startswith("error: unknown study")
    for job in ("workers", "final"):
        assert {s.split()[0] for s in _states(ids[job]).values()} == {"CANCELLED"}
        assert {j["Reason"] for j in _jobs(ids[job])} == {"DependencyNeverSatisfied"}
    assert list(logs) == [f"slurm-hpo-create-{ids['create']}.out"]


def _cancel_a_task_in_a_trial(array: str, storage, logs: Path) -> tuple[str, int]:
    """Wait until a worker task has been in a trial for a moment, then ``scancel`` that task;
    returns (task, pid). Should the trial end first, the signal is held and its next trial
    records it (``hpo.runtime.interrupts``)."""
    import datetime

    from optuna.trial import TrialState

    from hpo import records

    while True:  # ended, if no trial ever runs, by the test's timeout mark
        waiting = [j for j in _jobs(array) if j["JobState"] in ("PENDING", "RUNNING")]
        assert waiting, "every task ended before one was cancelled:\n" + _tails(_logs(logs))
        # Each task logs its worker as host:pid; the job script execs Python, so that is the task.
        pids = {}
        for path in logs.glob(f"slurm-hpo-worker-{array}_*.out"):
            found = re.search(r"worker [^ :]+:(\d+)", path.read_text())
            if found:
                pids[int(found.group(1))] = path.stem.rsplit("_", 1)[1]
        _, trials = _trials(storage)
        for trial in trials:
            worker = str(trial.user_attrs.get(records.WORKER, ""))
            pid = int(worker.rsplit(":", 1)[1]) if ":" in worker else None
            started = trial.datetime_start or datetime.datetime.now()
            training = (datetime.datetime.now() - started).total_seconds() > 0.2
            if trial.state == TrialState.RUNNING and pid in pids and training:
                subprocess.run(["scancel", f"{array}_{pids[pid]}"], check=True)
                return pids[pid], pid
        time.sleep(0.1)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_postgres_job_serves_a_study_storage_and_stops_cleanly_on_scancel(
    cluster: None, job_folder: Path
) -> None:
    """deploy/slurm/postgres.sbatch: a new database, its URL in the env file (mode 600),
    reachable by hpo.run, and a clean shutdown when cancelled."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")) and not shutil.which(
        "pg_config"
    ):
        pytest.skip("no PostgreSQL server programs (.ci/postgres.sh installs them)")
    as_user = []
    if os.geteuid() == 0:  # initdb refuses root: run the job as the server's usual user
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no user postgres to run the server as")
        as_user = [f"--uid={user.pw_uid}", f"--gid={user.pw_gid}"]
        os.chown(job_folder, user.pw_uid, user.pw_gid)
    pgdata, env_file = job_folder / "pgdata", job_folder / "conf" / "slurm.env"
    env = {
        **os.environ,
        "HPO_PGDATA": str(pgdata),
        "HPO_ENV_FILE": str(env_file),
        "HPO_PGHOST": "127.0.0.1",
        "HPO_PGPORT": str(_free_port()),
    }
    job = subprocess.run(
        ["sbatch", "--parsable", *as_user, f"--chdir={job_folder}", str(SLURM / "postgres.sbatch")],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    log = job_folder / f"slurm-hpo-postgres-{job}.out"
    try:
        while not (log.exists() and "\nready: " in log.read_text()):  # or the timeout mark
            assert _jobs(job)[0]["JobState"] in ("PENDING", "RUNNING"), _read(log)
            time.sleep(0.5)
        assert env_file.stat().st_mode & 0o077 == 0
        (url,) = re.findall(r"^HPO_STORAGE='(.+)'$", env_file.read_text(), flags=re.M)
        created = subprocess.run(
            [sys.executable, "-m", "hpo.run", "--study", STUDY, "--n-trials", "1",
             "--storage", url, "--create-only"],
            cwd=job_folder, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert f"ready, 0/1 finished, {GRID_SIZE} queued" in created.stdout
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    _wait_until_gone({"postgres": job})
    assert _jobs(job)[0]["JobState"] == "CANCELLED"
    assert not (pgdata / "postmaster.pid").exists(), "not shut down cleanly: " + _read(log)


@pytest.fixture
def job_folder() -> Iterator[Path]:
    """A folder under /tmp that a job run as another user can reach (pytest's are root's)."""
    folder = Path(tempfile.mkdtemp(prefix="hpo-test-slurm-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(path: Path) -> str:
    return path.read_text()[-3000:] if path.exists() else f"{path.name}: not written"


# --- static checks: no cluster needed ------------------------------------------------------


def _body(path: Path) -> str:
    """A job script from its first command on (after the comments and #SBATCH lines)."""
    text = path.read_text()
    return text[text.index("\nset -euo pipefail") :]


def test_the_gpu_and_cpu_worker_scripts_differ_only_in_their_directives() -> None:
    gpu, cpu = SLURM / "worker.sbatch", SLURM / "worker-cpu.sbatch"
    assert _body(gpu) == _body(cpu)
    assert "#SBATCH --gres=gpu:1" in gpu.read_text()
    assert "--gres" not in cpu.read_text()
    for script in (gpu, cpu):
        directives = re.findall(r"^#SBATCH (\S+)", script.read_text(), flags=re.M)
        assert "--signal=B:TERM@120" in directives  # the time limit ends a trial cleanly
        assert not [d for d in directives if d.startswith("--array")]  # submit.sh sizes it
    # The create job reads the storage exactly as the workers do.
    storage = _body(gpu)[: _body(gpu).index("esac") + 4]
    assert storage in _body(SLURM / "create.sbatch")


@pytest.mark.parametrize("mode", [0o644, None])
def test_submit_refuses_an_env_file_others_can_read_or_none(
    tmp_path: Path, mode: int | None
) -> None:
    env_file = tmp_path / "slurm.env"
    if mode is not None:
        env_file.write_text("HPO_STORAGE='postgresql+psycopg://hpo:secret@db/hpo'\n")
        env_file.chmod(mode)
    env = {**os.environ, "STUDY": STUDY, "N_TRIALS": "4", "HPO_ENV_FILE": str(env_file)}
    env["SLURM_CONF"] = str(tmp_path / "no-cluster.conf")  # should it get that far, sbatch fails
    done = subprocess.run(
        ["/bin/bash", str(SLURM / "submit.sh")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {env_file}") and "chmod 600" in done.stderr
    assert "secret" not in done.stderr


def test_the_readmes_name_existing_files_and_every_job_script() -> None:
    readme = (SLURM / "README.md").read_text()
    named = set(re.findall(r"deploy/slurm/[\w./-]+", readme + (ROOT / "README.md").read_text()))
    for path in named:
        assert (ROOT / path.rstrip(".")).exists(), path
    for script in [*SLURM.glob("*.sbatch"), SLURM / "submit.sh"]:
        assert f"`{script.name}`" in readme, f"{script.name} is not described"
