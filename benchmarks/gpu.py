"""Everything that needs a GPU, in one command: the CUDA tests, then every benchmark on the GPU, one table of ratios.

    bash benchmarks/gpu.sh              # on a machine with CUDA; under 8 minutes is the plan
    bash benchmarks/gpu.sh --cpu        # the same steps on the CPU: the CUDA tests skip, saying why
    bash benchmarks/gpu.sh --only attributions cams --logs DIR

Steps, each in its own process with a time limit (a step that fails or runs out of time is reported and the next
one runs):

1. ``pytest tests/test_gpu.py``: 16-mixed and bf16-mixed fits with CNNSee on CUDA, training unchanged by CNNSee
   under 16-mixed, a one-GPU DDP fit on NCCL, CUDA memory flat over 200 runs of ``visualize``.
2. Each benchmark with ``--device cuda --quick --json``: ``gradcam.py`` (Grad-CAM against pytorch-grad-cam and a
   training step), ``cams.py`` (Score-CAM, Ablation-CAM, Eigen-CAM against torchcam and pytorch-grad-cam),
   ``attributions.py`` (seven methods against Captum; Occlusion on ResNet-18 and a plain stack),
   ``faithfulness.py`` (against torchcam's metrics), ``ascent.py --parts compare`` (against lucent),
   ``overhead.py`` (the demo's training with and without CNNSee).

The logs of every step go to ``--logs`` (default: a new temporary folder), with each benchmark's ratios as JSON;
the closing table lists every ratio with its target. Ratios on the GPU are of wall time, every timed call ending
with ``torch.cuda.synchronize()``; on the CPU, as each script says (CPU time where the script measures it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BENCHMARKS = {
    # name: (script and its own arguments, time limit on a GPU in seconds)
    "gradcam": (["gradcam.py"], 60),
    "cams": (["cams.py"], 60),
    "attributions": (["attributions.py"], 120),
    "faithfulness": (["faithfulness.py"], 60),
    "ascent": (["ascent.py", "--parts", "compare"], 90),
    "overhead": (["overhead.py"], 240),
}
TESTS_LIMIT = 300
CPU_LIMIT_FACTOR = 10  # on a CPU the same steps take far longer (see benchmarks/README.md)


def run_step(name: str, command: list[str], limit: float, log_path: str, env: dict) -> tuple[str, float]:
    """Run one step, its output to ``log_path``; (status, seconds)."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        try:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=limit, env=env, cwd=ROOT)
            status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            status = f"stopped after its limit of {limit:.0f} s"
    seconds = time.perf_counter() - started
    print(f"[{name}] {status} in {seconds:.0f} s; log {log_path}", flush=True)
    return status, seconds


def tests_summary(log_path: str) -> str:
    """pytest's last line and its skip reasons, from the log."""
    with open(log_path) as handle:
        lines = [line.rstrip() for line in handle]
    skips = sorted({line.split(": ", 1)[-1] for line in lines if line.startswith("SKIPPED")})
    last = next((line for line in reversed(lines) if " in " in line and ("passed" in line or "skipped" in line)), "")
    return last.strip("= ") + ("; skipped because: " + " | ".join(skips) if skips else "")


def table(rows: list[list[str]]) -> str:
    headers = ["benchmark ratio", "median [min-max]", "target", "met?"]
    cells = [headers, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    return "\n".join(lines)


def ratio_rows(record: dict) -> list[list[str]]:
    rows = []
    for entry in record["ratios"]:
        value = f"{entry['median']:.3f} [{entry['min']:.3f}-{entry['max']:.3f}]"
        target = entry.get("target")
        if target is None:
            rows.append([entry["name"], value, "(info)", ""])
            continue
        at_most = entry.get("at_most", True)
        met = entry["median"] <= target if at_most else entry["median"] >= target
        rows.append([entry["name"], value, f"{'<=' if at_most else '>='} {target:g}", "yes" if met else "NO"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run every step on the CPU (the CUDA tests skip)")
    parser.add_argument("--only", nargs="+", choices=["tests", *BENCHMARKS], help="run only these steps")
    parser.add_argument("--logs", default=None, help="folder for the logs and JSON files (default: a temp folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the benchmarks (default 1 on CPU)")
    args = parser.parse_args()
    started = time.perf_counter()
    device = "cpu" if args.cpu else "cuda"
    if not args.cpu:
        import torch

        if not torch.cuda.is_available():
            print(f"torch {torch.__version__} sees no CUDA device; run with --cpu for the CPU mode", file=sys.stderr)
            return 2
    logs = args.logs or tempfile.mkdtemp(prefix="cnnsee-gpu-")
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    factor = CPU_LIMIT_FACTOR if args.cpu else 1
    steps = args.only or ["tests", *BENCHMARKS]
    print(f"GPU script: device {device}, steps {steps}, logs in {logs}", flush=True)
    statuses: dict[str, str] = {}
    rows: list[list[str]] = []
    if "tests" in steps:
        log_path = os.path.join(logs, "tests.log")
        command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_gpu.py"]
        command += ["--timeout", str(TESTS_LIMIT * factor)]
        status, seconds = run_step("tests", command, TESTS_LIMIT * factor + 30, log_path, env)
        statuses["tests"] = f"{status}, {seconds:.0f} s: {tests_summary(log_path)}"
    for name in [step for step in steps if step in BENCHMARKS]:
        script, limit = BENCHMARKS[name]
        json_path = os.path.join(logs, f"{name}.json")
        command = [sys.executable, os.path.join(HERE, script[0]), *script[1:], "--device", device, "--quick"]
        command += ["--json", json_path]
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
        if os.path.exists(json_path):
            os.remove(json_path)
        status, seconds = run_step(name, command, limit * factor, os.path.join(logs, f"{name}.log"), env)
        statuses[name] = f"{status}, {seconds:.0f} s"
        if os.path.exists(json_path):
            with open(json_path) as handle:
                record = json.load(handle)
            rows += ratio_rows(record)
            machine = record.get("gpu") or record.get("machine")
    print()
    print(f"== GPU script, device {device}" + (f" ({machine})" if rows and machine else ""))
    for name, status in statuses.items():
        print(f"{name}: {status}")
    print()
    print(table(rows) if rows else "(no ratios: every benchmark failed; see the logs)")
    print()
    print(f"{time.perf_counter() - started:.0f} s in all; logs and JSON in {logs}")
    return 0 if all(status.startswith("ok") for status in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
