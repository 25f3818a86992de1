"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from synthetic import write_synthetic_data


def _make_read_only(root: Path) -> None:
    """Drop write permission below ``root``, like the shared read-only data folder."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        Path(dirpath).chmod(0o555)


@pytest.fixture(scope="session")
def synthetic_data_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A read-only data root with a tiny MNIST and Caltech-101 in the published layouts.

    MNIST: 600 train / 200 test images (use ``MNISTOptions(val_size=100)``); Caltech-101:
    classes ``accordion`` (24 images), ``airplanes`` (20), ``anchor`` (18), ``Faces_easy`` (20)
    and ``BACKGROUND_Google`` (5), some of them grayscale. Pass it as ``data_dir`` (or
    ``HPO_DATA_DIR``) together with a writable ``cache_dir`` such as ``tmp_path``.
    """
    root = tmp_path_factory.mktemp("synthetic-data")
    write_synthetic_data(root)
    _make_read_only(root)
    yield root
    # Give write permission back so pytest can delete the temporary folder.
    for dirpath, _dirnames, _filenames in os.walk(root):
        Path(dirpath).chmod(0o755)


@pytest.fixture
def data_env(synthetic_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``HPO_DATA_DIR`` at the synthetic data and ``HPO_CACHE_DIR`` at a fresh folder.

    Returns:
        The cache folder (empty at the start of each test).
    """
    cache = tmp_path / "hpo-cache"
    monkeypatch.setenv("HPO_DATA_DIR", str(synthetic_data_root))
    monkeypatch.setenv("HPO_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the CI PostgreSQL server (``.ci/postgres.sh``), dropped afterwards.

    Skips the test when ``HPO_TEST_POSTGRES_URL`` is unset (``.ci/run`` sets it).
    """
    base = os.environ.get("HPO_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("HPO_TEST_POSTGRES_URL is unset; start a server with .ci/postgres.sh (CI does)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(base, poolclass=sqlalchemy.pool.NullPool)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = sqlalchemy.engine.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def terminal_sigint() -> Iterator[None]:
    """SIGINT handled as in an interactive terminal (``KeyboardInterrupt``) for one test.

    A shell starts background jobs with SIGINT ignored and Python keeps that, so a suite run
    with ``nohup ... &`` would otherwise see every Ctrl-C it sends to itself vanish.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only; skipped where mounting is not allowed), unmounted after."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("a real full disk needs root and mount (tmpfs)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
