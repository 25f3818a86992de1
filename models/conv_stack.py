"""The topology every CNN family shares: a conv stack, pools at configured layers, a linear head.

Uhrig et al. (3DV 2017) compare sparse and dense networks that differ only in the layer type,
so the stack is built in one place and each family passes in its convolution and pooling
layer. Families keep their own ``forward``: the sparse one threads the mask through every
layer, the dense one does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn

from .activations import make_activation
from .config import CNNConfig

__all__ = ["ConvFactory", "ConvStack", "PoolFactory"]

# ``conv(in_channels, out_channels, kernel_size, padding=...)``: nn.Conv2d, SparseConv2d.
ConvFactory = Callable[..., nn.Module]
# A fresh 2x2, stride-2 pooling layer.
PoolFactory = Callable[[], nn.Module]


class ConvStack(nn.Module):
    """Base of :class:`~models.SparseCNN` and :class:`~models.DenseCNN`: their shared layers.

    Builds, in this order (the order fixes which random numbers each layer's initialization
    draws, so a seeded build gives the same weights in every family that shares a shape):

    - ``convs``: ``config.depth`` convolutions of ``config.width`` channels with the kernels
      of ``config.kernel_sizes`` and 'same' padding ``k // 2``, the first one reading
      ``in_channels`` channels;
    - ``activation``: the configured activation, applied after every convolution;
    - ``pools``: a pooling layer after each layer index in ``config.pool_after``, keyed by
      ``str(index)`` (``nn.ModuleDict`` keys must be strings);
    - ``classifier``: one linear layer from the ``width * head_grid**2`` head features to
      ``num_classes`` logits.

    Args:
        config: The topology; see :class:`CNNConfig`.
        in_channels: Channels the first convolution reads (``config.in_channels`` plus any
            channels a family appends, such as the mask).
        conv: Builds one convolution, called as ``conv(c_in, c_out, k, padding=k // 2)``.
        pool: Builds one pooling layer.
    """

    def __init__(
        self, config: CNNConfig, *, in_channels: int, conv: ConvFactory, pool: PoolFactory
    ) -> None:
        super().__init__()
        self.config = config
        channels = [in_channels] + [config.width] * config.depth
        self.convs = nn.ModuleList(
            conv(c_in, c_out, k, padding=k // 2)
            for c_in, c_out, k in zip(channels[:-1], channels[1:], config.kernel_sizes, strict=True)
        )
        self.activation = make_activation(config.activation)
        self.pools = nn.ModuleDict({str(i): pool() for i in config.pool_after})
        self.classifier = nn.Linear(config.width * config.head_grid**2, config.num_classes)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def layers(self) -> Iterator[tuple[nn.Module, nn.Module | None]]:
        """Each convolution with the pooling layer that follows it (``None`` where none does)."""
        for i, conv in enumerate(self.convs):
            yield conv, self.pools[str(i)] if str(i) in self.pools else None
