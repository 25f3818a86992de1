"""load_dataset on the synthetic archives, through the real (torchvision) loading code, offline."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import CALTECH_CLASSES, write_caltech101, write_mnist

from data import (
    Caltech101Options,
    DatasetName,
    MNISTOptions,
    TensorSplit,
    load_dataset,
    resolve_cache_dir,
    resolve_data_dir,
)

MNIST_SMALL = MNISTOptions(val_size=100)
CALTECH_SMALL = Caltech101Options(image_size=32, max_per_class=20)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test: loading must stay offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _raw_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _rows(images: torch.Tensor) -> list[bytes]:
    return [bytes(im.numpy().tobytes()) for im in images]


def _tree(root: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    )


# --- MNIST -------------------------------------------------------------------------------


def test_mnist_splits_sizes_disjoint_and_stratified(synthetic_data_root: Path, tmp_path: Path):
    ds = load_dataset(
        DatasetName.MNIST, data_dir=synthetic_data_root, cache_dir=tmp_path, options=MNIST_SMALL
    )
    assert (len(ds.train), len(ds.val), len(ds.test)) == (500, 100, 200)
    assert ds.train.images.shape[1:] == (1, 28, 28)
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (10, 1, 28)
    assert ds.class_names[0] == "0 - zero" and len(ds.class_names) == 10
    # train + val is exactly the official training set (as a multiset of (image, label)).
    raw = synthetic_data_root / "MNIST" / "raw"
    official = _raw_idx(raw / "train-images-idx3-ubyte.gz")
    official_labels = _raw_idx(raw / "train-labels-idx1-ubyte.gz")
    ours = sorted(
        zip(
            _rows(torch.cat([ds.train.images, ds.val.images])[:, 0]),
            torch.cat([ds.train.labels, ds.val.labels]).tolist(),
            strict=True,
        )
    )
    theirs = sorted(zip([r.tobytes() for r in official], official_labels.tolist(), strict=True))
    assert ours == theirs
    assert not set(_rows(ds.train.images)) & set(_rows(ds.val.images))
    # The synthetic training set has 60 images per class: validation takes 10 of each.
    assert torch.bincount(ds.val.labels, minlength=10).tolist() == [10] * 10
    assert torch.bincount(ds.train.labels, minlength=10).tolist() == [50] * 10
    # Test is the official test set, untouched and in order.
    test = _raw_idx(raw / "t10k-images-idx3-ubyte.gz")
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(test.copy()))


def test_mnist_split_is_seeded(synthetic_data_root: Path, tmp_path: Path):
    def load(seed: int):
        return load_dataset(
            "mnist",
            data_dir=synthetic_data_root,
            cache_dir=tmp_path,
            seed=seed,
            options=MNIST_SMALL,
        )

    a, b, c = load(0), load(0), load(1)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.val.images, c.val.images)


def test_mnist_train_size_is_a_stratified_subset(synthetic_data_root: Path, tmp_path: Path):
    full = load_dataset(
        "mnist", data_dir=synthetic_data_root, cache_dir=tmp_path, options=MNIST_SMALL
    )
    small = load_dataset(
        "mnist",
        data_dir=synthetic_data_root,
        cache_dir=tmp_path,
        options=MNISTOptions(val_size=100, train_size=200),
    )
    assert len(small.train) == 200
    assert torch.bincount(small.train.labels, minlength=10).tolist() == [20] * 10
    assert set(_rows(small.train.images)) <= set(_rows(full.train.images))
    assert torch.equal(small.val.images, full.val.images)  # validation unaffected


def test_mean_std_are_training_statistics(synthetic_data_root: Path, tmp_path: Path):
    ds = load_dataset(
        "mnist", data_dir=synthetic_data_root, cache_dir=tmp_path, options=MNIST_SMALL
    )
    pixels = ds.train.images.double() / 255
    assert ds.mean[0] == pytest.approx(pixels.mean().item(), rel=1e-9)
    assert ds.std[0] == pytest.approx(pixels.std(unbiased=False).item(), rel=1e-6)
    # Not the validation statistics (they differ on this tiny set) nor a constant.
    assert ds.mean[0] != pytest.approx((ds.val.images.double() / 255).mean().item(), rel=1e-9)


# --- Caltech-101 ----------------------------------------------------------------------------


def test_caltech_classes_cap_rgb_and_splits(synthetic_data_root: Path, tmp_path: Path):
    ds = load_dataset(
        "caltech101", data_dir=synthetic_data_root, cache_dir=tmp_path, options=CALTECH_SMALL
    )
    assert ds.class_names == tuple(sorted(CALTECH_CLASSES))  # BACKGROUND_Google excluded
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (4, 3, 32)
    for split in (ds.train, ds.val, ds.test):
        assert split.images.shape[1:] == (3, 32, 32)
    labels = torch.cat([ds.train.labels, ds.val.labels, ds.test.labels])
    expected = [min(CALTECH_CLASSES[c], 20) for c in ds.class_names]  # accordion 24 -> 20
    assert torch.bincount(labels, minlength=4).tolist() == expected
    n = sum(expected)
    assert len(ds.test) == round(0.2 * n) and len(ds.val) == round(0.1 * n)
    # Stratified: each class's share of a split is within one image of proportional.
    for split, fraction in ((ds.test, 0.2), (ds.val, 0.1)):
        counts = torch.bincount(split.labels, minlength=4).tolist()
        for k, total in enumerate(expected):
            assert abs(counts[k] - total * fraction) <= 1
    rows = [set(_rows(s.images)) for s in (ds.train, ds.val, ds.test)]
    assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]
    # Grayscale JPEGs became RGB with equal channels; colour ones did not.
    images = torch.cat([ds.train.images, ds.val.images, ds.test.images])
    gray = (images[:, 0] == images[:, 1]).flatten(1).all(1) & (
        images[:, 1] == images[:, 2]
    ).flatten(1).all(1)
    assert 0 < int(gray.sum()) < len(images)


def test_caltech_without_cap_keeps_everything(synthetic_data_root: Path, tmp_path: Path):
    ds = load_dataset(
        "caltech101",
        data_dir=synthetic_data_root,
        cache_dir=tmp_path,
        options=Caltech101Options(image_size=16, max_per_class=None),
    )
    assert len(ds.train) + len(ds.val) + len(ds.test) == sum(CALTECH_CLASSES.values())
    assert ds.train.images.shape[-2:] == (16, 16)


# --- cache -------------------------------------------------------------------------------


def test_cache_hit_reads_the_file_without_decoding_and_leaves_the_data_root_alone(
    synthetic_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import data.caltech101

    decodes: list[int] = []
    read = data.caltech101.read_caltech101

    def counting_read(*args: object, **kwargs: object) -> object:
        decodes.append(kwargs["image_size"])
        return read(*args, **kwargs)

    monkeypatch.setattr(data.caltech101, "read_caltech101", counting_read)
    before = _tree(synthetic_data_root)
    first = load_dataset(
        "caltech101", data_dir=synthetic_data_root, cache_dir=tmp_path, options=CALTECH_SMALL
    )
    decoded = list((tmp_path / "decoded").iterdir())
    assert [p.suffix for p in decoded] == [".pt"]  # one file, no temporary left behind
    written = decoded[0].stat()
    second = load_dataset(
        "caltech101", data_dir=synthetic_data_root, cache_dir=tmp_path, options=CALTECH_SMALL
    )
    for a, b in ((first.train, second.train), (first.val, second.val), (first.test, second.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert decodes == [32]  # decoded once; the second load read the cached file...
    assert list((tmp_path / "decoded").iterdir()) == decoded
    read_back = decoded[0].stat()  # ... and did not rewrite it
    assert (read_back.st_ino, read_back.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert _tree(synthetic_data_root) == before
    # Other decode options get their own file.
    load_dataset(
        "caltech101",
        data_dir=synthetic_data_root,
        cache_dir=tmp_path,
        options=Caltech101Options(image_size=24, max_per_class=20),
    )
    assert decodes == [32, 24]
    assert len(list((tmp_path / "decoded").iterdir())) == 2


def test_cache_decode_is_skipped_on_hit(
    synthetic_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    load_dataset("mnist", data_dir=synthetic_data_root, cache_dir=tmp_path, options=MNIST_SMALL)
    import data.mnist

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again despite a warm cache")

    monkeypatch.setattr(data.mnist, "read_mnist", fail)
    ds = load_dataset(
        "mnist", data_dir=synthetic_data_root, cache_dir=tmp_path, options=MNIST_SMALL
    )
    assert len(ds.train) == 500


def test_cache_is_invalidated_when_the_archive_changes(tmp_path: Path):
    root = tmp_path / "data"
    write_mnist(root, n_train=100, n_test=20, seed=1)
    cache = tmp_path / "cache"
    a = load_dataset("mnist", data_dir=root, cache_dir=cache, options=MNISTOptions(val_size=10))
    time.sleep(0.01)
    write_mnist(root, n_train=120, n_test=20, seed=2)
    b = load_dataset("mnist", data_dir=root, cache_dir=cache, options=MNISTOptions(val_size=10))
    assert (len(a.train), len(b.train)) == (90, 110)


def test_corrupt_cache_file_is_rebuilt(synthetic_data_root: Path, tmp_path: Path):
    a = load_dataset("mnist", data_dir=synthetic_data_root, cache_dir=tmp_path, options=MNIST_SMALL)
    (cached,) = (tmp_path / "decoded").iterdir()
    cached.write_bytes(b"not a torch file")
    b = load_dataset("mnist", data_dir=synthetic_data_root, cache_dir=tmp_path, options=MNIST_SMALL)
    assert torch.equal(a.train.images, b.train.images)


_CONCURRENT_LOAD = """
import hashlib, sys
from data import Caltech101Options, load_dataset
ds = load_dataset("caltech101", data_dir=sys.argv[1], cache_dir=sys.argv[2],
                  options=Caltech101Options(image_size=32, max_per_class=20))
