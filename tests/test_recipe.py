"""The training recipe: validated data, its ablations, and the optimizer and schedule it builds."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hpo.training import build_optimization, fit, train_step
from hpo.training.recipe import lr_factor
from studies import BASELINE_RECIPE, DEFAULT_RECIPE, RecipeError, TrainingRecipe
from studies.recipe import COMPONENTS, FULL_RECIPE


def test_recipes_reject_settings_that_mean_nothing():
    with pytest.raises(RecipeError, match="optimizer"):
        TrainingRecipe(name="x", optimizer="sgd")
    with pytest.raises(RecipeError, match="weight decay needs optimizer 'adamw'"):
        TrainingRecipe(name="x", weight_decay=0.1)
    with pytest.raises(RecipeError, match="warm-up needs schedule 'cosine'"):
        TrainingRecipe(name="x", warmup_fraction=0.1)
    with pytest.raises(RecipeError, match="label_smoothing"):
        TrainingRecipe(name="x", label_smoothing=1.0)
    with pytest.raises(RecipeError, match="warmup_fraction"):
        TrainingRecipe(name="x", schedule="cosine", warmup_fraction=math.nan)
    with pytest.raises(RecipeError, match="unknown recipe component"):
        FULL_RECIPE.without("dropout")


def test_each_ablation_switches_exactly_one_component_back_to_the_baseline():
    fields = {
        "optimizer": {"optimizer", "weight_decay"},
        "schedule": {"schedule", "warmup_fraction"},
        "label_smoothing": {"label_smoothing"},
        "augment": {"augment"},
    }
    full = FULL_RECIPE.to_dict()
    for component in COMPONENTS:
        ablated = FULL_RECIPE.without(component)
        changed = {k for k, v in ablated.to_dict().items() if v != full[k]} - {"name"}
        assert changed == fields[component]
        assert all(getattr(ablated, k) == getattr(BASELINE_RECIPE, k) for k in changed)
        assert ablated.name == f"full-no-{component.replace('_', '-')}"
    assert "Adam, constant learning rate, no augmentation" in BASELINE_RECIPE.describe()


def test_the_schedule_warms_up_to_the_peak_then_decays_to_zero():
    factors = [lr_factor(step, 100, 10) for step in range(100)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[:10] == sorted(factors[:10])  # rising through the warm-up
    assert factors[9] == factors[10] == 1.0  # the tuned lr is the peak
    assert factors[10:] == sorted(factors[10:], reverse=True)
    assert factors[-1] < 0.01
    assert lr_factor(5, 1, 0) == 0.0  # past the end (a longer run than budgeted) stays at 0


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc(x * mask)


class _Batches:
    def __init__(self, n_batches: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self._data = [
            (torch.randn(8, 4, generator=generator), torch.ones(8, 4), torch.arange(8) % 3)
            for _ in range(n_batches)
        ]

    def epoch(self, epoch: int):
        return iter(self._data)


def test_the_full_recipe_builds_adamw_with_a_schedule_that_ends_with_the_budget():
    torch.manual_seed(0)
    model = _Linear()
    optimization = build_optimization(FULL_RECIPE, model, 0.01, steps_per_epoch=5, epochs=3)
    assert isinstance(optimization.optimizer, torch.optim.AdamW)
    assert optimization.optimizer.param_groups[0]["weight_decay"] == FULL_RECIPE.weight_decay
    assert optimization.label_smoothing == FULL_RECIPE.label_smoothing
    rates = []
    for _ in range(3):
        fit(model, optimization, _Batches(5), 1)
        rates.append(optimization.optimizer.param_groups[0]["lr"])
    assert rates == sorted(rates, reverse=True)
    assert rates[-1] < 1e-3 * 0.01  # decayed to (almost) zero after the budgeted 15 steps


def test_the_baseline_recipe_is_plain_adam_at_a_constant_rate():
    model = _Linear()
    optimization = build_optimization(BASELINE_RECIPE, model, 0.01, steps_per_epoch=5, epochs=2)
    assert type(optimization.optimizer) is torch.optim.Adam
    assert optimization.scheduler is None
    fit(model, optimization, _Batches(5), 2)
    assert optimization.optimizer.param_groups[0]["lr"] == 0.01


def test_label_smoothing_is_the_loss_that_is_minimized():
    torch.manual_seed(0)
    model = _Linear()
    x, mask, y = _Batches(1).epoch(0).__next__()
    expected = F.cross_entropy(model(x, mask), y, label_smoothing=0.2).detach()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = train_step(model, optimizer, x, mask, y, label_smoothing=0.2)
    assert float(loss) == pytest.approx(float(expected))
    assert float(loss) != pytest.approx(float(F.cross_entropy(model(x, mask), y).detach()))


def test_studies_store_their_recipe():
    from studies import get_study

    study = get_study("sparse_mnist")
    assert study.recipe == DEFAULT_RECIPE
    assert study.to_dict()["recipe"] == DEFAULT_RECIPE.to_dict()
    assert any(f"training recipe: {DEFAULT_RECIPE.name}" in line for line in study.summary())
    assert dataclasses.replace(study, recipe=BASELINE_RECIPE).to_dict()["recipe"]["name"] == (
        "baseline"
    )


def test_only_caltech_studies_augment_and_every_pair_shares_its_recipe():
    # MNIST's shifts cost accuracy at every budget measured; Caltech's crops and flips paid at
    # 30 epochs (docs/results.md). A sparse study and its dense baseline always train alike.
    from studies import get_study

    for sparse, dense in (
        ("sparse_mnist", "dense_mnist"),
        ("sparse_caltech101", "dense_caltech101"),
    ):
        assert get_study(sparse).recipe == get_study(dense).recipe
    assert not get_study("sparse_mnist").recipe.augment
    assert get_study("sparse_caltech101").recipe.augment
    assert get_study("sparse_mnist").recipe.schedule == "cosine"
