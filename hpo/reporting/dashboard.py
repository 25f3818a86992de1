"""``python -m hpo.dashboard``: optuna-dashboard on the study storage, with the saved models.

    python -m hpo.dashboard                              # storage from $HPO_STORAGE or ./hpo.db
    python -m hpo.dashboard --storage sqlite:///runs/hpo.db --port 8081

Differences from the plain ``optuna-dashboard URL`` command, and why:

* The storage is opened with :func:`hpo.storage.open_storage` (the URL rules, WAL and lock
  waits of the study runner) and the file-system artifact store of that storage
  (:func:`hpo.storage.artifact_dir_for`) is attached, so each trial's saved checkpoint appears
  on its trial page without a separate ``--artifact-dir``.
* It binds to 127.0.0.1 unless told otherwise: the dashboard has no authentication and can
  edit studies, so exposing it is a decision (``--host 0.0.0.0``), not a default.
* The server is optuna-dashboard's WSGI app (``optuna_dashboard.wsgi``) in a *threaded*
  ``wsgiref`` server. ``optuna_dashboard.run_server`` serves one request at a time (bottle's
  default server), so one slow page -- a large study's trial list -- stalls every other tab.
* A SQLite file that does not exist is an error here (a dashboard should not create an empty
  database because of a typo), a port in use is one line, and Ctrl-C exits cleanly.

Exit status: 0 stopped with Ctrl-C, 2 bad input (storage, port).
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

from .storage import StorageError, artifact_dir_for, mask_url, resolve_storage_url
from .tables import open_existing_storage

__all__ = ["EXIT_USAGE", "DashboardError", "build_parser", "main", "make_dashboard_server"]

EXIT_USAGE = 2
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class DashboardError(Exception):
    """The dashboard cannot start as asked (message is one line saying what to do)."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser holding a connection open must not block shutdown


class _QuietHandler(WSGIRequestHandler):
    """Request handler that logs only errors, not one line per asset the page loads."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).startswith(("4", "5")) and str(code) != "404":
            super().log_request(code, size)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpo.dashboard",
        description="Serve optuna-dashboard for the study storage, with the saved models.",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="study storage (default: $HPO_STORAGE, else sqlite:///hpo.db)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default: {DEFAULT_HOST}; the dashboard has no login)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--artifact-dir",
        type=Path,
        metavar="DIR",
        help="model artifact folder (default: $HPO_ARTIFACT_DIR, else next to a SQLite "
        "file, else ./hpo-artifacts)",
    )
    return parser


def make_dashboard_server(
    storage_url: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    artifact_dir: Path | None = None,
) -> WSGIServer:
    """Build (but do not start) the dashboard server; ``serve_forever()`` runs it.

    Args:
        storage_url: Study storage URL (an existing SQLite file or a PostgreSQL database).
        host: Address to bind.
        port: Port to bind (0: any free port; read ``server.server_port``).
        artifact_dir: Artifact folder; :func:`hpo.storage.artifact_dir_for` when omitted.

    Raises:
        StorageError: The storage URL is invalid, missing or unreachable.
        DashboardError: The port is invalid or cannot be bound.
    """
    import optuna_dashboard  # heavy (bottle app, plotly): only when a server is built

    if not 0 <= port <= 65535:
        raise DashboardError(f"--port must be between 0 and 65535, got {port}")
    storage = open_existing_storage(storage_url)
    artifact_dir = artifact_dir or artifact_dir_for(storage_url)
    try:
        artifact_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DashboardError(
            f"cannot create the artifact folder {artifact_dir}: {e.strerror or e}; "
            "pass --artifact-dir DIR"
        ) from e
    app = optuna_dashboard.wsgi(storage, artifact_store=FileSystemArtifactStore(artifact_dir))
    try:
        return make_server(
            host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
    except OSError as e:
        raise DashboardError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port"
        ) from e


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: serve until Ctrl-C (status 0); bad input is one line, status 2."""
    args = build_parser().parse_args(argv)
    url = resolve_storage_url(args.storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        server = make_dashboard_server(url, args.host, args.port, args.artifact_dir)
    except (StorageError, DashboardError) as e:
        print(f"hpo.dashboard: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    artifacts = args.artifact_dir or artifact_dir_for(url)
    print(
        f"optuna-dashboard on http://{shown}:{port}/ (storage {mask_url(url)}, "
        f"artifacts {artifacts}); Ctrl-C to stop",
        flush=True,
    )
    if args.host not in _LOOPBACK:
        print(
            f"warning: listening on {args.host}: anyone who can reach this port can read and "
            "edit the studies (the dashboard has no login)",
            file=sys.stderr,
            flush=True,
        )
    return _serve(server)


def _serve(server: WSGIServer) -> int:
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
