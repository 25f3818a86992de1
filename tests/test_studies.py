"""studies: the typed registry of study definitions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest

from data import DatasetName
from hpo.records import StudyRecord
from models import ModelFamily
from studies import (
    BASELINE_RECIPE,
    Categorical,
    DefinitionError,
    DuplicateStudyError,
    Grid,
    IntRange,
    LogFloat,
    SearchSpace,
    StudyRegistry,
    UnknownStudyError,
    all_studies,
    get_study,
)
from studies.recipe import FULL_RECIPE

EXPECTED = {
    "sparse_mnist": (DatasetName.MNIST, ModelFamily.SPARSE, 0.9),
    "dense_mnist": (DatasetName.MNIST, ModelFamily.DENSE_MASK, 0.9),
    "sparse_caltech101": (DatasetName.CALTECH101, ModelFamily.SPARSE, 0.7),
    "dense_caltech101": (DatasetName.CALTECH101, ModelFamily.DENSE_MASK, 0.7),
}


def test_the_four_studies_are_registered_with_their_scientific_setting() -> None:
    studies = {s.name: s for s in all_studies()}
    assert set(studies) == set(EXPECTED)
    for name, (dataset, family, sparsity) in EXPECTED.items():
        s = studies[name]
        assert (s.dataset, s.model_family, s.train_sparsity) == (dataset, family, sparsity)
        assert s.test_sparsities == (0.5, 0.7, 0.8, 0.9)
        assert s.width == 32 and s.kernel_schedule == "paper"


def test_sparse_and_dense_studies_share_the_nuisance_space() -> None:
    # The tuning playbook: compare families under the same tuning effort.
    assert get_study("sparse_mnist").search_space == get_study("dense_mnist").search_space
    assert get_study("sparse_mnist").grid == get_study("dense_mnist").grid


@pytest.mark.parametrize("study", [s.name for s in all_studies()])
def test_grid_is_small_and_inside_the_search_space(study: str) -> None:
    definition = get_study(study)
    points = definition.grid.points()
    assert 0 < len(points) < 100
    assert len({json.dumps(p, sort_keys=True) for p in points}) == len(points)
    domains = definition.search_space.domains()
    for point in points:
        assert set(point) == set(domains)
        assert all(domains[k].contains(v) for k, v in point.items())


def test_duplicate_name_raises() -> None:
    s = get_study("sparse_mnist")
    with pytest.raises(DuplicateStudyError, match="sparse_mnist"):
        StudyRegistry([s, dataclasses.replace(s, description="another")])


def test_unknown_study_lists_the_valid_names() -> None:
    with pytest.raises(UnknownStudyError) as info:
        get_study("sparse_mnsit")
    message = str(info.value)
    assert "'sparse_mnsit'" in message
    assert all(name in message for name in EXPECTED)


def test_overrides_are_validated() -> None:
    s = get_study("sparse_mnist")
    quick = s.with_overrides({"epochs": 2, "train_size": 64})
    assert (quick.epochs, quick.train_size) == (2, 64)
    assert quick == dataclasses.replace(s, epochs=2, train_size=64)  # nothing else changed
    with pytest.raises(DefinitionError, match="cannot override width"):
        s.with_overrides({"width": 8})
    with pytest.raises(DefinitionError, match="epochs must be a positive integer"):
        s.with_overrides({"epochs": 0})
    with pytest.raises(DefinitionError, match="train_size must be a positive integer"):
        s.with_overrides({"train_size": "64"})


def test_invalid_definitions_are_rejected() -> None:
    s = get_study("sparse_mnist")
    with pytest.raises(DefinitionError, match="sparsity must be in"):
        dataclasses.replace(s, train_sparsity=1.0)
    with pytest.raises(DefinitionError, match="outside the search space"):
        dataclasses.replace(s, grid=Grid.of(**{**s.grid.to_dict(), "depth": (3, 12)}))
    with pytest.raises(DefinitionError, match="every search-space parameter, in order"):
        dataclasses.replace(s, grid=Grid.of(depth=(3,), activation=("relu",), lr=(1e-3,)))
    with pytest.raises(DefinitionError, match="one non-empty line"):
        dataclasses.replace(s, description="two\nlines")
    with pytest.raises(DefinitionError, match="pool_after"):
        dataclasses.replace(s, pool_after=(5,))
    with pytest.raises(DefinitionError):
        LogFloat(0.0, 1.0)
    with pytest.raises(DefinitionError):
        IntRange(5, 3)
    with pytest.raises(DefinitionError):
        Categorical(("relu", "relu"))


def test_studies_stored_by_earlier_versions_resume_only_where_nothing_changed() -> None:
    """``to_dict()`` is stored with every study and compared when a run resumes it. The
    golden file is what the version of 2026-11 (commit a94bd32) stored: a field added since
    must not stop those studies from resuming unless the registered study really changed.
    MNIST scores trials on 2,000 validation images, not 5,000; those studies were trained
    with the baseline recipe at width 16, and issue 18 changed both (a width-16 study is
    another study), so exactly those differences are reported, and nothing else."""
    golden = json.loads((Path(__file__).parent / "stored_definitions.json").read_text())

    def config_differences(stored: dict, wanted: dict) -> list[str]:
        return StudyRecord.from_dict(stored).differences(StudyRecord.from_dict(wanted))

    baseline = BASELINE_RECIPE.to_dict()
    for study in all_studies():
        stored = {"definition": golden[study.name], "overrides": {}, "pruner": "asha"}
        wanted = {"definition": study.to_dict(), "overrides": {}, "pruner": "asha"}
        recipe = [
            f"definition.recipe.{k}={baseline[k]!r} (now {v!r})"
            for k, v in sorted(study.recipe.to_dict().items())
            if v != baseline[k]
        ]
        val = ["definition.val_size='<unset>' (now 2000)"] if "mnist" in study.name else []
        width = ["definition.width=16 (now 32)"]
        assert config_differences(stored, wanted) == sorted(recipe + val + width), study.name
        resumed = study.with_overrides({"val_size": None})  # what --val-size all asks for
        again = {**wanted, "definition": resumed.to_dict()}
        assert config_differences(stored, again) == sorted(recipe + width)
        same_width = dataclasses.replace(resumed, width=16, recipe=BASELINE_RECIPE)
        unchanged = {**wanted, "definition": same_width.to_dict()}
        assert config_differences(stored, unchanged) == []  # otherwise resumable as before
        other = dataclasses.replace(resumed, recipe=FULL_RECIPE)  # a changed recipe is named
        changed = config_differences(stored, {**wanted, "definition": other.to_dict()})
        assert "definition.recipe.optimizer='adam' (now 'adamw')" in changed


def test_parameter_names_and_labels_come_from_the_search_space() -> None:
    assert SearchSpace.names() == ("depth", "activation", "batch_size", "lr")
    assert SearchSpace.label("batch_size") == "batch size"
    assert SearchSpace.label("lr") == "learning rate"
    assert SearchSpace.label("momentum") == "momentum"  # not ours: shown as is
    assert get_study("sparse_mnist").grid.names() == SearchSpace.names()


def test_to_dict_is_json_and_names_everything() -> None:
    d = get_study("dense_caltech101").to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["model_family"] == "dense_mask" and d["dataset"] == "caltech101"
    assert d["search_space"]["lr"] == {"low": 1e-4, "high": 1e-1}
    assert d["grid"]["depth"] == [3, 6, 9]


def test_search_space_suggests_typed_values_and_honours_enqueued_points() -> None:
    space = SearchSpace(
        depth=IntRange(3, 9),
        activation=Categorical(("relu", "elu")),
        batch_size=Categorical((32, 64)),
        lr=LogFloat(1e-4, 1e-1),
    )
    point = Grid.of(depth=(6,), activation=("elu",), batch_size=(32,), lr=(1e-3,)).points()[0]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(point)
    assert space.suggest(study.ask()) == point
    sampled = space.suggest(study.ask())
    assert isinstance(sampled["depth"], int) and 3 <= sampled["depth"] <= 9
    assert sampled["activation"] in ("relu", "elu") and sampled["batch_size"] in (32, 64)
    assert 1e-4 <= sampled["lr"] <= 1e-1
