"""Seeded, stratified index splits.

Every split keeps the class proportions of the whole (up to rounding), so a 5k validation set
carved from MNIST's 60k has ~500 images of each digit and a Caltech-101 test split has every
class in proportion to its size. Allocation uses the largest-remainder method so the totals are
exact, and a ``torch.Generator`` on the CPU so the same seed gives the same split everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["allocate_per_class", "stratified_take"]


def allocate_per_class(counts: Tensor, n: int) -> Tensor:
    """How many of ``n`` items to take from each class, proportionally to ``counts``.

    Args:
        counts: Items per class, int64 (K,).
        n: Total to take, ``0 <= n <= counts.sum()``.

    Returns:
        int64 (K,) summing exactly to ``n``, each entry ``<= counts``.
    """
    total = int(counts.sum())
    if not 0 <= n <= total:
        raise ValueError(f"cannot take {n} of {total} items")
    if total == 0:
        return torch.zeros_like(counts)
    exact = counts.double() * n / total
    alloc = exact.floor().long()
    remainder = n - int(alloc.sum())
    if remainder > 0:
        # Largest fractional parts first; stable sort breaks ties by class index.
        frac = exact - alloc.double()
        room = alloc < counts
        order = torch.sort(torch.where(room, -frac, torch.inf), stable=True).indices
        alloc[order[:remainder]] += 1
    return alloc


def stratified_take(labels: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Split the indices of ``labels`` into ``n`` taken and the rest, stratified by class.

    Args:
        labels: int64 (N,) class labels.
        n: Number of indices to take.
        generator: CPU generator deciding which items of each class are taken.

    Returns:
        ``(taken, rest)``: sorted int64 index tensors, disjoint, together ``0..N-1``.
    """
    labels = labels.cpu()
    num_classes = int(labels.max()) + 1 if labels.numel() else 0
    counts = torch.bincount(labels, minlength=num_classes)
    alloc = allocate_per_class(counts, n)
    taken: list[Tensor] = []
    rest: list[Tensor] = []
    for k in range(num_classes):
        members = torch.nonzero(labels == k, as_tuple=True)[0]
        members = members[torch.randperm(len(members), generator=generator)]
        taken.append(members[: int(alloc[k])])
        rest.append(members[int(alloc[k]) :])
    empty = torch.empty(0, dtype=torch.long)
    take = torch.cat(taken).sort().values if taken else empty
    keep = torch.cat(rest).sort().values if rest else empty
    return take, keep
