"""hpo.errors.one_line: every error the user sees is one line that still names the cause."""

from __future__ import annotations

import pytest

from hpo.errors import one_line


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("disk full", "disk full"),
        ("first\nsecond", "first"),
        (
            'Error(s) in loading state_dict for DenseCNN:\n\tMissing key(s) in state_dict: "a".',
            'Error(s) in loading state_dict for DenseCNN: Missing key(s) in state_dict: "a".',
        ),
        ("\n\n  spaced  \n", "spaced"),
        ("", "RuntimeError"),
    ],
)
def test_one_line_keeps_the_cause(message: str, line: str) -> None:
    assert one_line(RuntimeError(message)) == line
