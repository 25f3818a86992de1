"""The data package's promised errors: type, one line, and what the message tells the user."""

from __future__ import annotations

import gzip
import io
import shutil
import socket
import tarfile
import urllib.error
from pathlib import Path

import pytest
from synthetic import write_caltech101, write_idx, write_mnist

from data import (
    CacheNotWritableError,
    Caltech101Options,
    CorruptArchiveError,
    DataError,
    DataMissingError,
    DownloadError,
    InvalidDataOptionsError,
    InvalidImageSizeError,
    MNISTOptions,
    UnknownDatasetError,
    load_dataset,
)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _raises(exc_type: type[DataError], fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
    assert "\n" not in message and message
    return message


def test_unknown_dataset_lists_the_valid_names(tmp_path: Path):
    message = _raises(UnknownDatasetError, load_dataset, "cifar10", cache_dir=tmp_path)
    assert "'cifar10'" in message and "mnist" in message and "caltech101" in message


def test_missing_mnist_offline_names_files_option_and_variable(tmp_path: Path):
    message = _raises(
        DataMissingError, load_dataset, "mnist", data_dir=tmp_path / "empty", cache_dir=tmp_path
    )
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "--data-dir" in message and "HPO_DATA_DIR" in message
    assert str(tmp_path / "empty") in message


def test_partially_present_mnist_lists_only_what_is_missing(tmp_path: Path):
    root = tmp_path / "data"
    write_mnist(root, n_train=20, n_test=10)
    (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").unlink()
    message = _raises(DataMissingError, load_dataset, "mnist", data_dir=root, cache_dir=tmp_path)
    assert "missing: t10k-images-idx3-ubyte.gz)" in message


def test_missing_caltech_offline_names_archive_option_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    message = _raises(DataMissingError, load_dataset, "caltech101", cache_dir=tmp_path)
    assert "101_ObjectCategories.tar.gz" in message
    assert "--data-dir" in message and "HPO_DATA_DIR" in message
    assert str(tmp_path / "datasets") in message  # the documented default root


def test_failed_download_is_a_download_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torchvision.datasets.mnist as tv_mnist

    def unreachable(url: str, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", unreachable)
    message = _raises(
        DownloadError,
        load_dataset,
        "mnist",
        data_dir=tmp_path / "d",
        cache_dir=tmp_path,
        download=True,
    )
    assert "could not download MNIST" in message and "HPO_DATA_DIR" in message


def test_truncated_mnist_archive(tmp_path: Path):
    root = tmp_path / "data"
    write_mnist(root, n_train=50, n_test=10)
    packed = root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    packed.write_bytes(packed.read_bytes()[:200])
    message = _raises(
        CorruptArchiveError,
        load_dataset,
        "mnist",
        data_dir=root,
        cache_dir=tmp_path / "c",
        options=MNISTOptions(val_size=10),
    )
    assert "train-images-idx3-ubyte.gz" in message and "corrupt" in message


def test_mnist_file_that_is_not_idx(tmp_path: Path):
    root = tmp_path / "data"
    write_mnist(root, n_train=50, n_test=10)
    with gzip.open(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"<html>404 Not Found</html>")
    message = _raises(
        CorruptArchiveError,
        load_dataset,
        "mnist",
        data_dir=root,
        cache_dir=tmp_path / "c",
        options=MNISTOptions(val_size=10),
    )
    assert "t10k-labels-idx1-ubyte" in message and "not an MNIST IDX file" in message


def test_mnist_images_and_labels_disagree(tmp_path: Path):
    root = tmp_path / "data"
    write_mnist(root, n_train=50, n_test=10)
    import numpy as np

    write_idx(root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz", np.zeros(49, np.uint8))
    message = _raises(
        CorruptArchiveError,
        load_dataset,
        "mnist",
        data_dir=root,
        cache_dir=tmp_path / "c",
        options=MNISTOptions(val_size=10),
    )
    assert "50 images but 49 labels" in message


def test_truncated_caltech_archive(synthetic_data_root: Path, tmp_path: Path):
    root = tmp_path / "data"
    (root / "caltech101").mkdir(parents=True)
    good = (synthetic_data_root / "caltech101" / "101_ObjectCategories.tar.gz").read_bytes()
    (root / "caltech101" / "101_ObjectCategories.tar.gz").write_bytes(good[: len(good) // 2])
    message = _raises(
        CorruptArchiveError,
        load_dataset,
        "caltech101",
        data_dir=root,
        cache_dir=tmp_path / "c",
        options=Caltech101Options(image_size=16),
    )
    assert "101_ObjectCategories.tar.gz" in message and "corrupt" in message
    # The failed extraction left no half-extracted folder that a retry would trust.
    assert not list((tmp_path / "c").rglob(".complete"))


def test_archive_of_something_else(tmp_path: Path):
    archive = tmp_path / "data" / "caltech101" / "101_ObjectCategories.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    message = _raises(
        CorruptArchiveError,
        load_dataset,
        "caltech101",
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "c",
        options=Caltech101Options(image_size=16),
    )
    assert "does not contain a 101_ObjectCategories/ folder" in message


def test_undecodable_image_is_named(tmp_path: Path):
    root = tmp_path / "data"
    write_caltech101(root, classes={"ant": 4, "bass": 4}, n_background=1)
    folder = tmp_path / "folder"
    with tarfile.open(root / "caltech101" / "101_ObjectCategories.tar.gz") as tar:
        tar.extractall(folder, filter="data")
    (folder / "101_ObjectCategories" / "bass" / "image_0003.jpg").write_bytes(b"garbage")
    shutil.rmtree(root / "caltech101")
    (root / "caltech101").mkdir()
    shutil.move(folder / "101_ObjectCategories", root / "caltech101" / "101_ObjectCategories")
    message = _raises(
        CorruptArchiveError,
        load_dataset,
        "caltech101",
        data_dir=root,
        cache_dir=tmp_path / "c",
        options=Caltech101Options(image_size=16, val_fraction=0.25, test_fraction=0.25),
    )
    assert "bass/image_0003.jpg" in message


@pytest.mark.parametrize("size", [0, 4, 7, 1025, 100_000, -3])
def test_impossible_image_size(size: int):
    message = _raises(InvalidImageSizeError, Caltech101Options, image_size=size)
    assert "image_size must be in [8, 1024]" in message and str(size) in message


def test_image_size_of_the_wrong_type():
    message = _raises(InvalidImageSizeError, Caltech101Options, image_size=64.0)
    assert "image_size must be an integer" in message


@pytest.mark.parametrize(
    ("factory", "kwargs", "expected"),
    [
        (MNISTOptions, {"val_size": -1}, "MNISTOptions.val_size must be an integer >= 1"),
        (MNISTOptions, {"val_size": 0}, "MNISTOptions.val_size must be an integer >= 1"),
        (MNISTOptions, {"train_size": 0}, "MNISTOptions.train_size must be an integer >= 1"),
        (Caltech101Options, {"max_per_class": 0}, "max_per_class must be an integer >= 3"),
        (Caltech101Options, {"val_fraction": 0.0}, "val_fraction must be a number in (0, 1)"),
        (Caltech101Options, {"test_fraction": 1.5}, "test_fraction must be a number in (0, 1)"),
        (
            Caltech101Options,
            {"val_fraction": 0.5, "test_fraction": 0.5},
            "val_fraction + test_fraction must be < 0.9",
        ),
        (Caltech101Options, {"train_size": -5}, "train_size must be an integer >= 1"),
    ],
)
def test_invalid_options(factory, kwargs, expected: str):
    message = _raises(InvalidDataOptionsError, factory, **kwargs)
    assert expected in message


def test_validation_larger_than_the_training_set(synthetic_data_root: Path, tmp_path: Path):
    message = _raises(
        InvalidDataOptionsError,
        load_dataset,
        "mnist",
        data_dir=synthetic_data_root,
        cache_dir=tmp_path,
        options=MNISTOptions(),  # val_size=5000 > 600 synthetic images
    )
    assert "val_size=5000" in message and "600 images" in message and "val_size < 600" in message


def test_train_size_larger_than_available(synthetic_data_root: Path, tmp_path: Path):
    message = _raises(
        InvalidDataOptionsError,
        load_dataset,
        "mnist",
        data_dir=synthetic_data_root,
        cache_dir=tmp_path,
        options=MNISTOptions(val_size=100, train_size=501),
    )
    assert "train_size=501 exceeds the 500 available training images" in message


def test_options_of_the_other_dataset(synthetic_data_root: Path, tmp_path: Path):
    message = _raises(
        InvalidDataOptionsError,
        load_dataset,
        "caltech101",
        data_dir=synthetic_data_root,
        cache_dir=tmp_path,
        options=MNISTOptions(),
    )
    assert "caltech101 takes Caltech101Options, got MNISTOptions" in message


@pytest.mark.parametrize("dataset", ["mnist", "caltech101"])
def test_unwritable_cache_is_a_clear_error(dataset: str, synthetic_data_root: Path, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    options = MNISTOptions(val_size=100) if dataset == "mnist" else Caltech101Options(image_size=16)
    message = _raises(
        CacheNotWritableError,
        load_dataset,
        dataset,
        data_dir=synthetic_data_root,
        cache_dir=blocker / "cache",
        options=options,
    )
    assert "cannot write to the cache" in message and "HPO_CACHE_DIR" in message
