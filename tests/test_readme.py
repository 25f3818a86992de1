"""The README's Python snippets run as written (on synthetic data in the README's layout)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic import write_mnist

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.fixture(scope="module")
def readme_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An MNIST large enough for the studies' own options (5,000 validation images), and a
    folder holding ``hpo.db`` with one finished sparse_mnist trial, as after the main job."""
    data = tmp_path_factory.mktemp("readme-data")
    write_mnist(data, n_train=5400, n_test=400)
    work = tmp_path_factory.mktemp("readme-work")
    env = {
        **os.environ,
        "HPO_DATA_DIR": str(data),
        "HPO_CACHE_DIR": str(work / "cache"),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "WORK": str(work),
    }
    env.pop("HPO_STORAGE", None)
    main_job = [sys.executable, "-m", "hpo.run", "--study", "sparse_mnist", "--n-trials", "1"]
    tiny = ["--epochs", "1", "--train-size", "64", "--val-size", "100", "--no-progress"]
    done = subprocess.run(
        [*main_job, *tiny, "--device", "cpu"], cwd=work, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return env


def test_the_readme_has_its_python_snippets() -> None:
    assert len(BLOCKS) >= 3, "the layer, the data and the reload snippets"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(readme_env: dict[str, str], index: int) -> None:
    block = BLOCKS[index]
    done = subprocess.run(
        [sys.executable, "-c", block],
        cwd=readme_env["WORK"],
        env=readme_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"README block {index}:\n{block}\n{done.stderr[-3000:]}"
