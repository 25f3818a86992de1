"""Faults of the environment met anywhere in a run: a full disk, a damaged database file.

Each becomes one line (no traceback) at the entry points, which wrap their work in
:func:`faults_named`: a full disk names what was being written and exits
:data:`hpo.errors.EXIT_NO_SPACE`; a damaged SQLite file (a page that no longer reads, met at
any query, not only when the file is opened) is a :class:`~hpo.runtime.storage_url.
StorageError` that says how to recover it.


Lack of space surfaces in three shapes: an ``OSError`` with ``ENOSPC``/``EDQUOT`` from a file
write (a checkpoint, a report), SQLite's "database or disk is full" wrapped by SQLAlchemy and
then by Optuna (whose ``StorageInternalError`` blames "invalid data ... exceeding max length",
which misleads), and PostgreSQL's ``disk_full`` (SQLSTATE 53100, "could not extend file ...:
No space left on device") from the server. Each is found anywhere in an exception's chain, so
the entry points can print one line and exit :data:`hpo.errors.EXIT_NO_SPACE` instead of a
hundred lines of traceback; :func:`writing` names what a block writes, where the error itself
cannot (a file write's ``OSError`` carries no file name).
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import sys
from collections.abc import Iterator

from ..errors import EXIT_NO_SPACE, one_line
from .storage_url import StorageError

__all__ = [
    "DAMAGED_HINT",
    "NoSpaceError",
    "damaged_why",
    "faults_named",
    "is_disk_full",
    "no_space_error",
    "print_no_space",
    "writing",
]

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full
SQLITE_FULL_MESSAGE = "database or disk is full"
DAMAGED_MESSAGES = ("malformed", "not a database")  # SQLITE_CORRUPT, SQLITE_NOTADB
DAMAGED_HINT = (
    "the file is damaged: restore it from a backup (`sqlite3 FILE .recover` saves what is left)"
)


class NoSpaceError(OSError):
    """A write failed for lack of space; ``what`` names what was being written."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.ENOSPC, f"no space left on device writing {what}")
        self.what = what

    def __str__(self) -> str:  # OSError would prefix "[Errno 28]"
        return str(self.strerror)


def is_disk_full(error: BaseException) -> bool:
    """Whether anything in ``error``'s chain says the disk (or quota) is full."""
    return any(_says_no_space(e) for e in _chain(error))


def no_space_error(error: BaseException, storage: str) -> NoSpaceError | None:
    """``error`` as a :class:`NoSpaceError` naming what was written (``storage``: the masked
    storage URL, named when the database's write failed), or ``None`` for any other fault."""
    chain = list(_chain(error))
    if not any(_says_no_space(e) for e in chain):
        return None
    named = next((e for e in chain if isinstance(e, NoSpaceError)), None)
    if named is not None:
        return named
    if any(_from_database(e) for e in chain):
        return NoSpaceError(f"the study storage {storage}")
    path = next((e.filename for e in chain if isinstance(e, OSError) and e.filename), None)
    return NoSpaceError(str(path) if path else "a file")


def damaged_why(why: str) -> str:
    """``why`` (a driver's one line) with what to do, when it says the file is damaged."""
    return f"{why}; {DAMAGED_HINT}" if any(m in why for m in DAMAGED_MESSAGES) else why


@contextlib.contextmanager
def faults_named(storage: str) -> Iterator[None]:
    """Re-raise a full disk met in the block as the :class:`NoSpaceError` that names what was
    being written (:func:`no_space_error`), and a damaged SQLite file as one ``StorageError``
    line (``storage``: the masked URL); other errors pass unchanged."""
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        full = no_space_error(e, storage)
        if full is not None and full is not e:
            raise full from e
        damaged = next((d for d in _chain(e) if _says_damaged(d)), None)
        if damaged is None or full is not None:
            raise
        raise StorageError(f"storage {storage}: {damaged_why(one_line(damaged))}") from e


def print_no_space(error: NoSpaceError, prog: str | None = None, resumes: bool = False) -> int:
    """Print the one line for ``error`` on stderr; returns :data:`EXIT_NO_SPACE`."""
    prefix = f"{prog}: " if prog else ""
    then = "; the study resumes" if resumes else ""
    print(
        f"{prefix}error: {error}: free space and run the same command again{then}",
        file=sys.stderr,
    )
    return EXIT_NO_SPACE


@contextlib.contextmanager
def writing(what: str) -> Iterator[None]:
    """Re-raise a full disk met in the block as ``NoSpaceError(what)``; other errors pass."""
    try:
        yield
    except Exception as e:
        if isinstance(e, NoSpaceError) or not is_disk_full(e):
            raise
        raise NoSpaceError(what) from e


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and the driver errors SQLAlchemy wraps (``orig``)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        orig = getattr(e, "orig", None)
        stack += [e.__cause__, e.__context__, orig if isinstance(orig, BaseException) else None]


def _says_no_space(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
        return True
    if isinstance(e, sqlite3.OperationalError):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
            SQLITE_FULL_MESSAGE in str(e)
        )
    return getattr(e, "sqlstate", None) == POSTGRES_DISK_FULL


def _says_damaged(e: BaseException) -> bool:
    return isinstance(e, sqlite3.DatabaseError) and any(m in str(e) for m in DAMAGED_MESSAGES)


def _from_database(e: BaseException) -> bool:
    """A driver's or SQLAlchemy's error (module names: no import of either needed here)."""
    module = type(e).__module__
    return isinstance(e, sqlite3.Error) or module.startswith(("sqlalchemy", "psycopg"))
