"""Opt-in: the real archives (``HPO_REAL_DATA_DIR``, e.g. ../shared/data) load with the right sizes.

Slow on a cold cache (Caltech-101 decodes ~9k JPEGs); set ``HPO_CACHE_DIR`` to reuse a cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from data import Caltech101Options, MNISTOptions, load_dataset

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not os.environ.get("HPO_REAL_DATA_DIR"), reason="set HPO_REAL_DATA_DIR to run"
    ),
]


@pytest.fixture
def real_root() -> Path:
    return Path(os.environ["HPO_REAL_DATA_DIR"])


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return Path(os.environ.get("HPO_CACHE_DIR") or tmp_path)


def test_real_mnist_sizes(real_root: Path, cache: Path):
    ds = load_dataset("mnist", data_dir=real_root, cache_dir=cache, options=MNISTOptions())
    assert (len(ds.train), len(ds.val), len(ds.test)) == (55_000, 5_000, 10_000)
    assert torch.bincount(ds.val.labels, minlength=10).min() >= 450  # stratified: ~500 each
    assert ds.mean[0] == pytest.approx(0.1307, abs=0.002)  # the well-known MNIST statistics
    assert ds.std[0] == pytest.approx(0.3081, abs=0.002)


def test_real_caltech101_classes(real_root: Path, cache: Path):
    options = Caltech101Options(image_size=32)
    ds = load_dataset("caltech101", data_dir=real_root, cache_dir=cache, options=options)
    assert ds.num_classes == 101 and len(ds.class_names) == 101
    assert "BACKGROUND_Google" not in ds.class_names
    labels = torch.cat([ds.train.labels, ds.val.labels, ds.test.labels])
    counts = torch.bincount(labels, minlength=101)
    assert counts.max() == 100 and counts.min() >= 31  # capped; the smallest class has 31
    assert set(ds.train.labels.unique().tolist()) == set(range(101))
