"""A PostgreSQL on 127.0.0.1 for the storage benches, started only when a bench asks for one.

``$HPO_TEST_POSTGRES_URL`` names a running server (CI's, or one you started); otherwise the
first call of ``url()`` starts one with ``.ci/postgres.sh``, and leaving the ``with`` block
stops it again, so a bench never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

POSTGRES_ENV = "HPO_TEST_POSTGRES_URL"
_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "postgres.sh"


@contextlib.contextmanager
def loopback_postgres() -> Iterator[Callable[[], str]]:
    """Yields ``url()``: the server's URL, the server started on the first call if need be."""
    started: list[str] = []

    def url() -> str:
        given = os.environ.get(POSTGRES_ENV)
        if given:
            return given
        if not started:
            out = subprocess.run(
                ["bash", str(_SCRIPT), "start"], check=True, capture_output=True, text=True
            ).stdout
            started.append(out.strip().split("=", 1)[1])
        return started[0]

    try:
        yield url
    finally:
        if started:
            subprocess.run(["bash", str(_SCRIPT), "stop"], check=False)
