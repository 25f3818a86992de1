"""Study definitions: one typed, declarative registry (``studies.catalog`` lists them)."""

from .definition import (
    TEST_MASK_SEED,
    VAL_MASK_SEED,
    VAL_SUBSET_SEED,
    Categorical,
    DefinitionError,
    Grid,
    IntRange,
    LogFloat,
    SearchSpace,
    StudyDefinition,
    sparsity_key,
)
from .recipe import BASELINE_RECIPE, DEFAULT_RECIPE, RecipeError, TrainingRecipe
from .registry import (
    DuplicateStudyError,
    StudyRegistry,
    UnknownStudyError,
    all_studies,
    default_registry,
    get_study,
)

__all__ = [
    "BASELINE_RECIPE",
    "DEFAULT_RECIPE",
    "TEST_MASK_SEED",
    "VAL_MASK_SEED",
    "VAL_SUBSET_SEED",
    "Categorical",
    "DefinitionError",
    "DuplicateStudyError",
    "Grid",
    "IntRange",
    "LogFloat",
    "RecipeError",
    "SearchSpace",
    "StudyDefinition",
    "StudyRegistry",
    "TrainingRecipe",
    "UnknownStudyError",
    "all_studies",
    "default_registry",
    "get_study",
    "sparsity_key",
]
