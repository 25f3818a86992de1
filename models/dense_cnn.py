"""The dense CNN baseline: the sparse family's topology with ordinary convolutions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CNNConfig
from .conv_stack import ConvStack
from .errors import ModelInputError

__all__ = ["DenseCNN"]


class DenseCNN(ConvStack):
    """Classifier with :class:`SparseCNN`'s topology (one :class:`ConvStack`), of ``nn.Conv2d``.

    The baseline of Uhrig et al.: an ordinary CNN fed the zero-filled sparse image. The input
    is multiplied by the mask first, so unobserved pixels are exactly 0 whatever the data
    pipeline put there. With ``mask_channel=True`` the mask is also appended as an extra input
    channel (the paper's "ConvNet + mask" variant), so the first layer sees ``in_channels + 1``
    channels. Downsampling is ``nn.MaxPool2d`` at the same places as the sparse family's pools;
    the head is a plain global average pool (a dense network has no notion of observed
    positions) and one linear layer to ``num_classes`` logits.

    Args:
        config: The topology; see :class:`CNNConfig`.
        mask_channel: Append the mask as an extra input channel.

    Call:
        ``model(x, mask)`` with ``x`` (N, in_channels, H, W) and ``mask`` (N, 1, H, W) bool
        or float (``None`` means fully observed) returns logits (N, num_classes).
    """

    def __init__(self, config: CNNConfig, mask_channel: bool = False) -> None:
        super().__init__(
            config,
            in_channels=config.in_channels + (1 if mask_channel else 0),
            conv=nn.Conv2d,
            pool=lambda: nn.MaxPool2d(2, 2, ceil_mode=True),
        )
        self.mask_channel = mask_channel

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Logits ``(N, num_classes)`` for the zero-filled images ``x * mask``."""
        if mask is None:
            mask = torch.ones_like(x[:, :1])
        elif mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2:] != x.shape[2:]:
            raise ModelInputError(
                f"DenseCNN: mask must be (N, 1, H, W) matching x {tuple(x.shape)}, got "
                f"{tuple(mask.shape)}"
            )
        m = mask.to(x.dtype)
        x = x * m
        if self.mask_channel:
            x = torch.cat([x, m], dim=1)  # (N, in_channels + 1, H, W)
        for conv, pool in self.layers():
            x = self.activation(conv(x))
            if pool is not None:
                x = pool(x)
        features = F.adaptive_avg_pool2d(x, self.config.head_grid).flatten(1)  # (N, width * g * g)
        return self.classifier(features)  # (N, num_classes)
