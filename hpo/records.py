"""What hpo stores on studies and trials (as JSON): the names, and the typed records behind
them, each with a ``to_dict`` and a ``from_dict`` that says in one line what is wrong. No torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies import SearchSpace, sparsity_key

from .errors import CheckpointError

__all__ = ["CheckpointConfig", "StudyRecord", "TrialCounts", "metrics_of", "sparsity_key"]

# --- trial user attributes ------------------------------------------------------------------
PHASE: Final = "phase"  # what proposed the trial: grid, random, tpe, retrain or experiment
PHASE_GRID: Final = "grid"
PHASE_RANDOM: Final = "random"
PHASE_TPE: Final = "tpe"
PHASE_RETRAIN: Final = "retrain"
PHASE_EXPERIMENT: Final = "experiment"
GRID_ID: Final = "grid_id"  # index in the queue the study was created with
VAL_METRICS: Final = "val_metrics"  # {"0.9": {"accuracy": float, "mae": float}, ...}
TEST_METRICS: Final = "test_metrics"  # the same on the test split (experiments; study: best)
N_PARAMS: Final = "n_params"
TRAIN_SECONDS: Final = "train_seconds"  # training + per-epoch validation
VALIDATION_SECONDS: Final = "validation_seconds"
EVAL_SECONDS: Final = "eval_seconds"  # scoring the kept weights at every test sparsity
TRAIN_LOSSES: Final = "train_losses"
TRAIN_IMAGES: Final = "train_images"
MEMORY: Final = "memory"  # {"rss_mb", "peak_rss_mb", "gpu_peak_mb"}: every state; GPU: own peak
EXECUTION: Final = "execution"  # {"precision", "compile", "layout", "cudnn_benchmark"} it ran with
FAIL_REASON: Final = "fail_reason"  # one line: why the trial failed or was pruned
INTERRUPTED: Final = "interrupted"  # the fail reason of a trial stopped by Ctrl-C
TERMINATED: Final = "terminated"  # by SIGTERM (docker stop, scancel, Kubernetes)
NO_SPACE: Final = "no space left on device"  # its reason's start when the disk was full
SEED: Final = "seed"  # the trial's training seed
WORKER_SEED: Final = "worker_seed"
WORKER: Final = "worker"  # "<host>:<pid>"
DEVICE: Final = "device"
MODEL_ARTIFACT: Final = "model_artifact_id"

# --- study user attributes ------------------------------------------------------------------
CONFIG: Final = "definition"  # a StudyRecord (the key predates the record's name)
BEST_TRIAL: Final = "best_trial_number"
BEST_MODEL_ARTIFACT: Final = "best_model_artifact_id"
COST_ESTIMATE: Final = "cost_estimate"  # {device and execution: CostEstimate}, probed once
FINAL_STEP: Final = "final_step"  # {"finished": n, "best": trial}
RETRAIN_SOURCE: Final = "retrain_source"  # {"study", "trial", "value", "params"}
METRIC_NAME: Final = "validation accuracy"  # the objective, as charts name it

RECORD_VERSION: Final = 2

_STATES = tuple(TrialState[name] for name in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"))


@dataclass(frozen=True)
class TrialCounts:
    """Trials of a study by state."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> TrialCounts:
        states = [t.state for t in trials]
        return cls(*(states.count(s) for s in _STATES))  # in the order of the fields

    @property
    def finished(self) -> int:
        """Trials that count towards ``--n-trials``: complete + pruned."""
        return self.complete + self.pruned

    @property
    def total(self) -> int:
        return self.finished + self.failed + self.running + self.waiting

    def as_rows(self) -> list[tuple[str, int]]:
        return [(s.name, n) for s, n in zip(_STATES, dataclasses.astuple(self), strict=True)]


