"""The docker-compose deployment's promises, checked statically; ``.ci/compose-smoke.sh``
runs it for real (images, commands, health checks, signals, restarts).

Each test names one property the README promises: a scalable worker that starts on a host
without GPUs (GPUs one override file away), a private PostgreSQL, credentials only from
`.env`, a dashboard reachable from localhost only, and images that hold every package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from hpo.runtime.gpu_slots import SLOT_DIR_ENV

yaml = pytest.importorskip("yaml", reason="pyyaml is in the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _named_volume_mounts(service: dict, compose: dict) -> dict[str, str]:
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source in compose.get("volumes", {}):
            mounts[source] = target
    return mounts


def test_exactly_the_three_services(services: dict) -> None:
    assert set(services) == {"postgres", "worker", "dashboard"}


def test_postgres_keeps_data_in_a_named_volume(services: dict, compose: dict) -> None:
    mounts = _named_volume_mounts(services["postgres"], compose)
    assert "/var/lib/postgresql/data" in mounts.values()


def test_postgres_is_not_published_outside_the_compose_network(services: dict) -> None:
    postgres = services["postgres"]
    assert "ports" not in postgres
    assert postgres.get("network_mode") != "host"


def test_credentials_come_from_env_not_from_the_file(services: dict) -> None:
    env = _env(services["postgres"])
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD"), "no literal password"
    assert ":?" in env["POSTGRES_PASSWORD"], "a missing password must stop compose"
    for name in ("worker", "dashboard"):
        storage = _env(services[name])["HPO_STORAGE"]
        assert storage.startswith("postgresql+psycopg://"), storage
        assert "${POSTGRES_PASSWORD" in storage and "${POSTGRES_USER" in storage
        assert "@postgres:5432/" in storage, "workers reach the database by service name"


def test_env_example_is_committed_and_env_is_ignored() -> None:
    example = (ROOT / ".env.example").read_text()
    keys = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line}
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "STUDY", "N_TRIALS"} <= keys
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines(), "keep secrets out"


@pytest.mark.parametrize("name", ["worker", "dashboard"])
def test_images_are_built_from_the_repo_dockerfile(services: dict, name: str) -> None:
    build = services[name]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == (ROOT / "Dockerfile").resolve()


def test_worker_can_be_scaled(services: dict) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "a fixed name forbids --scale worker=N"
    assert "ports" not in worker, "fixed host ports collide when scaled"


def test_worker_gets_signals_through_an_init_process(services: dict) -> None:
    assert services["worker"].get("init") is True  # PID 1 would ignore SIGTERM


def test_the_default_file_needs_no_gpu_and_the_override_reserves_them(services: dict) -> None:
    assert "deploy" not in services["worker"], "a host without NVIDIA GPUs could not start it"
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]["worker"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "docker-compose.gpu.yml" in (ROOT / "README.md").read_text()


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    return None


@pytest.mark.skipif(_compose_command() is None, reason="needs docker-compose (CI installs it)")
def test_compose_itself_accepts_the_files_and_merges_the_gpu_override(tmp_path: Path) -> None:
    env = {**os.environ, "POSTGRES_PASSWORD": "x" * 16, "HPO_HOST_DATA_DIR": str(tmp_path)}
    command = _compose_command()
    default = subprocess.run(
        [*command, "-f", "docker-compose.yml", "config"], cwd=ROOT, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert default.returncode == 0, default.stderr
    merged = subprocess.run(
        [*command, "-f", "docker-compose.yml", "-f", "docker-compose.gpu.yml", "config"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    worker = yaml.safe_load(merged.stdout)["services"]["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert "deploy" not in yaml.safe_load(default.stdout)["services"]["worker"]
    # Every replica mounts the same named volume where the workers claim their GPU slots
    # (test_workers: separately started processes sharing a folder take one GPU each).
    slots = worker["environment"][SLOT_DIR_ENV]
    mounts = [_mount(v) for v in worker["volumes"] if _mount(v)[1] == slots]
    assert len(mounts) == 1 and not mounts[0][0].startswith(("/", "."))  # a named volume
    missing = subprocess.run(
        [*command, "config"], cwd=ROOT, env={**env, "HPO_HOST_DATA_DIR": ""},
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode != 0 and "HPO_HOST_DATA_DIR" in missing.stderr


def _mount(volume: str | dict) -> tuple[str, str]:
    """(source, target) of a volume in compose v1's short or v2's long syntax."""
    if isinstance(volume, dict):
        return volume["source"], volume["target"]
    source, target = volume.split(":")[:2]
    return source, target


@pytest.mark.parametrize("name", ["worker", "dashboard"])
def test_waits_for_healthy_postgres(services: dict, name: str) -> None:
    assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_an_unset_data_folder_stops_compose_with_a_message(services: dict) -> None:
    mounts = [str(v) for v in services["worker"]["volumes"] if str(v).endswith(":/datasets:ro")]
    assert mounts and mounts[0].startswith("${HPO_HOST_DATA_DIR:?"), mounts


def test_worker_and_dashboard_share_the_artifact_volume(services: dict, compose: dict) -> None:
    worker = _named_volume_mounts(services["worker"], compose)
    dashboard = _named_volume_mounts(services["dashboard"], compose)
    assert "artifacts" in worker and worker["artifacts"] == dashboard.get("artifacts")
    assert _env(services["worker"])["HPO_ARTIFACT_DIR"] == worker["artifacts"]


def test_dashboard_reads_the_same_database(services: dict) -> None:
    assert _env(services["dashboard"])["HPO_STORAGE"] == _env(services["worker"])["HPO_STORAGE"]


def test_dashboard_is_published_on_localhost_only(services: dict) -> None:
    ports = services["dashboard"]["ports"]
    assert ports, "the dashboard must be reachable from the host"
    for port in ports:
        spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port['published']}"
        assert spec.startswith("127.0.0.1:"), f"published beyond localhost: {spec}"


@pytest.mark.parametrize(
    ("host", "answered"),
    [("127.0.0.1:8080", True), ("localhost:8080", True), ("attacker.example:8080", False)],
)
def test_dashboard_answers_the_host_through_the_published_port_only(
    services: dict, host: str, answered: bool
) -> None:
    """Bound to 0.0.0.0 in its container, it still answers only the names the host's browser
    uses for the published 127.0.0.1 port, and edits nothing (issue 31)."""
    from hpo.reporting.dashboard import build_parser
    from hpo.reporting.dashboard_guard import DashboardGuard

    command = services["dashboard"]["command"]
    args = build_parser().parse_args(command[command.index("hpo.dashboard") + 1 :])
    guard = DashboardGuard(_ok, args.host, args.allow_host, read_only=not args.edit)
    assert args.host == "0.0.0.0" and not args.edit
    for method, expected in (("GET", 200 if answered else 403), ("DELETE", 403)):
        status: list[str] = []
        environ = {"REQUEST_METHOD": method, "HTTP_HOST": host}
        b"".join(guard(environ, lambda s, _h, _e=None, seen=status: seen.append(s)))
        assert int(status[0].split()[0]) == expected


def _ok(_environ: dict, start_response) -> list[bytes]:
    start_response("200 OK", [])
    return [b""]


def test_dockerfile_copies_every_package_pip_installs() -> None:
    """A package missing from the image would import locally but fail in the container."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = set()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            sources = line.split()[1:-1]  # COPY <src>... <dest>
            copied |= {src.rstrip("/") for src in sources}
    assert "pyproject.toml" in copied
    readme = pyproject["project"].get("readme")
    if readme:
        assert readme in copied, "setuptools reads the readme named in pyproject.toml"
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*").rstrip(".") for p in patterns}
    for package in packages:
        assert (ROOT / package / "__init__.py").exists(), package
        assert package in copied, f"Dockerfile does not COPY the {package!r} package"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert not packages & set(ignored), ".dockerignore hides a package from the build"


