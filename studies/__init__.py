"""Study definitions: one typed, declarative registry (``studies.catalog`` lists them)."""

from .definition import (
    Categorical,
    DefinitionError,
    Grid,
    IntRange,
    LogFloat,
    SearchSpace,
    StudyDefinition,
)
from .registry import (
    DuplicateStudyError,
    StudyRegistry,
    UnknownStudyError,
    all_studies,
    get_study,
)

__all__ = [
    "Categorical",
    "DefinitionError",
    "DuplicateStudyError",
    "Grid",
    "IntRange",
    "LogFloat",
    "SearchSpace",
    "StudyDefinition",
    "StudyRegistry",
    "UnknownStudyError",
    "all_studies",
    "get_study",
]
