"""Sparsification and SparseBatches: density, shared channels, fixed eval and fresh train masks."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data import (
    Caltech101Options,
    InvalidSparsityError,
    MNISTOptions,
    SparseBatches,
    TensorSplit,
    check_sparsity,
    fixed_masks,
    load_dataset,
)


@pytest.fixture(scope="module")
def mnist(synthetic_data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_dataset(
        "mnist",
        data_dir=synthetic_data_root,
        cache_dir=tmp_path_factory.mktemp("cache"),
        options=MNISTOptions(val_size=100),
    )


@pytest.fixture(scope="module")
def caltech(synthetic_data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_dataset(
        "caltech101",
        data_dir=synthetic_data_root,
        cache_dir=tmp_path_factory.mktemp("cache"),
        options=Caltech101Options(image_size=32),
    )


def _batches(ds, split, **kwargs) -> SparseBatches:
    kwargs.setdefault("batch_size", 64)
    kwargs.setdefault("device", "cpu")
    return SparseBatches(split, mean=ds.mean, std=ds.std, **kwargs)


def _collect(batches: SparseBatches, epoch: int = 0):
    xs, ms, ys = zip(*batches.epoch(epoch), strict=True)
    return torch.cat(xs), torch.cat(ms), torch.cat(ys)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("fixed", [True, False])
def test_mask_density_matches_sparsity(mnist, sparsity: float, fixed: bool):
    _x, mask, _y = _collect(
        _batches(mnist, mnist.train, sparsity=sparsity, fixed_masks=fixed, seed=3)
    )
    n = mask.numel()  # 500 * 784 pixels
    observed = mask.mean().item()
    tolerance = 5 * math.sqrt(sparsity * (1 - sparsity) / n) + 1e-12  # 5 sigma
    assert abs(observed - (1 - sparsity)) <= tolerance
    assert mask.dtype == torch.float32 and set(mask.unique().tolist()) <= {0.0, 1.0}


def test_x_is_normalized_where_observed_and_zero_elsewhere(caltech):
    x, mask, y = _collect(_batches(caltech, caltech.val, sparsity=0.6, fixed_masks=True))
    assert x.shape == (len(caltech.val), 3, 32, 32) and mask.shape == (len(caltech.val), 1, 32, 32)
    assert x.dtype == torch.float32 and torch.equal(y, caltech.val.labels)
    mean = torch.tensor(caltech.mean).view(1, 3, 1, 1)
    std = torch.tensor(caltech.std).view(1, 3, 1, 1)
    expected = (caltech.val.images.float() / 255 - mean) / std
    observed = mask.bool().expand_as(x)
    torch.testing.assert_close(x[observed], expected[observed], rtol=1e-5, atol=1e-5)
    # One mask for all channels: every channel is zero exactly where the mask is.
    assert torch.all(x[~observed] == 0)


def test_mask_marks_dropped_pixels_not_dark_ones(mnist):
    """At sparsity 0 every pixel is observed, including MNIST's black background."""
    x, mask, _y = _collect(_batches(mnist, mnist.val, sparsity=0.0, fixed_masks=True))
    assert torch.all(mask == 1)
    dark = mnist.val.images == 0
    assert dark.any()
    torch.testing.assert_close(
        x[dark], torch.full_like(x[dark], -mnist.mean[0] / mnist.std[0])
    )  # dark but observed: a negative normalized value, not the 0 of a missing pixel


def test_eval_masks_are_fixed_across_calls_epochs_and_batch_sizes(mnist):
    a = _batches(mnist, mnist.val, sparsity=0.9, fixed_masks=True, seed=7, batch_size=64)
    b = _batches(mnist, mnist.val, sparsity=0.9, fixed_masks=True, seed=7, batch_size=7)
    xa, ma, _ = _collect(a, epoch=0)
    xb, mb, _ = _collect(b, epoch=5)
    assert torch.equal(ma, mb) and torch.equal(xa, xb)
    assert torch.equal(_collect(a, epoch=1)[1], ma)
    # Another seed or sparsity gives other masks.
    other_seed = _batches(mnist, mnist.val, sparsity=0.9, fixed_masks=True, seed=8)
    other_sparsity = _batches(mnist, mnist.val, sparsity=0.8, fixed_masks=True, seed=7)
    assert not torch.equal(_collect(other_seed)[1], ma)
    assert not torch.equal(_collect(other_sparsity)[1], ma)


