"""Every GPU figure of the product in one call, each part under its own time cap.

GPU time comes rarely and a few minutes at a time, so one command measures all of it and
leaves a JSON summary and a markdown table behind, even when a part runs out of time:

1. ``cuda_tests``: ``tests/test_cuda.py`` (passed, failed, skipped);
2. ``layer_ratio``: ``SparseConv2d`` / ``nn.Conv2d`` forward+backward at batch 64
   (``bench/layer_overhead.py``), kernels 3, 5 and 11, the layer's floor (its fused function
   alone, ``--floor``) and the paper network's step;
3. ``trial_seconds``: one ``sparse_mnist`` trial (grid point 0, seed 0) at the study's own
   budget, through ``hpo.run``'s worker, in fp32, tf32, bf16 and compiled, then the fastest of
   those with ``cudnn.benchmark`` and ``channels_last`` on: wall time, validation accuracy and
   peak GPU memory (``peak_memory_mib``);
4. ``workers_sweep``: trials per GPU-hour with 1, 2, 4 and 8 workers per GPU (``hpo.run
   --workers K``, one-epoch trials for a fixed window, scaled to full trials by the single
   trial's time);
5. ``study_100_trials_minutes``: ``sparse_mnist`` at its own budget with the best setting
   (the fastest whose accuracy is within 0.02 of fp32's, and the best worker count), run for
   the part's time and extrapolated to 100 trials.

    python bench/gpu_check.py --out gpu-check --json                 # on a GPU: < 8 minutes
    python bench/gpu_check.py --smoke --out /tmp/gpu-smoke --json    # the same flow on the CPU

``--smoke`` runs every part on the CPU at a tiny size (the tests run it); compiling is left
out there (inductor takes about a minute per network on a CPU). MNIST is read from
``--data-dir`` / ``HPO_DATA_DIR``. How to run it on a lent GPU: ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STUDY = "sparse_mnist"
SMOKE_SIZES = {"--epochs": "1", "--train-size": "256", "--val-size": "100"}
# Seconds per part on a GPU (together under 8 minutes), and in --smoke on a CPU.
CAPS = {"cuda_tests": 60, "layer": 45, "trials": 150, "sweep": 130, "study": 75}
SMOKE_CAPS = {"cuda_tests": 120, "layer": 60, "trials": 180, "sweep": 180, "study": 120}
ACCURACY_TOLERANCE = 0.02  # a faster setting is chosen only within this of fp32's accuracy


# --- the parent: run each part in its own process group, under its cap --------------------


def run_part(name: str, args: argparse.Namespace, cap: float, extra: list[str]) -> dict:
    """Run part ``name`` as a child process for at most ``cap`` seconds; its result is what it
    wrote to ``parts/<name>.json`` by then (parts write as they go)."""
    out = Path(args.out)
    command = [sys.executable, __file__, "--part", name, "--out", str(out), *extra]
    if args.smoke:
        command.append("--smoke")
    log = (out / f"{name}.log").open("w")
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        status = process.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its hpo.run workers too
        process.wait()
        status = "timed out"
    log.close()
    result = _read(out / "parts" / f"{name}.json")
    result["_part"] = {"status": status, "seconds": round(time.monotonic() - started, 1)}
    return result


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    if args.part:
        PARTS[args.part](args)
        return
    caps = SMOKE_CAPS if args.smoke else CAPS
    common = ["--device", args.device] + (["--data-dir", args.data_dir] if args.data_dir else [])
    summary: dict[str, Any] = {"device": device_name(args.device), "smoke": args.smoke}
    tests = run_part("cuda_tests", args, caps["cuda_tests"], common)
    layer = run_part("layer", args, caps["layer"], common)
    trials = run_part("trials", args, caps["trials"], common)
    best = best_setting(trials)
    chosen = ["--setting", json.dumps(best)] if best else []
    sweep = run_part("sweep", args, caps["sweep"], common + chosen)
    workers = best_workers(sweep)
    study = run_part("study", args, caps["study"], common + chosen + ["--workers", str(workers)])
    summary.update(
        cuda_tests=tests,
        layer_ratio=layer,
        trials_part=trials.get("_part"),
        trial_seconds={k: v.get("seconds") for k, v in trials.items() if not k.startswith("_")},
        trial_accuracy={k: v.get("accuracy") for k, v in trials.items() if not k.startswith("_")},
        peak_memory_mib={k: v.get("peak_mib") for k, v in trials.items() if not k.startswith("_")},
        workers_sweep=sweep,
        best={"setting": best, "workers_per_gpu": workers},
        study_100_trials_minutes=study.get("minutes_per_100"),
        study=study,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    if args.json:
        print(json.dumps(summary))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for summary.json, summary.md, logs")
    parser.add_argument("--json", action="store_true", help="print the summary as the last line")
    parser.add_argument("--smoke", action="store_true", help="the same flow, on the CPU, tiny")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --smoke")
    parser.add_argument("--data-dir", default=None, help="MNIST's folder (default: HPO_DATA_DIR)")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--setting", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    return args


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu, {os.cpu_count()} cores"


# --- the parts (each in its own process) ---------------------------------------------------


def part_cuda_tests(args: argparse.Namespace) -> None:
    report = Path(args.out) / "cuda-tests.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    subprocess.run([*command, f"--junitxml={report}"], cwd=ROOT, check=False)
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    _write(args, "cuda_tests", counts)


def part_layer(args: argparse.Namespace) -> None:
    repeats = ["--repeats", "3", "--warmup", "1"] if args.smoke else ["--repeats", "30"]
    kernels = ["3"] if args.smoke else ["3", "5", "11"]
    command = [sys.executable, "bench/layer_overhead.py", "--device", args.device, "--batch", "64"]
    command += ["--kernels", *kernels, *repeats, "--networks", "--floor", "--json"]
    if args.device == "cpu":
        command += ["--channels-last", "--threads", str(os.cpu_count() or 1)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    print(done.stdout)
    _write(args, "layer", json.loads(done.stdout.strip().splitlines()[-1]))


def trial_settings(smoke: bool) -> dict[str, dict[str, Any]]:
    """The executions timed first; the fastest is then timed with the cuDNN/layout options."""
    settings = {
        "fp32": {"precision": "fp32"},
        "tf32": {"precision": "tf32"},
        "bf16": {"precision": "bf16"},
        "fp32+compile": {"precision": "fp32", "compile": True},
    }
    if smoke:
        del settings["tf32"], settings["fp32+compile"]  # the CPU has no TF32; compile: slow
    return settings


def part_trials(args: argparse.Namespace) -> None:
    """One trial per setting, sequentially in fresh studies; results written as they come."""
    results: dict[str, Any] = {}
    for name, setting in trial_settings(args.smoke).items():
        results[name] = one_trial(args, name, setting)
        _write(args, "trials", results)
    timed = [n for n, r in results.items() if r.get("seconds")]
    if not timed:
        return
    fastest = min(timed, key=lambda n: results[n]["seconds"])
    base = trial_settings(args.smoke)[fastest]
    extras = {
        "+cudnn_benchmark": {"cudnn_benchmark": True},
        "+channels_last": {"layout": "channels_last"},
        "+both": {"cudnn_benchmark": True, "layout": "channels_last"},
    }
    if args.smoke:  # the CPU trains channels_last already and has no cuDNN: the flow only
        extras = {"+both": extras["+both"]}
    for extra, options in extras.items():
        results[fastest + extra] = one_trial(args, fastest + extra, {**base, **options})
        _write(args, "trials", results)


def one_trial(args: argparse.Namespace, name: str, setting: dict[str, Any]) -> dict[str, Any]:
    """Trial 0 of a fresh ``sparse_mnist`` study with ``setting``, through ``hpo.run``."""
    storage = f"sqlite:///{Path(args.out).resolve() / 'trials.db'}"
    command = _run_command(args, storage, f"trial-{name}", setting, n_trials=1)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    trial = _trials(storage, f"trial-{name}")[0]
    memory = trial.user_attrs.get("memory", {})
    peak = memory.get("gpu_peak_mb") or memory.get("peak_rss_mb")
    return {
        "seconds": round(_duration(trial), 2),
        "accuracy": trial.value,
        "peak_mib": round(peak, 1) if peak else None,
        "state": trial.state.name,
    }


def part_sweep(args: argparse.Namespace) -> None:
    """K workers on the GPU(s) for a fixed window of one-epoch trials: trials per GPU-hour."""
    import torch

    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 1
    window = 2 if args.smoke else 20
    setting = json.loads(args.setting) if args.setting else {}
    results: dict[str, Any] = {"window_seconds": window, "gpus": gpus, "trial_epochs": 1}
    for per_gpu in (1, 2) if args.smoke else (1, 2, 4, 8):
        storage = f"sqlite:///{Path(args.out).resolve() / f'sweep-{per_gpu}.db'}"
        command = _run_command(
            args, storage, "sweep", setting, n_trials=10_000, workers=per_gpu * gpus,
            epochs=1, timeout=window,
        )  # fmt: skip
        subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        done = [t for t in _trials(storage, "sweep") if t.state.name == "COMPLETE"]
        if done:
            span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
            per_hour = len(done) / max(span.total_seconds(), 1e-9) * 3600 / gpus
            results[str(per_gpu)] = {
                "trials": len(done),
                "one_epoch_trials_per_gpu_hour": round(per_hour, 1),
                "median_trial_seconds": round(statistics.median(map(_duration, done)), 2),
            }
        _write(args, "sweep", results)


def part_study(args: argparse.Namespace) -> None:
    """The study at its own budget with the chosen setting, timed, extrapolated to 100."""
    storage = f"sqlite:///{Path(args.out).resolve() / 'study.db'}"
    setting = json.loads(args.setting) if args.setting else {}
    window = 5 if args.smoke else CAPS["study"] - 25  # minus start-up and the final step
    started = time.monotonic()
    command = _run_command(
        args, storage, "study", setting, n_trials=100, workers=args.workers, timeout=window,
        pruner=None,
    )  # fmt: skip
    subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    trials = [t for t in _trials(storage, "study") if t.state.name in ("COMPLETE", "PRUNED")]
    result: dict[str, Any] = {"finished": len(trials), "workers": args.workers, "setting": setting}
    if trials:
        span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
        result["seconds"] = round(span.total_seconds(), 1)
        result["minutes_per_100"] = round(span.total_seconds() / len(trials) * 100 / 60, 1)
        result["pruned"] = sum(t.state.name == "PRUNED" for t in trials)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    _write(args, "study", result)


PARTS = {
    "cuda_tests": part_cuda_tests,
    "layer": part_layer,
    "trials": part_trials,
    "sweep": part_sweep,
    "study": part_study,
}


# --- choosing, and the pieces the parts share ----------------------------------------------


def best_setting(trials: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest trial's setting among those within ``ACCURACY_TOLERANCE`` of fp32's
    accuracy (one trial each, so a large drop, not noise, rules a setting out)."""
    timed = {k: v for k, v in trials.items() if not k.startswith("_") and v.get("seconds")}
    if not timed:
        return None
    reference = timed.get("fp32", {}).get("accuracy") or 0.0
    fair = {k: v for k, v in timed.items() if v["accuracy"] >= reference - ACCURACY_TOLERANCE}
    name = min(fair or timed, key=lambda k: timed[k]["seconds"])
    setting = dict(trial_settings(False).get(name.split("+")[0], {"precision": "fp32"}))
    if "+compile" in name:
        setting["compile"] = True
    if "+cudnn_benchmark" in name or "+both" in name:
        setting["cudnn_benchmark"] = True
    if "+channels_last" in name or "+both" in name:
        setting["layout"] = "channels_last"
    return {"name": name, **setting}