def _mapping(value: Any, what: str, error: type[Exception]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise error(f"{what} is not a mapping but {type(value).__name__}")
    return dict(value)


@dataclass(frozen=True)
class StudyRecord:
    """The stored configuration of a study: what two runs must share to share the study."""

    definition: dict[str, Any]  # the study's (or experiment's) definition, overrides applied
    overrides: dict[str, Any] = field(default_factory=dict)  # budget options given
    pruner: str | None = None  # None for an experiment
    precision: str = "fp32"  # or bf16: bf16 scores are not fp32 scores
    retrain_from: str | None = None  # the study whose best configuration this one retrains
    kind: str = "search"  # or retrain, experiment

    def to_dict(self) -> dict[str, Any]:
        """JSON form; fields at their default are left out, as studies stored before them."""
        out: dict[str, Any] = {"definition": self.definition, "overrides": self.overrides}
        out["pruner"] = self.pruner
        if self.precision != "fp32":
            out["precision"] = self.precision
        if self.retrain_from is not None:
            out["retrain_from"] = self.retrain_from
        if self.kind == "experiment":
            out["kind"] = self.kind
        out["version"] = RECORD_VERSION
        return out

    @classmethod
    def from_dict(cls, value: Any) -> StudyRecord:
        """Read a stored record (version 1 had no ``version`` and no ``kind``); ``ValueError``
        if it is not one this version of hpo can read."""
        stored = _mapping(value, "the stored study configuration", ValueError)
        definition = stored.get("definition", stored)  # a bare definition: a hand-made study
        retrain = stored.get("retrain_from")
        return cls(
            definition=_mapping(definition, "its definition", ValueError),
            overrides=dict(stored.get("overrides") or {}),
            pruner=stored.get("pruner"),
            precision=stored.get("precision", "fp32"),
            retrain_from=retrain,
            kind=stored.get("kind") or ("retrain" if retrain else "search"),
        )

    # What the readers need of the definition, typed once here.
    @property
    def name(self) -> str | None:
        return self.definition.get("name")

    @property
    def train_sparsity(self) -> float | None:
        value = self.definition.get("train_sparsity")
        return float(value) if value is not None else None

    @property
    def test_sparsities(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.definition.get("test_sparsities", ()))

    @property
    def param_order(self) -> tuple[str, ...]:
        return tuple(self.definition.get("search_space") or SearchSpace.names())

    def differences(self, other: StudyRecord) -> list[str]:
        """``key=old (now new)`` for every resolved setting in which ``other`` differs; a
        definition field that is ``None`` counts as absent, so older studies still resume."""
        old, new = _flatten(self._comparable()), _flatten(other._comparable())
        return [
            f"{k}={old.get(k, '<unset>')!r} (now {new.get(k, '<unset>')!r})"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ]

    def _comparable(self) -> dict[str, Any]:
        from studies import BASELINE_RECIPE  # studies stored before recipes used this one

        definition = {"recipe": BASELINE_RECIPE.to_dict(), **self.definition}
        out = {k: v for k, v in self.to_dict().items() if k not in ("overrides", "version")}
        out["definition"] = {k: v for k, v in definition.items() if v is not None}
        return json.loads(json.dumps(out))  # compare like with like: stored values went via JSON


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


@dataclass(frozen=True)
class CheckpointConfig:
    """What a checkpoint needs to rebuild and feed its network, and where it came from."""

    model_family: str  # sparse, dense or dense_mask
    cnn_config: dict[str, Any]  # models.CNNConfig.to_dict()
    mean: list[float]  # per-channel input normalization of the training batches
    std: list[float]
    definition: dict[str, Any]  # the study's: dataset, options, data seed, sparsities, ...
    params: dict[str, Any] | None = None  # the trial's hyperparameters
    trial_number: int | None = None
    source: dict[str, Any] | None = None  # hpo.export adds study, trial, value, storage

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, value: Any, what: str = "checkpoint") -> CheckpointConfig:
        """Read a checkpoint's config; ``CheckpointError`` names in one line a required field
        that is missing, unknown or of the wrong type."""
        config = _mapping(value, f"{what}: its config", CheckpointError)
        fields = dataclasses.fields(cls)
        missing = sorted(f.name for f in fields if f.default is not None and f.name not in config)
        unknown = sorted(set(config) - {f.name for f in fields})
        if missing or unknown:
            problem = f"lacks {', '.join(missing)}" if missing else f"has unknown {unknown}"
            raise CheckpointError(f"{what}: its config {problem}; not written by hpo")
        try:
            record = cls(**config)
            if len(record.mean) != len(record.std) or not record.mean:
                raise TypeError("mean and std must have one value per channel")
            if not all(math.isfinite(m) for m in record.mean) or not all(
                math.isfinite(s) and s > 0 for s in record.std
            ):
                raise TypeError("mean must be finite and std finite and positive")
            for part in ("cnn_config", "definition"):
                _mapping(getattr(record, part), part, TypeError)
            for key in ("dataset", "dataset_options", "data_seed", "test_sparsities"):
                record.definition[key]  # noqa: B018 -- evaluate reads these
        except (TypeError, KeyError) as e:
            raise CheckpointError(f"{what}: malformed config ({e}); not written by hpo") from e
        return record


def store_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Set each of ``attrs`` as a user attribute of ``trial``."""
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def metrics_of(value: Any) -> dict[str, dict[str, float]]:
    """A stored ``{sparsity: {metric: value}}`` dict, or ``{}`` if absent or malformed."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): dict(v) for k, v in value.items() if isinstance(v, Mapping)}
