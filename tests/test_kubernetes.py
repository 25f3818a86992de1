"""The Kubernetes manifests (``deploy/kubernetes``), checked statically: no cluster is
reachable here, so nothing below applies them, and kustomize does not build them.

Each test names one property the manifests promise: every document parses, every name one
object gives another (Secret, ConfigMap, claim, volume, Service, image) resolves, the
containers set only environment variables the code reads, the commands parse with the
project's own parsers, and no password is written down outside the marked example. The
generic ones run twice: on the manifests, and with the PgBouncer component applied (its
resources added and its JSON patches applied here as kustomize would; where ``kubectl`` is
installed, one test also builds it with ``kubectl kustomize``).
"""

from __future__ import annotations

import copy
import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from data.paths import CACHE_DIR_ENV, DATA_DIR_ENV
from hpo.reporting.dashboard import build_parser as dashboard_parser
from hpo.runtime.gpu_slots import SLOT_DIR_ENV
from hpo.runtime.processes import run_workers
from hpo.runtime.storage import GRACE_PERIOD_ENV, HEARTBEAT_INTERVAL_ENV
from hpo.runtime.storage_url import ARTIFACT_DIR_ENV, STORAGE_ENV, StorageTarget
from hpo.tuning.cli import build_parser as run_parser
from studies import default_registry

yaml = pytest.importorskip("yaml", reason="pyyaml is in the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
# In the folder but not applied by the kustomization, each for a reason its header gives.
NOT_APPLIED = {"secret.example.yaml", "fill-datasets.yaml"}
SECRET_EXAMPLE = K8S / "secret.example.yaml"
PGBOUNCER = K8S / "pgbouncer"  # a kustomize component, off unless the kustomization names it
ENTRYPOINT = ROOT / "deploy" / "pgbouncer" / "entrypoint.sh"

# What the project's code reads, and what the PostgreSQL image reads.
CODE_READS = {
    STORAGE_ENV, ARTIFACT_DIR_ENV, DATA_DIR_ENV, CACHE_DIR_ENV, HEARTBEAT_INTERVAL_ENV,
    GRACE_PERIOD_ENV, SLOT_DIR_ENV,
}  # fmt: skip
POSTGRES_READS = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "PGDATA"}
# What the PgBouncer image's entrypoint reads.
PGBOUNCER_READS = set(re.findall(r"\$\{?((?:POSTGRES|PGBOUNCER)_\w+)", ENTRYPOINT.read_text()))
POOLED_URL = (
    "postgresql+psycopg://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@pgbouncer:6432/$(POSTGRES_DB)"
)
GPU = "nvidia.com/gpu"


def _load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def base(kustomization: dict) -> list[dict]:
    """Every object ``kubectl apply -k deploy/kubernetes`` creates."""
    return [doc for name in kustomization["resources"] for doc in _load(K8S / name)]


@pytest.fixture(scope="module")
def component() -> dict:
    return yaml.safe_load((PGBOUNCER / "kustomization.yaml").read_text())


@pytest.fixture(scope="module")
def pooled(base: list[dict], component: dict) -> list[dict]:
    """What ``kubectl apply -k deploy/kubernetes`` creates with the PgBouncer component named
    in the kustomization: its resources added, its JSON patches applied (a ``test`` that does
    not hold fails here, as it fails kustomize)."""
    docs = copy.deepcopy(base) + [
        doc for name in component["resources"] for doc in _load(PGBOUNCER / name)
    ]
    for patch in component["patches"]:
        target = _one(docs, patch["target"]["kind"], patch["target"]["name"])
        for op in yaml.safe_load(patch["patch"]):
            _json_patch(target, op)
    return docs


@pytest.fixture(scope="module", params=["as listed", "with PgBouncer"])
def applied(request: pytest.FixtureRequest, base: list[dict], pooled: list[dict]) -> list[dict]:
    """The objects applied, without and with the PgBouncer component."""
    return base if request.param == "as listed" else pooled


@pytest.fixture(scope="module")
def manifests(applied: list[dict]) -> list[dict]:
    """The applied objects and the extra pod the README applies by hand (not the Secret)."""
    return applied + _load(K8S / "fill-datasets.yaml")