def best_workers(sweep: dict[str, Any]) -> int:
    rates = {int(k): v["one_epoch_trials_per_gpu_hour"] for k, v in sweep.items() if k.isdigit()}
    return max(rates, key=lambda k: rates[k]) if rates else 1


def _run_command(
    args: argparse.Namespace,
    storage: str,
    study_name: str,
    setting: dict[str, Any],
    *,
    n_trials: int,
    workers: int = 1,
    epochs: int | None = None,
    timeout: float | None = None,
    pruner: str | None = "none",
) -> list[str]:
    command = [sys.executable, "-m", "hpo.run", "--study", STUDY, "--study-name", study_name]
    command += ["--storage", storage, "--n-trials", str(n_trials), "--seed", "0"]
    command += ["--device", args.device, "--workers", str(workers), "--no-progress"]
    command += ["--precision", setting.get("precision", "fp32")]
    command += ["--layout", setting.get("layout", "auto")]
    command += ["--compile"] if setting.get("compile") else []
    command += ["--cudnn-benchmark"] if setting.get("cudnn_benchmark") else []
    command += ["--pruner", pruner] if pruner else []
    command += ["--timeout", str(timeout)] if timeout else []
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    sizes = dict(SMOKE_SIZES) if args.smoke else {}
    if epochs is not None:
        sizes["--epochs"] = str(epochs)
    return command + [word for flag_value in sizes.items() for word in flag_value]


