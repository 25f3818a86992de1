"""Files written whole or not at all, so neither a reader nor a full disk sees half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .faults import writing

__all__ = ["written_whole"]


@contextlib.contextmanager
def written_whole(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """A temporary sibling of ``path`` (same suffix, for writers that go by it) to write to:
    renamed onto ``path`` (atomic on POSIX) when the block ends, deleted if it raises; a full
    disk is raised as ``NoSpaceError`` naming ``path``. ``mode``: mkstemp's 0600 would hide a
    report from the other users of a shared folder."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        with writing(str(path)):
            yield tmp
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
