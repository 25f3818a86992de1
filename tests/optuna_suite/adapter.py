"""pytest plugin: Optuna's own storage tests, with every RDB storage they create opened by us.

Loaded by ``tests/optuna_suite/run.py`` (``-p adapter``) into a pytest run over the
``tests/storages_tests`` of the installed Optuna's source distribution. It replaces
``optuna.storages.RDBStorage`` -- the name the tests construct storages with, directly, through
``optuna.testing.storages.StorageSupplier`` or through ``optuna.storages.get_storage`` -- by a
stand-in that opens the storage one of two ways (``HPO_SUITE_STORAGE``):

* ``ours``: :func:`hpo.runtime.storage.open_storage`, with the heartbeat settings the test asked
  for (none unless it asked) and its stale-trial callback, if it gave one. An in-memory SQLite
  URL becomes a fresh file: ``open_storage`` gives ``:memory:`` a plain ``RDBStorage`` (no
  other process could read it), so only a file tests our SQLite settings.
* ``plain``: Optuna's ``RDBStorage`` with the test's own arguments (the baseline).

With ``HPO_SUITE_BACKEND=postgresql`` every SQLite storage a test asks for -- except a copy of
an old Optuna's database (the schema-upgrade tests), which only exists as SQLite -- is a fresh
schema of the server at ``HPO_TEST_POSTGRES_URL`` instead, the same schema for the same file.
The stand-in passes ``isinstance`` checks against the real class, so the tests' own checks
(``isinstance(storage, RDBStorage)``) keep their meaning. Storage modes that are not RDB
(journal, Redis, gRPC) are dropped: they are not ours.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from hpo.runtime.storage import StorageOptions, open_storage
from hpo.runtime.storage_url import SQLITE_DRIVERS

_REAL = optuna.storages.RDBStorage
_STORAGE = os.environ.get("HPO_SUITE_STORAGE", "ours")
_BACKEND = os.environ.get("HPO_SUITE_BACKEND", "sqlite")
_POSTGRES = os.environ.get("HPO_TEST_POSTGRES_URL", "")
_INSIDE_OPEN: ContextVar[bool] = ContextVar("inside_open_storage", default=False)
_TMP = Path(tempfile.mkdtemp(prefix="hpo-optuna-suite-"))
_SCHEMAS: dict[str, str] = {}  # SQLite URL -> the PostgreSQL URL standing in for it
_OPENED: list[optuna.storages.RDBStorage] = []  # by the running test

if _STORAGE not in ("ours", "plain") or _BACKEND not in ("sqlite", "postgresql"):
    raise SystemExit("HPO_SUITE_STORAGE must be ours|plain and HPO_SUITE_BACKEND sqlite|postgresql")
if _BACKEND == "postgresql" and not _POSTGRES:
    raise SystemExit("HPO_SUITE_BACKEND=postgresql needs HPO_TEST_POSTGRES_URL")


def _fresh_schema() -> str:
    schema = f"suite_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(_POSTGRES, poolclass=sqlalchemy.pool.NullPool)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    admin.dispose()
    url = sqlalchemy.engine.make_url(_POSTGRES)
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def _mapped_url(url: str) -> str:
    """The URL the test's storage is opened at on this run's backend."""
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.drivername not in SQLITE_DRIVERS:
        return url
    in_memory = parsed.database in (None, "", ":memory:")
    if _BACKEND == "postgresql":
        path = None if in_memory else Path(parsed.database)
        if path is not None and path.exists() and path.stat().st_size > 0:
            return url  # a copy of an old Optuna's SQLite database: stays SQLite
        if in_memory:
            return _fresh_schema()
        if url not in _SCHEMAS:
            _SCHEMAS[url] = _fresh_schema()
        return _SCHEMAS[url]
    if in_memory and _STORAGE == "ours":
        return f"sqlite:///{_TMP / f'{uuid.uuid4().hex}.db'}"
    return url


def _open_ours(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    interval = kwargs.get("heartbeat_interval")
    grace = kwargs.get("grace_period")
    callback = kwargs.get("heartbeat_stale_trial_callback") or kwargs.get("failed_trial_callback")
    # A worker's SQLite transactions take the write lock at BEGIN; a test that holds one open
    # and opens another connection in the same thread waits for itself: 10 s, not 120.
    options = StorageOptions(heartbeat_interval=interval, grace_period=grace, sqlite_timeout=10)
    token = _INSIDE_OPEN.set(True)
    try:
        storage = open_storage(url, options)
    finally:
        _INSIDE_OPEN.reset(token)
    if callback is not None:  # open_storage always retries stale trials; the test chose
        storage.heartbeat_stale_trial_callback = callback
        storage.failed_trial_callback = callback
    return storage


class _StandIn(type):
    def __call__(cls, url: str, *args: Any, **kwargs: Any) -> optuna.storages.RDBStorage:
        if _INSIDE_OPEN.get():  # open_storage itself builds an RDBStorage
            return _REAL(url, *args, **kwargs)
        asked = _REAL._fill_storage_url_template(url)
        url = _mapped_url(asked)
        if _STORAGE == "plain":
            if url != asked and "engine_kwargs" in kwargs:  # SQLite's busy timeout: not for psycopg
                engine_kwargs = dict(kwargs["engine_kwargs"] or {})
                engine_kwargs.pop("connect_args", None)
                kwargs["engine_kwargs"] = engine_kwargs
            storage = _REAL(url, *args, **kwargs)
        else:
            names = ("engine_kwargs", "skip_compatibility_check")
            kwargs.update(zip(names, args, strict=False))
            storage = _open_ours(url, **kwargs)
        _OPENED.append(storage)
        return storage

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, _REAL)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, _REAL)

    def __getattr__(cls, name: str) -> Any:
        return getattr(_REAL, name)


class RDBStorage(metaclass=_StandIn):
    """Stands in for ``optuna.storages.RDBStorage`` (see the module docstring)."""


def pytest_configure(config: Any) -> None:
    import optuna.testing.storages as supplier

    # What StorageSupplier, get_storage and test_with_server.py call at run time. The class's
    # own module keeps the real one: pickle finds a class by its module and name.
    optuna.storages.RDBStorage = RDBStorage
    supplier.STORAGE_MODES[:] = ["sqlite", "cached_sqlite"]  # the RDB modes; same list object
    supplier.STORAGE_MODES_HEARTBEAT[:] = ["sqlite", "cached_sqlite"]
    if _BACKEND == "postgresql":
        os.environ.setdefault("TEST_DB_URL", _fresh_schema())  # tests/test_with_server.py
    else:
        os.environ.setdefault("TEST_DB_URL", f"sqlite:///{_TMP / 'server.db'}")


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    # Test modules that imported the class by name before it was replaced
    # (``from optuna.storages._rdb.storage import RDBStorage``) construct the stand-in too.
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and getattr(module, "RDBStorage", None) is _REAL:
            module.RDBStorage = RDBStorage


_OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report: Any) -> None:
    # One outcome per test: a failure in setup or teardown counts as the test failing.
    if report.failed:
        _OUTCOMES[report.nodeid] = "failed"
    elif report.skipped:
        _OUTCOMES.setdefault(report.nodeid, "skipped")
    elif report.when == "call":
        _OUTCOMES.setdefault(report.nodeid, "passed")


def pytest_report_header(config: Any) -> str:
    return f"hpo adapter: every RDB storage opened as {_STORAGE!r} on {_BACKEND!r}"


def pytest_runtest_teardown(item: Any) -> None:
    # Close the pools of the storages the test opened: many tests never dispose of theirs,
    # and on PostgreSQL hundreds of idle pools would exhaust the server's max_connections.
    while _OPENED:
        _OPENED.pop().engine.dispose()


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    report = os.environ.get("HPO_SUITE_REPORT")
    if report:  # read by run.py
        Path(report).write_text(json.dumps(_OUTCOMES, indent=0, sort_keys=True))
    if _BACKEND != "postgresql":
        return
    admin = sqlalchemy.create_engine(_POSTGRES, poolclass=sqlalchemy.pool.NullPool)
    with admin.connect() as connection:
        query = sqlalchemy.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p")
        schemas = [row[0] for row in connection.execute(query, {"p": "suite\\_%"})]
    for schema in schemas:  # one transaction each: dropping all at once runs out of locks
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()