def _json_patch(doc: dict, op: dict) -> None:
    """One RFC 6902 operation (``test``, ``replace``, ``remove``) on ``doc``, in place; a path
    that does not exist raises, as it fails kustomize."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"][1:].split("/")]
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key = int(last) if isinstance(node, list) else last
    if op["op"] == "test":
        assert node[key] == op["value"], f"{op['path']}: {node[key]!r}, not {op['value']!r}"
    elif op["op"] == "replace":
        node[key] = op["value"]  # an IndexError / KeyError: no such path
    elif op["op"] == "remove":
        del node[key]
    else:
        raise AssertionError(f"unexpected patch operation {op['op']}")


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_spec(doc: dict) -> dict | None:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def _pods(docs: list[dict]) -> Iterator[tuple[dict, dict]]:
    for doc in docs:
        spec = _pod_spec(doc)
        if spec is not None:
            yield doc, spec


def _containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def _walk(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _container(docs: list[dict], kind: str, name: str) -> dict:
    return _pod_spec(_one(docs, kind, name))["containers"][0]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _mounts(container: dict) -> dict[str, dict]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def test_every_file_parses_into_named_objects() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        docs = _load(path)
        assert docs, f"{path} holds no document"
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), path
            if doc["kind"] not in ("Kustomization", "Component"):
                assert doc["metadata"]["name"], path


def test_the_kustomization_lists_every_manifest_and_only_existing_files(
    kustomization: dict,
) -> None:
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    here = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == here - NOT_APPLIED
    assert all((K8S / name).is_file() for name in listed)


def test_no_password_is_written_down_outside_the_marked_example(base: list[dict]) -> None:
    assert not [d for d in base if d["kind"] == "Secret"], "create it with kubectl (README)"
    (example,) = _load(SECRET_EXAMPLE)
    assert example["kind"] == "Secret" and "EXAMPLE ONLY" in SECRET_EXAMPLE.read_text()
    assert example["stringData"]["POSTGRES_PASSWORD"].startswith("replace-with-")
    literal_password_in_url = re.compile(r"://[^:/@\s]+:(?!\$\(POSTGRES_PASSWORD\)@)[^@\s]+@")
    for path in K8S.rglob("*"):
        if path.is_file() and path != SECRET_EXAMPLE:
            text = path.read_text()
            assert not literal_password_in_url.search(text), path
            assert "replace-with-" not in text or path.suffix == ".md", path
    for doc in base:
        for node in _walk(doc):
            if "PASSWORD" in str(node.get("name", "")):
                assert "value" not in node, f"{node['name']} must come from the Secret"


def test_secret_references_name_the_secret_the_readme_creates(manifests: list[dict]) -> None:
    (example,) = _load(SECRET_EXAMPLE)
    readme = (K8S / "README.md").read_text()
    name, keys = example["metadata"]["name"], set(example["stringData"])
    assert f"kubectl create secret generic {name}" in readme
    assert set(re.findall(r"--from-literal=(\w+)=", readme)) == keys
    refs = [n for d in manifests for n in _walk(d) if "secretKeyRef" in n or "secretRef" in n]
    assert refs
    for ref in refs:
        if "secretKeyRef" in ref:
            assert ref["secretKeyRef"]["name"] == name
            assert ref["secretKeyRef"]["key"] in keys
        else:
            assert ref["secretRef"]["name"] == name


def test_config_map_references_resolve(applied: list[dict]) -> None:
    maps = {d["metadata"]["name"]: d["data"] for d in applied if d["kind"] == "ConfigMap"}
    refs = [n for d in applied for n in _walk(d) if "configMapRef" in n or "configMapKeyRef" in n]
    assert refs
    for ref in refs:
        if "configMapKeyRef" in ref:
            assert ref["configMapKeyRef"]["key"] in maps[ref["configMapKeyRef"]["name"]]
        else:
            assert ref["configMapRef"]["name"] in maps
    assert all(isinstance(v, str) for data in maps.values() for v in data.values())


def test_every_mount_has_a_volume_and_every_claim_exists(manifests: list[dict]) -> None:
    claims = {d["metadata"]["name"] for d in manifests if d["kind"] == "PersistentVolumeClaim"}
    for doc, spec in _pods(manifests):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        mounted = {m for c in _containers(spec) for m in _mounts(c)}
        assert mounted <= set(volumes) | templates, doc["metadata"]["name"]
        assert set(volumes) | templates <= mounted, "a volume nobody mounts"
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_services_select_pods_and_their_named_ports(applied: list[dict]) -> None:
    base = applied
    pods = [(d["spec"]["template"]["metadata"]["labels"], s) for d, s in _pods(base)]
    for service in (d for d in base if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        selected = [s for labels, s in pods if selector.items() <= labels.items()]
        assert len(selected) == 1, f"service {service['metadata']['name']}"
        ports = {p["name"] for c in selected[0]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    postgres = _one(base, "StatefulSet", "postgres")
    service = _one(base, "Service", postgres["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None", "a StatefulSet's service is headless"
    assert postgres["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_images_resolve_to_the_ones_compose_builds(
    base: list[dict], manifests: list[dict], kustomization: dict, component: dict
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    built = {compose[s]["image"].split(":")[0]: compose[s]["build"]["target"] for s in compose
             if "build" in compose[s]}  # fmt: skip
    overridden = {image["name"] for image in kustomization["images"]}
    assert overridden == set(built), "kustomize names the images compose builds"
    used = {c["image"] for _, s in _pods(manifests) for c in _containers(s)}
    assert overridden <= used
    pgbouncer = {image["name"] for image in component["images"]}  # the component names its own
    for image in used - overridden - pgbouncer:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest")
    assert compose["postgres"]["image"] in used, "the PostgreSQL compose runs"
    assert _container(base, "Job", "hpo-workers")["image"] == "sparse-cnn-hpo"
    assert _container(base, "Deployment", "hpo-dashboard")["image"] == "sparse-cnn-hpo-dashboard"
    assert built == {"sparse-cnn-hpo": "worker", "sparse-cnn-hpo-dashboard": "dashboard"}


def test_containers_set_only_variables_the_code_or_the_image_reads(
    manifests: list[dict],
) -> None:
    maps = {d["metadata"]["name"]: d["data"] for d in manifests if d["kind"] == "ConfigMap"}
    (example,) = _load(SECRET_EXAMPLE)
    for _, spec in _pods(manifests):
        for c in _containers(spec):
            names = set(_env(c))
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    names |= set(maps[source["configMapRef"]["name"]])
                else:
                    names |= set(example["stringData"])
            reads = (
                POSTGRES_READS if c["image"].startswith("postgres:")
                else PGBOUNCER_READS if c["image"] == "sparse-cnn-hpo-pgbouncer"
                else CODE_READS
            )  # fmt: skip
            # A variable may also exist only to build another ($(VAR)) or the command ($VAR).
            text = " ".join(c.get("command", []) + c.get("args", []) + list(_env(c).values()))
            expanded = set(re.findall(r"\$\(?(\w+)", text))
            assert names <= reads | expanded, f"{c['name']}: {sorted(names - reads - expanded)}"


def test_dependent_variables_are_defined_before_they_are_used(manifests: list[dict]) -> None:
    for _, spec in _pods(manifests):
        for c in _containers(spec):
            defined: set[str] = set()
            for entry in c.get("env", []):
                used = set(re.findall(r"\$\((\w+)\)", entry.get("value", "")))
                assert used <= defined, f"{c['name']}: {entry['name']} uses {used - defined}"
                defined.add(entry["name"])


def test_every_project_container_reads_the_same_storage(base: list[dict]) -> None:
    urls = {
        _env(c)[STORAGE_ENV]
        for _, s in _pods(base) for c in s["containers"] if STORAGE_ENV in _env(c)
    }  # fmt: skip
    assert len(urls) == 1, urls
    (url,) = urls
    assert (
        url
        == "postgresql+psycopg://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@postgres:5432/$(POSTGRES_DB)"
    )
    _one(base, "Service", "postgres")  # the host in the URL
    values = {"POSTGRES_USER": "hpo", "POSTGRES_PASSWORD": "0123abcd", "POSTGRES_DB": "hpo"}
    filled = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], url)
    assert StorageTarget.parse(filled).masked == "postgresql+psycopg://hpo:***@postgres:5432/hpo"
    for kind, name in [("Job", "hpo-workers"), ("Job", "hpo-final-step"),
                       ("Deployment", "hpo-dashboard"), ("Job", "hpo-storage-setup")]:  # fmt: skip
        assert STORAGE_ENV in _env(_container(base, kind, name)), name


def _hpo_run_argv(container: dict, config: dict[str, str]) -> list[str]:
    """The argv the worker's shell command gives ``python -m hpo.run``, expanded by sh."""
    shell, flag, script = container["command"]
    assert (shell, flag) == ("sh", "-c") and script.startswith("exec python -m hpo.run ")
    printed = subprocess.run(
        ["sh", "-c", "printf '%s\\0' " + script.removeprefix("exec python -m hpo.run ")],
        env={"PATH": os.environ["PATH"], **config}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return printed.stdout.split("\0")[:-1]


@pytest.mark.parametrize("extra", ["", "--epochs 3 --train-size 10000 --study-name quick"])
def test_the_worker_command_parses_with_hpo_run_parser(base: list[dict], extra: str) -> None:
    config = _one(base, "ConfigMap", "hpo-run")["data"]
    container = _container(base, "Job", "hpo-workers")
    argv = _hpo_run_argv(container, {**config, "HPO_RUN_ARGS": extra or config["HPO_RUN_ARGS"]})
    args = run_parser().parse_args(argv)
    default_registry().get(args.study)  # a registered study
    assert args.n_trials >= 1 and args.no_progress and int(args.workers) >= 1
    assert argv[len(argv) - len(extra.split()) :] == extra.split()  # passed on, word-split


def test_workers_are_an_indexed_job_with_parallelism_and_a_gpu_each(base: list[dict]) -> None:
    job = _one(base, "Job", "hpo-workers")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] >= 2 and spec["completions"] == spec["parallelism"]
    assert not spec.get("suspend")
    assert pod["containers"][0]["resources"]["limits"][GPU] == 1
    assert SLOT_DIR_ENV not in _env(pod["containers"][0]), "one GPU per pod: no slots to share"
    # Bad input (exit status 2) fails the Job at once, as compose stops restarting.
    rules = spec["podFailurePolicy"]["rules"]
    assert any(r["action"] == "FailJob" and r["onExitCodes"]["values"] == [2] for r in rules)
    assert pod["restartPolicy"] == "Never"


