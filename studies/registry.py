"""The one registry of study definitions, looked up by name.

The registry is built from ``studies.catalog.CATALOG`` on first use and is immutable, so there
is no global mutable state to reset between tests and nothing runs at import time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

from .definition import StudyDefinition

__all__ = ["DuplicateStudyError", "StudyRegistry", "UnknownStudyError", "all_studies", "get_study"]


class DuplicateStudyError(ValueError):
    """Two definitions share one name: the second would silently shadow the first."""


class UnknownStudyError(LookupError):
    """No study of that name is registered (the message lists the valid names)."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0]) if self.args else ""


class StudyRegistry:
    """Immutable name -> :class:`StudyDefinition` mapping that rejects duplicate names."""

    def __init__(self, definitions: Iterable[StudyDefinition]) -> None:
        studies: dict[str, StudyDefinition] = {}
        for definition in definitions:
            if definition.name in studies:
                raise DuplicateStudyError(f"study {definition.name!r} is registered twice")
            studies[definition.name] = definition
        self._studies = studies

    def get(self, name: str) -> StudyDefinition:
        """The definition called ``name``.

        Raises:
            UnknownStudyError: If ``name`` is not registered; the message lists valid names.
        """
        try:
            return self._studies[name]
        except KeyError:
            raise UnknownStudyError(
                f"unknown study {name!r}; registered studies: {', '.join(self.names())} "
                "(see --list)"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._studies)

    def __iter__(self) -> Iterator[StudyDefinition]:
        return iter(self._studies[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._studies)

    def __contains__(self, name: object) -> bool:
        return name in self._studies


@functools.cache
def default_registry() -> StudyRegistry:
    """The registry of ``studies.catalog`` (built once, on first use)."""
    from .catalog import CATALOG

    return StudyRegistry(CATALOG)


def get_study(name: str) -> StudyDefinition:
    """Look up a registered study by name (raises :class:`UnknownStudyError`)."""
    return default_registry().get(name)


def all_studies() -> list[StudyDefinition]:
    """Every registered study, sorted by name."""
    return list(default_registry())
