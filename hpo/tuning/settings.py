"""The resolved settings of one run, frozen and picklable: ``--workers K`` hands a copy to
each spawned process (``dataclasses.replace`` gives each its seed and device), and nothing
looks the definition, the storage, the device or the seed up again."""

from __future__ import annotations

import dataclasses
import math
import secrets
from dataclasses import dataclass
from typing import Any

from studies import StudyDefinition

from ..errors import InvalidSettingError
from ..records import StudyRecord
from ..runtime.execution import Execution
from ..runtime.storage_url import StorageTarget

__all__ = ["ALL", "DEFAULT_PRUNER", "DRY_RUN", "PRUNERS", "RunSettings", "fresh_seed"]

PRUNERS = ("asha", "median", "hyperband", "none")  # what each does: hpo.tuning.pruning
DEFAULT_PRUNER = "asha"
ALL = "all"  # --val-size all: score every trial on the whole validation split


@dataclass(frozen=True)
class RunSettings:
    """One worker's run of one study, as the command line resolved it.

    :meth:`definition` applies the overrides (``None``: keep; ``val_size="all"``: the whole
    validation split). ``seed`` seeds the sampler and trial ``i`` trains with ``seed + i``.
    """

    study: StudyDefinition
    n_trials: int
    storage: StorageTarget
    device: str = "cpu"
    seed: int = 0
    study_name: str | None = None
    data_dir: str | None = None
    download: bool = False
    epochs: int | None = None
    train_size: int | None = None
    val_size: int | str | None = None
    timeout: float | None = None
    pruner: str = DEFAULT_PRUNER
    show_progress: bool = True
    workers: int = 1
    retrain_from: str | None = None
    dry_run: bool = False
    test_size: int | None = None
    precision: str = "fp32"
    compile: bool = False
    layout: str = "auto"
    cudnn_benchmark: bool = False

    def __post_init__(self) -> None:
        for flag, value in (("--n-trials", self.n_trials), ("--workers", self.workers)):
            _positive_int(flag, value)
        for flag, value in (("--epochs", self.epochs), ("--train-size", self.train_size)):
            if value is not None:
                _positive_int(flag, value)
        if self.val_size is not None and self.val_size != ALL:
            _positive_int("--val-size", self.val_size)
        if self.test_size is not None:
            _positive_int("test_size", self.test_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidSettingError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise InvalidSettingError(
                f"--timeout must be a positive number of seconds, got {self.timeout!r}"
            )
        if self.pruner not in PRUNERS:
            raise InvalidSettingError(f"--pruner must be one of {', '.join(PRUNERS)}")
        if self.study_name is not None and not self.study_name.strip():
            raise InvalidSettingError("--study-name must not be empty")
        if self.retrain_from is not None and not self.retrain_from.strip():
            raise InvalidSettingError("--retrain-best must name a study, e.g. sparse_mnist")
        if self.retrain_from is not None and self.retrain_from == self.optuna_study_name:
            raise InvalidSettingError(
                f"--retrain-best {self.retrain_from} would write into the study it reads; "
                "pass another --study-name (default: <study>_retrain)"
            )
        object.__setattr__(self, "_definition", self.study.with_overrides(self.overrides()))
        self.execution()  # an invalid override or precision fails here, before any storage

    @property
    def optuna_study_name(self) -> str:
        if self.study_name:
            return self.study_name
        return f"{self.retrain_from}_retrain" if self.retrain_from else self.study.name

    def overrides(self) -> dict[str, Any]:
        """The definition fields this run overrides (only those given on the command line)."""
        values = {"epochs": self.epochs, "train_size": self.train_size, "val_size": self.val_size}
        given = {k: v for k, v in values.items() if v is not None}
        if given.get("val_size") == ALL:
            given["val_size"] = None  # the definition's None: the whole validation split
        return given

    def definition(self) -> StudyDefinition:
        """The study definition with this run's overrides applied (resolved once)."""
        return self._definition  # type: ignore[attr-defined]

    def execution(self) -> Execution:
        return Execution(self.precision, self.compile, self.layout, self.cudnn_benchmark)

    def record(self) -> StudyRecord:
        """What two runs must share to share the study (not the seed, device, data folder or
        trial count: workers differ in them, and a larger N extends the study)."""
        return StudyRecord(
            definition=self.definition().to_dict(),
            overrides=self.overrides(),
            pruner=self.pruner,
            precision=self.precision,
            retrain_from=self.retrain_from,
            kind="retrain" if self.retrain_from else "search",
        )

    def for_dry_run(self, storage: StorageTarget) -> RunSettings:
        """The smoke-test preset (:data:`DRY_RUN`; sizes given on the command line win), in a
        temporary ``storage``."""
        given = {k: getattr(self, k) for k in ("epochs", "train_size", "val_size")}
        sizes = {**DRY_RUN, **{k: v for k, v in given.items() if v is not None}}
        return dataclasses.replace(self, storage=storage, dry_run=True, **sizes)


# The dry run checks the plumbing, not the model: small sizes everywhere (the whole MNIST test
# split at four sparsities was most of a dry run's time).
DRY_RUN = {"n_trials": 2, "epochs": 1, "train_size": 256, "val_size": 500, "test_size": 1000}
DRY_RUN_HELP = (
    "smoke test: 2 trials of 1 epoch on 256 examples, scored on 500 validation images and "
    "1,000 test images, in a temporary storage that is deleted afterwards"
)


def fresh_seed() -> int:
    """A seed for a worker started without ``--seed``: replicas must not explore alike."""
    return secrets.randbelow(2**31)


def _positive_int(flag: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSettingError(f"{flag} must be an integer >= 1, got {value!r}")
