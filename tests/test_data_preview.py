"""python -m data.preview on the synthetic data: PNG grids with unobserved pixels painted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.preview import UNOBSERVED_RGB, main


def _unobserved_fraction(path: Path) -> float:
    """Share of image pixels (the white padding excluded) painted in the unobserved colour."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    colour = np.round(np.array(UNOBSERVED_RGB) * 255).astype(int)
    painted = np.all(np.abs(rgb - colour) <= 1, axis=-1)
    padding = np.all(rgb == 255, axis=-1)
    return float(painted.sum() / (~padding).sum())


def test_mnist_preview_writes_one_grid_per_sparsity(
    synthetic_data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "out"
    status = main(
        [
            "--dataset", "mnist", "--sparsity", "0.5", "0.9", "--out", str(out),
            "--data-dir", str(synthetic_data_root), "--cache-dir", str(tmp_path / "c"),
            "--val-size", "100", "--n", "16",
        ]
    )  # fmt: skip
    assert status == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["mnist_original.png", "mnist_sparsity_0.5.png", "mnist_sparsity_0.9.png"]
    assert capsys.readouterr().out.count(".png") == 3
    assert _unobserved_fraction(out / "mnist_original.png") == 0.0
    assert _unobserved_fraction(out / "mnist_sparsity_0.5.png") == pytest.approx(0.5, abs=0.05)
    assert _unobserved_fraction(out / "mnist_sparsity_0.9.png") == pytest.approx(0.9, abs=0.05)
    # 16 digits zoomed 4x to 112 px, 8 per row, 2 px padding: 2 rows.
    assert Image.open(out / "mnist_original.png").size == (8 * 114 + 2, 2 * 114 + 2)


def test_caltech_preview(synthetic_data_root: Path, tmp_path: Path):
    status = main(
        [
            "--dataset", "caltech101", "--sparsity", "0.7", "--out", str(tmp_path / "o"),
            "--data-dir", str(synthetic_data_root), "--cache-dir", str(tmp_path / "c"),
            "--image-size", "32",
        ]
    )  # fmt: skip
    assert status == 0
    frac = _unobserved_fraction(tmp_path / "o" / "caltech101_sparsity_0.7.png")
    assert frac == pytest.approx(0.7, abs=0.07)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dataset", "svhn", "--sparsity", "0.5"], "unknown dataset 'svhn'"),
        (["--dataset", "mnist", "--sparsity", "1.0"], "sparsity must be in [0, 1), got 1.0"),
        (["--dataset", "caltech101", "--sparsity", "0.5", "--image-size", "2"], "image_size"),
        (["--dataset", "mnist", "--sparsity", "0.5"], "HPO_DATA_DIR"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    status = main(
        [*args, "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "nothing"),
         "--cache-dir", str(tmp_path / "c")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err
