"""Training overhead of CNNSee on the demo, and what one CNNSee run costs, technique by technique.

    python benchmarks/overhead.py [--epochs 8] [--num-train 4096] [--num-val 1024] [--repeats 2] [--threads N]
                                  [--parts overhead breakdown] [--configs without with [unlimited]]

Part ``overhead``: the demo's training (``lightning_cnnsee.demo.train.run_demo``: 8 epochs, 1024 validation images of
48x48, batch 64, 4096 training images: the demo as it is; ``--num-train 2048`` halves the time)
without CNNSee (a do-nothing ``pl.Callback()`` in its place) and with ``CNNSee(mean=MEAN, std=STD,
class_names=CLASS_NAMES)`` at its defaults, each in a fresh Python process, in rounds ordered without-with, then
with-without, and so on (``--configs without with unlimited`` adds ``max_overhead=None``, what ``run_demo`` uses).
Each process reports the wall time of ``run_demo`` (data, fit and logging), its peak resident memory
(``ru_maxrss``, and ``VmHWM`` from ``/proc/self/status``), and, timed from outside by wrapping the callback's hooks
and its ``run`` method, every CNNSee run. Ratios are per round (with_i / without_i), median [min-max]. Targets:
time with / without <= 1.05, peak memory with / without <= 1.1.

Part ``breakdown``: the demo model after 2 epochs on 2048 images (no CNNSee), 8 fixed validation images, and the
callback's own pieces called directly: ``visualize(model, images, labels, Options(..., techniques=[one]))`` for each
technique (and for each filter layer alone), ``render_results(results, ...)`` and writing the rendered images with
``TensorBoardImageWriter`` (what CNNSee writes into a TensorBoardLogger with). The first ``visualize`` (layer probing,
one-off kernel set-up) is shown apart. Then the ascent (filters + classes) at fewer steps and a higher learning rate,
to size the proposals.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings

import _common

TARGET_TIME, TARGET_MEMORY = 1.05, 1.1


def _quiet_lightning() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _peak_memory_mib() -> tuple[float, float | None]:
    """(ru_maxrss, VmHWM) of this process in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    hwm = None
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
    return rss, hwm


# ------------------------------------------------------------------------------------------------ child
def instrument(callback: object) -> tuple[dict[str, float], list[dict]]:
    """Time every Lightning hook the callback implements, and each of its ``run`` calls, from the outside.

    Returns ``{hook: seconds}`` and a list of ``{step, patterns, maps, seconds}``, both filled while training runs.
    """
    import pytorch_lightning as pl

    hook_seconds: dict[str, float] = {}
    runs: list[dict] = []
    names = [
        name
        for name in vars(type(callback))
        if (name.startswith("on_") or name in ("setup", "teardown")) and callable(getattr(pl.Callback, name, None))
    ]

    def timed(name: str, method):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                hook_seconds[name] = hook_seconds.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    for name in names:
        setattr(callback, name, timed(name, getattr(callback, name)))
    run = callback.run

    def timed_run(trainer, pl_module, **kwargs):  # noqa: ANN001, ANN003, ANN202
        started = time.perf_counter()
        try:
            return run(trainer, pl_module, **kwargs)
        finally:
            runs.append(
                {
                    "step": trainer.global_step,
                    "patterns": kwargs.get("include_patterns", True),
                    "maps": kwargs.get("include_maps", True),
                    "seconds": time.perf_counter() - started,
                }
            )

    callback.run = timed_run
    return hook_seconds, runs