def test_eval_masks_do_not_depend_on_the_model_or_global_rng(mnist):
    torch.manual_seed(0)
    first = _collect(_batches(mnist, mnist.val, sparsity=0.5, fixed_masks=True, seed=1))[1]
    torch.manual_seed(12345)
    torch.rand(1000)
    second = _collect(_batches(mnist, mnist.val, sparsity=0.5, fixed_masks=True, seed=1))[1]
    assert torch.equal(first, second)


_MASK_DIGEST = """
import hashlib
from data import fixed_masks
m = fixed_masks(100, 28, 28, sparsity=0.9, seed=1234)
print(hashlib.sha256(m.numpy().tobytes()).hexdigest())
"""


def test_eval_masks_are_identical_in_another_process():
    here = fixed_masks(100, 28, 28, sparsity=0.9, seed=1234)
    digest = hashlib.sha256(here.numpy().tobytes()).hexdigest()
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _MASK_DIGEST],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        timeout=120,
    )
    assert out.stdout.strip() == digest


def test_training_masks_are_redrawn_every_epoch_but_reproducible(mnist):
    train = _batches(mnist, mnist.train, sparsity=0.7, shuffle=False, seed=3)
    m0 = _collect(train, epoch=0)[1]
    m1 = _collect(train, epoch=1)[1]
    assert not torch.equal(m0, m1)
    assert (m0 != m1).float().mean().item() > 0.3  # independent draws differ on ~42% of pixels
    again = _batches(mnist, mnist.train, sparsity=0.7, shuffle=False, seed=3)
    assert torch.equal(_collect(again, epoch=1)[1], m1)
    other_seed = _batches(mnist, mnist.train, sparsity=0.7, shuffle=False, seed=4)
    assert not torch.equal(_collect(other_seed, epoch=1)[1], m1)


def test_shuffle_is_a_seeded_permutation_per_epoch_with_aligned_labels():
    n = 300
    values = torch.arange(n) % 251
    images = values.view(n, 1, 1, 1).expand(n, 1, 4, 4).to(torch.uint8).contiguous()
    split = TensorSplit(images, torch.arange(n))  # distinct labels: orders are comparable
    batches = SparseBatches(
        split,
        sparsity=0.0,
        batch_size=64,
        device="cpu",
        mean=[0.0],
        std=[1.0],
        shuffle=True,
        seed=11,
    )
    assert len(batches) == math.ceil(n / 64)
    _x, _m, y0 = _collect(batches, epoch=0)
    _x, _m, y1 = _collect(batches, epoch=1)
    assert sorted(y0.tolist()) == sorted(split.labels.tolist())
    assert not torch.equal(y0, y1)  # a new order every epoch
    assert torch.equal(_collect(batches, epoch=0)[2], y0)  # the same order for the same epoch
    sizes = [len(y) for _x, _m, y in batches.epoch(0)]
    assert sizes == [64, 64, 64, 64, 44]


def test_shuffled_images_stay_with_their_labels():
    n = 200
    idx = torch.arange(n)
    images = (idx % 250).view(n, 1, 1, 1).expand(n, 1, 3, 3).to(torch.uint8).contiguous()
    split = TensorSplit(images, idx.clone())  # label == index
    batches = SparseBatches(
        split,
        sparsity=0.0,
        batch_size=32,
        device="cpu",
        mean=[0.0],
        std=[1.0],
        shuffle=True,
        seed=0,
    )
    x, _m, y = _collect(batches, epoch=3)
    assert torch.equal(torch.round(x[:, 0, 0, 0] * 255).long(), y % 250)
    assert not torch.equal(y, idx)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), "0.5", True])
def test_invalid_sparsity_is_a_clear_error(bad, mnist):
    with pytest.raises(InvalidSparsityError, match=r"sparsity must be .*\[0, 1\), got"):
        check_sparsity(bad)
    with pytest.raises(InvalidSparsityError):
        _batches(mnist, mnist.val, sparsity=bad)


def test_batches_validate_their_arguments(mnist):
    with pytest.raises(ValueError, match="batch_size"):
        _batches(mnist, mnist.val, sparsity=0.5, batch_size=0)
    with pytest.raises(ValueError, match="one value per channel"):
        SparseBatches(
            mnist.val, sparsity=0.5, batch_size=8, device="cpu", mean=[0.1, 0.2], std=[1.0, 1.0]
        )
    with pytest.raises(ValueError, match="std must be positive"):
        SparseBatches(mnist.val, sparsity=0.5, batch_size=8, device="cpu", mean=[0.1], std=[0.0])
