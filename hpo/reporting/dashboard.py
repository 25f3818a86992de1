"""``python -m hpo.dashboard``: optuna-dashboard on the study storage, with the saved models.

    python -m hpo.dashboard                              # storage from $HPO_STORAGE or ./hpo.db
    python -m hpo.dashboard --storage sqlite:///runs/hpo.db --port 8081

Differences from the plain ``optuna-dashboard URL`` command, and why:

* The storage is opened with :func:`hpo.runtime.storage.open_storage` (the URL rules, WAL and
  lock waits of the study runner; on SQLite its reads take no lock, so a refresh of a large
  study never stalls the workers) and the file-system artifact store of that storage
  (:func:`hpo.runtime.storage_url.artifact_dir_for`) is attached, so each trial's saved
  checkpoint appears on its trial page without a separate ``--artifact-dir``.
* The report's charts (parallel coordinates, history, importances, learning curves) appear on
  each study's page: a background thread attaches them for every study when the server starts
  and again every ``--refresh-charts`` seconds for each study whose trials changed, so a
  dashboard started before the workers (docker compose) follows the studies as they run.
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
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from ..errors import print_usage_error
from ..runtime.storage import open_existing_storage
from ..runtime.storage_url import (
    ARTIFACT_DIR_ENV,
    STORAGE_DEFAULT_HELP,
    StorageError,
    artifact_dir_for,
    mask_url,
    resolve_storage_url,
)
from .charts import study_charts

__all__ = [
    "ChartRefresher",
    "DashboardError",
    "attach_to_dashboard",
    "build_parser",
    "main",
    "make_dashboard_server",
]

_logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_REFRESH_SECONDS = 60.0
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
        help=f"study storage (default: {STORAGE_DEFAULT_HELP})",
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
        help=f"model artifact folder (default: ${ARTIFACT_DIR_ENV}, else next to a SQLite "
        "file, else ./hpo-artifacts)",
    )
    parser.add_argument(
        "--refresh-charts",
        type=float,
        default=DEFAULT_REFRESH_SECONDS,
        metavar="SECONDS",
        help="re-attach the report's charts of studies whose trials changed this often; 0: "
        "only when the server starts (default: %(default)g)",
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
        artifact_dir: Artifact folder (default: ``storage_url.artifact_dir_for``).

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
        if args.refresh_charts < 0:
            raise DashboardError(f"--refresh-charts must be >= 0, got {args.refresh_charts:g}")
        server = make_dashboard_server(url, args.host, args.port, args.artifact_dir)
    except (StorageError, DashboardError) as e:
        return print_usage_error(e, prog="hpo.dashboard")
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
    refresher = ChartRefresher(open_existing_storage(url), args.refresh_charts)
    refresher.start()
    try:
        return _serve(server)
    finally:
        refresher.stop()


def _serve(server: WSGIServer) -> int:
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


# --- the report's charts on the dashboard ------------------------------------------------


def attach_to_dashboard(study: optuna.Study) -> None:
    """Save the study's charts to the study, so optuna-dashboard shows them on its page.

    Each chart is stored under a fixed id (its name), which optuna-dashboard overwrites in
    place: calling this again replaces the charts instead of piling up copies. Charts the
    study cannot support yet (no completed trial, too few for importances) are skipped, so it
    is safe on an empty study; its cost is one read of the trials and one small write per chart.
    """
    import optuna_dashboard  # imported here: only callers who attach charts pay for it

    for chart in study_charts(study):
        if chart.figure is not None:
            optuna_dashboard.save_plotly_graph_object(
                study, chart.figure, graph_object_id=chart.name
            )


class ChartRefresher:
    """Attaches every study's charts now, then again for each study whose trials changed.

    Runs in a daemon thread beside the server. A storage hiccup is logged and retried at the
    next round, never fatal to the dashboard.

    Args:
        storage: The dashboard's storage.
        every: Seconds between rounds after the first; 0 runs the first round only.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, every: float) -> None:
        self._rdb = storage
        self._every = every
        self._seen: dict[str, tuple[int, ...]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chart-refresher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def refresh(self) -> list[str]:
        """One round: attach the charts of the studies that changed; returns their names."""
        refreshed = []
        for summary in self._rdb.get_all_studies():
            study = optuna.load_study(study_name=summary.study_name, storage=self._rdb)
            trials = study.get_trials(deepcopy=False)
            state = tuple(sum(t.state == s for t in trials) for s in _CHART_STATES)
            if self._seen.get(study.study_name) != state:
                attach_to_dashboard(study)
                self._seen[study.study_name] = state
                refreshed.append(study.study_name)
        return refreshed

    def _run(self) -> None:
        while True:
            try:
                self.refresh()
            except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as e:
                _logger.warning("could not refresh the dashboard charts: %s", e)
            if self._every <= 0 or self._stop.wait(self._every):
                return


# What the charts show: a change in these counts is a reason to draw them again.
_CHART_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


if __name__ == "__main__":
    sys.exit(main())
