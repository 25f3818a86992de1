"""Save PNG grids of a batch at several sparsities: a first look at what the networks see.

    python -m data.preview --dataset mnist --sparsity 0.5 0.7 0.9 --out previews/
    python -m data.preview --dataset caltech101 --image-size 64 --sparsity 0.5 0.9 --out previews/

Writes ``<dataset>_original.png`` and ``<dataset>_sparsity_<s>.png`` per sparsity. The images
come out of :class:`data.SparseBatches` with the fixed validation masks (de-normalized for
display), so the grid is exactly the input of an evaluation; unobserved pixels are painted in
a colour that no MNIST pixel has (blue), so dark observed pixels and missing ones differ.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .batches import SparseBatches
from .dataset import SparseDataset, load_dataset
from .errors import DataError
from .options import Caltech101Options, DatasetName, MNISTOptions
from .paths import CACHE_DIR_ENV, DATA_DIR_ENV
from .sparsify import check_sparsity

__all__ = ["main", "render_grid"]

# Display colour of unobserved pixels (RGB in [0, 1]).
UNOBSERVED_RGB = (0.15, 0.35, 0.85)


def render_grid(x: Tensor, mask: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """A displayable RGB batch: de-normalized observed pixels, :data:`UNOBSERVED_RGB` elsewhere.

    Args:
        x: Normalized, masked batch (B, C, H, W) as produced by :class:`SparseBatches`.
        mask: (B, 1, H, W), 1 where observed.
        mean, std: The statistics used for normalization.

    Returns:
        float (B, 3, H, W) in [0, 1].
    """
    c = x.shape[1]
    m = torch.tensor(mean, dtype=x.dtype).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, c, 1, 1)
    images = (x * s + m).clamp(0.0, 1.0)
    if c == 1:
        images = images.expand(-1, 3, -1, -1)
    fill = torch.tensor(UNOBSERVED_RGB, dtype=x.dtype).view(1, 3, 1, 1)
    return torch.where(mask.bool(), images, fill)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data.preview", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="mnist or caltech101")
    p.add_argument(
        "--sparsity", type=float, nargs="+", required=True, help="fractions dropped, in [0, 1)"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    p.add_argument("--data-dir", default=None, help=f"data root (default: ${DATA_DIR_ENV})")
    p.add_argument("--cache-dir", default=None, help=f"cache (default: ${CACHE_DIR_ENV})")
    p.add_argument("--download", action="store_true", help="allow downloading missing data")
    p.add_argument("--split", choices=("train", "val", "test"), default="val")
    p.add_argument("--n", type=int, default=32, help="images in the grid (default: 32)")
    p.add_argument("--seed", type=int, default=0, help="split and mask seed (default: 0)")
    p.add_argument(
        "--image-size", type=int, default=64, help="Caltech-101 image size (default: 64)"
    )
    p.add_argument(
        "--val-size", type=int, default=5000, help="MNIST validation size (default: 5000)"
    )
    return p


def _load(args: argparse.Namespace) -> SparseDataset:
    name = DatasetName.parse(args.dataset)
    options: MNISTOptions | Caltech101Options
    if name is DatasetName.MNIST:
        options = MNISTOptions(val_size=args.val_size)
    else:
        options = Caltech101Options(image_size=args.image_size)
    return load_dataset(
        name,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        download=args.download,
        seed=args.seed,
        options=options,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 on bad input or missing data)."""
    from torchvision.utils import save_image

    args = _parser().parse_args(argv)
    try:
        sparsities = [check_sparsity(s) for s in args.sparsity]
        if args.n < 1:
            raise DataError(f"--n must be >= 1, got {args.n}")
        ds = _load(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    split = getattr(ds, args.split)
    args.out.mkdir(parents=True, exist_ok=True)
    # Evenly spaced over the split (val/test are grouped by class) with their evaluation masks.
    pick = torch.linspace(0, len(split) - 1, min(args.n, len(split))).round().long()
    nrow = 8
    zoom = max(1, 112 // ds.image_size)  # MNIST's 28 px digits are tiny on a screen
    written = []
    for sparsity in [0.0, *sparsities]:
        batches = SparseBatches(
            split,
            sparsity=sparsity,
            batch_size=len(split),
            device="cpu",
            mean=ds.mean,
            std=ds.std,
            seed=args.seed,
            fixed_masks=True,
        )
        x, mask, _y = next(iter(batches.epoch(0)))
        x, mask = x[pick], mask[pick]
        grid = render_grid(x, mask, ds.mean, ds.std)
        grid = torch.nn.functional.interpolate(grid, scale_factor=zoom, mode="nearest")
        stem = "original" if sparsity == 0.0 else f"sparsity_{sparsity:g}"
        path = args.out / f"{ds.name.value}_{stem}.png"
        save_image(grid, path, nrow=nrow, padding=2, pad_value=1.0)
        written.append(path)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
