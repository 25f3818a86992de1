"""bench/layer_overhead.py at a tiny size: its ``--floor`` step is checked inside the bench to
compute the layer's own output and gradients, and a bad figure is one line with exit 2. The
ratios themselves are measured by hand (docs/performance.md, "Issue 30")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "layer_overhead.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_floor_runs_beside_the_layer_and_reports_a_ratio_per_kernel() -> None:
    done = _bench(
        "--kernels", "3", "5", "--repeats", "2", "--warmup", "1", "--batch", "2",
        "--floor", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("kernel_3", "kernel_5", "floor_3", "floor_5"):
        assert isinstance(figures[key], float) and figures[key] > 0, (key, figures)


@pytest.mark.parametrize(
    "args",
    [
        ["--repeats", "0"],
        ["--kernels", "3", "4"],
        ["--batch", "0"],
        ["--threads", "0"],
        ["--warmup", "-1"],
        ["--device", "no-such-device"],
    ],
)
def test_a_bad_figure_is_one_line_and_exit_2(args: list[str]) -> None:
    done = _bench(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("layer_overhead.py: error: --")