def test_a_stopped_worker_has_time_to_record_its_trial(base: list[dict]) -> None:
    """SIGTERM reaches Python (not PID 1), and the grace outlasts hpo.run's own SIGKILL timeout."""
    timeout = inspect.signature(run_workers).parameters["terminate_timeout"].default
    for name in ("hpo-workers", "hpo-final-step"):
        pod = _pod_spec(_one(base, "Job", name))
        assert pod["shareProcessNamespace"] is True
        assert pod["terminationGracePeriodSeconds"] > timeout
        assert pod["containers"][0]["command"][2].startswith("exec "), "the shell hands over"


def test_the_final_step_is_the_workers_pod_started_later(base: list[dict]) -> None:
    workers, final = _one(base, "Job", "hpo-workers"), _one(base, "Job", "hpo-final-step")
    assert final["spec"]["suspend"] is True, "resumed by hand once the workers completed"
    assert "completionMode" not in final["spec"] and "parallelism" not in final["spec"]
    pods = [copy.deepcopy(j["spec"]["template"]) for j in (workers, final)]
    for pod in pods:
        pod["metadata"]["labels"].pop("app.kubernetes.io/component")
    assert pods[0] == pods[1]
    readme = (K8S / "README.md").read_text()
    assert "kubectl wait --for=condition=complete job/hpo-workers" in readme
    assert "kubectl patch job hpo-final-step" in readme


