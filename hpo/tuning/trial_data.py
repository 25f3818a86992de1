"""The data a worker trains every trial on, and the fixed-mask batches that score them:
loaded once, the same images and masks for every trial, so scores differ only by model."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from torch import nn

from data import (
    Caltech101Options,
    DatasetName,
    MNISTOptions,
    SparseBatches,
    SparseDataset,
    TensorSplit,
    load_dataset,
)
from studies import VAL_SUBSET_SEED, sparsity_key

from ..training import EvalMetrics, evaluate


class DataSpec(Protocol):
    """What a study or an experiment definition says about its data."""

    dataset: DatasetName
    dataset_options: MNISTOptions | Caltech101Options
    data_seed: int
    eval_batch_size: int


def load_trial_data(
    spec: DataSpec, data_dir: str | None, download: bool, train_size: int | None = None
) -> SparseDataset:
    """Load the dataset once per worker (``train_size``: a stratified training subset drawn
    with the data seed, so all trials and workers train on the same examples)."""
    options = spec.dataset_options
    if train_size is not None:
        options = dataclasses.replace(options, train_size=train_size)
    return load_dataset(
        DatasetName(spec.dataset),
        data_dir=data_dir,
        download=download,
        seed=spec.data_seed,
        options=options,
    )


def validation_split(data: SparseDataset, val_size: int | None) -> TensorSplit:
    """The validation images every trial is scored on: a fixed stratified subset of
    ``val_size`` images, the same in every worker (``None``: the whole split)."""
    if val_size is None:
        return data.val
    return data.val.stratified_subset(val_size, seed=VAL_SUBSET_SEED)


def eval_batches(
    spec: DataSpec,
    data: SparseDataset,
    split: TensorSplit,
    sparsity: float,
    mask_seed: int,
    device: torch.device | str,
) -> SparseBatches:
    """Batches of ``split`` at ``sparsity`` with masks fixed by ``mask_seed`` (evaluation)."""
    return SparseBatches(
        split,
        sparsity=sparsity,
        batch_size=spec.eval_batch_size,
        device=device,
        mean=data.mean,
        std=data.std,
        seed=mask_seed,
        fixed_masks=True,
    )


def evaluate_at_sparsities(
    model: nn.Module,
    batches: Mapping[float, SparseBatches],
    sparsities: Sequence[float],
    known: Mapping[str, EvalMetrics | None] | None = None,
    autocast: torch.dtype | None = None,
) -> dict[str, EvalMetrics]:
    """Score ``model`` at every sparsity, keyed by ``studies.sparsity_key``; scores in
    ``known`` (this model, the same batches) are reused instead of evaluated again;
    ``autocast`` as in training."""
    known = known or {}
    out: dict[str, EvalMetrics] = {}
    for s in sparsities:
        cached = known.get(sparsity_key(s))
        out[sparsity_key(s)] = cached or evaluate(model, batches[s].epoch(0), autocast)
    return out
