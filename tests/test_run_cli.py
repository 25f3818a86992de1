"""hpo.run command line: --list, --help, settings, and one clear line for every bad input."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hpo.errors import EXIT_USAGE, DeviceError, InvalidSettingError
from hpo.runtime.device import resolve_device
from hpo.tuning.cli import build_parser, main, settings_from_args
from hpo.tuning.settings import RunSettings
from studies import default_registry, get_study

ROOT = Path(__file__).resolve().parent.parent


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("error: ")
    return err


def _base(tmp_path: Path) -> list[str]:
    return ["--storage", f"sqlite:///{tmp_path / 's.db'}", "--device", "cpu", "--no-progress"]


def test_list_shows_every_study_with_its_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.strip().splitlines() if not line.startswith(" ")]
    assert [line.split()[0] for line in lines] == [
        "dense_caltech101",
        "dense_mnist",
        "sparse_caltech101",
        "sparse_mnist",
    ]
    assert all(len(line.split()) > 3 for line in lines)
    assert "budget per trial: 10 epochs x all training images, scored on 2,000 validation" in out
    assert "caltech101 150x150 px" in out and "tested at 0.5, 0.7, 0.8, 0.9" in out
    assert "lr log 0.0001..0.1" in out and "grid of 12 points" in out


def test_help_states_the_defaults() -> None:
    text = build_parser().format_help()
    for fragment in ("--n-trials", "(default: 100)", "(default: asha;", "HPO_STORAGE",
                     "--data-dir", "--timeout", "--train-size", "--epochs", "--list",
                     "--retrain-best"):  # fmt: skip
        assert fragment in text
    assert "(default: None)" not in text  # every default is said once, in words


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (
            ["--study", "sparse_mnsit"],
            "unknown study 'sparse_mnsit'; registered studies: "
            "dense_caltech101, dense_mnist, sparse_caltech101, sparse_mnist",
        ),  # fmt: skip
        ([], "--study is required"),
        (["--study", "sparse_mnist", "--n-trials", "0"], "--n-trials must be an integer >= 1"),
        (["--study", "sparse_mnist", "--epochs", "0"], "--epochs must be an integer >= 1"),
        (["--study", "sparse_mnist", "--train-size", "-5"], "--train-size must be an integer"),
        (["--study", "sparse_mnist", "--timeout", "-1"], "--timeout must be a positive number"),
        (["--study", "sparse_mnist", "--device", "tpu9"], "--device 'tpu9'"),
    ],
)
def test_bad_values_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    args = [a for a in _base(tmp_path) if "--device" not in argv or a not in ("--device", "cpu")]
    assert fragment in _error_line(capsys, args + argv)
    assert not (tmp_path / "s.db").exists()  # nothing was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["--study", "sparse_mnist", "--storage", f"sqlite:///{tmp_path / 's.db'}"]
    err = _error_line(capsys, [*argv, "--device", "cuda"])
    assert "CUDA is not available" in err and "--device cpu" in err


@pytest.mark.parametrize(
    ("storage", "fragment"),
    [
        ("mysql://u:secret@db/hpo", "unsupported storage URL"),
        ("sqlite://host/x.db", "invalid SQLite URL"),
        ("not a url", "invalid storage URL"),
        ("sqlite:///", "in-memory database: nothing would be kept"),
        ("sqlite:///:memory:", "in-memory database: nothing would be kept"),
    ],
)
def test_bad_storage_url(capsys: pytest.CaptureFixture[str], storage: str, fragment: str) -> None:
    err = _error_line(capsys, ["--study", "sparse_mnist", "--storage", storage, "--device", "cpu"])
    assert fragment in err and "secret" not in err


def test_unwritable_storage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker / 'study.db'}"
    err = _error_line(capsys, ["--study", "sparse_mnist", "--storage", url, "--device", "cpu"])
    assert "a-file" in err


def test_missing_data_offline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "cache"))
    empty = tmp_path / "no-data"
    empty.mkdir()
    err = _error_line(
        capsys, ["--study", "sparse_mnist", *_base(tmp_path), "--data-dir", str(empty)]
    )
    assert "MNIST" in err and str(empty) in err


def test_bad_input_exits_2_with_one_line_in_a_real_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpo.run",
            "--study",
            "nope",
            "--storage",
            f"sqlite:///{tmp_path}/s.db",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown study 'nope'; registered studies: dense_caltech101, dense_mnist, "
        "sparse_caltech101, sparse_mnist (see --list)"
    ]


def test_settings_are_resolved_picklable_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPO_STORAGE", "sqlite:///from-env.db")
    args = build_parser().parse_args(
        ["--study", "sparse_mnist", "--epochs", "2", "--device", "cpu"]
    )
    settings = settings_from_args(args, default_registry())
    assert settings.storage.url == "sqlite:///from-env.db"
    assert settings.study == get_study("sparse_mnist")  # the definition itself travels
    assert settings.definition().epochs == 2 and settings.overrides() == {"epochs": 2}
    assert pickle.loads(pickle.dumps(settings)) == settings
    with pytest.raises(InvalidSettingError, match="--pruner"):
        RunSettings(
            study=get_study("sparse_mnist"), n_trials=1, storage=settings.storage, pruner="x"
        )


@pytest.mark.parametrize(("gpus", "default"), [(0, "cpu"), (2, "cuda")])
def test_default_device_is_cuda_only_when_available(
    monkeypatch: pytest.MonkeyPatch, gpus: int, default: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert resolve_device(None) == default
    assert resolve_device("cpu") == "cpu"
    message = "only 2 CUDA device" if gpus else "CUDA is not available"
    with pytest.raises(DeviceError, match=message):
        resolve_device("cuda:9")
    if gpus:
        assert resolve_device("cuda:1") == "cuda:1"


def test_the_commands_run_from_a_folder_with_its_own_data_and_models_folders(
    tmp_path: Path,
) -> None:
    """Most ML projects have data/ and models/ folders; run from one, ``python -m hpo.run``
    must still import ours (an editable install's finder came after the working directory,
    whose folders then hid our packages)."""
    for name in ("data", "models", "studies"):
        (tmp_path / name).mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "hpo.run", "--list"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-1000:]
    assert "sparse_mnist" in result.stdout
