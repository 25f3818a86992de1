"""Issue 31: every bad input and hostile file, table by table.

Secrets in storage URLs (every place a password can sit, malformed shapes included) never
reach an output; files that are not Optuna storages are never modified, and readers leave a
storage's bytes and folder as they found them; the dashboard answers only the names it is
served under and does not write unless told to; a study name cannot lead out of ``reports/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from wsgiref.simple_server import WSGIServer
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import sqlalchemy
import torch
from study_fixtures import StudyShape, make_study
from synthetic import write_mnist

from data import MNISTOptions
from hpo.errors import EXIT_NO_SPACE, EXIT_USAGE, CheckpointError
from hpo.reporting.dashboard import main as dashboard_main
from hpo.reporting.dashboard import make_dashboard_server
from hpo.reporting.dashboard_guard import DashboardGuard
from hpo.reporting.report import default_out_dir
from hpo.reporting.report import main as report_main
from hpo.runtime.faults import is_disk_full, no_space_error
from hpo.runtime.storage import (
    StorageOptions,
    close_storage,
    load_existing_study,
    open_existing_storage,
    open_storage,
)
from hpo.runtime.storage_url import StorageError, StorageTarget, hide_secrets, mask_url
from hpo.tuning.artifacts import load_trial_model, open_artifact_store
from hpo.tuning.cli import main as run_main
from hpo.tuning.export import main as export_main
from studies import Grid, StudyRegistry, default_registry, get_study

ROOT = Path(__file__).resolve().parent.parent
NO_HEARTBEAT = StorageOptions(heartbeat_interval=None, grace_period=None)
SECRET = "S3cretQ9"  # never in any output

# --- 1. Masking: every place a password can sit ---------------------------------------------

# (url, pieces of the password that must not show)
SECRET_URLS = [
    ("postgresql+psycopg://hpo:S3cretQ9@db:5432/hpo", ["S3cretQ9"]),
    ("postgresql+psycopg://hpo@db/hpo?password=S3cretQ9", ["S3cretQ9"]),
    ("postgresql+psycopg://hpo@db/hpo?sslmode=require&password=S3cretQ9", ["S3cretQ9"]),
    ("postgresql+psycopg://hpo@db/hpo?sslpassword=S3cretQ9", ["S3cretQ9"]),
    ("postgresql+psycopg://hpo@db/hpo?password=S3cretQ9&password=0therPw", ["S3cretQ9", "0therPw"]),
    ("postgresql+psycopg://hpo:Us3rInfo@db/hpo?password=S3cretQ9", ["S3cretQ9", "Us3rInfo"]),
    ("postgresql+psycopg://hpo@db/hpo?pass%77ord=S3cretQ9", ["S3cretQ9"]),  # %77: w
    ("postgresql+psycopg://hpo@db/hpo?password=S3cret%40Q9", ["S3cret", "Q9"]),
    ("postgresql+psycopg://hpo@db/hpo?PASSWORD=S3cretQ9", ["S3cretQ9"]),
    ("postgresql+psycopg://hpo@db/hpo?pasword=S3cretQ9", ["S3cretQ9"]),  # misspelt
    ("postgresql+psycopg://hpo@db/hpo?password=S3cr&etQ9", ["S3cr", "etQ9"]),  # an "&"
    ("postgresql+psycopg://hpo@db/hpo?password=S3c&rQ=tQ9", ["S3c", "rQ", "tQ9"]),
    ("postgresql+psycopg://hpo@db/hpo?password%3DS3cretQ9", ["S3cretQ9"]),  # "=" encoded
    ("postgresql+psycopg://hpo@db/hpo?password=S3cretQ9@x", ["S3cretQ9"]),
    ("postgresql+psycopg://hpo:S3cr%40etQ9@db/hpo", ["S3cr", "etQ9"]),
    # Malformed: a password holding "@", "/", "?" or "&", a user holding "/", no host...
    ("postgresql+psycopg://hpo:S3cr@etQ9@db/hpo", ["S3cr", "etQ9"]),
    ("postgresql+psycopg://hpo:S3cr/etQ9@db/hpo", ["S3cr", "etQ9"]),
    ("postgresql+psycopg://hpo:S3cr?etQ9@db/hpo", ["S3cr", "etQ9"]),
    ("postgresql+psycopg://hpo:S3c@r?et@Q9@db/hpo", ["S3c", "et", "Q9"]),
    ("postgresql+psycopg://hp/o:S3cretQ9@db/hpo", ["S3cretQ9"]),
    ("postgresql+psycopg://hpo:S3cretQ9@db:5x32/hpo", ["S3cretQ9"]),
    ("postgresql+psycopg://hpo:S3cretQ9/hpo", ["S3cretQ9"]),  # "@host" forgotten
    ("postgresql+psycopg://hpo:S3cretQ9", ["S3cretQ9"]),
    ("postgresql:/hpo:S3cretQ9@db/hpo", ["S3cretQ9"]),  # one slash
    ("hpo:S3cretQ9@db/hpo", ["S3cretQ9"]),  # no scheme
    ("postgresql+psycopg://hpo:S3cret\nQ9@db/hpo", ["S3cret", "Q9"]),
    ("postgresql+psycopg://hpo:S3cretQ9@db/hpo?application_name=me@work", ["S3cretQ9"]),
    ("mysql://hpo:S3cretQ9@db/hpo", ["S3cretQ9"]),
]

PLAIN_URLS = [  # nothing secret: shown as written
    "sqlite:///hpo.db",
    "sqlite:////abs/path/to/study.db",
    "sqlite:///:memory:",
    "postgresql+psycopg://hpo@db:5432/hpo",
    "postgresql+psycopg://hpo@db/hpo?sslmode=require&application_name=sparse&connect_timeout=5",
    "postgresql+psycopg://hpo@[::1]:5432/hpo?options=-csearch_path%3Dt_1",
    "postgresql+psycopg://db/hpo?application_name=me@work",
    "not a url",
]


@pytest.mark.parametrize(("url", "pieces"), SECRET_URLS)
def test_mask_url_hides_every_password_position(url: str, pieces: list[str]) -> None:
    masked = mask_url(url)
    assert "***" in masked
    for piece in pieces:
        assert piece not in masked, masked


@pytest.mark.parametrize("url", PLAIN_URLS)
def test_mask_url_leaves_urls_without_secrets_unchanged(url: str) -> None:
    assert mask_url(url) == url


@pytest.mark.parametrize(("url", "pieces"), SECRET_URLS)
def test_a_storage_url_is_accepted_masked_or_refused_in_one_line(
    url: str, pieces: list[str]
) -> None:
    try:
        target = StorageTarget.parse(url)
    except StorageError as e:
        shown = str(e)
        assert "\n" not in shown
    else:
        shown = f"{target.masked} {target!r} {target.hide(f'driver says {target.url}')}"
    for piece in pieces:
        assert piece not in shown, shown


def test_the_url_a_storage_is_opened_with_keeps_the_password() -> None:
    """The control: what the masking hides is really there."""
    target = StorageTarget.parse(f"postgresql://hpo@db/hpo?password={SECRET}")
    assert SECRET in target.url and SECRET not in target.masked


def test_hidden_secrets_leave_the_rest_of_a_message_readable() -> None:
    url = "postgresql+psycopg://hpo@db/hpo?password=S3cretQ9&pasword=typo"
    message = 'password S3cretQ9 rejected; invalid connection option "pasword" for user "hpo"'
    assert hide_secrets(message, url) == (
        'password *** rejected; invalid connection option "***" for user "hpo"'
    )


# --- 1. ...in the one-line errors of every command --------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


COMMANDS: dict[str, Callable[[str, Path], int]] = {
    "run": lambda url, out: run_main(
        ["--study", "sparse_mnist", "--storage", url, "--device", "cpu", "--no-progress"]
    ),
    "report": lambda url, out: report_main(
        ["--study", "sparse_mnist", "--storage", url, "--out", str(out / "report"), "--no-png"]
    ),
    "export": lambda url, out: export_main(
        ["--study", "sparse_mnist", "--storage", url, "--out", str(out / "best.pt")]
    ),
    "dashboard": lambda url, out: dashboard_main(["--storage", url, "--port", "0"]),
}

UNREACHABLE = [  # each with SECRET in it, and a server nobody listens on
    "postgresql+psycopg://hpo@127.0.0.1:{port}/hpo?password=S3cretQ9&connect_timeout=3",
    "postgresql+psycopg://hpo:S3cretQ9@127.0.0.1:{port}/hpo?connect_timeout=3",
    "postgresql+psycopg://hpo@127.0.0.1:{port}/hpo?connect_timeout=3&sslpassword=S3cretQ9",
    "postgresql+psycopg://hpo@127.0.0.1:{port}/hpo?connect_timeout=3&pasword=S3cretQ9",
    "postgresql+psycopg://hpo:S3cr@etQ9@127.0.0.1:{port}/hpo",
    "postgresql+psycopg://hpo:S3cretQ9@127.0.0.1:notaport/hpo",
    "postgresql+psycopg://hpo:S3cretQ9/hpo",
    "hpo:S3cretQ9@127.0.0.1/hpo",
]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("url", UNREACHABLE)
def test_every_command_refuses_in_one_line_without_the_password(
    command: str,
    url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert COMMANDS[command](url.format(port=_closed_port()), tmp_path) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    everything = out + err + caplog.text
    assert "S3cr" not in everything and "etQ9" not in everything, everything


# --- 1. ...and in what a run, a report, an export and the dashboard write ---------------------


# sparse_mnist on the synthetic data, one tiny grid point.
TINY = dataclasses.replace(
    get_study("sparse_mnist"),
    name="tiny_mnist",
    description="sparse_mnist on the synthetic test data",
    dataset_options=MNISTOptions(val_size=100),
    test_sparsities=(0.5, 0.9),
    epochs=1,
    train_size=64,
    eval_batch_size=100,
    grid=Grid.of(depth=(3,), activation=("relu",), batch_size=(32,), lr=(1e-2,)),
)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One thread, and the CPU settings a worker changes put back afterwards."""
    import torch

    from hpo.runtime.cpu import flush_denormals

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    flush_denormals(False)


