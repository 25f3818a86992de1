"""Names of the attributes the study runner stores on trials and studies.

The runner writes them, the report and the dashboard read them; keeping the names in one
module means a rename cannot silently break a reader.
"""

from __future__ import annotations

from typing import Final

# The one format of a sparsity as a dictionary key (defined with the sparsities, in studies).
from studies import sparsity_key as sparsity_key

# --- trial user attributes -------------------------------------------------
PHASE: Final = "phase"  # "grid", "random", "tpe" or "retrain": what proposed the trial
PHASE_GRID: Final = "grid"
PHASE_RANDOM: Final = "random"  # a startup draw of the sampler (or a random-search trial)
PHASE_TPE: Final = "tpe"  # a proposal of TPE's model
PHASE_RETRAIN: Final = "retrain"  # a copy of another study's best configuration (--retrain-best)
GRID_ID: Final = "grid_id"  # index in the queue the study was created with (grid or retrain)
VAL_METRICS: Final = "val_metrics"  # {"0.9": {"accuracy": float, "mae": float}, ...}
N_PARAMS: Final = "n_params"  # trainable parameter count
TRAIN_SECONDS: Final = "train_seconds"  # wall time of training + per-epoch validation
VALIDATION_SECONDS: Final = "validation_seconds"  # the per-epoch validation part of it
TRAIN_LOSSES: Final = "train_losses"  # mean training loss of each epoch trained
MEMORY: Final = "memory"  # {"rss_mb", "peak_rss_mb", "gpu_peak_mb"}: the worker after the trial
FAIL_REASON: Final = "fail_reason"  # one line: why the trial failed or was pruned early
SEED: Final = "seed"  # seed the trial trained with (the worker seed + the trial number)
WORKER_SEED: Final = "worker_seed"  # seed of the sampler of the worker that ran the trial
WORKER: Final = "worker"  # "<host>:<pid>" of the process that ran the trial
DEVICE: Final = "device"  # torch device the trial trained on
EVAL_SECONDS: Final = "eval_seconds"  # wall time of the final validation at every test sparsity
MODEL_ARTIFACT: Final = "model_artifact_id"  # artifact id of the trial's best-epoch checkpoint

# --- study user attributes ---------------------------------------------------
DEFINITION: Final = "definition"  # resolved study definition + overrides (JSON-able dict)
TEST_METRICS: Final = "test_metrics"  # best configuration on the test split, per sparsity
BEST_TRIAL: Final = "best_trial_number"
BEST_MODEL_ARTIFACT: Final = "best_model_artifact_id"
FINAL_STEP: Final = "final_step"  # {"finished": n, "best": trial}: the final step ran for these
GRID_ENQUEUED: Final = "grid_enqueued"  # set once the grid (or retrain) queue is complete
RETRAIN_SOURCE: Final = "retrain_source"  # {"study": name, "trial": number, "value": float}