# --- PgBouncer: docker-compose.pgbouncer.yml, opt-in ---------------------------------------

PGBOUNCER_ENTRYPOINT = ROOT / "deploy" / "pgbouncer" / "entrypoint.sh"


@pytest.fixture(scope="module")
def pooled_overlay() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.pgbouncer.yml").read_text())["services"]


def test_the_pgbouncer_overlay_adds_one_private_pooler_built_here(
    pooled_overlay: dict, services: dict
) -> None:
    """Built from the Dockerfile (Debian's package: no registry image needed), reachable on the
    compose network only, credentials from `.env` as PostgreSQL's, up once PostgreSQL is."""
    assert set(pooled_overlay) == {"pgbouncer", "worker", "dashboard"}
    pgbouncer = pooled_overlay["pgbouncer"]
    assert pgbouncer["build"]["target"] == "pgbouncer"
    assert (ROOT / pgbouncer["build"]["context"] / pgbouncer["build"]["dockerfile"]).resolve() == (
        ROOT / "Dockerfile"
    ).resolve()
    assert "AS pgbouncer" in (ROOT / "Dockerfile").read_text()
    assert "ports" not in pgbouncer and pgbouncer.get("network_mode") != "host"
    assert pgbouncer.get("init") is True
    env, postgres = _env(pgbouncer), _env(services["postgres"])
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert env[name] == postgres[name], name  # the same .env values, no literal password
    reads = set(re.findall(r"\$\{?((?:POSTGRES|PGBOUNCER)_\w+)", PGBOUNCER_ENTRYPOINT.read_text()))
    assert set(env) <= reads, sorted(set(env) - reads)
    assert pgbouncer["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert pgbouncer["healthcheck"]["test"]
    pool = int(re.fullmatch(r"\$\{PGBOUNCER_POOL_SIZE:-(\d+)\}", env["PGBOUNCER_POOL_SIZE"])[1])
    assert pool + 5 <= 100 - 3, "PostgreSQL's max_connections, less its reserved and a margin"


def test_with_the_overlay_workers_and_the_dashboard_go_through_pgbouncer(
    pooled_overlay: dict, services: dict
) -> None:
    for name in ("worker", "dashboard"):
        direct = _env(services[name])["HPO_STORAGE"]
        assert _env(pooled_overlay[name])["HPO_STORAGE"] == direct.replace(
            "@postgres:5432/", "@pgbouncer:6432/"
        )
        assert pooled_overlay[name]["depends_on"]["pgbouncer"]["condition"] == "service_healthy"


@pytest.mark.skipif(_compose_command() is None, reason="needs docker-compose (CI installs it)")
def test_compose_merges_the_pgbouncer_overlay(tmp_path: Path) -> None:
    env = {**os.environ, "POSTGRES_PASSWORD": "x" * 16, "HPO_HOST_DATA_DIR": str(tmp_path)}
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.pgbouncer.yml"]
    merged = subprocess.run(
        [*_compose_command(), *files, "config"], cwd=ROOT, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    services = yaml.safe_load(merged.stdout)["services"]
    assert set(services) == {"postgres", "pgbouncer", "worker", "dashboard"}
    for name in ("worker", "dashboard"):
        assert "@pgbouncer:6432/" in services[name]["environment"]["HPO_STORAGE"]
        assert set(services[name]["depends_on"]) == {"postgres", "pgbouncer"}
        assert services[name]["volumes"], "the base file's mounts are kept"


def test_the_pgbouncer_entrypoint_writes_a_transaction_pooling_configuration(
    tmp_path: Path,
) -> None:
    """Run here with a stand-in `pgbouncer` that shows the configuration it was given (the
    real one runs it in tests/test_pgbouncer.py, through .ci/pgbouncer.sh)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pgbouncer").write_text('#!/bin/sh\nfor last; do :; done\ncat "$last"\n')
    (bin_dir / "pgbouncer").chmod(0o755)
    folder = tmp_path / "config"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "POSTGRES_USER": "hpo",
        "POSTGRES_PASSWORD": 'se"cret', "POSTGRES_DB": "hpo", "PGBOUNCER_DIR": str(folder),
    }  # fmt: skip
    done = subprocess.run(
        ["sh", str(PGBOUNCER_ENTRYPOINT)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    ini = dict(
        line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line
    )  # [databases] and [pgbouncer] keys together
    assert ini["hpo"] == "host=postgres port=5432 dbname=hpo"
    assert ini["pool_mode"] == "transaction" and ini["auth_type"] == "scram-sha-256"
    assert (ini["listen_port"], ini["default_pool_size"]) == ("6432", "40")
    assert (folder / "userlist.txt").read_text() == '"hpo" "se""cret"\n'  # auth_file quoting
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {"0o600"}
    env["PGBOUNCER_POOL_SIZE"] = "forty"
    bad = subprocess.run(["sh", str(PGBOUNCER_ENTRYPOINT)], env=env, capture_output=True)
    assert bad.returncode == 2 and b"forty" in bad.stderr
