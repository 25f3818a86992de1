"""Run Optuna's own storage tests against our storages; check the failures are the known ones.

    python tests/optuna_suite/run.py --backend sqlite --storage ours       # or plain
    HPO_TEST_POSTGRES_URL=... python tests/optuna_suite/run.py --backend postgresql

The tests come from the source distribution of the *installed* Optuna (the registry's sdist
carries ``tests/``), downloaded once with ``pip download`` into ``--cache`` (default
``$HPO_CACHE_DIR/optuna-suite``, else ``~/.cache/sparse-cnn-hpo/optuna-suite``); nothing of it
is committed. ``tests/storages_tests`` runs with the plugin :mod:`adapter`, which opens every
storage the tests create through ``hpo.runtime.storage.open_storage`` (``--storage ours``) or
plain ``RDBStorage`` (``--storage plain``). Journal, Redis and gRPC storages are not ours and
are left out (``journal_tests``, ``test_grpc.py``, and their modes of the parametrized tests).
Needs ``fakeredis`` importable (``optuna.testing.storages`` imports it).

Prints one line -- passed, failed, skipped, seconds -- and compares the failures with
:mod:`differences` (``ALSO_PLAIN``: tests plain ``RDBStorage`` fails as well on this setup;
``DIFFERENCES``, for ``--storage ours``: each difference with the reason it is acceptable):
exit 0 only when they are exactly those, so a new difference, or a listed one that went away,
fails the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from differences import ALSO_PLAIN, DIFFERENCES  # noqa: E402  (a sibling, not a package)

LEFT_OUT = ("journal_tests", "test_grpc.py")


def _default_cache() -> Path:
    base = os.environ.get("HPO_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "sparse-cnn-hpo") / "optuna-suite"


def fetch_tests(version: str, cache: Path) -> Path:
    """The ``tests/`` folder of Optuna ``version``'s sdist, downloaded and unpacked once."""
    tests = cache / f"optuna-{version}" / "tests"
    if tests.is_dir():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
        + ["--quiet", f"optuna=={version}", "-d", str(cache)],
        check=True,
    )
    (archive,) = cache.glob(f"optuna-{version}.tar.gz")
    with tarfile.open(archive) as tar:
        prefix = f"optuna-{version}/"
        wanted = [
            m
            for m in tar.getmembers()
            if m.name.startswith(prefix + "tests/") or m.name == prefix + "pyproject.toml"
        ]
        tar.extractall(cache, members=wanted, filter="data")
    return tests


def run_suite(tests: Path, backend: str, storage: str, extra: list[str]) -> dict[str, str]:
    """Run the suite; returns ``{test node id: "passed" | "failed" | "skipped"}``."""
    report = tests.parent / f"report-{storage}-{backend}.json"
    report.unlink(missing_ok=True)
    env = dict(os.environ, HPO_SUITE_STORAGE=storage, HPO_SUITE_BACKEND=backend)
    env["HPO_SUITE_REPORT"] = str(report)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "pytest", "tests/storages_tests", "-p", "adapter"]
    command += [f"--ignore=tests/storages_tests/{name}" for name in LEFT_OUT]
    command += ["-q", "--color=no", "-p", "no:cacheprovider", *extra]
    subprocess.run(command, cwd=tests.parent, env=env, check=False)
    if not report.exists():
        raise SystemExit(f"the suite wrote no report ({report}): see pytest's output above")
    return json.loads(report.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--storage", choices=["ours", "plain"], default="ours")
    parser.add_argument("--cache", type=Path, default=None, help="sdist cache folder")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args()
    import optuna

    tests = fetch_tests(optuna.__version__, args.cache or _default_cache())
    start = time.monotonic()
    outcomes = run_suite(tests, args.backend, args.storage, args.pytest_args)
    seconds = time.monotonic() - start
    failed = sorted(name for name, outcome in outcomes.items() if outcome == "failed")
    counts = {k: sum(v == k for v in outcomes.values()) for k in ("passed", "failed", "skipped")}
    print(
        f"optuna {optuna.__version__} storage suite, {args.storage} storages on {args.backend}: "
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
        f"of {len(outcomes)} in {seconds:.0f} s"
    )
    for name in failed:
        print(f"  failed: {name}")
    if args.pytest_args:  # a selection: nothing to compare with
        return 0
    listed = {**ALSO_PLAIN, **DIFFERENCES} if args.storage == "ours" else ALSO_PLAIN
    expected = {name for name, (backends, _) in listed.items() if args.backend in backends}
    new, gone = set(failed) - expected, {n for n in expected if outcomes.get(n) == "passed"}
    for name in sorted(new):
        print(f"  NOT A KNOWN DIFFERENCE: {name}")
    for name in sorted(gone):
        print(f"  LISTED AS FAILING BUT PASSES (update differences.py): {name}")
    return 1 if new or gone else 0


if __name__ == "__main__":
    sys.exit(main())