print(hashlib.sha256(ds.train.images.numpy().tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_concurrent_cold_loads_agree(synthetic_data_root: Path, tmp_path: Path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONCURRENT_LOAD, str(synthetic_data_root), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _out, err in outputs]
    assert len({out.strip() for out, _err in outputs}) == 1
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# --- locations -------------------------------------------------------------------------------


def test_environment_variables_and_precedence(
    synthetic_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HPO_DATA_DIR", str(synthetic_data_root))
    monkeypatch.setenv("HPO_CACHE_DIR", str(tmp_path / "env-cache"))
    assert resolve_data_dir() == synthetic_data_root
    assert resolve_data_dir("/elsewhere") == Path("/elsewhere")
    assert resolve_cache_dir() == tmp_path / "env-cache"
    ds = load_dataset("mnist", options=MNIST_SMALL)
    assert len(ds.test) == 200
    assert any((tmp_path / "env-cache" / "decoded").iterdir())
    monkeypatch.delenv("HPO_DATA_DIR")
    monkeypatch.delenv("HPO_CACHE_DIR")
    assert resolve_cache_dir() == Path.home() / ".cache" / "sparse-cnn-hpo"
    assert resolve_data_dir(cache_dir=tmp_path) == tmp_path / "datasets"


def test_uncompressed_raw_files_are_read_in_place(synthetic_data_root: Path, tmp_path: Path):
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for packed in (synthetic_data_root / "MNIST" / "raw").iterdir():
        with gzip.open(packed) as src, (raw / packed.stem).open("wb") as dst:
            shutil.copyfileobj(src, dst)
    ds = load_dataset("mnist", data_dir=root, cache_dir=tmp_path / "cache", options=MNIST_SMALL)
    assert len(ds.train) == 500
    assert not (tmp_path / "cache" / "staged").exists()  # nothing to extract


def test_download_uses_torchvision_when_allowed(
    synthetic_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """download=True with nothing on disk goes through torchvision's MNIST download."""
    import torchvision.datasets.mnist as tv_mnist

    calls: list[str] = []

    def fake_download(url: str, download_root: str, filename: str, md5: str) -> None:
        calls.append(filename)
        src = synthetic_data_root / "MNIST" / "raw" / filename
        with gzip.open(src) as f, open(os.path.join(download_root, src.stem), "wb") as out:
            shutil.copyfileobj(f, out)

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_download)
    root = tmp_path / "fresh"
    ds = load_dataset(
        "mnist", data_dir=root, cache_dir=tmp_path / "cache", download=True, options=MNIST_SMALL
    )
    assert len(calls) == 4 and len(ds.train) == 500
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_tensor_split_validates() -> None:
    with pytest.raises(ValueError, match="uint8"):
        TensorSplit(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        TensorSplit(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))


def test_caltech_classes_are_the_sorted_folders(tmp_path: Path):
    """Classes of any names load, sorted, without BACKGROUND_Google."""
    root = tmp_path / "data"
    write_caltech101(root, classes={"zebra": 6, "ant": 5}, n_background=2, seed=3)
    ds = load_dataset(
        "caltech101",
        data_dir=root,
        cache_dir=tmp_path / "cache",
        options=Caltech101Options(image_size=8, val_fraction=0.2, test_fraction=0.2),
    )
    assert ds.class_names == ("ant", "zebra")
    assert len(ds.train) + len(ds.val) + len(ds.test) == 11