def _trials(storage: str, study_name: str) -> list[Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def _duration(trial: Any) -> float:
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _write(args: argparse.Namespace, name: str, result: dict[str, Any]) -> None:
    path = Path(args.out) / "parts" / f"{name}.json"
    path.with_suffix(".tmp").write_text(json.dumps(result, default=str))
    path.with_suffix(".tmp").replace(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def markdown(summary: dict[str, Any]) -> str:
    """The summary as the table ``docs/performance.md`` records."""
    lines = [
        f"GPU check on {summary['device']}" + (" (smoke, CPU)" if summary["smoke"] else ""),
        "",
    ]
    tests = summary["cuda_tests"]
    lines.append(
        f"- CUDA tests: {tests.get('passed')} passed, {tests.get('failures')} failed, "
        f"{tests.get('errors')} errors, {tests.get('skipped')} skipped"
    )
    ratios = summary["layer_ratio"].items()
    layer = {k: v for k, v in ratios if k.startswith(("kernel", "floor", "network"))}
    lines.append("- layer / network ratios: " + ", ".join(f"{k} {v}x" for k, v in layer.items()))
    lines += ["", "| setting | trial s | val accuracy | peak MiB |", "|---|---:|---:|---:|"]
    for name, seconds in summary["trial_seconds"].items():
        accuracy, peak = summary["trial_accuracy"].get(name), summary["peak_memory_mib"].get(name)
        lines.append(f"| {name} | {seconds} | {accuracy} | {peak} |")
    lines += ["", "| workers per GPU | one-epoch trials per GPU-hour | median trial s |"]
    lines.append("|---:|---:|---:|")
    for k, v in summary["workers_sweep"].items():
        if k.isdigit():
            lines.append(
                f"| {k} | {v['one_epoch_trials_per_gpu_hour']} | {v['median_trial_seconds']} |"
            )
    study = summary["study"]
    lines += [
        "",
        f"- best: {summary['best']}",
        f"- study: {study.get('finished')} trials ({study.get('pruned')} pruned) in "
        f"{study.get('seconds')} s with {study.get('workers')} worker(s): "
        f"**{summary['study_100_trials_minutes']} min per 100 trials**",
    ]
    parts = {k: v.get("_part") for k, v in summary.items() if isinstance(v, dict) and "_part" in v}
    lines.append(f"- parts: {parts}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
