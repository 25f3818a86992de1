"""Workers through PgBouncer in transaction pooling (``.ci/pgbouncer.sh``; issue 32, item 3).

Each transaction may run on another server connection, and many clients share few of them: a
study must run as it does on a direct connection (no prepared statement of one client seen by
another, ``docs/decisions.md``, "PgBouncer"), and the storage's lock must neither leak nor let
its waiters hold the server connections its holder needs.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpo.runtime.locks import exclusive
from hpo.runtime.storage import StorageOptions, open_storage
from hpo.runtime.storage_url import StorageTarget
from hpo.tuning.trial_loop import optimize

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        shutil.which("pgbouncer") is None and not os.path.exists("/usr/sbin/pgbouncer"),
        reason="needs PgBouncer (Debian's pgbouncer package; .ci/pgbouncer.sh installs it)",
    ),
]
POOLER_ENV = "HPO_TEST_PGBOUNCER_URL"
SERVER_ENV = "HPO_TEST_POSTGRES_URL"
POOL_SIZE = 20  # .ci/pgbouncer.sh's default_pool_size


@pytest.fixture
def pooled_url() -> Iterator[str]:
    """A fresh database on the CI server, reached through the CI PgBouncer (which passes any
    database name on); dropped afterwards. A database, not a schema: PgBouncer 1.18 refuses
    the ``options`` startup parameter that would set a schema's search path."""
    pooler, server = os.environ.get(POOLER_ENV), os.environ.get(SERVER_ENV)
    if not pooler or not server:
        pytest.skip(f"{POOLER_ENV} is unset; start one with .ci/pgbouncer.sh (CI does)")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(
        server, poolclass=sqlalchemy.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sqlalchemy.engine.make_url(pooler).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


def test_workers_run_a_study_through_the_pooler(pooled_url: str) -> None:
    """Six workers (threads, each with its own storage and pool, heartbeats on) run the
    product's trial loop: every trial completes, none is left RUNNING or FAIL. With psycopg's
    automatic prepared statements, this fails within a few trials ("prepared statement
    "_pg3_0" already exists" / "does not exist")."""
    options = StorageOptions(heartbeat_interval=1, grace_period=5)
    study_name, n_trials, n_workers = "pooled", 120, 6
    optuna.create_study(study_name=study_name, storage=open_storage(pooled_url, options))
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            storage = open_storage(pooled_url, options)
            study = optuna.load_study(
                study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler()
            )

            def objective(trial: optuna.Trial) -> float:
                x = trial.suggest_float("x", -1.0, 1.0)
                trial.set_user_attr("worker", threading.get_ident())
                trial.report(x, step=1)
                return x * x

            optimize(study, objective, n_trials, storage=storage)
            storage.engine.dispose()
        except BaseException as e:  # noqa: BLE001 -- reported by the test below
            errors.append(e)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    threads = [threading.Thread(target=worker) for _ in range(n_workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "the workers are stuck"
    assert not errors, f"{len(errors)} workers failed, the first with: {errors[0]!r}"
    trials = optuna.load_study(study_name=study_name, storage=pooled_url).get_trials()
    states = {state: sum(t.state == state for t in trials) for state in TrialState}
    assert n_trials <= states[TrialState.COMPLETE] <= n_trials + n_workers - 1, states
    assert states[TrialState.COMPLETE] == len(trials), states


def test_the_lock_excludes_and_its_waiters_hold_no_server_connection(pooled_url: str) -> None:
    """More waiters than PgBouncer has server connections: the holder still gets one for its
    own work (waiters blocked inside a transaction would take them all and wait forever), one
    holder at a time, and nothing stays locked after the blocks end."""
    target = StorageTarget.parse(pooled_url)
    engine = sqlalchemy.create_engine(
        pooled_url, poolclass=sqlalchemy.pool.NullPool, connect_args={"prepare_threshold": None}
    )
    inside, most_inside, done = [0], [0], []
    guard = threading.Lock()
    errors: list[BaseException] = []

    def contender() -> None:
        try:
            with exclusive(target, "pooled test"):
                with guard:
                    inside[0] += 1
                    most_inside[0] = max(most_inside[0], inside[0])
                with engine.connect() as connection:  # the holder's own work, elsewhere
                    connection.exec_driver_sql("SELECT pg_sleep(0.02)")
                with guard:
                    inside[0] -= 1
                    done.append(1)
        except BaseException as e:  # noqa: BLE001 -- reported by the test below
            errors.append(e)

    threads = [threading.Thread(target=contender) for _ in range(POOL_SIZE + 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "the contenders are stuck"
    assert not errors, repr(errors[0])  # PgBouncer's query_wait_timeout ends a deadlock
    assert len(done) == len(threads) and most_inside[0] == 1
    with exclusive(target, "pooled test", wait=False) as free:
        assert free, "the lock stayed held after every block ended"
    engine.dispose()
