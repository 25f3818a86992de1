"""Training augmentation: exact shifts and flips, seeded draws, applied before the mask."""

from __future__ import annotations

import pytest
import torch

from data import (
    DatasetName,
    RandomResizedCropFlip,
    RandomShift,
    SparseBatches,
    TensorSplit,
    augmentation_for,
)


def _dot_images(n: int, size: int = 9) -> torch.Tensor:
    """(n, 1, size, size) float images on [0, 255], each one bright pixel in the centre."""
    images = torch.zeros(n, 1, size, size)
    images[:, 0, size // 2, size // 2] = 255.0
    return images


def test_shift_moves_the_whole_image_by_at_most_max_pixels_and_keeps_it():
    images = _dot_images(64)
    out = RandomShift(max_pixels=2)(images, torch.Generator().manual_seed(0))
    positions = (out[:, 0] == 255.0).nonzero()[:, 1:]  # (n, 2) row, column of the dot
    assert positions.shape == (64, 2)  # every dot survived, exactly one per image
    offsets = positions - 4
    assert offsets.abs().max() == 2
    assert len({tuple(o) for o in offsets.tolist()}) > 10  # draws differ between images
    assert torch.equal(out.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)))  # nothing blurred


def test_crop_of_the_whole_image_is_the_identity_and_flip_mirrors_exactly():
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 255
    generator = torch.Generator().manual_seed(0)
    whole = RandomResizedCropFlip(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0)
    mirror = RandomResizedCropFlip(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0)
    assert torch.allclose(whole(images, generator), images, atol=1e-3)
    assert torch.allclose(mirror(images, generator), images.flip(-1), atol=1e-3)


def test_random_crops_zoom_in():
    """A crop of a smaller area, resized back, spreads a dot over more pixels."""
    images = _dot_images(32, size=33)
    crop = RandomResizedCropFlip(scale=(0.25, 0.3), flip=0.0)
    out = crop(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert ((out > 1.0).sum(dim=(1, 2, 3)) > 1).float().mean() > 0.5


def test_each_dataset_has_its_augmentation():
    assert isinstance(augmentation_for(DatasetName.MNIST), RandomShift)  # digits: no flips
    assert isinstance(augmentation_for(DatasetName.CALTECH101), RandomResizedCropFlip)


def _batches(split: TensorSplit, augment, fixed_masks: bool = False) -> SparseBatches:
    return SparseBatches(
        split,
        sparsity=0.5,
        batch_size=16,
        device="cpu",
        mean=(0.1,),
        std=(0.3,),
        shuffle=not fixed_masks,
        seed=3,
        fixed_masks=fixed_masks,
        augment=augment,
    )


@pytest.fixture
def split() -> TensorSplit:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 12, 12), dtype=torch.uint8, generator=generator)
    return TensorSplit(images, torch.arange(40) % 10)


def test_augmented_batches_are_seeded_per_epoch_and_masks_are_not_moved(split):
    plain = list(_batches(split, None).epoch(1))
    shifted = list(_batches(split, RandomShift()).epoch(1))
    again = list(_batches(split, RandomShift()).epoch(1))
    other_epoch = list(_batches(split, RandomShift()).epoch(2))
    for (_x, mask, y), (xs, mask_shifted, ys), (xa, _, _) in zip(
        plain, shifted, again, strict=True
    ):
        assert torch.equal(
            mask, mask_shifted
        )  # the mask is drawn after, independently of the image
        assert torch.equal(y, ys)
        assert torch.equal(xs, xa)  # same seed and epoch, same augmentation
        assert torch.all(xs[mask_shifted == 0] == 0)  # unobserved pixels stay zero
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(plain, shifted, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(shifted, other_epoch, strict=True))


def test_evaluation_batches_refuse_augmentation(split):
    with pytest.raises(ValueError, match="must not be augmented"):
        _batches(split, RandomShift(), fixed_masks=True)