def test_the_cpu_overlay_removes_every_gpu_and_nothing_else(base: list[dict]) -> None:
    overlay = yaml.safe_load((K8S / "cpu" / "kustomization.yaml").read_text())
    assert overlay["kind"] == "Component" and "resources" not in overlay
    patched = copy.deepcopy(base)
    for patch in overlay["patches"]:
        target = _one(patched, patch["target"]["kind"], patch["target"]["name"])
        for op in yaml.safe_load(patch["patch"]):
            assert op["op"] == "remove"
            _json_patch(target, op)  # a KeyError here: the path no longer exists in the base
    assert GPU in str(base) and GPU not in str(patched)


def test_workers_and_dashboard_share_the_artifact_volume(base: list[dict]) -> None:
    claims = {d["metadata"]["name"]: d for d in base if d["kind"] == "PersistentVolumeClaim"}
    for kind, name in [("Job", "hpo-workers"), ("Deployment", "hpo-dashboard")]:
        pod = _pod_spec(_one(base, kind, name))
        container, volumes = pod["containers"][0], {v["name"]: v for v in pod["volumes"]}
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/artifacts")
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim == "hpo-artifacts" and _env(container)[ARTIFACT_DIR_ENV] == "/artifacts"
    assert claims["hpo-artifacts"]["spec"]["accessModes"] == ["ReadWriteMany"]
    worker = _container(base, "Job", "hpo-workers")
    mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
    assert mounts[_env(worker)[DATA_DIR_ENV]].get("readOnly") is True, "as compose's :ro"
    assert _env(worker)[CACHE_DIR_ENV] in mounts


