"""A tiny learnable task for the networks: horizontal vs vertical stripes, half observed.

Shared by the learnability tests on the CPU (``test_networks.py``) and on CUDA
(``test_cuda.py``), so both train the same thing the same way.
"""

from __future__ import annotations

import torch
from torch import nn


def stripes_task(
    n: int = 64, hw: int = 12, density: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two classes: horizontal vs vertical stripes of random phase, noisy, partly observed.

    Returns ``(x, mask, labels)`` on the CPU: ``x`` (n, 1, hw, hw) is zero where unobserved.
    """
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=gen)
    coords = torch.arange(hw).float()
    phase = torch.rand(n, 1, 1, generator=gen) * 6.28
    rows = torch.sin(coords.view(1, hw, 1) * 1.6 + phase).expand(n, hw, hw)
    cols = torch.sin(coords.view(1, 1, hw) * 1.6 + phase).expand(n, hw, hw)
    images = torch.where(labels.view(n, 1, 1) == 0, rows, cols)
    images = images + 0.2 * torch.randn(n, hw, hw, generator=gen)
    mask = torch.rand(n, 1, hw, hw, generator=gen) < density
    return images.unsqueeze(1) * mask, mask, labels


def training_losses(
    model: nn.Module,
    x: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 40,
    lr: float = 1e-2,
) -> list[float]:
    """Full-batch Adam on ``(x, mask, labels)``; the cross-entropy loss of every step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x, mask), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
