"""``python -m hpo.dashboard [--storage URL] [--port N]``: optuna-dashboard's own app.

Unlike plain ``optuna-dashboard URL`` it lists each trial's checkpoint (the artifact store),
opens the storage as a reader (a missing SQLite file is an error, not a new database), binds
127.0.0.1 unless told otherwise (no login) and serves in threads. Exit status: 0 stopped with
Ctrl-C, 2 bad input (one line on stderr).
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
from ..runtime.storage import open_existing_storage
from ..runtime.storage_url import (
    ARTIFACT_DIR_ENV,
    STORAGE_DEFAULT_HELP,
    StorageError,
    StorageTarget,
    resolve_storage_url,
)

__all__ = ["build_parser", "main", "make_dashboard_server"]

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser holding a connection open must not block shutdown


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
        "--artifact-dir",
        type=Path,
        metavar="DIR",
        help=f"model artifact folder (default: ${ARTIFACT_DIR_ENV}, else next to a SQLite "
        "file, else ./hpo-artifacts)",
    )
    return parser


def make_dashboard_server(
    target: StorageTarget, host: str, port: int, artifact_dir: Path
) -> WSGIServer:
    """The server, not started (``port`` 0: any free one); raises StorageError, UsageError."""
    import optuna_dashboard  # heavy (bottle app, plotly): only when a server is built

    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    storage = open_existing_storage(target)
    try:
        artifact_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"cannot create the artifact folder {artifact_dir}: {e.strerror or e}; "
            "pass --artifact-dir DIR"
        ) from e
    app = optuna_dashboard.wsgi(storage, artifact_store=FileSystemArtifactStore(artifact_dir))
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
        server = make_dashboard_server(target, args.host, args.port, artifacts)
    except (StorageError, UsageError) as e:
        return print_usage_error(e, prog="hpo.dashboard")
    host, port = server.server_address[:2]
    url = f"http://[{host}]:{port}/" if ":" in str(host) else f"http://{host}:{port}/"
    where = f"storage {target.masked}, artifacts {artifacts}"
    print(f"optuna-dashboard on {url} ({where}); Ctrl-C to stop", flush=True)
    if args.host not in _LOOPBACK:
        risk = "anyone who can reach this port can read and edit the studies"
        warning = f"warning: listening on {args.host}: {risk} (the dashboard has no login)"
        print(warning, file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