def child(config: str, args: argparse.Namespace) -> None:
    """One training run in this (fresh) process; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    _quiet_lightning()
    import pytorch_lightning as pl

    from lightning_cnnsee import CNNSee
    from lightning_cnnsee.demo.data import CLASS_NAMES, MEAN, STD
    from lightning_cnnsee.demo.train import run_demo

    if config == "with":
        callback = CNNSee(mean=MEAN, std=STD, class_names=CLASS_NAMES)
    elif config == "unlimited":  # what run_demo's own default callback does: every run, every kind of image
        callback = CNNSee(mean=MEAN, std=STD, class_names=CLASS_NAMES, max_overhead=None)
    else:
        callback = pl.Callback()
    hook_seconds, runs = instrument(callback) if config != "without" else ({}, [])
    with tempfile.TemporaryDirectory() as logdir:
        started = time.perf_counter()
        trainer = run_demo(
            logdir,
            max_epochs=args.epochs,
            num_train=args.num_train,
            num_val=args.num_val,
            callback=callback,
            enable_progress_bar=False,
            accelerator=args.device,
        )
        seconds = time.perf_counter() - started
    rss, hwm = _peak_memory_mib()
    report = {
        "config": config,
        "seconds": seconds,
        "ru_maxrss_mib": rss,
        "vmhwm_mib": hwm,
        "val_acc": float(trainer.callback_metrics.get("val/acc", float("nan"))),
        "threads": torch.get_num_threads(),
        "hook_seconds": hook_seconds,
        "runs": runs,
        "deferred": getattr(callback, "_deferred", None),
    }
    print("RESULT " + json.dumps(report))


def describe_cnnsee(result: dict) -> str:
    hooks = sum(result["hook_seconds"].values())
    runs = result["runs"]
    full = sum(1 for r in runs if r["patterns"])
    return (
        f"{len(runs)} runs ({full} with patterns) {sum(r['seconds'] for r in runs):.1f} s, all hooks "
        f"{hooks:.1f} s, {result.get('deferred')} deferred"
    )


def run_child(config: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        config,
        "--epochs",
        str(args.epochs),
        "--num-train",
        str(args.num_train),
        "--num-val",
        str(args.num_val),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child run ({config}) failed with code {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# --------------------------------------------------------------------------------------------- overhead
def overhead(args: argparse.Namespace) -> tuple[list[str], float]:
    runs = []
    for pair in range(args.repeats):
        # A B, B A, A B, ...: a machine that slows down (or speeds up) over the minutes of the script biases the
        # even and the odd rounds' ratios in opposite directions, and the median over rounds cancels it
        for config in args.configs if pair % 2 == 0 else list(reversed(args.configs)):
            result = run_child(config, args)
            result["pair"] = pair
            runs.append(result)
            print(
                f"  run {len(runs)}: {config:9s} {result['seconds']:6.1f} s, peak RSS {result['ru_maxrss_mib']:.0f} "
                f"MiB, val acc {result['val_acc']:.3f}"
                + (f", {describe_cnnsee(result)}" if result["runs"] or result["hook_seconds"] else ""),
                flush=True,
            )
    without = [r for r in runs if r["config"] == "without"]
    print()
    print(
        f"== overhead: run_demo(max_epochs={args.epochs}, num_train={args.num_train}, num_val={args.num_val}), "
        f"{args.repeats} rounds of {args.configs}, fresh process each, torch threads {args.threads}"
    )
    print(
        _common.table(
            ["run", "config", "seconds", "peak RSS MiB", "VmHWM MiB", "val acc", "CNNSee (timed from outside)"],
            [
                [
                    i + 1,
                    r["config"],
                    f"{r['seconds']:.1f}",
                    f"{r['ru_maxrss_mib']:.0f}",
                    f"{r['vmhwm_mib']:.0f}" if r["vmhwm_mib"] else "n/a",
                    f"{r['val_acc']:.3f}",
                    describe_cnnsee(r) if r["config"] != "without" else "",
                ]
                for i, r in enumerate(runs)
            ],
        )
    )
    first_with = next((r for r in runs if r["config"] == "with"), None)
    if first_with is not None:
        kinds = {(True, True): "full", (True, False): "patterns only", (False, True): "maps only"}
        print(
            "CNNSee runs of the first 'with' run: "
            + ", ".join(
                f"step {r['step']} {kinds.get((r['patterns'], r['maps']), 'nothing')} {r['seconds']:.2f} s"
                for r in first_with["runs"]
            )
        )
        print(
            "CNNSee hooks of that run: "
            + ", ".join(
                f"{name} {seconds:.2f} s"
                for name, seconds in sorted(first_with["hook_seconds"].items(), key=lambda item: -item[1])
                if seconds >= 0.005
            )
        )
    rows, summary = [], []
    for config in [c for c in args.configs if c != "without"]:
        measured = [r for r in runs if r["config"] == config]
        time_ratio = _common.paired_ratio([r["seconds"] for r in measured], [r["seconds"] for r in without])
        memory_ratio = _common.paired_ratio(
            [r["ru_maxrss_mib"] for r in measured], [r["ru_maxrss_mib"] for r in without]
        )
        target = config == "with"
        rows.append(
            [
                f"wall time {config} / without",
                _common.ratio_text(time_ratio),
                f"<= {TARGET_TIME}" if target else "(info)",
                _common.verdict(time_ratio[0], TARGET_TIME) if target else "",
            ]
        )
        rows.append(
            [
                f"peak RSS {config} / without",
                _common.ratio_text(memory_ratio),
                f"<= {TARGET_MEMORY}" if target else "(info)",
                _common.verdict(memory_ratio[0], TARGET_MEMORY) if target else "",
            ]
        )
        accounted = sorted(r["seconds"] / (r["seconds"] - sum(r["hook_seconds"].values())) for r in measured)
        rows.append(
            [
                f"{config}: wall / (wall - CNNSee's hooks)",
                _common.ratio_text((_common.median(accounted), accounted[0], accounted[-1])),
                "(what CNNSee itself took)",
                "",
            ]
        )
        if all(r["vmhwm_mib"] for r in measured + without):
            hwm_ratio = _common.paired_ratio([r["vmhwm_mib"] for r in measured], [r["vmhwm_mib"] for r in without])
            rows.append([f"VmHWM {config} / without", _common.ratio_text(hwm_ratio), "(as RSS)", ""])
        if target:
            args.entries += [
                _common.ratio_entry("overhead: demo training time with / without CNNSee", time_ratio, TARGET_TIME),
                _common.ratio_entry(
                    "overhead: wall / (wall - CNNSee's hooks)",
                    (_common.median(accounted), accounted[0], accounted[-1]),
                    None,  # what CNNSee itself took (information)
                ),
                _common.ratio_entry("overhead: peak RSS with / without", memory_ratio, TARGET_MEMORY),
            ]
            summary += [
                f"training time with / without: {_common.ratio_text(time_ratio)} -> "
                f"{_common.verdict(time_ratio[0], TARGET_TIME)}; CNNSee's own hooks: "
                f"{_common.ratio_text((_common.median(accounted), accounted[0], accounted[-1]))}",
                f"peak memory with / without: {_common.ratio_text(memory_ratio)} -> "
                f"{_common.verdict(memory_ratio[0], TARGET_MEMORY)}",
            ]
        else:
            summary.append(
                f"training time {config} / without: {_common.ratio_text(time_ratio)}; peak memory "
                f"{_common.ratio_text(memory_ratio)}"
            )
    print(_common.table(["ratio (per round, median [min-max])", "value", "target", "verdict"], rows))
    print()
    training_seconds = _common.median([r["seconds"] for r in without])
    summary.append(f"median training without CNNSee: {training_seconds:.1f} s")
    return summary, training_seconds


# -------------------------------------------------------------------------------------------- breakdown
def breakdown(args: argparse.Namespace, training_seconds: float | None) -> list[str]:
    import pytorch_lightning as pl
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from lightning_cnnsee.demo.data import CLASS_NAMES, MEAN, STD
    from lightning_cnnsee.demo.train import ShapesDataModule, run_demo
    from lightning_cnnsee.render.images import render_results
    from lightning_cnnsee.run.options import Options
    from lightning_cnnsee.run.selection import choose_layers
    from lightning_cnnsee.run.visualization import visualize
    from lightning_cnnsee.sinks.writers import TensorBoardImageWriter

    _quiet_lightning()
    with tempfile.TemporaryDirectory() as logdir, contextlib.redirect_stdout(open(os.devnull, "w")):
        trainer = run_demo(
            logdir, max_epochs=2, num_train=2048, num_val=512, callback=pl.Callback(), enable_progress_bar=False
        )
    model = trainer.lightning_module
    data = ShapesDataModule(num_train=64, num_val=256)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    quiet = contextlib.redirect_stderr(open(os.devnull, "w"))

    images, labels = batch[0][:8], batch[1][:8]  # the 8 fixed images

    class Made:
        """One configuration: its options and its layers, chosen once (as the callback does at setup)."""

        def __init__(self, **options) -> None:
            self.options = Options(mean=MEAN, std=STD, class_names=CLASS_NAMES, **options)
            self.choice = choose_layers(model, images[:1], self.options)

        def compute(self, model):
            return visualize(model, images, labels, self.options, choice=self.choice)

        def render(self, results):
            return render_results(results, images, labels, self.options)

    callback = Made
    started = time.perf_counter()
    full = callback()
    with quiet:
        full_results = full.compute(model)
    cold = time.perf_counter() - started
    layers = list(full.choice.filters)
    log_folder = tempfile.mkdtemp()
    summary_writer = SummaryWriter(log_folder)
    writer = TensorBoardImageWriter(summary_writer)  # what CNNSee writes with into a TensorBoardLogger
    step = [0]

    def log(images: dict) -> None:
        step[0] += 1
        for tag, image in images.items():
            writer.add_image(tag, image, step[0])
        summary_writer.flush()

    # One callback per technique (its first compute, with the layer probing, is not timed); each technique's
    # compute, render of its own results, and logging of its own images.
    cases = {}
    kinds = {
        "gradcam": "Grad-CAM (predicted + true class)",
        "activations": "activations (3 layers)",
        "filters": "filters (3 layers x 8 channels)",
        "classes": "classes (6)",
    }
    for technique in kinds:
        made = callback(techniques=[technique])
        with quiet:
            results = made.compute(model)
        rendered = made.render(results)
        cases[f"{technique}: compute"] = lambda made=made: made.compute(model)
        cases[f"{technique}: render"] = lambda made=made, results=results: made.render(results)
        cases[f"{technique}: log"] = lambda rendered=rendered: log(rendered)
    for layer in layers:
        made = callback(techniques=["filters"], filter_layers=[layer])
        with quiet:
            made.compute(model)
        cases[f"filters: compute {layer} only"] = lambda made=made: made.compute(model)
    cases["whole: compute, all four techniques in one call"] = lambda: full.compute(model)
    cases["whole: render"] = lambda: full.render(full_results)
    full_rendered = full.render(full_results)
    cases["whole: log"] = lambda: log(full_rendered)
    times = _common.interleaved(cases, repeats=max(3, args.repeats + 1), warmup=1)
    summary_writer.close()
    per_run = {name: _common.median(values) for name, values in times.items()}
    whole = (
        per_run["whole: compute, all four techniques in one call"] + per_run["whole: render"] + per_run["whole: log"]
    )

    print(
        f"== breakdown: one CNNSee run on the demo model after 2 epochs (8 images 3x48x48; filters on {layers}, "
        f"8 channels each; 6 classes; ascent_steps={full.options.ascent_steps}, "
        f"ascent_lr={full.options.ascent_lr:g}); torch "
        f"threads {torch.get_num_threads()}; ms, median [min-max] of {len(times['whole: render'])} interleaved "
        "rounds"
    )
    rows = []
    for technique, label in kinds.items():
        parts = [per_run[f"{technique}: {part}"] for part in ("compute", "render", "log")]
        rows.append(
            [label]
            + [_common.spread(times[f"{technique}: {part}"]) for part in ("compute", "render", "log")]
            + [f"{sum(parts) * 1e3:.0f}", f"{sum(parts) / whole:.0%}"]
        )
    for layer in layers:
        name = f"filters: compute {layer} only"
        rows.append(
            [f"  filters {layer} alone", _common.spread(times[name]), "", "", "", f"{per_run[name] / whole:.0%}"]
        )
    rows.append(
        [
            "whole run (all techniques)",
            _common.spread(times["whole: compute, all four techniques in one call"]),
            _common.spread(times["whole: render"]),
            _common.spread(times["whole: log"]),
            f"{whole * 1e3:.0f}",
            "100%",
        ]
    )
    rows.append(["first compute of a fresh callback (cold)", f"{cold * 1e3:.0f}", "", "", "", ""])
    print(_common.table(["technique", "compute", "render", "log", "sum", "share of a run"], rows))

    # Sizing the proposals: the ascent at fewer steps and a higher learning rate (same model, images and layers).
    settings = [(64, 0.2), (48, 0.4), (32, 0.4), (24, 0.4), (16, 0.4)]
    steps_cases = {}
    for steps, lr in settings:
        made = callback(techniques=["filters", "classes"], ascent_steps=steps, ascent_lr=lr)
        with quiet:
            made.compute(model)
        steps_cases[f"ascent_steps={steps}, ascent_lr={lr:g}"] = lambda made=made: made.compute(model)
    steps_times = _common.interleaved(steps_cases, repeats=3, warmup=0)
    print("-- filters + classes (the ascent) against ascent_steps (compute only)")
    print(_common.table(["setting", "ms per run"], [[k, _common.spread(v)] for k, v in steps_times.items()]))
    print()
    ascent = per_run["filters: compute"] + per_run["classes: compute"]
    compute_all = per_run["whole: compute, all four techniques in one call"]
    lines = [
        f"one CNNSee run (warm): {whole:.2f} s = compute {compute_all:.2f}"
        f" + render {per_run['whole: render']:.2f} + log {per_run['whole: log']:.2f}; first (cold) compute "
        f"{cold:.2f} s",
        "per technique (compute + render + log): "
        + ", ".join(
            f"{technique} {sum(per_run[f'{technique}: {part}'] for part in ('compute', 'render', 'log')):.2f} s"
            for technique in kinds
        ),
        f"ascent (filters + classes compute) {ascent:.2f} s = {ascent / whole:.0%} of a run; at 32 steps lr 0.4: "
        f"{_common.median(steps_times['ascent_steps=32, ascent_lr=0.4']):.2f} s",
    ]
    if training_seconds:
        lines.append(
            f"5% of the measured training without CNNSee ({training_seconds:.1f} s) is "
            f"{0.05 * training_seconds:.2f} s for all runs together; one complete run costs ~{whole:.2f} s"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, repeats=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--num-train",
        type=int,
        default=4096,
        help="training images (the demo's 4096; 2048 keeps the demo's schedule of 8 epochs at half the time)",
    )
    parser.add_argument("--num-val", type=int, default=1024)
    parser.add_argument("--parts", nargs="+", choices=["overhead", "breakdown"], default=["overhead", "breakdown"])
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=["without", "with", "unlimited"],
        default=["without", "with"],
        help="runs of each round, in this order; 'unlimited' is CNNSee(max_overhead=None), what "
        "run_demo uses by itself (information, no target)",
    )
    parser.add_argument("--child", choices=["with", "without", "unlimited"], help=argparse.SUPPRESS)
    _common.add_device_arguments(
        parser,
        quick="the overhead part only, 2 rounds (without-with, with-without), 8 epochs on 2048 training images",
    )
    args = parser.parse_args()
    args.entries = []
    if args.quick and not args.child:
        # shorter trainings make CNNSee's first and last runs, which the budget cannot spread, weigh more (3 epochs on
        # 1024 images: hooks 1.25); one round cannot cancel a machine's drift (48.0 s without, 70.1 s with, hooks 2.6 s)
        args.parts, args.repeats, args.epochs, args.num_train, args.num_val = ["overhead"], 2, 8, 2048, 1024
    if args.child:
        child(args.child, args)
        return 0
    _common.set_threads(args.threads)
    started = time.perf_counter()
    print("CNNSee overhead benchmark")
    print(_common.machine_line())
    print()
    summary: list[str] = []
    training_seconds = None
    if "overhead" in args.parts:
        if "without" not in args.configs:
            parser.error("--configs must include 'without' (the reference of the ratios)")
        lines, training_seconds = overhead(args)
        summary += lines
    if "breakdown" in args.parts:
        summary += breakdown(args, training_seconds)
    _common.print_summary(summary, started)
    _common.write_ratios(args.json, "overhead", args.entries, _common.device_of(args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
