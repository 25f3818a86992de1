"""The typed, declarative description of one study: data, model, budget and search space.

Following the tuning playbook, a study fixes its *scientific* setting (which model family on
which dataset at which training sparsity: ``sparse_mnist`` and ``dense_mnist`` are separate
studies), tunes the *nuisance* hyperparameters that must be right for a fair comparison (depth,
activation, batch size, learning rate), and holds everything else *fixed* (width, kernel
schedule, training recipe, epoch budget). A definition is data, not code: the runner turns it
into an Optuna study, so adding a study is one new :class:`StudyDefinition` in
``studies/catalog.py``.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from data import Caltech101Options, DatasetName, MNISTOptions
from models import CNNConfig, ModelFamily

from .recipe import DEFAULT_RECIPE, TrainingRecipe

if TYPE_CHECKING:  # a definition only calls trial.suggest_*: no need to import optuna
    import optuna

__all__ = [
    "TEST_MASK_SEED",
    "VAL_MASK_SEED",
    "VAL_SUBSET_SEED",
    "Categorical",
    "DefinitionError",
    "Grid",
    "IntRange",
    "LogFloat",
    "SearchSpace",
    "StudyDefinition",
    "sparsity_key",
]

DatasetOptions = MNISTOptions | Caltech101Options

# Fixed evaluation masks: one seed for validation, another for test, shared by every trial,
# worker, study and experiment, so that scores differ only because the models do.
VAL_MASK_SEED = 1234
TEST_MASK_SEED = 4321
# Which validation images a smaller ``val_size`` keeps: one fixed stratified draw.
VAL_SUBSET_SEED = 0


def sparsity_key(sparsity: float) -> str:
    """Dictionary key for a sparsity level; JSON keys must be strings, so fix one format."""
    return f"{sparsity:g}"


class DefinitionError(ValueError):
    """A study definition or an override of it is invalid (the message says which field)."""


@dataclass(frozen=True)
class IntRange:
    """An integer hyperparameter sampled uniformly from ``low..high`` (both included)."""

    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        if self.step < 1 or self.low > self.high:
            raise DefinitionError(f"bad integer range {self.low}..{self.high} step {self.step}")

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step)

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )

    def describe(self) -> str:
        return f"int {self.low}..{self.high}" + (f" step {self.step}" if self.step != 1 else "")


@dataclass(frozen=True)
class Categorical:
    """A hyperparameter chosen from a fixed tuple of values (strings or integers)."""

    choices: tuple[str, ...] | tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.choices or len(set(self.choices)) != len(self.choices):
            raise DefinitionError(f"categorical choices must be distinct and non-empty: {self}")

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def describe(self) -> str:
        return "{" + ", ".join(str(c) for c in self.choices) + "}"


@dataclass(frozen=True)
class LogFloat:
    """A positive float sampled uniformly in log space (learning rates span decades)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0 < self.low < self.high):
            raise DefinitionError(f"log range needs 0 < low < high, got {self.low}..{self.high}")

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)

    def contains(self, value: Any) -> bool:
        return isinstance(value, float) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"log {self.low:g}..{self.high:g}"


