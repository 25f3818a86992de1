"""After the workers: score the best trial on the test split once, store and print the figures
(``records.TEST_METRICS``, ``records.BEST_TRIAL``) for the report and the dashboard."""

from __future__ import annotations

import time

import optuna
import torch
from optuna.trial import FrozenTrial

from studies import TEST_MASK_SEED

from .. import records
from ..records import TrialCounts
from ..runtime.locks import exclusive
from ..runtime.storage import open_storage
from ..runtime.storage_url import DEFAULT_STORAGE_URL, StorageTarget
from .artifacts import load_trial_model, open_artifact_store
from .progress import format_params
from .settings import RunSettings
from .trial_data import eval_batches, evaluate_at_sparsities, load_trial_data
from .trial_loop import settle

__all__ = ["finalize_study"]


def finalize_study(settings: RunSettings) -> None:
    """Score the best trial on the test split once per study: the first worker to get here
    takes a lock, the others say so; figures of an unchanged best trial are reused."""
    storage = open_storage(settings.storage)
    study = optuna.load_study(study_name=settings.optuna_study_name, storage=storage)
    open_artifact_store(settings.storage, create=True)  # the folder the final step's lock is on
    folder, name = settings.storage.artifact_dir, f"final step {study.study_name}"
    with exclusive(settings.storage, name, wait=False, folder=folder) as mine:
        if not mine:
            print(f"study {study.study_name}: another worker is running its final step; skipped")
            return
        settle(study, storage, settings.n_trials)
        _final_step(study, settings)


def _final_step(study: optuna.Study, settings: RunSettings) -> None:
    counts = TrialCounts.of(study.get_trials(deepcopy=False))
    done = study.user_attrs.get(records.FINAL_STEP)
    if done is not None and done.get("finished") == counts.finished:
        print(
            f"study {study.study_name}: its final step already ran for these {counts.finished} "
            f"trials (best trial {done.get('best')}); python -m hpo.report --study "
            f"{study.study_name} shows the results"
        )
        return
    print(
        f"study {study.study_name}: {counts.complete} complete, {counts.pruned} pruned, "
        f"{counts.failed} failed, {counts.running} running, {counts.waiting} waiting "
        f"(target {settings.n_trials} finished)"
    )
    if counts.waiting:
        print(
            f"the {counts.waiting} waiting trials are queued grid points (or retries) beyond "
            "this budget: a larger --n-trials runs them first"
        )
    met = counts.finished >= settings.n_trials  # the budget is met: nothing will change
    if counts.complete == 0:
        print("no completed trial yet: nothing to evaluate")
        if met:
            study.set_user_attr(records.FINAL_STEP, {"finished": counts.finished, "best": None})
        return
    best = study.best_trial
    test_metrics = study.user_attrs.get(records.TEST_METRICS)
    if study.user_attrs.get(records.BEST_TRIAL) != best.number or test_metrics is None:
        test_metrics = _score_on_test(study, best, settings)
    if met:
        study.set_user_attr(records.FINAL_STEP, {"finished": counts.finished, "best": best.number})
    _print_summary(study, best, test_metrics, settings)


def _score_on_test(
    study: optuna.Study, best: FrozenTrial, settings: RunSettings
) -> dict[str, dict[str, float]]:
    definition = settings.definition()
    print(
        f"final step: scoring trial {best.number} once on the test split at "
        f"{len(definition.test_sparsities)} sparsities...",
        flush=True,
    )
    store = open_artifact_store(settings.storage)
    loaded = load_trial_model(study, best.number, store=store, device=settings.device)
    data = load_trial_data(definition, settings.data_dir, settings.download, definition.train_size)
    test = data.test
    if settings.test_size is not None:
        test = test.stratified_subset(settings.test_size, seed=TEST_MASK_SEED)
    device = torch.device(settings.device)
    batches = {
        s: eval_batches(definition, data, test, s, TEST_MASK_SEED, device)
        for s in definition.test_sparsities
    }
    metrics = {}
    for i, s in enumerate(definition.test_sparsities, 1):  # a line each: minutes on a CPU
        started = time.perf_counter()
        metrics.update(evaluate_at_sparsities(loaded.model, batches, [s]))
        print(
            f"  sparsity {s}: {len(test)} test images scored in "
            f"{time.perf_counter() - started:.0f} s ({i}/{len(batches)})",
            flush=True,
        )
    test_metrics = {k: m.to_dict() for k, m in metrics.items()}
    study.set_user_attr(records.TEST_METRICS, test_metrics)
    study.set_user_attr(records.BEST_MODEL_ARTIFACT, best.user_attrs[records.MODEL_ARTIFACT])
    study.set_user_attr(records.BEST_TRIAL, best.number)
    return test_metrics


def _print_summary(
    study: optuna.Study, best: FrozenTrial, test: dict[str, dict[str, float]], settings: RunSettings
) -> None:
    definition = settings.definition()
    val_metrics = best.user_attrs.get(records.VAL_METRICS, {})
    source = study.user_attrs.get(records.RETRAIN_SOURCE)
    if source is not None:
        print(
            f"retraining trial {source['trial']} of study {source['study']} "
            f"(val accuracy {source['value']:.4f} at that study's budget)"
        )
    print(
        f"best trial {best.number} [{best.user_attrs.get(records.PHASE, '?')}]: "
        f"val accuracy {best.value:.4f} at sparsity {definition.train_sparsity:g}; "
        f"{format_params(best.params)}"
    )
    print(f"{'sparsity':>8}  {'val acc':>8}  {'val MAE':>8}  {'test acc':>8}  {'test MAE':>8}")
    for sparsity in definition.test_sparsities:
        k = records.sparsity_key(sparsity)
        v, t = val_metrics.get(k, {}), test.get(k, {})
        cells = (v.get("accuracy"), v.get("mae"), t.get("accuracy"), t.get("mae"))
        print(f"{k:>8}  " + "  ".join(_fmt(c) for c in cells))
    if settings.dry_run:
        scored = f"{settings.test_size:,} test images" if settings.test_size else "all test images"
        print(f"dry run: test figures on {scored}; the storage and models are deleted")
        return
    print(
        f"best model: artifact {study.user_attrs.get(records.BEST_MODEL_ARTIFACT)} in "
        f"{settings.storage.artifact_dir}; save it as a file with: python -m hpo.export "
        f"--study {study.study_name} --out best.pt" + _storage_flag(settings.storage)
    )


def _storage_flag(target: StorageTarget) -> str:
    return "" if target.url == DEFAULT_STORAGE_URL else f" --storage '{target.masked}'"


def _fmt(value: float | None) -> str:
    return f"{value:8.4f}" if isinstance(value, float | int) else f"{'-':>8}"
