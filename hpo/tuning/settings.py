"""The resolved settings of one run: what the command line and the environment asked for.

:class:`RunSettings` is a frozen, picklable dataclass, because ``--workers K`` hands one copy
to each of K spawned processes (``dataclasses.replace`` gives each its own seed and device).
It carries the study definition itself, resolved once at the entry point from the registry the
entry point was given, so a worker -- in this process, a spawned one, or a test -- never looks
a name up again. The sampler and the pruner are rebuilt inside each worker from these values.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from studies import StudyDefinition

from ..errors import InvalidSettingError
from ..runtime.execution import Execution

__all__ = ["ALL", "DEFAULT_PRUNER", "PRUNERS", "RunSettings", "fresh_seed"]

# The --pruner choices (what each does: hpo.tuning.pruning) and the default, chosen by
# bench/search_efficiency.py.
PRUNERS = ("asha", "median", "hyperband", "none")
DEFAULT_PRUNER = "asha"

ALL = "all"  # --val-size all: score every trial on the whole validation split


@dataclass(frozen=True)
class RunSettings:
    """One worker's run of one study.

    Attributes:
        study: The registered study definition (before this run's overrides).
        n_trials: Finished (complete + pruned) trials the study must end with, over all workers.
        storage_url: SQLAlchemy URL of the shared Optuna storage.
        device: Torch device string, already validated by ``hpo.runtime.device``.
        seed: This worker's seed: seeds the sampler, and ``seed + trial.number`` seeds torch.
        study_name: Optuna study name; defaults to ``study.name``. A different name keeps a
            quick run with overrides apart from the real study in the same storage.
        data_dir: Root of the dataset archives (``None``: ``HPO_DATA_DIR`` / the default).
        download: Whether the data loader may download missing archives.
        epochs: Override of the definition's epoch budget (``None``: keep it).
        train_size: Override of the number of training examples (``None``: keep it).
        val_size: Override of the validation images scored per trial: a number, or ``"all"``
            for the whole validation split (``None``: keep the definition's).
        timeout: Seconds after which this worker starts no new trial (``None``: no limit).
        pruner: One of ``hpo.tuning.pruning.PRUNERS``.
        show_progress: Draw progress bars (they are also hidden when stderr is not a TTY).
        grid_wait_seconds: How long a worker that did not create the study waits for the
            creator to finish queuing the grid before assuming it died and repairing the queue.
        workers: Worker processes to start on this machine (``--workers K``); each spawned
            worker gets a copy with ``workers=1`` and its own seed and device.
        dry_run: A smoke test in a temporary storage that is deleted afterwards.
        test_size: Test images the final step scores the best trial on, a fixed stratified
            subset (``None``: the whole test split; the dry run checks plumbing on fewer).
        precision: ``fp32`` or ``bf16`` (autocast; see ``hpo.runtime.device.Execution``).
        compile: Compile the networks with ``torch.compile`` (CUDA graphs on a GPU).
        retrain_from: Name of a finished study in the same storage. Instead of searching,
            every trial trains that study's best configuration (with seed ``seed + i``),
            usually with a larger budget; see :mod:`hpo.tuning.study_setup`.
    """

    study: StudyDefinition
    n_trials: int
    storage_url: str
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
    grid_wait_seconds: float = 120.0
    workers: int = 1
    retrain_from: str | None = None
    dry_run: bool = False
    test_size: int | None = None
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.study, StudyDefinition):
            raise TypeError(f"RunSettings.study must be a StudyDefinition, got {self.study!r}")
        _positive_int("--n-trials", self.n_trials)
        _positive_int("--workers", self.workers)
        if self.epochs is not None:
            _positive_int("--epochs", self.epochs)
        if self.train_size is not None:
            _positive_int("--train-size", self.train_size)
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
            raise InvalidSettingError(
                f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}"
            )
        if self.study_name is not None and not self.study_name.strip():
            raise InvalidSettingError("--study-name must not be empty")
        if self.retrain_from is not None and not self.retrain_from.strip():
            raise InvalidSettingError("--retrain-best must name a study, e.g. sparse_mnist")
        if self.retrain_from is not None and self.retrain_from == self.optuna_study_name:
            raise InvalidSettingError(
                f"--retrain-best {self.retrain_from} would write into the study it reads; "
                "pass another --study-name (default: <study>_retrain)"
            )
        self.definition()  # an invalid override fails here, before any storage is touched
        self.execution()

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
        """The study definition with this run's overrides applied (and validated)."""
        return self.study.with_overrides(self.overrides())

    def execution(self) -> Execution:
        """How the trials run on the device (precision, compilation)."""
        return Execution(precision=self.precision, compile=self.compile)

    def resolved_config(self) -> dict[str, Any]:
        """What must be identical for two runs to share one study (stored as keys.DEFINITION).

        The seed, device, data directory and trial count are deliberately absent: workers on
        different machines differ in them, and raising ``--n-trials`` extends a study.
        """
        config: dict[str, Any] = {
            "definition": self.definition().to_dict(),
            "overrides": self.overrides(),
            "pruner": self.pruner,
        }
        if self.retrain_from is not None:  # absent otherwise: older stored studies still match
            config["retrain_from"] = self.retrain_from
        if self.precision != "fp32":  # bf16 scores are not fp32 scores: another study
            config["precision"] = self.precision
        return config


def fresh_seed() -> int:
    """A seed for a run started without ``--seed``: distinct for every worker started alone.

    Several machines or containers started with the same command would otherwise seed their
    samplers alike and propose the same points; the seed is logged and stored on every trial
    (``keys.WORKER_SEED``), so any worker can be reproduced with ``--seed``.
    """
    return secrets.randbelow(2**31)


def _positive_int(flag: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSettingError(f"{flag} must be an integer >= 1, got {value!r}")
