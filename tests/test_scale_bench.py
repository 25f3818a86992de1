"""bench/scale.py at a tiny size: simulated workers (threads in processes, each with its own
storage) through the product's trial loop, a SIGKILL, a reader; its last line is the JSON the
issue names, with nothing lost, nothing left RUNNING and no error. The figures themselves are
measured by hand (docs/performance.md, "Issue 32: scaling")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "finished", "lost", "running_left", "errors", "peak_connections", "max_connections",
    "trials_per_s", "storage_ms_p50", "storage_ms_p99",
}  # fmt: skip
# A killed worker's trials go stale after 8 s, so the end's settling waits seconds, not a minute.
HEARTBEAT = {"HPO_HEARTBEAT_INTERVAL": "2", "HPO_HEARTBEAT_GRACE": "8"}


def _scale(url: str, tmp_path: Path) -> tuple[dict, subprocess.CompletedProcess]:
    env = {**os.environ, **HEARTBEAT, "HPO_STORAGE": url, "TMPDIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = ["--workers", "4", "--processes", "2", "--minutes", "0.3", "--trial-seconds", "1",
            "--kill-every", "8", "--warmup", "5", "--json"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures, done


def _check(figures: dict, done: subprocess.CompletedProcess) -> None:
    assert KEYS <= set(figures), sorted(KEYS - set(figures))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (figures["lost"], figures["running_left"], figures["errors"]) == (0, 0, 0)
    assert figures["finished"] > 0 and figures["kills"] >= 1
    assert figures["storage_ms_p99"] >= figures["storage_ms_p50"] > 0
    assert figures["workers"] == 4 and figures["processes"] == 2


@pytest.mark.slow
def test_scale_bench_on_sqlite(tmp_path: Path) -> None:
    figures, done = _scale(f"sqlite:///{tmp_path / 'scale.db'}", tmp_path)
    _check(figures, done)
    assert figures["peak_connections"] is None  # a file has no server to count


@pytest.mark.slow
@pytest.mark.postgres
def test_scale_bench_through_pgbouncer(tmp_path: Path) -> None:
    url = os.environ.get("HPO_TEST_PGBOUNCER_URL")
    if not url:
        pytest.skip("HPO_TEST_PGBOUNCER_URL is unset; start one with .ci/pgbouncer.sh (CI does)")
    figures, done = _scale(url, tmp_path)
    _check(figures, done)
    assert 0 < figures["peak_connections"] <= figures["max_connections"]
    assert "password" not in done.stderr.lower() and url.split("@")[0] not in done.stderr


@pytest.mark.parametrize(("flag", "value"), [("--workers", "0"), ("--poll", "-1")])
def test_a_bad_figure_is_refused_before_anything_starts(flag: str, value: str) -> None:
    env = {**os.environ, "HPO_STORAGE": "sqlite:///unused.db"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), flag, value],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert flag in done.stderr.splitlines()[-1] and "Traceback" not in done.stderr
