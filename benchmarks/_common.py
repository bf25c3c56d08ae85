"""Shared helpers of the benchmark scripts: machine description, interleaved timing, paired ratios, tables.

Not a test module and not part of the package. Each script in this folder imports it as ``_common`` (Python puts the
script's own folder first on ``sys.path``).

Method, the same in every script: each case is warmed up first, then the cases are timed in turns (A B, then B A,
then A B, ...) so that a slow spell of the machine hits all of them alike; a ratio is computed per round (A_i / B_i,
both measured within seconds of each other) and the median of those ratios is the figure, with its min-max spread.

Threads: one torch thread by default (``--threads N`` to change). On a small shared machine two OpenMP threads
are one per core, and as soon as another process takes a core, every parallel region waits for the descheduled
thread: single calls then run 5 to 40 times slower than their median (measured on the 2-core machine of the
README). One thread is slower but steady, and the ratios are what these scripts are for.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch


def add_common_arguments(parser: argparse.ArgumentParser, *, repeats: int) -> None:
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1; why: benchmarks/README.md)"
    )
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed rounds per case (default {repeats})")


def add_device_arguments(parser: argparse.ArgumentParser, *, quick: str) -> None:
    """``--device``, ``--quick`` (a shorter run, ``quick`` says what it leaves out) and ``--json`` (where to write
    the headline ratios, for ``benchmarks/gpu.py``)."""
    parser.add_argument("--device", default="cpu", help="torch device of models and images: cpu (default) or cuda")
    parser.add_argument("--quick", action="store_true", help=f"a short run: {quick}")
    parser.add_argument("--json", default=None, help="also write the headline ratios to this JSON file")


def device_of(name: str) -> torch.device:
    """The device named on the command line; exits with a message if it is CUDA and none is there."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch sees no CUDA device (torch {torch.__version__})")
    return device


def synchronized(function: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``function``, then waiting for the device to finish its queued work (CUDA runs asynchronously: without
    this, a timer sees only the time to queue the work)."""
    if device.type != "cuda":
        return function

    def run() -> object:
        result = function()
        torch.cuda.synchronize(device)
        return result

    return run


def ratio_entry(name: str, ratio: tuple[float, float, float], target: float | None, at_most: bool = True) -> dict:
    """One headline ratio for :func:`write_ratios`."""
    return {"name": name, "median": ratio[0], "min": ratio[1], "max": ratio[2], "target": target, "at_most": at_most}


def write_ratios(path: str | None, script: str, entries: Sequence[dict], device: torch.device) -> None:
    """Write ``{"script", "device", "machine", "ratios": entries}`` to ``path`` (nothing when it is None)."""
    if path is None:
        return
    import json

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    record = {"script": script, "device": str(device), "gpu": gpu, "machine": machine_line(), "ratios": list(entries)}
    with open(path, "w") as handle:
        json.dump(record, handle, indent=1)


def set_threads(threads: int) -> int:
    """Fix torch's intra-op threads and return what torch reports."""
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return "/".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def machine_line() -> str:
    """One line naming the machine and the software the figures come from."""
    import torchvision

    return (
        f"machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}; "
        f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"torch threads {torch.get_num_threads()}; load average (1/5/15 min) {load_average()}"
    )


def interleaved(cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time every case ``repeats`` times, in turns, after ``warmup`` untimed calls of each.

    The order of the cases alternates from round to round (A B C, C B A, A B C, ...), which cancels a steady drift.
    Returns ``{case: [seconds of round 0, round 1, ...]}``.
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            started = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - started)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max of the per-round ratios ``numerator[i] / denominator[i]``."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def spread(values: Sequence[float]) -> str:
    """``median [min-max]`` of a list of seconds, in milliseconds."""
    return f"{median(values) * 1e3:.1f} [{min(values) * 1e3:.1f}-{max(values) * 1e3:.1f}]"


def ratio_text(ratio: tuple[float, float, float]) -> str:
    return f"{ratio[0]:.3f} [{ratio[1]:.3f}-{ratio[2]:.3f}]"


def verdict(value: float, target: float, *, at_most: bool = True) -> str:
    met = value <= target if at_most else value >= target
    sign = "<=" if at_most else ">="
    return f"{'MET' if met else 'NOT MET'} ({value:.3f} {sign} {target:g} {'holds' if met else 'fails'})"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with aligned columns (also valid Markdown)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def missing_package_message(package: str, error: BaseException) -> str:
    return (
        f"{package} is not importable ({type(error).__name__}: {error}); install the benchmark extra: "
        "pip install -e '.[bench]'"
    )


def print_summary(lines: Sequence[str], started: float) -> None:
    """The script's closing summary, then its wall time since ``started`` (``time.perf_counter()``) and the machine."""
    print("== summary")
    for line in lines:
        print(line)
    print(f"({time.perf_counter() - started:.0f} s in all; {machine_line()})")
