"""Fixed-budget comparison experiments (issue 7): sparse CNN vs dense CNN vs dense CNN + mask.

A study *tunes* one model family; an experiment *compares* families at one fixed, shared
configuration: the same architecture, optimizer, epochs, seeds, training subset and the same
fixed evaluation masks for every model, so differences come from the layer type alone. Each run
trains one (family, training sparsity, seed) and is scored on the test split at every test
sparsity, which gives both the train == test table and the train != test invariance heatmap
from one set of trained models. Adding an experiment is one new definition in ``EXPERIMENTS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from data import Caltech101Options, DatasetName, MNISTOptions
from models import CNNConfig, ModelFamily

from .registry import DuplicateStudyError, UnknownStudyError

__all__ = ["EXPERIMENTS", "ExperimentDefinition", "get_experiment"]

ALL_FAMILIES = (ModelFamily.SPARSE, ModelFamily.DENSE, ModelFamily.DENSE_MASK)


@dataclass(frozen=True)
class ExperimentDefinition:
    """One comparison experiment.

    Attributes:
        name: Registry key and the stem of the output files.
        description: One line for ``--list`` and the results page.
        dataset: Which dataset.
        dataset_options: Its options (image size, training subset...).
        families: Model families compared.
        train_sparsities: One set of models is trained per training sparsity.
        test_sparsities: Every model is scored on the test split at each of these.
        seeds: One run per seed (model init, training masks and batch order).
        epochs: Training epochs of every run.
        batch_size: Training batch size.
        lr: Adam learning rate.
        depth, activation, width, pool_after, head_grid: The shared architecture (see
            ``CNNConfig``).
    """

    name: str
    description: str
    dataset: DatasetName
    dataset_options: MNISTOptions | Caltech101Options
    train_sparsities: tuple[float, ...]
    test_sparsities: tuple[float, ...]
    families: tuple[ModelFamily, ...] = ALL_FAMILIES
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 4
    batch_size: int = 128
    lr: float = 1e-3
    depth: int = 6
    activation: str = "relu"
    width: int = 16
    pool_after: tuple[int, ...] = ()
    head_grid: int = 4

    def cnn_config(self, in_channels: int, num_classes: int) -> CNNConfig:
        """The architecture every family of this experiment is built with."""
        return CNNConfig(
            in_channels=in_channels,
            num_classes=num_classes,
            depth=self.depth,
            activation=self.activation,
            width=self.width,
            pool_after=self.pool_after,
            head_grid=self.head_grid,
        )


_MNIST_TEST = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)

_DEFINITIONS: tuple[ExperimentDefinition, ...] = (
    ExperimentDefinition(
        name="mnist_sparsity",
        description=(
            "MNIST: sparse vs dense vs dense+mask, trained at 0.5/0.7/0.8/0.9, tested at "
            "0.3-0.95 (paper stack 11-7-5-3-3-1, 16 channels, pool after layer 2, 4x4 head)"
        ),
        dataset=DatasetName.MNIST,
        dataset_options=MNISTOptions(train_size=10_000),
        train_sparsities=(0.5, 0.7, 0.8, 0.9),
        test_sparsities=_MNIST_TEST,
        epochs=3,
        lr=3e-3,
        pool_after=(1,),
    ),
    ExperimentDefinition(
        # The same comparison at the two ends of the range with the whole 55k training split
        # and twice the epochs (11x the image passes of mnist_sparsity): separates what the
        # small CPU budget costs from what the layer type costs.
        name="mnist_full_budget",
        description=(
            "MNIST, whole 55k training split, 6 epochs: sparse vs dense vs dense+mask trained "
            "at 0.5 and 0.9 (same architecture as mnist_sparsity), one seed"
        ),
        dataset=DatasetName.MNIST,
        dataset_options=MNISTOptions(),
        train_sparsities=(0.9, 0.5),
        test_sparsities=_MNIST_TEST,
        seeds=(0,),
        epochs=6,
        lr=3e-3,
        pool_after=(1,),
    ),
    ExperimentDefinition(
        name="caltech101_sparsity",
        description=(
            "Caltech-101 at 70% sparsity, 64x64, 100 images/class: sparse vs dense vs dense+mask"
        ),
        dataset=DatasetName.CALTECH101,
        dataset_options=Caltech101Options(image_size=64, max_per_class=100),
        train_sparsities=(0.7,),
        test_sparsities=(0.5, 0.7, 0.8, 0.9),
        epochs=15,
        batch_size=64,
        depth=6,
        width=32,
        pool_after=(0, 1, 2),
    ),
)


def _registry() -> dict[str, ExperimentDefinition]:
    experiments: dict[str, ExperimentDefinition] = {}
    for definition in _DEFINITIONS:
        if definition.name in experiments:
            raise DuplicateStudyError(f"experiment {definition.name!r} is registered twice")
        experiments[definition.name] = definition
    return experiments


EXPERIMENTS: tuple[str, ...] = tuple(d.name for d in _DEFINITIONS)


def get_experiment(name: str) -> ExperimentDefinition:
    """The experiment called ``name`` (raises :class:`UnknownStudyError` listing valid names)."""
    experiments = _registry()
    if name not in experiments:
        raise UnknownStudyError(
            f"unknown experiment {name!r}; registered experiments: {', '.join(sorted(experiments))}"
        )
    return experiments[name]