@dataclass(frozen=True)
class SearchSpace:
    """The nuisance hyperparameters every study tunes, each with a typed domain.

    The field names *are* the Optuna parameter names (``depth``, ``activation``,
    ``batch_size``, ``lr`` in storage, reports and the dashboard), in the order every table
    and chart shows them; each field's ``label`` is how a person reads it. The grid, the
    objective and the report all take the names from here.
    """

    depth: IntRange = field(metadata={"label": "depth"})
    activation: Categorical = field(metadata={"label": "activation"})
    batch_size: Categorical = field(metadata={"label": "batch size"})
    lr: LogFloat = field(metadata={"label": "learning rate"})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The parameter names, in display order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def label(cls, name: str) -> str:
        """How ``name`` is labelled in tables and charts (a parameter of another space: as is)."""
        labels = {f.name: f.metadata.get("label", f.name) for f in dataclasses.fields(cls)}
        return labels.get(name, name)

    def domains(self) -> dict[str, IntRange | Categorical | LogFloat]:
        return {name: getattr(self, name) for name in self.names()}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask ``trial`` for every parameter (an enqueued grid point returns its fixed values)."""
        return {name: domain.suggest(trial, name) for name, domain in self.domains().items()}

    def describe(self) -> str:
        return ", ".join(f"{n} {d.describe()}" for n, d in self.domains().items())


@dataclass(frozen=True)
class Grid:
    """The coarse grid run before TPE: the cross product of the values listed per parameter.

    Its points are enqueued once per study; they give TPE well-spread startup observations
    instead of random ones, and give users a readable first comparison. Build it with one
    keyword per search-space parameter, ``Grid.of(depth=(3, 6, 9), activation=(...), ...)``;
    the study definition checks the names against its search space and every value against
    its domain.
    """

    axes: tuple[tuple[str, tuple[Any, ...]], ...]

    @classmethod
    def of(cls, **values: Sequence[Any]) -> Grid:
        """A grid from ``name=(value, ...)`` keywords, in the order given."""
        return cls(tuple((name, tuple(v)) for name, v in values.items()))

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.axes)

    def points(self) -> list[dict[str, Any]]:
        """Every grid point as a parameter dict, in a fixed order (the index is its grid id)."""
        names = self.names()
        values = [v for _, v in self.axes]
        return [dict(zip(names, point, strict=True)) for point in itertools.product(*values)]

    def to_dict(self) -> dict[str, list[Any]]:
        """``{name: [values]}``, the form stored with every study (``StudyDefinition.to_dict``)."""
        return {name: list(v) for name, v in self.axes}


@dataclass(frozen=True)
class StudyDefinition:
    """Everything that defines one study; frozen so a registered study cannot drift.

    Attributes:
        name: Registry key and default Optuna study name.
        description: One line shown by ``--list``.
        dataset: Which dataset to load.
        dataset_options: Options of that dataset (``MNISTOptions`` / ``Caltech101Options``).
        model_family: The scientific variable: sparse CNN, dense CNN, or dense with mask channel.
        train_sparsity: Fraction of pixels dropped while training and for the objective.
        test_sparsities: Sparsities at which every completed trial and the final best
            model are scored (validation per trial, test once at the end).
        epochs: Training epochs per trial (also the pruner's maximum resource).
        search_space: Domains of the tuned nuisance hyperparameters.
        grid: Coarse grid enqueued before TPE (every point must lie in ``search_space``).
        width: Fixed channel width of every conv layer.
        kernel_schedule: Fixed kernel-size schedule name understood by ``models.CNNConfig``.
        pool_after: Fixed layer indices followed by a 2x2 max pool (``models.CNNConfig``);
            must be valid for the smallest depth in the search space. Large images need some.
        head_grid: Fixed grid of the classifier head (``models.CNNConfig.head_grid``).
        train_size: Training examples used per epoch (``None``: the whole training split).
        val_size: Validation images every trial is scored on, per epoch and at the end: a
            fixed stratified subset of the validation split (``None``: all of it). Large
            enough to rank trials, small enough that scoring stays a small part of a trial.
        eval_batch_size: Batch size for validation and test passes (memory only, not tuned).
        data_seed: Seed of the train/validation carve-out and the training subset; fixed per
            study so every trial and every worker scores on the same validation images.
        tpe_random_trials: Random trials TPE runs after the grid before modelling; the grid
            fixes batch size, so a few random points spread it before TPE takes over.
        recipe: The fixed training recipe (optimizer, schedule, loss, augmentation) every
            trial trains with; the tuned ``lr`` is its peak rate.
    """

    name: str
    description: str
    dataset: DatasetName
    dataset_options: DatasetOptions
    model_family: ModelFamily
    train_sparsity: float
    test_sparsities: tuple[float, ...]
    epochs: int
    search_space: SearchSpace
    grid: Grid
    width: int = 16
    kernel_schedule: str = "paper"
    pool_after: tuple[int, ...] = ()
    head_grid: int = 1
    train_size: int | None = None
    val_size: int | None = None
    eval_batch_size: int = 512
    data_seed: int = 0
    tpe_random_trials: int = 4
    recipe: TrainingRecipe = DEFAULT_RECIPE

    # Budget knobs a quick run may change; everything else defines the study itself.
    OVERRIDABLE: ClassVar[frozenset[str]] = frozenset({"epochs", "train_size", "val_size"})

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise DefinitionError(f"study name must be an identifier, got {self.name!r}")
        if not self.description or "\n" in self.description:
            raise DefinitionError(f"study {self.name}: description must be one non-empty line")
        for s in (self.train_sparsity, *self.test_sparsities):
            if not (isinstance(s, float) and 0.0 <= s < 1.0):
                raise DefinitionError(f"study {self.name}: sparsity must be in [0, 1), got {s!r}")
        if not self.test_sparsities or len(set(self.test_sparsities)) != len(self.test_sparsities):
            raise DefinitionError(f"study {self.name}: test sparsities must be distinct, non-empty")
        _check_positive_int(self.name, "epochs", self.epochs)
        _check_positive_int(self.name, "width", self.width)
        _check_positive_int(self.name, "head_grid", self.head_grid)
        _check_positive_int(self.name, "eval_batch_size", self.eval_batch_size)
        if self.train_size is not None:
            _check_positive_int(self.name, "train_size", self.train_size)
        if self.val_size is not None:
            _check_positive_int(self.name, "val_size", self.val_size)
        if self.tpe_random_trials < 0:
            raise DefinitionError(f"study {self.name}: tpe_random_trials must be >= 0")
        if any(i < 0 or i > self.search_space.depth.low - 2 for i in self.pool_after):
            raise DefinitionError(
                f"study {self.name}: pool_after {self.pool_after} must index layers "
                f"0..{self.search_space.depth.low - 2} so every depth in the search space can pool"
            )
        if self.grid.names() != self.search_space.names():
            raise DefinitionError(
                f"study {self.name}: the grid lists {', '.join(self.grid.names())}; it must list "
                f"every search-space parameter, in order: {', '.join(self.search_space.names())}"
            )
        domains = self.search_space.domains()
        for grid_id, point in enumerate(self.grid.points()):
            for param, value in point.items():
                if not domains[param].contains(value):
                    raise DefinitionError(
                        f"study {self.name}: grid point {grid_id} has {param}={value!r} outside "
                        f"the search space ({domains[param].describe()})"
                    )

    def with_overrides(self, overrides: Mapping[str, Any]) -> StudyDefinition:
        """A copy with ``overrides`` applied (quick runs: fewer epochs, a smaller train set).

        Raises:
            DefinitionError: Unknown key, wrong type or out-of-range value.
        """
        unknown = set(overrides) - self.OVERRIDABLE
        if unknown:
            raise DefinitionError(
                f"cannot override {', '.join(sorted(unknown))}: only "
                f"{', '.join(sorted(self.OVERRIDABLE))} can be overridden"
            )
        return dataclasses.replace(self, **overrides)  # __post_init__ re-validates

    def cnn_config(
        self, in_channels: int, num_classes: int, params: Mapping[str, Any]
    ) -> CNNConfig:
        """The network a trial with the tuned ``params`` (depth, activation) trains.

        Raises:
            models.ModelConfigError: The combination is not a valid network.
        """
        return CNNConfig(
            in_channels=in_channels,
            num_classes=num_classes,
            depth=params["depth"],
            activation=params["activation"],
            width=self.width,
            kernel_schedule=self.kernel_schedule,
            pool_after=self.pool_after,
            head_grid=self.head_grid,
        )

    def summary(self) -> list[str]:
        """What the study trains, costs and searches, in a few lines (``hpo.run --list``)."""
        tested = ", ".join(f"{s:g}" for s in self.test_sparsities)
        images = "all" if self.train_size is None else f"{self.train_size:,}"
        val = "all" if self.val_size is None else f"{self.val_size:,}"
        size = getattr(self.dataset_options, "image_size", None)
        pixels = f" {size}x{size} px" if size else ""
        return [
            f"{self.dataset.value}{pixels}, {self.model_family.value} CNN ({self.width} channels, "
            f"{self.kernel_schedule} kernels) trained at sparsity {self.train_sparsity:g}, "
            f"tested at {tested}",
            f"budget per trial: {self.epochs} epochs x {images} training images, scored on "
            f"{val} validation images",
            f"training recipe: {self.recipe.describe()}",
            f"search: {self.search_space.describe()}; grid of {len(self.grid.points())} "
            f"points first, then {self.tpe_random_trials} random, then TPE",
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored on the study so results record what produced them."""
        return _jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


def _check_positive_int(study: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DefinitionError(f"study {study}: {name} must be a positive integer, got {value!r}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Grid):
        return _jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
