"""Typed, validated configuration shared by the sparse and dense CNN families.

Plain data, no torch: study definitions, checkpoints and reports describe networks with it
without importing the networks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import ModelConfigError

__all__ = ["ACTIVATIONS", "CNNConfig", "MAX_DEPTH", "MIN_DEPTH", "PAPER_KERNELS", "ModelFamily"]

# Every activation maps 0 to 0, so zero-filled regions stay zero through a dense network.
ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu", "elu")


class ModelFamily(StrEnum):
    """Which network a study trains; every family is called as ``model(x, mask)``."""

    SPARSE = "sparse"  # SparseCNN
    DENSE = "dense"  # DenseCNN on the zero-filled image
    DENSE_MASK = "dense_mask"  # DenseCNN with the mask as an extra input channel


# Uhrig et al. (3DV 2017): 11, 7, 5, 3, 3 then a 1x1; deeper stacks continue with 3x3.
PAPER_KERNELS: tuple[int, ...] = (11, 7, 5, 3, 3, 3, 3, 3)
MIN_DEPTH = 3
MAX_DEPTH = 9


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CNNConfig:
    """Topology of a :class:`~models.SparseCNN` / :class:`~models.DenseCNN`.

    Both families build the identical stack from one config, so a sparse/dense comparison
    differs only in the layer type.

    Attributes:
        in_channels: Image channels (1 for MNIST, 3 for Caltech-101).
        num_classes: Number of logits the network emits.
        depth: Number of convolution layers, ``MIN_DEPTH``..``MAX_DEPTH`` (the tuned "number
            of layers"); the last one is always a 1x1.
        activation: One of ``"relu"``, ``"leaky_relu"``, ``"elu"``.
        width: Channels of every convolution layer.
        kernel_schedule: ``"paper"`` (the first ``depth - 1`` kernels from
            :data:`PAPER_KERNELS`, then a 1x1, so ``depth=6`` is the paper's 11, 7, 5, 3, 3,
            1 stack) or an explicit tuple of ``depth`` odd kernel sizes. Padding is ``k // 2``
            so every layer keeps the spatial size.
        pool_after: Indices of layers (``0..depth - 2``) followed by a 2x2, stride-2 max pool
            (sparse-aware in the sparse family: features and mask are pooled together).
            Default none: the paper's stack has no downsampling; large inputs such as 150x150
            Caltech-101 images need some to be affordable.
        head_grid: The head averages the last feature map over a ``head_grid`` x ``head_grid``
            grid of cells (over observed positions only, in the sparse family) and maps the
            ``width * head_grid**2`` features to the logits with one linear layer. 1 is a global
            average: fully translation-invariant but blind to *where* strokes are, which makes
            digits slow to learn from a few hundred steps; 4 keeps a coarse layout at the cost
            of ``16 * width * num_classes`` more weights. Always ``num_classes`` logits.
    """

    in_channels: int
    num_classes: int
    depth: int
    activation: str = "relu"
    width: int = 16
    kernel_schedule: str | tuple[int, ...] = "paper"
    pool_after: tuple[int, ...] = ()
    head_grid: int = 1

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes", "width", "head_grid"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ModelConfigError(f"CNNConfig.{name} must be an int >= 1, got {value!r}")
        if not _is_int(self.depth) or not MIN_DEPTH <= self.depth <= MAX_DEPTH:
            raise ModelConfigError(
                f"CNNConfig.depth must be an int in {MIN_DEPTH}..{MAX_DEPTH}, got {self.depth!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise ModelConfigError(
                f"CNNConfig.activation {self.activation!r} is unknown; valid: "
                f"{', '.join(ACTIVATIONS)}"
            )
        schedule = self.kernel_schedule
        if isinstance(schedule, str):
            if schedule != "paper":
                raise ModelConfigError(
                    f"CNNConfig.kernel_schedule must be 'paper' or a tuple of {self.depth} odd "
                    f"kernel sizes, got {schedule!r}"
                )
        else:
            schedule = tuple(schedule) if isinstance(schedule, list | tuple) else schedule
            if (
                not isinstance(schedule, tuple)
                or len(schedule) != self.depth
                or not all(_is_int(k) and k >= 1 and k % 2 == 1 for k in schedule)
            ):
                raise ModelConfigError(
                    f"CNNConfig.kernel_schedule must be 'paper' or a tuple of depth={self.depth} "
                    f"odd kernel sizes (odd so 'same' padding keeps the size), got "
                    f"{self.kernel_schedule!r}"
                )
            object.__setattr__(self, "kernel_schedule", schedule)
        pools = self.pool_after
        pools = tuple(pools) if isinstance(pools, list | tuple) else pools
        if (
            not isinstance(pools, tuple)
            or not all(_is_int(i) and 0 <= i <= self.depth - 2 for i in pools)
            or list(pools) != sorted(set(pools))
        ):
            raise ModelConfigError(
                f"CNNConfig.pool_after must be increasing, distinct layer indices in "
                f"0..{self.depth - 2} (pooling after the last layer is pointless before the "
                f"global pool), got {self.pool_after!r}"
            )
        object.__setattr__(self, "pool_after", pools)

    @property
    def kernel_sizes(self) -> tuple[int, ...]:
        """The resolved kernel size of each of the ``depth`` layers."""
        if self.kernel_schedule == "paper":
            return PAPER_KERNELS[: self.depth - 1] + (1,)
        return self.kernel_schedule  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists); :meth:`from_dict` reads it back."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CNNConfig:
        """Build a config from a dict, e.g. one saved with a trial.

        Raises:
            ModelConfigError: A key is unknown or a required one is missing (and every
                validation error of the constructor).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ModelConfigError(
                f"CNNConfig: unknown key(s) {', '.join(unknown)}; valid: {', '.join(names)}"
            )
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in values
        ]
        if required:
            raise ModelConfigError(f"CNNConfig: missing required key(s) {', '.join(required)}")
        return cls(**values)
