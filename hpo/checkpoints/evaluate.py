"""``python -m hpo.evaluate CHECKPOINT [--sparsities S ...] [--split val] [--json]``: score a
checkpoint file. Its definition rebuilds the split as the study saw it; ``--mask-seed``
defaults to the split's documented seed, which reproduces the study's figures. Exit status: 0
scored, 2 bad input (one line on stderr)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from data import DATA_DIR_ENV, DataError

from ..errors import EXIT_OK, CheckpointError, UsageError, print_usage_error

__all__ = ["build_parser", "evaluate_checkpoint", "main"]

SPLITS = ("test", "val")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpo.evaluate",
        description="Score a saved checkpoint (hpo.export, docs/results/models/) on a split.",
    )
    parser.add_argument("checkpoint", help="checkpoint file, e.g. best.pt")
    parser.add_argument(
        "--data-dir", help=f"dataset root (default: ${DATA_DIR_ENV}, else the cache)"
    )
    parser.add_argument(
        "--sparsities",
        nargs="+",
        type=float,
        metavar="S",
        help="fractions of missing pixels to score at (default: the study's test sparsities)",
    )
    parser.add_argument(
        "--split", choices=SPLITS, default="test", help="which split (default: %(default)s)"
    )
    parser.add_argument(
        "--mask-seed",
        type=int,
        help="seed of the fixed masks (default: the documented one of the split: "
        "4321 for test, 1234 for val)",
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--json", action="store_true", help='print one line: {"0.9": {"accuracy": .., "mae": ..}}'
    )
    return parser


def evaluate_checkpoint(
    path: str,
    *,
    data_dir: str | None = None,
    sparsities: Sequence[float] | None = None,
    split: str = "test",
    mask_seed: int | None = None,
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """``{sparsity key: {"accuracy": .., "mae": ..}}`` of the checkpoint at ``path``; raises
    ``CheckpointError`` (not a checkpoint) or ``DataError`` (no dataset, bad sparsity)."""
    import torch

    from data import SparseBatches, check_sparsity, load_dataset
    from studies import TEST_MASK_SEED, VAL_MASK_SEED, VAL_SUBSET_SEED, sparsity_key

    from ..training import evaluate
    from .format import read_checkpoint, rebuild

    checkpoint = read_checkpoint(path)
    definition = checkpoint.config.definition
    sparsities = sparsities or definition["test_sparsities"]
    for s in sparsities:
        check_sparsity(s)
    loaded = rebuild(checkpoint, device)
    ds = load_dataset(
        definition["dataset"],
        data_dir=data_dir,
        download=False,
        seed=definition["data_seed"],
        options=_options(definition),
    )
    images = ds.test
    if split == "val":
        images = ds.val
        if definition.get("val_size") is not None:
            images = ds.val.stratified_subset(definition["val_size"], seed=VAL_SUBSET_SEED)
    if mask_seed is None:
        mask_seed = TEST_MASK_SEED if split == "test" else VAL_MASK_SEED
    scores = {}
    for s in sparsities:
        batches = SparseBatches(
            images,
            sparsity=s,
            batch_size=definition.get("eval_batch_size", 512),
            device=torch.device(device),
            mean=loaded.mean,
            std=loaded.std,
            seed=mask_seed,
            fixed_masks=True,
        )
        scores[sparsity_key(s)] = evaluate(loaded.model, batches.epoch(0)).to_dict()
    return scores


def _options(definition: dict[str, Any]) -> Any:
    """The dataset options of a definition (the splits scored do not depend on its train_size)."""
    from data import Caltech101Options, DatasetName, MNISTOptions

    mnist = DatasetName(definition["dataset"]) is DatasetName.MNIST
    kind = MNISTOptions if mnist else Caltech101Options
    return kind(**{**definition["dataset_options"], "train_size": None})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from ..runtime.device import resolve_device

        scores = evaluate_checkpoint(
            args.checkpoint,
            data_dir=args.data_dir,
            sparsities=args.sparsities,
            split=args.split,
            mask_seed=args.mask_seed,
            device=resolve_device(args.device),
        )
    except (CheckpointError, DataError, UsageError) as e:
        return print_usage_error(e)
    if args.json:
        print(json.dumps(scores))
        return EXIT_OK
    print(f"{args.checkpoint} on the {args.split} split:")
    print(f"{'sparsity':>8}  {'accuracy':>8}  {'MAE':>8}")
    for key, m in scores.items():
        print(f"{key:>8}  {m['accuracy']:8.4f}  {m['mae']:8.4f}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
