"""Is a validation subset large enough to rank trials? And what does validation cost?

For a finished study that scored its trials on a subset of the validation split
(``--val-size``), this re-scores every completed trial's saved model on the whole split, at the
training sparsity with the same fixed masks, and prints side by side:

* the ranking of the trials by the subset's score and by the whole split's (the top trials
  in order, Kendall's tau over all, whether the top five keep their order);
* the standard error of one score and of the difference of two models on the subset;
* the share of each trial's wall time spent validating (per-epoch validation plus the final
  scoring at the other sparsities) against training.

    .venv/bin/python bench/validation_size.py --storage sqlite:///quick.db --study quick \\
        --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

import optuna
import torch
from optuna.trial import TrialState

from data import DATA_DIR_ENV, SparseBatches
from hpo.runtime.storage import load_existing_study, open_existing_storage
from hpo.tuning import keys
from hpo.tuning.artifacts import load_trial_model, open_artifact_store
from hpo.tuning.trial_data import load_trial_data, validation_split
from studies import VAL_MASK_SEED, get_study


def _scores(model, split, sparsity, mean, std) -> torch.Tensor:
    """1 where the model classifies a validation image right, else 0 (one pass)."""
    batches = SparseBatches(split, sparsity=sparsity, batch_size=512, device="cpu",
                            mean=mean, std=std, seed=VAL_MASK_SEED, fixed_masks=True)  # fmt: skip
    hits = []
    with torch.inference_mode():
        for x, mask, y in batches.epoch(0):
            hits.append((model(x, mask).argmax(dim=1) == y).float())
    return torch.cat(hits)


def _kendall_tau(a: list[float], b: list[float]) -> float:
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    concordant = sum(((a[i] - a[j]) * (b[i] - b[j])) > 0 for i, j in pairs)
    discordant = sum(((a[i] - a[j]) * (b[i] - b[j])) < 0 for i, j in pairs)
    return (concordant - discordant) / max(1, len(pairs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_ENV))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_existing_study(open_existing_storage(args.storage), args.study, args.study)
    stored = study.user_attrs[keys.DEFINITION]["definition"]
    definition = get_study(stored["name"]).with_overrides(
        {k: stored[k] for k in ("epochs", "train_size", "val_size")}
    )
    data = load_trial_data(definition, args.data_dir, download=False)
    subset, whole = validation_split(definition, data), data.val
    store = open_artifact_store(args.storage)
    rows = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for trial in complete:
        loaded = load_trial_model(study, trial.number, store=store)
        hits_subset = _scores(loaded.model, subset, definition.train_sparsity, loaded.mean,
                              loaded.std)  # fmt: skip
        hits_whole = _scores(loaded.model, whole, definition.train_sparsity, loaded.mean,
                             loaded.std)  # fmt: skip
        rows.append((trial, hits_subset, float(hits_subset.mean()), float(hits_whole.mean())))
    rows.sort(key=lambda r: -r[3])
    by_subset = sorted(rows, key=lambda r: -r[2])
    rank = {id(r): i + 1 for i, r in enumerate(by_subset)}
    print(
        f"{study.study_name}: {len(rows)} completed trials; validation subset {len(subset):,} "
        f"of {len(whole):,} images, sparsity {definition.train_sparsity:g}"
    )
    print(f"{'trial':>5} {'whole':>7} {'subset':>7} {'rank whole':>10} {'rank subset':>11}")
    for i, (trial, _hits, sub, full) in enumerate(rows, 1):
        print(f"{trial.number:5d} {full:7.4f} {sub:7.4f} {i:10d} {rank[id(rows[i - 1])]:11d}")
    tau = _kendall_tau([r[2] for r in rows], [r[3] for r in rows])
    top = [r[0].number for r in rows[:5]]
    top_subset = [r[0].number for r in by_subset[:5]]
    print(f"Kendall's tau (subset vs whole) {tau:.3f}; top 5 by whole {top}, by subset "
          f"{top_subset}: {'the same order' if top == top_subset else 'DIFFERENT'}")  # fmt: skip
    best = rows[0]
    p = best[2]
    se_one = math.sqrt(p * (1 - p) / len(subset))
    diffs = [float((best[1] - r[1]).std(unbiased=True)) / math.sqrt(len(subset)) for r in rows[1:6]]
    print(
        f"standard error on the subset: one score {100 * se_one:.2f} points (p={p:.3f}); "
        f"difference of the best and the next five {100 * statistics.mean(diffs):.2f} points"
    )
    shares = []
    for trial in complete:
        a = trial.user_attrs
        validating = a.get(keys.VALIDATION_SECONDS, 0.0) + a.get(keys.EVAL_SECONDS, 0.0)
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        shares.append(validating / wall)
    print(
        f"validation share of a trial's wall time: median {100 * statistics.median(shares):.1f} % "
        f"[{100 * min(shares):.1f} - {100 * max(shares):.1f}] over {len(shares)} trials"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
