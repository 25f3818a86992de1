"""A real browser on ``python -m hpo.dashboard``: the study, its trials and its saved model.

Chromium is Debian's (``.ci/chromium.sh`` installs it), driven by Playwright's Python package;
Playwright's own browser download is never used. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState
from study_fixtures import DISTRIBUTIONS, make_study

from hpo import records
from hpo.runtime.storage import StorageOptions, open_storage

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (.ci/chromium.sh)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            _out, err = server.communicate()
            pytest.fail(f"dashboard exited with {server.returncode}: {err.strip()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    pytest.fail(f"dashboard did not answer {url} within {timeout:.0f} s")


@dataclass(frozen=True)
class ServedStudy:
    url: str
    artifacts: Path
    study: optuna.Study
    model_file: Path
    model_trial_number: int
    model_artifact_id: str


@pytest.fixture
def finished_study(tmp_path: Path) -> ServedStudy:
    """A study in SQLite (all trial states) whose best trial saved a small file as its model."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    storage = open_storage(url, StorageOptions(heartbeat_interval=None, grace_period=None))
    study = make_study(storage, "sparse_mnist", seed=5)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    # One more trial run the way hpo.run runs one: the model is uploaded while it is running.
    trial = study.ask(DISTRIBUTIONS)
    model_file = tmp_path / f"trial-{trial.number}.pt"
    model_file.write_bytes(b"not really a checkpoint, but a file the dashboard must list")
    artifact_id = upload_artifact(
        artifact_store=FileSystemArtifactStore(artifacts),
        file_path=str(model_file),
        study_or_trial=trial,
        mimetype="application/x-pytorch",
    )
    trial.set_user_attr(records.MODEL_ARTIFACT, artifact_id)
    for epoch in (1, 2):
        trial.report(0.9 + 0.04 * epoch, epoch)
    study.tell(trial, 0.99)
    study.set_user_attr(records.BEST_TRIAL, trial.number)
    study.set_user_attr(records.BEST_MODEL_ARTIFACT, artifact_id)
    return ServedStudy(url, artifacts, study, model_file, trial.number, artifact_id)


@pytest.fixture
def dashboard(finished_study: ServedStudy, tmp_path: Path) -> Iterator[str]:
    """``python -m hpo.dashboard`` on a free port; yields its base URL; always stopped."""
    url, artifacts = finished_study.url, finished_study.artifacts
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpo.dashboard",
            "--storage",
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--artifact-dir",
            str(artifacts),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{base}/api/studies", server)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout:
            server.stdout.close()
        if server.stderr:
            server.stderr.close()


def test_dashboard_shows_the_study_its_trials_and_the_saved_model(
    dashboard: str, finished_study: ServedStudy, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    study, model_name = finished_study.study, finished_study.model_file.name
    trials = study.get_trials()
    best = study.best_trial
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)

            # The study list names the study.
            page.goto(f"{dashboard}/dashboard")
            link = page.get_by_text("sparse_mnist").first
            link.wait_for()
            page.screenshot(path=str(tmp_path / "dashboard-studies.png"))

            # Its page names the objective (optuna-dashboard draws the charts itself).
            link.click()
            page.wait_for_url("**/dashboard/studies/*")
            page.get_by_text(records.METRIC_NAME).first.wait_for()
            page.screenshot(path=str(tmp_path / "dashboard-study.png"), full_page=True)

            # The trial list holds every trial with its state.
            page.goto(f"{page.url.rstrip('/')}/trials?numbers={best.number}")
            page.get_by_text(f"{len(trials)} Trials").wait_for()
            body = page.inner_text("body")
            for trial in trials:  # "Trial 1" must not be found inside "Trial 10"
                assert re.search(rf"\bTrial {trial.number}\b", body), trial.number
            assert not re.search(rf"\bTrial {len(trials)}\b", body)  # control: no such trial
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
                assert state.name.capitalize() in body
            assert "Running" in body
            # The best trial's detail lists its saved model, served from the artifact store.
            page.get_by_text(model_name).first.wait_for()
            page.screenshot(path=str(tmp_path / "dashboard-trials.png"), full_page=True)
        finally:
            browser.close()
    for name in ("dashboard-studies.png", "dashboard-study.png", "dashboard-trials.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The listing alone comes from the storage; the download proves the store is attached.
    storage = open_storage(finished_study.url)
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        study_id, finished_study.model_trial_number
    )
    download = f"{dashboard}/artifacts/{study_id}/{trial_id}/{finished_study.model_artifact_id}"
    with urllib.request.urlopen(download, timeout=10) as response:
        assert response.read() == finished_study.model_file.read_bytes()