def test_the_dashboard_is_reached_by_port_forward_only(base: list[dict]) -> None:
    service = _one(base, "Service", "hpo-dashboard")
    assert service["spec"]["type"] == "ClusterIP"
    assert not any("nodePort" in p for p in service["spec"]["ports"])
    assert not [d for d in base if d["kind"] == "Ingress"]
    assert all(d["spec"].get("type", "ClusterIP") == "ClusterIP"
               for d in base if d["kind"] == "Service")  # fmt: skip
    assert "kubectl port-forward svc/hpo-dashboard" in (K8S / "README.md").read_text()
    command = _container(base, "Deployment", "hpo-dashboard")["command"]
    assert command[:3] == ["python", "-m", "hpo.dashboard"]
    args = dashboard_parser().parse_args(command[3:])
    assert str(args.artifact_dir) == "/artifacts"


def test_postgres_keeps_its_data_on_its_own_volume(base: list[dict]) -> None:
    postgres = _one(base, "StatefulSet", "postgres")
    (template,) = postgres["spec"]["volumeClaimTemplates"]
    container = postgres["spec"]["template"]["spec"]["containers"][0]
    mount = _mounts(container)[template["metadata"]["name"]]["mountPath"]
    assert _env(container)["PGDATA"].startswith(mount + "/")


def _storage_setup_code(base: list[dict]) -> str:
    command = _container(base, "Job", "hpo-storage-setup")["command"]
    assert command[:2] == ["python", "-c"]
    return command[2]


def test_the_storage_setup_job_runs_here_against_sqlite(base: list[dict], tmp_path: Path) -> None:
    code = _storage_setup_code(base)
    db = tmp_path / "hpo.db"
    env = {**os.environ, STORAGE_ENV: f"sqlite:///{db}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "reachable" in done.stdout and db.exists()
    env[STORAGE_ENV] = f"sqlite:///{tmp_path}/missing/hpo.db"
    failed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stderr.startswith("error: ")
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr


def test_the_readme_says_what_ran_and_names_existing_files() -> None:
    readme = (K8S / "README.md").read_text()
    line = "checked statically in CI (tests/test_kubernetes.py); not run on a cluster"
    assert line.lower() in " ".join(readme.split()).lower()
    for path in set(re.findall(r"deploy/kubernetes[\w./-]*", readme)):
        assert (ROOT / path.rstrip(".")).exists(), path


# --- PgBouncer (the component pgbouncer/) -------------------------------------------------------


def test_pgbouncer_is_a_component_the_kustomization_names_only_when_told(
    kustomization: dict, component: dict
) -> None:
    assert component["kind"] == "Component"
    assert "components" not in kustomization, "off by default: one service fewer to fail"
    assert "# components:\n#   - pgbouncer" in (K8S / "kustomization.yaml").read_text()
    listed = set(component["resources"])
    assert listed == {p.name for p in PGBOUNCER.glob("*.yaml")} - {"kustomization.yaml"}
    readme = (K8S / "README.md").read_text()
    assert "components: [pgbouncer]" in readme and "--target pgbouncer" in readme


def test_with_pgbouncer_every_pod_reaches_the_storage_through_it(pooled: list[dict]) -> None:
    """The URL only changes host and port; the pods wait for PostgreSQL, then PgBouncer."""
    for kind, name in [("Job", "hpo-workers"), ("Job", "hpo-final-step"),
                       ("Deployment", "hpo-dashboard"), ("Job", "hpo-storage-setup")]:  # fmt: skip
        spec = _pod_spec(_one(pooled, kind, name))
        assert _env(spec["containers"][0])[STORAGE_ENV] == POOLED_URL, name
        (wait,) = spec["initContainers"]
        script = wait["command"][2]
        assert script.index("-h postgres -p 5432") < script.index("-h pgbouncer -p 6432"), name
    values = {"POSTGRES_USER": "hpo", "POSTGRES_PASSWORD": "0123abcd", "POSTGRES_DB": "hpo"}
    filled = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], POOLED_URL)
    assert StorageTarget.parse(filled).masked == "postgresql+psycopg://hpo:***@pgbouncer:6432/hpo"
    service = _one(pooled, "Service", "pgbouncer")
    assert service["spec"]["ports"][0]["port"] == 6432
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    workers, final = _one(pooled, "Job", "hpo-workers"), _one(pooled, "Job", "hpo-final-step")
    pods = [copy.deepcopy(j["spec"]["template"]) for j in (workers, final)]
    for pod in pods:
        pod["metadata"]["labels"].pop("app.kubernetes.io/component")
    assert pods[0] == pods[1], "the final step is still the workers' pod"


