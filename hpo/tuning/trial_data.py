"""The data a worker trains every trial on, and the fixed-mask batches that score them.

Loaded once per worker: every trial and every worker trains on the same training subset and
is scored on the same validation images with the same masks (``studies.VAL_MASK_SEED``), so
scores differ only because the models do. The test split is scored once, for the best trial,
with its own masks (``studies.TEST_MASK_SEED``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from data import DatasetName, SparseBatches, SparseDataset, TensorSplit, load_dataset
from studies import VAL_SUBSET_SEED, StudyDefinition

from ..training import EvalMetrics, evaluate
from .keys import sparsity_key

__all__ = ["eval_batches", "evaluate_at_sparsities", "load_trial_data", "validation_split"]


def load_trial_data(
    definition: StudyDefinition, data_dir: str | None, download: bool
) -> SparseDataset:
    """Load the study's dataset once per worker, cut to the definition's ``train_size``.

    The training subset is stratified and drawn with the definition's ``data_seed`` (by
    ``data/``), so all trials and workers train and validate on the same examples.
    """
    options = definition.dataset_options
    if definition.train_size is not None:
        options = dataclasses.replace(options, train_size=definition.train_size)
    return load_dataset(
        DatasetName(definition.dataset),
        data_dir=data_dir,
        download=download,
        seed=definition.data_seed,
        options=options,
    )


def validation_split(definition: StudyDefinition, data: SparseDataset) -> TensorSplit:
    """The validation images every trial is scored on: ``definition.val_size`` of them.

    A fixed stratified subset of the validation split, the same in every worker; the whole
    split when ``val_size`` is ``None`` or not smaller than it.
    """
    if definition.val_size is None:
        return data.val
    return data.val.stratified_subset(definition.val_size, seed=VAL_SUBSET_SEED)


def eval_batches(
    definition: StudyDefinition,
    data: SparseDataset,
    split: TensorSplit,
    sparsity: float,
    mask_seed: int,
    device: torch.device,
) -> SparseBatches:
    """Batches of ``split`` at ``sparsity`` with masks fixed by ``mask_seed`` (evaluation)."""
    return SparseBatches(
        split,
        sparsity=sparsity,
        batch_size=definition.eval_batch_size,
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
) -> dict[str, EvalMetrics]:
    """Score ``model`` at every sparsity, keyed by :func:`~hpo.tuning.keys.sparsity_key`.

    ``known`` holds scores already computed for this model on the same batches; they are
    reused instead of evaluated again.
    """
    known = known or {}
    out: dict[str, EvalMetrics] = {}
    for s in sparsities:
        k = sparsity_key(s)
        cached = known.get(k)
        out[k] = cached if cached is not None else evaluate(model, batches[s].epoch(0))
    return out
