"""``bench/gpu_check.py --smoke``: the one-call GPU check runs its whole flow on the CPU at a
tiny size, so the day a GPU is lent the script is known to work end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from synthetic import write_mnist

ROOT = Path(__file__).resolve().parent.parent
KEYS = (
    "device",
    "cuda_tests",
    "layer_ratio",
    "trial_seconds",
    "workers_sweep",
    "study_100_trials_minutes",
    "peak_memory_mib",
)


def test_gpu_check_smoke_runs_every_part_and_prints_the_summary_last(tmp_path: Path) -> None:
    # sparse_mnist keeps 5,000 training images for validation: the synthetic set must be larger.
    write_mnist(tmp_path / "data", n_train=5300, n_test=200)
    env = {
        **os.environ,
        "HPO_DATA_DIR": str(tmp_path / "data"),
        "HPO_CACHE_DIR": str(tmp_path / "cache"),
    }
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--smoke", "--out", str(out), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(key in summary for key in KEYS)
    tests = summary["cuda_tests"]
    assert tests["tests"] > 0 and tests["failures"] == tests["errors"] == 0
    assert summary["layer_ratio"]["kernel_3"] > 0 and summary["layer_ratio"]["floor_3"] > 0
    timed = summary["trial_seconds"]
    assert {"fp32", "bf16"} < set(timed) and len(timed) == 3  # and the fastest "+both"
    assert all(isinstance(seconds, float) for seconds in summary["trial_seconds"].values())
    assert all(0 <= a <= 1 for a in summary["trial_accuracy"].values())
    assert all(mib > 0 for mib in summary["peak_memory_mib"].values())
    assert {"1", "2"} <= set(summary["workers_sweep"])
    assert summary["study_100_trials_minutes"] > 0
    assert summary == json.loads((out / "summary.json").read_text())
    assert "min per 100 trials" in (out / "summary.md").read_text()