def test_pgbouncer_runs_one_pooler_whose_server_connections_fit_postgres(
    pooled: list[dict],
) -> None:
    deployment = _one(pooled, "Deployment", "hpo-pgbouncer")
    assert deployment["spec"]["replicas"] == 1, "each replica opens a pool of its own"
    pod = _pod_spec(deployment)
    container = pod["containers"][0]
    settings = _one(pooled, "ConfigMap", "hpo-pgbouncer")["data"]
    pool = int(settings["PGBOUNCER_POOL_SIZE"])
    # PostgreSQL's default max_connections (100), less its 3 reserved, less the storage-setup
    # job's lock and a margin for psql: the pool must leave room.
    assert pool + 5 <= 100 - 3
    assert int(settings["PGBOUNCER_MAX_CLIENTS"]) >= 2 * 256, "256 worker processes"
    assert _env(container)["PGBOUNCER_SERVER_HOST"] == "postgres"
    # PgBouncer refuses root: the image's user, by number (runAsNonRoot cannot check a name).
    dockerfile = (ROOT / "Dockerfile").read_text()
    stage = dockerfile[dockerfile.index("AS pgbouncer") :]
    uid = pod["securityContext"]["runAsUser"]
    assert pod["securityContext"]["runAsNonRoot"] and f"--uid {uid}" in stage
    assert "USER postgres" in stage and "deploy/pgbouncer/entrypoint.sh" in stage


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (its kustomize)")
def test_kubectl_kustomize_builds_it_with_pgbouncer_as_emulated_here(
    pooled: list[dict], tmp_path: Path
) -> None:
    """The real kustomize on a copy with the component named: the same URL and variables in
    the same order (a strategic merge would have moved HPO_STORAGE before what it expands)."""
    copied = tmp_path / "kubernetes"
    shutil.copytree(K8S, copied)
    kustomization = copied / "kustomization.yaml"
    text = kustomization.read_text().replace(
        "# components:\n#   - pgbouncer", "components:\n  - pgbouncer"
    )
    kustomization.write_text(text)
    built = subprocess.run(
        ["kubectl", "kustomize", str(copied)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    for doc, spec in _pods(docs):
        emulated = _pod_spec(_one(pooled, doc["kind"], doc["metadata"]["name"]))
        for real, ours in zip(spec["containers"], emulated["containers"], strict=True):
            assert real.get("env") == ours.get("env"), doc["metadata"]["name"]
    assert {d["metadata"]["name"] for d in docs} == {d["metadata"]["name"] for d in pooled}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (its kustomize)")
def test_kubectl_kustomize_builds_the_cpu_form_without_a_gpu(tmp_path: Path) -> None:
    """The CPU form was an overlay inside its own base, a cycle the real kustomize refused."""
    copied = tmp_path / "kubernetes"
    shutil.copytree(K8S, copied)
    kustomization = copied / "kustomization.yaml"
    text = kustomization.read_text().replace("# components:", "components:")
    kustomization.write_text(text.replace("#   - cpu", "  - cpu"))
    built = subprocess.run(
        ["kubectl", "kustomize", str(copied)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert GPU not in built.stdout and {"hpo-workers", "hpo-final-step"} <= {
        d["metadata"]["name"] for d in docs
    }
