"""``python -m hpo.dashboard [--storage URL] [--port N]``: optuna-dashboard's own app.

Unlike plain ``optuna-dashboard URL`` it lists each trial's checkpoint (the artifact store),
opens the storage as a reader (a missing SQLite file is an error, not a new database; read-only
unless ``--edit``), binds 127.0.0.1 unless told otherwise (no login), answers only the names it
is served under (``--allow-host``) and serves in threads. Exit status: 0 stopped with Ctrl-C,
2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.artifacts import FileSystemArtifactStore

from ..errors import UsageError, print_usage_error
from ..runtime.storage import close_storage, open_existing_storage
from ..runtime.storage_url import (
    ARTIFACT_DIR_ENV,
    STORAGE_DEFAULT_HELP,
    StorageError,
    StorageTarget,
    resolve_storage_url,
)
from .dashboard_guard import LOOPBACK_NAMES, DashboardGuard

__all__ = ["build_parser", "main", "make_dashboard_server"]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser holding a connection open must not block shutdown
    storage: optuna.storages.BaseStorage | None = None  # closed with the server

    def server_close(self) -> None:
        super().server_close()
        if self.storage is not None:
            close_storage(self.storage)


class _QuietHandler(WSGIRequestHandler):
    """Logs errors only, not one line per asset the page loads."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).startswith(("4", "5")) and str(code) != "404":
            super().log_request(code, size)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpo.dashboard",
        description="Serve optuna-dashboard for the study storage, with the saved models.",
    )
    add = parser.add_argument
    add("--storage", metavar="URL", help=f"study storage (default: {STORAGE_DEFAULT_HELP})")
    add(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s; the dashboard has no login)",
    )
    add("--port", type=int, default=8080, help="port (default: %(default)s)")
    add(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for host NAME, e.g. this machine's name for deliberate "
        "remote use; repeatable, '*' for any (default: only localhost, 127.0.0.1, ::1 and "
        "the --host address: other names are refused against DNS rebinding)",
    )
    add(
        "--edit",
        action="store_true",
        help="let the dashboard change the storage (notes, deleting studies, telling trials); "
        "default: read-only, a SQLite file opened read-only",
    )
    add(
        "--artifact-dir",
        type=Path,
        metavar="DIR",
        help=f"model artifact folder (default: ${ARTIFACT_DIR_ENV}, else next to a SQLite "
        "file, else ./hpo-artifacts)",
    )
    return parser


def make_dashboard_server(
    target: StorageTarget,
    host: str,
    port: int,
    artifact_dir: Path,
    *,
    allowed_hosts: Sequence[str] = (),
    edit: bool = False,
) -> WSGIServer:
    """The server, not started (``port`` 0: any free one); raises StorageError, UsageError.
    ``server_close()`` closes the storage too."""
    import optuna_dashboard  # heavy (bottle app, plotly): only when a server is built

    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    storage = open_existing_storage(target, edit=edit)
    try:
        if edit:  # uploads go there; a read-only dashboard creates no folder
            _make_artifact_dir(artifact_dir)
        store = FileSystemArtifactStore(artifact_dir)
        app = DashboardGuard(
            optuna_dashboard.wsgi(storage, artifact_store=store),
            host,
            allowed_hosts,
            read_only=not edit,
        )
        server = _listen(host, port, app)
    except BaseException:
        close_storage(storage)
        raise
    server.storage = storage
    return server


def _make_artifact_dir(artifact_dir: Path) -> None:
    try:
        artifact_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"cannot create the artifact folder {artifact_dir}: {e.strerror or e}; "
            "pass --artifact-dir DIR"
        ) from e


def _listen(host: str, port: int, app: DashboardGuard) -> _ThreadingWSGIServer:
    try:
        return make_server(
            host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
    except OSError as e:
        why = e.strerror or e
        raise UsageError(f"cannot listen on {host}:{port}: {why}; pick another --port") from e


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: serve until Ctrl-C (status 0); bad input is one line, status 2."""
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        target = StorageTarget.parse(resolve_storage_url(args.storage))
        artifacts = args.artifact_dir or target.artifact_dir
        server = make_dashboard_server(
            target,
            args.host,
            args.port,
            artifacts,
            allowed_hosts=args.allow_host,
            edit=args.edit,
        )
    except (StorageError, UsageError) as e:
        return print_usage_error(e, prog="hpo.dashboard")
    host, port = server.server_address[:2]
    url = f"http://[{host}]:{port}/" if ":" in str(host) else f"http://{host}:{port}/"
    mode = "editable" if args.edit else "read-only"
    where = f"storage {target.masked} ({mode}), artifacts {artifacts}"
    print(f"optuna-dashboard on {url} ({where}); Ctrl-C to stop", flush=True)
    if args.host not in LOOPBACK_NAMES:
        can = "read and edit" if args.edit else "read"
        risk = f"anyone who reaches this port under an allowed host name can {can} the studies"
        warning = f"warning: listening on {args.host}: {risk} (the dashboard has no login)"
        print(warning, file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
