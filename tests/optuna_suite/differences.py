"""Which of Optuna's storage tests fail, on which backend, and why that is acceptable.

``{pytest node id: (backends where it fails, why)}``, read by ``run.py``, which fails when the
suite's failures are not exactly these. ``docs/performance.md`` ("Optuna's storage tests")
records the counts and the commands.
"""

from __future__ import annotations

_OLD_SCHEMA = (
    "by design (issue 19, item 3): open_storage refuses a database whose tables an older Optuna "
    "set up, with one line saying to run `optuna storage upgrade --storage URL` (which is "
    "Optuna's own code on a plain RDBStorage), instead of opening it; the test opens each old "
    "database with skip_compatibility_check=True, which open_storage does not offer"
)
# Both runs: the old databases are SQLite files, which the PostgreSQL run keeps as they are.
_OLD_SCHEMA_BACKENDS = ("sqlite", "postgresql")

# Tests that fail with plain RDBStorage too, on this setup: not differences of ours.
ALSO_PLAIN: dict[str, tuple[tuple[str, ...], str]] = {
    "tests/storages_tests/rdb_tests/test_storage.py::test_init_db_module_import_error": (
        ("sqlite", "postgresql"),
        "the environment, not the storage: SQLAlchemy 2.1 reads postgresql:// as psycopg 3, "
        "which this project installs, so hiding psycopg2 gives a connection error to the "
        "test's fake host instead of the ImportError the test expects",
    ),
    "tests/storages_tests/rdb_tests/test_storage.py::test_init_url_template": (
        ("postgresql",),
        "not applicable to the PostgreSQL run: the test checks the name of the SQLite file its "
        "URL template gives, and that run opens a PostgreSQL schema in the file's place",
    ),
}

_SELF_WAIT = (
    "by design (issue 29): every transaction of a worker's SQLite storage begins IMMEDIATE, so "
    "Optuna's read-then-write methods never meet SQLITE_BUSY; the test holds a read session "
    "open and then checks the schema version through a second connection of the same storage "
    "in the same thread, which waits for the first (the busy timeout). No path of the product "
    "holds a session across another storage call; readers in other processes take no lock"
)

# Where our storages differ from plain RDBStorage.
DIFFERENCES: dict[str, tuple[tuple[str, ...], str]] = {
    f"tests/storages_tests/rdb_tests/test_storage.py::{test}": (("sqlite",), _SELF_WAIT)
    for test in ("test_init", "test_check_table_schema_compatibility")
} | {
    **{
        f"tests/storages_tests/test_heartbeat.py::{test}[{mode}]": (("sqlite", "postgresql"), why)
        for mode in ("sqlite", "cached_sqlite")
        for test, why in (
            (
                "test_heartbeat_experimental_warnings",
                "by design: open_storage silences Optuna's ExperimentalWarning for heartbeats "
                "(experimental since Optuna 2.8; the runner relies on them knowingly and users "
                "should not see the warning on every start)",
            ),
            (
                "test_invalid_heartbeat_interval_and_grace_period",
                "by design: a heartbeat interval or grace period below 1 s is refused by "
                "StorageOptions with a one-line StorageError (exit 2 from every command) "
                "instead of Optuna's ValueError",
            ),
        )
    },
    **{
        f"tests/storages_tests/rdb_tests/test_storage.py::{test}[{version}]": (
            _OLD_SCHEMA_BACKENDS,
            _OLD_SCHEMA,
        )
        for test, versions in (
            (
                "test_upgrade_single_objective_optimization",
                ("0.9.0.a", "1.2.0.a", "1.3.0.a", "2.4.0.a", "2.6.0.a", "3.0.0.a", "3.0.0.b")
                + ("3.0.0.c", "3.0.0.d"),
            ),
            (
                "test_upgrade_multi_objective_optimization",
                ("2.4.0.a", "2.6.0.a", "3.0.0.a", "3.0.0.b", "3.0.0.c", "3.0.0.d"),
            ),
            (
                "test_upgrade_distributions",
                ("2.4.0.a", "2.6.0.a", "3.0.0.a", "3.0.0.b", "3.0.0.c", "3.0.0.d"),
            ),
        )
        for version in versions
    },
}