def _password_in_the_query(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A storage URL whose password is libpq's ``password=`` option. SQLite ignores a query
    option it does not know (with a warning), so a run needs no database server there."""
    if where == "sqlite":
        return f"sqlite:///{tmp_path / 'hpo.db'}?password={SECRET}"
    server = sqlalchemy.engine.make_url(request.getfixturevalue("postgres_url"))
    assert server.password  # the CI server's, moved from the user-info into the query
    moved = server.set(password=None).update_query_dict({"password": server.password})
    return moved.render_as_string(hide_password=False)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Query string argument")  # pysqlite: password= is ignored
@pytest.mark.parametrize(
    "where", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_a_study_run_with_a_password_in_the_url_never_shows_it(
    where: str,
    data_env: Path,  # noqa: ARG001
    one_thread: None,  # noqa: ARG001
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)  # a server's artifacts go to ./hpo-artifacts
    url = _password_in_the_query(where, tmp_path, request)
    secret = parse_qs(urlsplit(url).query)["password"][0]
    argv = ["--study", TINY.name, "--n-trials", "1", "--storage", url, "--device", "cpu"]
    registry = StudyRegistry([*default_registry(), TINY])
    assert run_main([*argv, "--no-progress", "--pruner", "none"], registry=registry) == 0
    best = tmp_path / "best.pt"
    assert export_main(["--study", TINY.name, "--storage", url, "--out", str(best)]) == 0
    out_dir = tmp_path / "report"
    report = ["--study", TINY.name, "--storage", url, "--out", str(out_dir), "--no-png"]
    assert report_main(report) == 0
    monkeypatch.setattr(WSGIServer, "serve_forever", _interrupt)
    assert dashboard_main(["--storage", url, "--port", "0"]) == 0
    out, err = capsys.readouterr()
    everything = out + err + caplog.text
    assert secret not in everything
    assert "python -m hpo.export" in out and "password=***" in out  # the hint, masked
    assert any("password=***" in r.getMessage() for r in caplog.records)  # the log line
    markdown = (out_dir / "report.md").read_text()
    assert secret not in markdown
    assert [line for line in markdown.splitlines() if "password=***" in line]  # Storage, ...
    assert secret.encode() not in best.read_bytes()  # the checkpoint's source


def _interrupt(self: WSGIServer, *_args: object) -> None:
    raise KeyboardInterrupt  # Ctrl-C the moment the dashboard would serve


# --- 2. Files that are not Optuna storages --------------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every entry below ``folder`` with its content hash and mtime: what "unchanged" means."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        entries[str(path.relative_to(folder))] = (digest, path.stat().st_mtime_ns)
    return entries


def _contacts(path: Path, *, wal: bool = False) -> None:
    """Another application's SQLite file: one unrelated table with a row."""
    connection = sqlite3.connect(path)
    if wal:
        connection.execute("PRAGMA journal_mode=WAL")
    with connection:
        connection.execute("CREATE TABLE contacts (name TEXT, email TEXT)")
        connection.execute("INSERT INTO contacts VALUES ('Ada', 'ada@example.org')")
    connection.close()


def _lookalike(path: Path) -> None:
    """A table named like one of Optuna's, but not its schema."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE studies (id INTEGER PRIMARY KEY)")
    connection.close()


FOREIGN_FILES: dict[str, Callable[[Path], None]] = {
    "sqlite, another application's": _contacts,
    "sqlite in WAL mode, another application's": lambda p: _contacts(p, wal=True),
    "sqlite, a table named studies": _lookalike,
    "a text file": lambda p: p.write_text("name,email\nAda,ada@example.org\n"),
    "a SQLite header, then garbage": lambda p: p.write_bytes(b"SQLite format 3\x00" + b"x" * 5000),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", sorted(FOREIGN_FILES))
def test_a_foreign_file_is_refused_in_one_line_and_left_unchanged(
    command: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir()
    FOREIGN_FILES[kind](folder / "app.db")
    before = _snapshot(folder)
    assert COMMANDS[command](f"sqlite:///{folder / 'app.db'}", tmp_path) == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "app.db" in err, err
    assert _snapshot(folder) == before  # same bytes, same mtime, no -wal/-shm, no folder


def test_an_empty_sqlite_file_still_becomes_a_storage(tmp_path: Path) -> None:
    (tmp_path / "new.db").touch()  # e.g. made by `touch` before the first run
    storage = open_storage(f"sqlite:///{tmp_path / 'new.db'}", NO_HEARTBEAT)
    optuna.create_study(study_name="s", storage=storage)
    assert [s.study_name for s in storage.get_all_studies()] == ["s"]
    close_storage(storage)
    with pytest.raises(StorageError, match="holds no Optuna storage"):
        (tmp_path / "empty.db").touch()
        open_existing_storage(f"sqlite:///{tmp_path / 'empty.db'}")


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["run", "report", "export", "dashboard"])
def test_no_command_adds_tables_to_another_applications_database(
    command: str, postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE contacts (name TEXT)")
    assert COMMANDS[command](postgres_url, tmp_path) == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not an Optuna storage" in err, err
    assert sqlalchemy.inspect(engine).get_table_names() == ["contacts"]
    engine.dispose()


# --- 2. Readers leave a storage as they found it --------------------------------------------


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    """A SQLite storage with a finished study, every connection closed (no side files)."""
    folder = tmp_path / "storage"
    folder.mkdir()
    db = folder / "hpo.db"
    storage = open_storage(f"sqlite:///{db}", NO_HEARTBEAT)
    make_study(storage, "sparse_mnist", seed=3, shape=StudyShape(3, 1, 1, 0))
    close_storage(storage)
    assert sorted(p.name for p in folder.iterdir()) == ["hpo.db"]
    return db


def _read_with_report(url: str, out: Path) -> None:
    assert report_main(["--study", "sparse_mnist", "--storage", url, "--out", str(out)]) == 0


def _read_with_export(url: str, out: Path) -> None:
    # The study's trials saved no model files: export reads the study, then says so.
    assert export_main(["--study", "sparse_mnist", "--storage", url, "--out", f"{out}.pt"]) == 2


def _read_with_dashboard(url: str, _out: Path) -> None:
    target = StorageTarget.parse(url)
    server = make_dashboard_server(target, "127.0.0.1", 0, target.artifact_dir)
    try:
        app = server.get_app()
        assert _call(app, "GET", "/api/studies", "localhost")[0] == 200
        assert _call(app, "GET", "/api/studies/1", "localhost")[0] == 200
    finally:
        server.server_close()


def _read_with_helpers(url: str, _out: Path) -> None:
    storage = open_existing_storage(url)  # the README's snippet
    study = load_existing_study(storage, "sparse_mnist", url)
    assert len(study.trials) == 5
    open_artifact_store(url)
    close_storage(storage)


def _read_in_a_process_that_just_ends(url: str, _out: Path) -> None:
    code = (
        "import optuna; from hpo.runtime.storage import open_existing_storage as o; "
        f"print(len(optuna.load_study(study_name='sparse_mnist', storage=o({url!r})).trials))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.strip() == "5", done.stderr


READERS = {
    "report": _read_with_report,
    "export": _read_with_export,
    "dashboard": _read_with_dashboard,
    "snippet helpers": _read_with_helpers,
    "a process that never closes": _read_in_a_process_that_just_ends,
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_readers_leave_a_storage_file_and_its_folder_unchanged(
    reader: str, study_file: Path, tmp_path: Path
) -> None:
    before = _snapshot(study_file.parent)
    READERS[reader](f"sqlite:///{study_file}", tmp_path / "out")
    assert _snapshot(study_file.parent) == before


def test_a_reader_leaves_a_running_workers_files_alone(study_file: Path) -> None:
    """The control: side files a worker uses are not the reader's to remove."""
    url = f"sqlite:///{study_file}"
    worker = open_storage(url, NO_HEARTBEAT)
    study = optuna.load_study(study_name="sparse_mnist", storage=worker)
    study.set_user_attr("before", 1)
    reader = open_existing_storage(url)
    assert optuna.load_study(study_name="sparse_mnist", storage=reader).user_attrs["before"] == 1
    close_storage(reader)
    assert Path(f"{study_file}-wal").exists()  # the worker still has it open
    study.set_user_attr("after", 2)  # and still writes
    assert study.user_attrs["after"] == 2
    close_storage(worker)


def test_a_reader_cannot_write(study_file: Path) -> None:
    before = _snapshot(study_file.parent)
    reader = open_existing_storage(f"sqlite:///{study_file}")
    study = optuna.load_study(study_name="sparse_mnist", storage=reader)
    with pytest.raises((optuna.exceptions.OptunaError, sqlalchemy.exc.SQLAlchemyError)):
        study.set_user_attr("written", True)
    close_storage(reader)
    assert _snapshot(study_file.parent) == before


# --- 3. The dashboard's Host check, and writes only with --edit -------------------------------


def _call(app: Callable, method: str, path: str, host: str | None) -> tuple[int, bytes]:
    environ: dict[str, object] = {"REQUEST_METHOD": method, "PATH_INFO": path}
    setup_testing_defaults(environ)
    environ.pop("HTTP_HOST", None)
    if host is not None:
        environ["HTTP_HOST"] = host
    status: list[str] = []
    result = app(environ, lambda s, _headers, _exc=None: status.append(s))
    try:
        body = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return int(status[0].split()[0]), body


# (Host header, bound address, --allow-host names, answered?)
HOSTS = [
    ("localhost:8080", "127.0.0.1", [], True),
    ("127.0.0.1:8080", "127.0.0.1", [], True),
    ("[::1]:8080", "127.0.0.1", [], True),
    ("LOCALHOST.", "127.0.0.1", [], True),
    ("127.0.0.2", "127.0.0.1", [], True),  # all of 127/8 is loopback
    ("localhost:8080", "0.0.0.0", [], True),  # compose: published on the host's 127.0.0.1
    ("127.0.0.1:8080", "0.0.0.0", [], True),
    ("192.168.1.5:8080", "192.168.1.5", [], True),  # the address it is bound to
    ("attacker.example", "127.0.0.1", [], False),
    ("attacker.example:8080", "0.0.0.0", [], False),
    ("localhost.attacker.example", "127.0.0.1", [], False),
    ("attacker.example@127.0.0.1", "127.0.0.1", [], False),
    ("127.0.0.1 attacker.example", "127.0.0.1", [], False),
    ("0.0.0.0:8080", "0.0.0.0", [], False),  # "any address" is not a name to be served
    ("192.168.1.5:8080", "0.0.0.0", [], False),
    (None, "127.0.0.1", [], False),  # no Host header at all
    ("", "127.0.0.1", [], False),
    ("gpu-box:8080", "0.0.0.0", ["gpu-box"], True),  # --allow-host: deliberate remote use
    ("GPU-BOX.lan", "0.0.0.0", ["gpu-box.lan"], True),
    ("attacker.example", "0.0.0.0", ["gpu-box"], False),
    ("anything.example", "0.0.0.0", ["*"], True),
]


@pytest.fixture(scope="module")
def served_study(tmp_path_factory: pytest.TempPathFactory) -> StorageTarget:
    db = tmp_path_factory.mktemp("dashboard") / "hpo.db"
    storage = open_storage(f"sqlite:///{db}", NO_HEARTBEAT)
    make_study(storage, "sparse_mnist", seed=4, shape=StudyShape(2, 0, 0, 0))
    close_storage(storage)
    return StorageTarget.parse(f"sqlite:///{db}")


def _ok(_environ: dict, start_response: Callable) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served\n"]


@pytest.mark.parametrize(("host", "bound", "allowed", "answered"), HOSTS)
def test_the_dashboard_answers_only_the_names_it_is_served_under(
    host: str | None, bound: str, allowed: list[str], answered: bool
) -> None:
    guard = DashboardGuard(_ok, bound, allowed, read_only=True)
    status, body = _call(guard, "GET", "/api/studies", host)
    assert status == (200 if answered else 403), body
    if not answered:
        assert body.count(b"\n") == 1 and b"--allow-host" in body


@pytest.mark.parametrize(
    ("host", "edit", "status", "kept"),
    [
        ("attacker.example", False, 403, True),
        ("attacker.example", True, 403, True),  # DNS rebinding: even an editable one refuses
        ("localhost:8080", False, 403, True),  # read-only: no writes at all
        ("localhost:8080", True, 204, False),  # the control: --edit deletes
    ],
)
def test_deleting_a_study_needs_an_allowed_host_and_edit(
    tmp_path: Path, host: str, edit: bool, status: int, kept: bool
) -> None:
    db = tmp_path / "hpo.db"
    storage = open_storage(f"sqlite:///{db}", NO_HEARTBEAT)
    make_study(storage, "sparse_mnist", shape=StudyShape(1, 0, 0, 0))
    study_id = storage.get_study_id_from_name("sparse_mnist")
    close_storage(storage)
    target = StorageTarget.parse(f"sqlite:///{db}")
    server = make_dashboard_server(target, "127.0.0.1", 0, tmp_path / "artifacts", edit=edit)
    try:
        answer = _call(server.get_app(), "DELETE", f"/api/studies/{study_id}", host)
    finally:
        server.server_close()
    assert answer[0] == status, answer
    reader = open_existing_storage(target)
    names = [s.study_name for s in reader.get_all_studies()]
    close_storage(reader)
    assert names == (["sparse_mnist"] if kept else [])


def test_a_rebinding_request_over_the_network_gets_403(served_study: StorageTarget) -> None:
    target = served_study
    server = make_dashboard_server(target, "127.0.0.1", 0, target.artifact_dir, edit=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        answers = {}
        for host in ("attacker.example", f"localhost:{port}"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/api/studies", headers={"Host": host})
            response = connection.getresponse()
            answers[host] = (response.status, response.read())
            connection.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert answers["attacker.example"][0] == 403
    assert (
        answers[f"localhost:{port}"][0] == 200
        and b"sparse_mnist" in answers[f"localhost:{port}"][1]
    )


def test_the_dashboard_command_passes_allow_host_and_edit_on(
    served_study: StorageTarget, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    answers: list[int] = []

    def serve(server: WSGIServer, *_args: object) -> None:
        app = server.get_app()
        answers.extend(
            _call(app, method, "/api/studies", host)[0]
            for method, host in (
                ("GET", "gpu-box:8080"),
                ("GET", "other:8080"),
                ("POST", "gpu-box"),
            )
        )
        raise KeyboardInterrupt

    monkeypatch.setattr(WSGIServer, "serve_forever", serve)
    argv = ["--storage", served_study.url, "--port", "0", "--allow-host", "gpu-box"]
    assert dashboard_main(argv) == 0
    assert dashboard_main([*argv, "--allow-host", "other", "--edit"]) == 0
    # Read-only: the POST is refused; editable: it reaches optuna-dashboard (which wants a body).
    assert answers[:3] == [200, 403, 403] and answers[3:5] == [200, 200] and answers[5] != 403
    assert "read-only" in capsys.readouterr().out


# --- (also) A study name cannot lead out of reports/ -------------------------------------------

HOSTILE_NAMES = [
    "../escape",
    "../../escape",
    "a/../../b",
    "/tmp/abs",
    "..",
    ".",
    ".hidden",
    "a b/c",
    "",
    "a\\..\\b",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_study_name_becomes_one_safe_folder_under_reports(name: str) -> None:
    for folder in (default_out_dir([name]), default_out_dir(["sparse_mnist", name])):
        assert folder.parent == Path("reports")
        assert folder.name not in ("", ".", "..") and not folder.name.startswith(".")
        assert "/" not in folder.name and "\\" not in folder.name


def test_a_report_of_a_study_named_dot_dot_stays_in_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db, name = tmp_path / "hpo.db", "../../escape"
    storage = open_storage(f"sqlite:///{db}", NO_HEARTBEAT)
    make_study(storage, "sparse_mnist", shape=StudyShape(2, 0, 0, 0))
    optuna.copy_study(
        from_study_name="sparse_mnist", from_storage=storage, to_storage=storage, to_study_name=name
    )
    close_storage(storage)
    work = tmp_path / "work" / "deeper"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = set(_snapshot(tmp_path))
    assert report_main(["--study", name, "--storage", f"sqlite:///{db}", "--no-png"]) == 0
    assert report_main(["--compare", "sparse_mnist", name, "--storage", f"sqlite:///{db}"]) == 0
    new = set(_snapshot(tmp_path)) - before
    assert new and all(p.startswith("work/deeper/reports") for p in new), sorted(new)
    assert len(list((work / "reports").iterdir())) == 2
    assert "report.md" in capsys.readouterr().out


# --- 5. Hostile checkpoint files: safe to load, wrong inside --------------------------------

PUBLISHED = ROOT / "docs" / "results" / "models" / "dense_mnist.pt"
FIRST_WEIGHT = "convs.0.weight"


def _config(**changes: object) -> Callable[[dict], None]:
    return lambda payload: payload["config"].update(changes)


def _weight(value: torch.Tensor) -> Callable[[dict], None]:
    return lambda payload: payload["state_dict"].update({FIRST_WEIGHT: value})


# (what is wrong, how the file is spoiled, what the one line names)
HOSTILE_CHECKPOINTS = [
    ("no config", lambda p: p.update(config=None), "config is not a mapping"),
    ("no weights", lambda p: p.update(state_dict=[1, 2]), "holds no weights"),
    ("mean a string", _config(mean="abc"), "malformed config"),
    ("no channels", _config(mean=[], std=[]), "one value per channel"),
    ("std zero", _config(std=[0.0]), "std finite and positive"),
    ("mean NaN", _config(mean=[float("nan")]), "mean must be finite"),
    ("unknown network key", _config(cnn_config={"x": 1}), "unknown key(s) x"),
    ("network not a mapping", _config(cnn_config=5), "cnn_config is not a mapping"),
    ("definition a string", _config(definition="x"), "definition is not a mapping"),
    ("unknown family", _config(model_family=7), "not a valid ModelFamily"),
    ("unknown config key", _config(extra=1), "has unknown ['extra']"),
    ("wrong weight shape", _weight(torch.zeros(1)), "size mismatch"),
    ("integer weights", _weight(torch.zeros(32, 2, 11, 11, dtype=torch.int64)), "torch.int64"),
    ("other format", lambda p: p.update(format=2), "has format 2, expected 1"),
]


@pytest.mark.parametrize(
    ("spoil", "fragment"),
    [case[1:] for case in HOSTILE_CHECKPOINTS],
    ids=[case[0] for case in HOSTILE_CHECKPOINTS],
)
def test_a_malformed_checkpoint_is_refused_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spoil: Callable[[dict], None],
    fragment: str,
) -> None:
    """Files that ``torch.load(weights_only=True)`` reads safely but that are wrong inside:
    refused before any data is read, never scored as if they were a network."""
    from hpo.checkpoints.evaluate import main as evaluate_main

    payload = torch.load(PUBLISHED, weights_only=True)
    spoil(payload)
    path = tmp_path / "spoiled.pt"
    torch.save(payload, path)
    assert evaluate_main([str(path), "--data-dir", str(tmp_path / "no-data")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err, err


# --- 6. A full disk: one line naming what was written, whatever shape the error takes -------


def _wrapped(inner: BaseException, *outer: type[BaseException]) -> BaseException:
    """``inner`` raised, then each of ``outer`` raised from it (as SQLAlchemy and Optuna do)."""
    error = inner
    for kind in outer:
        try:
            raise kind("wrapper") from error
        except kind as e:
            error = e
    return error


class _DiskFull(Exception):
    """psycopg's ``errors.DiskFull`` as the server reports it (SQLSTATE 53100)."""

    sqlstate = "53100"


def _sqlalchemy_error(orig: BaseException) -> BaseException:
    return sqlalchemy.exc.OperationalError("COMMIT", {}, orig)


# (what happened, the error as the product meets it, what the line names; None: not disk full)
FULL_DISK_ERRORS = [
    ("file write", OSError(28, "No space left on device"), "a file"),
    ("quota", OSError(122, "Disk quota exceeded", "/q/x.pt"), "/q/x.pt"),
    (
        "SQLite through SQLAlchemy and Optuna",
        _wrapped(
            _sqlalchemy_error(sqlite3.OperationalError("database or disk is full")),
            optuna.exceptions.StorageInternalError,
            AssertionError,
        ),
        "the study storage sqlite:///s.db",
    ),
    (
        "PostgreSQL's disk_full",
        _sqlalchemy_error(_DiskFull("could not extend file: No space left on device")),
        "the study storage sqlite:///s.db",
    ),
    ("another OSError", OSError(13, "Permission denied"), None),
    ("another SQLite error", _sqlalchemy_error(sqlite3.OperationalError("locked")), None),
]


@pytest.mark.parametrize(
    ("error", "named"),
    [case[1:] for case in FULL_DISK_ERRORS],
    ids=[case[0] for case in FULL_DISK_ERRORS],
)
def test_a_full_disk_is_recognised_in_any_error_chain(
    error: BaseException, named: str | None
) -> None:
    assert is_disk_full(error) is (named is not None)
    found = no_space_error(error, "sqlite:///s.db")
    assert (found and found.what) == named


def test_export_and_report_onto_a_full_disk_say_so_and_leave_no_partial_file(
    small_disk: Path, study_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{study_file}"
    artifacts = StorageTarget.parse(url).artifact_dir
    artifacts.mkdir()
    trial = load_existing_study(open_existing_storage(url), "sparse_mnist", url).best_trial
    checkpoint = torch.load(PUBLISHED, weights_only=True)
    checkpoint["config"]["trial_number"] = trial.number
    torch.save(checkpoint, artifacts / trial.user_attrs["model_artifact_id"])
    (small_disk / "filler").write_bytes(b"\0" * (os.statvfs(small_disk).f_bavail * 4096 - 8192))
    before = set(_snapshot(small_disk))
    assert export_main(["--study", "sparse_mnist", "--storage", url, "--out",
                        str(small_disk / "best.pt")]) == EXIT_NO_SPACE  # fmt: skip
    assert report_main(["--study", "sparse_mnist", "--storage", url, "--no-png", "--out",
                        str(small_disk / "report")]) == EXIT_NO_SPACE  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": error: ")[0] for line in lines] == ["hpo.export", "hpo.report"]
    assert all("no space left on device writing " + str(small_disk) in line for line in lines)
    assert all(line.endswith("free space and run the same command again") for line in lines)
    after = _snapshot(small_disk)
    files = [p for p, (digest, _) in after.items() if p not in before and digest != "dir"]
    assert all((small_disk / p).stat().st_size > 0 for p in files), files  # whole files only
    assert not any(Path(p).name.startswith(".") for p in files)  # no temporary left


def test_an_artifact_folder_of_another_study_is_refused_in_one_line(
    study_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trial's artifact id names a checkpoint another trial saved (a folder mixed up, or
    planted): refused, not exported under this trial's name."""
    url = f"sqlite:///{study_file}"
    artifacts = StorageTarget.parse(url).artifact_dir
    artifacts.mkdir()
    trial = load_existing_study(open_existing_storage(url), "sparse_mnist", url).best_trial
    checkpoint = torch.load(PUBLISHED, weights_only=True)
    checkpoint["config"]["trial_number"] = trial.number + 1
    torch.save(checkpoint, artifacts / trial.user_attrs["model_artifact_id"])
    out = tmp_path / "best.pt"
    assert export_main(["--study", "sparse_mnist", "--storage", url, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"holds trial {trial.number + 1}'s checkpoint" in err and "\n" not in err
    assert not out.exists()


def test_a_study_with_no_completed_trial_yet_exports_nothing_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where every CPU user stands after the first command: export and the README's reload
    helper say in one line that no trial has completed yet (was 30 lines of traceback)."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    storage = open_storage(url, NO_HEARTBEAT)
    make_study(storage, "sparse_mnist", shape=StudyShape(0, 1, 1, 1, test_metrics=False))
    close_storage(storage)
    out = tmp_path / "best.pt"
    assert export_main(["--study", "sparse_mnist", "--storage", url, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no completed trial yet" in err and "\n" not in err and not out.exists()
    study = load_existing_study(open_existing_storage(url), "sparse_mnist", url)
    with pytest.raises(CheckpointError, match="no completed trial yet") as raised:
        load_trial_model(study, store=open_artifact_store(url))
    assert "\n" not in str(raised.value)


def test_a_database_damaged_where_the_trials_are_is_one_line_for_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file opens (its first pages are whole) and fails at the first query of the trials:
    one line with what to do, exit 2, from a run, a report and an export alike (was 97-113
    lines of traceback; only a file that failed as it was opened said so)."""
    write_mnist(tmp_path / "data", n_train=5100)  # sparse_mnist keeps 5,000 for validation
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "data"))
    db = tmp_path / "hpo.db"
    storage = open_storage(f"sqlite:///{db}", NO_HEARTBEAT)
    budget = {"epochs": 1, "train_size": 64, "val_size": 100}
    make_study(storage, "sparse_mnist", shape=StudyShape(40, 5, 5, 0), overrides=budget)
    close_storage(storage)
    pages = db.stat().st_size // 4096
    with db.open("r+b") as f:  # the last pages: the trials, written last
        f.seek((pages - 3) * 4096)
        f.write(b"\xde\xad" * 2048 * 3)
    url = f"sqlite:///{db}"
    out = tmp_path / "out"
    out.mkdir()
    statuses = [
        run_main(["--study", "sparse_mnist", "--storage", url, "--n-trials", "60", "--epochs",
                  "1", "--train-size", "64", "--val-size", "100", "--pruner", "hyperband",
                  "--device", "cpu", "--no-progress"]),
        report_main(["--study", "sparse_mnist", "--storage", url, "--out", str(out / "r")]),
        export_main(["--study", "sparse_mnist", "--storage", url, "--out", str(out / "b.pt")]),
    ]  # fmt: skip
    assert statuses == [EXIT_USAGE] * 3
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 3, lines
    assert all("the file is damaged: restore it from a backup" in line for line in lines), lines
