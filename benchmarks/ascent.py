"""Filter ascent: our ``filter_ascent`` against lucent's per-channel ``render_vis`` loop, and the activation it reaches
against steps and learning rate.

    python benchmarks/ascent.py [--threads N] [--repeats N] [--parts compare curve diversity] [--plot PATH]

Part ``compare`` (from the issue): 8 channels of ResNet-18's ``layer2`` (random weights, seeded, eval mode), 64x64
images, 48 steps, ImageNet normalization for both.

- ``ours``: ``filter_ascent(model, "layer2", range(8), (3, 64, 64), steps=48, mean=IMAGENET_MEAN,
  std=IMAGENET_STD)`` with its defaults otherwise (Adam lr 0.4, Fourier decorrelated parameterization, random
  shift/scale/rotation), all channels as one batch, forward stopped at ``layer2``;
- ``lucent``: lucent's usual loop, one call per channel: ``render.render_vis(model, f"layer2:{c}",
  param_f=lambda: param.image(64), thresholds=(48,), show_image=False, progress=False)`` (its defaults: Adam lr
  0.05, ``transform.standard_transforms``, ImageNet ``normalize()``, and because 64 < 224 it upsamples every image
  to 224x224 before the network);
- ``lucent @64``: the same with ``fixed_image_size=64``, so the network sees 64x64 as ours does (information: the
  comparison at equal network input size);
- ``floor``: the 48 forward passes to ``layer2`` and input gradients of the 8 images alone (no parameterization,
  transformations or optimizer): the part of the work no ascent of these images avoids (information).

lucent hooks every module at each call and never removes the hooks; its model copy has them cleared after every
call so that rounds do not slow each other down (that favours lucent slightly). Activation reached, measured the
same way for every image: the model in eval mode, the final 64x64 image in [0, 1] normalized with the ImageNet mean
and std, mean over space of the channel's ``layer2`` output. Targets: time ours / lucent <= 0.2, activation ours >=
lucent (mean over the 8 channels).

Part ``curve``: activation reached against steps (0..128) for Adam learning rates 0.05, 0.1, 0.2, 0.4, 0.8 with
our ``filter_ascent``, on (a) ResNet-18 ``layer2`` at 64x64 and (b) the demo's ``ShapesClassifier`` after 3 epochs
on 4096 images (no CNNSee; 3 epochs on 2048 images leave it at chance with the one-cycle schedule), layers
``features.0``, ``features.8``, ``features.15`` (8 channels each) and ``classifier`` (6 classes) at 48x48. One
128-step run per learning rate is recorded step by step (a subclass of ``torch.optim.Adam`` keeps a copy of the
parameter after each step): ``filter_ascent`` draws the same random transformations in the same order whatever
``steps`` is, so the state after k steps of that run is what ``steps=k`` returns. The script checks this on one
case against a separate ``steps=k`` call. The plot goes to ``docs/images/ascent_curve.png``.

Part ``diversity`` (not run by default; it trains the shapes model too): ``filter_ascent(..., num_diverse=3,
diversity_weight=w)`` for w in 0, 1, 3, 10 on ResNet-18 ``layer2`` and ``layer3`` (4 channels, 48x48, 32 steps) and
the shapes model's ``features.15`` and ``classifier`` (6 channels, 48 steps), lr 0.4. For each: how alike a
channel's three images look to the layer (mean cosine similarity of their Gram matrices over the pairs, by this
script's own hook), their mean pixel distance, and their mean activation over that of one image per channel
(``num_diverse=1``). ``DIVERSITY_WEIGHT`` in ``lightning_cnnsee/explain/ascent.py`` comes from this table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence

import _common
import numpy as np
import torch

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CHANNELS = list(range(8))
COMPARE_STEPS, COMPARE_SIZE = 48, 64
TARGET_TIME_RATIO = 0.2
CURVE_STEPS = [0, 8, 16, 24, 32, 48, 64, 96, 128]
CURVE_LRS = [0.05, 0.1, 0.2, 0.4, 0.8]
REFERENCE_STEPS, REFERENCE_LR = 64, 0.2  # the defaults before this curve chose new ones: the reference of the progress
# The defaults chosen from the curve: filter_ascent's, and CNNSee's (fewer steps: it runs inside a training budget).
CHOSEN = {"filter_ascent": (48, 0.4), "CNNSee": (32, 0.4)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------------------------- measuring
def layer_output(
    model: torch.nn.Module, layer: str, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``layer``'s whole output on the images, eval mode, ``(image - mean) / std``, no grad (this script's hook)."""
    module = dict(model.named_modules())[layer]
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: seen.append(output.detach().clone()))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model((images.float() - torch.tensor(mean)[None, :, None, None]) / torch.tensor(std)[None, :, None, None])
    finally:
        handle.remove()
        model.train(was_training)
    return seen[0]


def mean_activation(
    model: torch.nn.Module,
    layer: str,
    channels: Sequence[int],
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Each image's own channel, averaged over space, at ``layer``: eval mode, ``(image - mean) / std``, no grad.

    Written here on purpose (not the package's hooks): the same yardstick for our images and lucent's.
    """
    output = layer_output(model, layer, images, mean, std)
    picked = output[torch.arange(output.shape[0]), torch.tensor(list(channels))]
    return picked.reshape(picked.shape[0], -1).mean(dim=1)


@contextlib.contextmanager
def recording_adam() -> Iterator[list[torch.Tensor]]:
    """Inside the block, every ``torch.optim.Adam`` keeps a copy of its (first) parameter after each step."""
    snapshots: list[torch.Tensor] = []
    original = torch.optim.Adam

    class RecordingAdam(original):  # type: ignore[misc, valid-type]
        def step(self, closure=None):  # noqa: ANN001, ANN201
            loss = super().step(closure)
            snapshots.append(self.param_groups[0]["params"][0].detach().clone())
            return loss

    torch.optim.Adam = RecordingAdam  # type: ignore[misc]
    try:
        yield snapshots
    finally:
        torch.optim.Adam = original  # type: ignore[misc]


def ascent_curve(
    model: torch.nn.Module,
    layer: str,
    channels: Sequence[int],
    shape: tuple[int, int, int],
    lr: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[dict[int, float], float, object]:
    """``{steps: mean activation over channels}`` for CURVE_STEPS from one recorded run, its seconds per step, and
    the run's result (for the consistency check)."""
    from lightning_cnnsee import filter_ascent
    from lightning_cnnsee.explain.ascent import channel_generator, make_parameterization

    generators = [channel_generator(0, c) for c in channels]
    start, to_image = make_parameterization("fft", generators, shape)
    with recording_adam() as snapshots:
        started = time.perf_counter()
        result = filter_ascent(model, layer, list(channels), shape, steps=max(CURVE_STEPS), lr=lr, mean=mean, std=std)
        seconds = time.perf_counter() - started
    if len(snapshots) != max(CURVE_STEPS):
        raise RuntimeError(
            f"recorded {len(snapshots)} Adam steps for steps={max(CURVE_STEPS)}: filter_ascent no "
            "longer makes one torch.optim.Adam step per ascent step; the curve would be wrong."
        )
    states = {0: start, **{k: snapshots[k - 1] for k in CURVE_STEPS if k > 0}}
    with torch.no_grad():
        final = to_image(states[max(CURVE_STEPS)])
        if not torch.allclose(final, result.images, atol=1e-6):
            raise RuntimeError("the recorded last step does not reproduce filter_ascent's image; curve invalid.")
        curve = {
            k: float(mean_activation(model, layer, channels, to_image(state), mean, std).mean())
            for k, state in states.items()
        }
    return curve, seconds / max(CURVE_STEPS), (to_image, snapshots)


# --------------------------------------------------------------------------------------------- compare
def compare(args: argparse.Namespace) -> list[str]:
    import torchvision

    from lightning_cnnsee import filter_ascent

    try:
        from lucent.modelzoo.util import get_model_layers
        from lucent.optvis import param, render
    except ImportError as error:
        print(_common.missing_package_message("lucent (pip install torch-lucent)", error))
        return ["lucent comparison: SKIPPED (torch-lucent not importable)"]

    torch.manual_seed(0)
    device = _common.device_of(args.device)  # lucent puts its images on cuda:0 whenever CUDA is there
    model = torchvision.models.resnet18(weights=None).eval().to(device)
    ours_model = copy.deepcopy(model)
    lucent_model = copy.deepcopy(model)
    names = get_model_layers(lucent_model)
    assert "layer2" in names, "lucent names ResNet-18's layer2 differently"
    shape = (3, COMPARE_SIZE, COMPARE_SIZE)
    found: dict[str, list[torch.Tensor]] = {"ours": [], "lucent": [], "lucent @64": []}

    def clear_hooks() -> None:
        for module in lucent_model.modules():
            module._forward_hooks.clear()

    def ours(steps: int = COMPARE_STEPS) -> None:
        result = filter_ascent(ours_model, "layer2", CHANNELS, shape, steps=steps, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        if steps == COMPARE_STEPS:
            found["ours"].append(result.images)

    def lucent(fixed_size: int | None, key: str, steps: int = COMPARE_STEPS, channels: Sequence[int] = CHANNELS):
        images = []
        for channel in channels:
            extra = {} if fixed_size is None else {"fixed_image_size": fixed_size}
            out = render.render_vis(
                lucent_model,
                f"layer2:{channel}",
                param_f=lambda: param.image(COMPARE_SIZE),
                thresholds=(steps,),
                show_image=False,
                progress=False,
                **extra,
            )
            clear_hooks()
            images.append(torch.from_numpy(np.ascontiguousarray(out[-1])).permute(0, 3, 1, 2))
        if steps == COMPARE_STEPS:
            found[key].append(torch.cat(images))

    # The floor: the same 48 forward passes to layer2 and input gradients of the 8 images, nothing else (no
    # parameterization, transformations or optimizer step): what no ascent of these images can go below.
    front = copy.deepcopy(torch.nn.Sequential(*[getattr(model, n) for n in ("conv1", "bn1", "relu", "maxpool")]))
    front.append(copy.deepcopy(model.layer1)).append(copy.deepcopy(model.layer2)).eval()
    rows = torch.arange(len(CHANNELS))

    def floor(steps: int = COMPARE_STEPS) -> None:
        x = torch.rand(len(CHANNELS), *shape, requires_grad=True)
        for _ in range(steps):
            torch.autograd.grad(front(x)[rows, list(CHANNELS)].mean(), x)

    seeds = {"lucent": 0, "lucent @64": 0}

    def seeded(key: str, fixed_size: int | None):
        def call() -> None:  # lucent draws its start and transformations from the global generators
            for seed_global in (torch.manual_seed, np.random.seed, random.seed):
                seed_global(seeds[key])
            seeds[key] += 1
            lucent(fixed_size, key)

        return call

    # warm-up: short calls (one-off costs: thread pools, oneDNN kernels, lucent's first hooks)
    ours(steps=2)
    floor(steps=2)
    lucent(None, "lucent", steps=2, channels=[0])
    lucent(COMPARE_SIZE, "lucent @64", steps=2, channels=[0])
    cases = {
        "ours": ours,
        "floor": floor,
        "lucent": seeded("lucent", None),
        "lucent @64": seeded("lucent @64", COMPARE_SIZE),
    }
    times = _common.interleaved(
        {name: _common.synchronized(case, device) for name, case in cases.items()}, repeats=args.repeats, warmup=0
    )
    reached = {
        key: torch.stack(
            [
                mean_activation(model, "layer2", CHANNELS, images.to(device), IMAGENET_MEAN, IMAGENET_STD).cpu()
                for images in runs
            ]
        )
        for key, runs in found.items()
    }  # (rounds, 8)
    time_ratio = _common.paired_ratio(times["ours"], times["lucent"])
    time_ratio_64 = _common.paired_ratio(times["ours"], times["lucent @64"])
    floor_ratio = _common.paired_ratio(times["ours"], times["floor"])
    ours_act = float(reached["ours"].mean())

    print(
        f"== compare: 8 channels of ResNet-18 layer2, {COMPARE_SIZE}x{COMPARE_SIZE}, {COMPARE_STEPS} steps "
        f"(rounds: {args.repeats}, interleaved; median [min-max])"
    )
    rows = []
    for key in found:
        per_round = reached[key].mean(dim=1)
        rows.append(
            [
                key,
                f"{_common.median(times[key]):.2f} [{min(times[key]):.2f}-{max(times[key]):.2f}]",
                f"{_common.median(per_round.tolist()):.3f} [{float(per_round.min()):.3f}-{float(per_round.max()):.3f}]",
                " ".join(f"{v:.2f}" for v in reached[key].median(dim=0).values.tolist()),
            ]
        )
    floor_times = times["floor"]
    rows.append(
        [
            "floor (passes alone)",
            f"{_common.median(floor_times):.2f} [{min(floor_times):.2f}-{max(floor_times):.2f}]",
            "",
            "",
        ]
    )
    print(_common.table(["case", "seconds (8 channels)", "mean activation", "per channel (median of rounds)"], rows))
    lucent_act = float(reached["lucent"].mean())
    lucent64_act = float(reached["lucent @64"].mean())
    wins = int((reached["ours"].median(dim=0).values >= reached["lucent"].median(dim=0).values).sum())
    print(
        _common.table(
            ["ratio / comparison", "value", "target", "verdict"],
            [
                [
                    "time ours / lucent (usual loop)",
                    _common.ratio_text(time_ratio),
                    f"<= {TARGET_TIME_RATIO}",
                    _common.verdict(time_ratio[0], TARGET_TIME_RATIO),
                ],
                [
                    "activation ours / lucent",
                    f"{ours_act:.3f} / {lucent_act:.3f} ({wins}/8 channels ahead)",
                    ">= 1",
                    _common.verdict(ours_act / lucent_act, 1.0, at_most=False),
                ],
                ["time ours / lucent @64 (info)", _common.ratio_text(time_ratio_64), "", ""],
                ["time ours / its floor (info)", _common.ratio_text(floor_ratio), "", ""],
                [
                    "activation ours / lucent @64 (info)",
                    f"{ours_act:.3f} / {lucent64_act:.3f}",
                    "",
                    f"{ours_act / lucent64_act:.2f}x",
                ],
            ],
        )
    )
    print()
    activation = ours_act / lucent_act
    entries = [
        _common.ratio_entry("ascent: time ours / lucent", time_ratio, TARGET_TIME_RATIO),
        _common.ratio_entry("ascent: activation ours / lucent", (activation,) * 3, 1.0, at_most=False),
    ]
    _common.write_ratios(args.json, "ascent", entries, device)
    return [
        f"ascent time ours / lucent: {_common.ratio_text(time_ratio)} -> "
        f"{_common.verdict(time_ratio[0], TARGET_TIME_RATIO)}",
        f"ascent time ours / its floor (forward and input-gradient passes alone): {_common.ratio_text(floor_ratio)}",
        f"ascent activation ours {ours_act:.3f} vs lucent {lucent_act:.3f} -> "
        f"{_common.verdict(ours_act / lucent_act, 1.0, at_most=False)}",
    ]


# ----------------------------------------------------------------------------------------------- curve
def train_shapes_model() -> tuple[torch.nn.Module, float, float]:
    """The demo's ShapesClassifier after 3 epochs on 4096 images, without CNNSee."""
    import pytorch_lightning as pl

    from lightning_cnnsee.demo.train import run_demo

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as logdir, contextlib.redirect_stdout(open(os.devnull, "w")):
        trainer = run_demo(
            logdir, max_epochs=3, num_train=4096, num_val=512, callback=pl.Callback(), enable_progress_bar=False
        )
    accuracy = float(trainer.callback_metrics.get("val/acc", float("nan")))
    return trainer.lightning_module.cpu().eval(), accuracy, time.perf_counter() - started


def curve(args: argparse.Namespace) -> list[str]:
    import torchvision

    from lightning_cnnsee import filter_ascent
    from lightning_cnnsee.demo.data import MEAN, STD

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    shapes, accuracy, train_seconds = train_shapes_model()
    panels = [
        ("ResNet-18 layer2 (64x64)", resnet, "layer2", CHANNELS, (3, 64, 64), IMAGENET_MEAN, IMAGENET_STD),
        ("shapes features.0 (48x48)", shapes, "features.0", CHANNELS, (3, 48, 48), MEAN, STD),
        ("shapes features.8", shapes, "features.8", CHANNELS, (3, 48, 48), MEAN, STD),
        ("shapes features.15", shapes, "features.15", CHANNELS, (3, 48, 48), MEAN, STD),
        ("shapes classifier (6 classes)", shapes, "classifier", list(range(6)), (3, 48, 48), MEAN, STD),
    ]
    print(
        f"== curve: mean activation reached against steps and Adam lr (shapes model: 3 epochs on 4096 images, "
        f"val acc {accuracy:.3f}, trained in {train_seconds:.0f} s)"
    )
    results: dict[str, dict[float, dict[int, float]]] = {}
    step_costs: dict[str, float] = {}
    for title, model, layer, channels, shape, mean, std in panels:
        results[title] = {}
        per_step = []
        for lr in CURVE_LRS:
            values, seconds_per_step, recorded = ascent_curve(model, layer, channels, shape, lr, mean, std)
            results[title][lr] = values
            per_step.append(seconds_per_step)
            if title == "shapes features.8" and lr == REFERENCE_LR:  # the recording equals a separate steps=k call
                to_image, snapshots = recorded
                separate = filter_ascent(model, layer, channels, shape, steps=48, lr=lr, mean=mean, std=std)
                difference = float((to_image(snapshots[47]) - separate.images).abs().max())
                print(
                    f"check: recorded step 48 vs a separate filter_ascent(steps=48) call: max |diff| "
                    f"{difference:.1e}" + ("" if difference < 1e-5 else "  <-- MISMATCH: curve not trustworthy")
                )
        step_costs[title] = _common.median(per_step)
    for title, by_lr in results.items():
        rows = [[f"lr {lr:g}"] + [f"{by_lr[lr][k]:.2f}" for k in CURVE_STEPS] for lr in CURVE_LRS]
        print(
            f"-- {title}: {len(panels[0][3]) if 'classifier' not in title else 6} images per step, "
            f"{step_costs[title] * 1e3:.1f} ms per step"
        )
        print(_common.table(["steps ->"] + [str(k) for k in CURVE_STEPS], rows))
    recommendation = recommend(results, step_costs)
    try:
        grid_path = os.path.join(os.path.dirname(args.plot), "filters_before_after.png")
        recommendation += draw_before_after(shapes, grid_path)
        print(f"before/after grid: {os.path.relpath(grid_path, ROOT)}")
    except ImportError as error:
        print(f"before/after grid skipped: {_common.missing_package_message('matplotlib', error)}")
    plot_path = args.plot
    try:
        draw(results, plot_path)
        print(f"plot: {os.path.relpath(plot_path, ROOT)}")
    except ImportError as error:
        print(f"plot skipped: {_common.missing_package_message('matplotlib', error)}")
    return recommendation


def recommend(results: dict[str, dict[float, dict[int, float]]], step_costs: dict[str, float]) -> list[str]:
    """Two readings of the grid, each taking the worst of the five panels for every (lr, steps):

    - against the current default: ``(value - start) / (default's value - start)``; the fewest steps whose best lr
      reaches 1.0 everywhere give the current quality for less;
    - against the best of the grid: ``(value - start) / (best value - start)``; the fewest steps reaching 90%.
    """
    versus_default: dict[tuple[float, int], float] = {}
    versus_best: dict[tuple[float, int], float] = {}
    for by_lr in results.values():
        start = by_lr[CURVE_LRS[0]][0]
        default = by_lr[REFERENCE_LR][REFERENCE_STEPS]
        best = max(v for values in by_lr.values() for v in values.values())
        for lr, values in by_lr.items():
            for steps, value in values.items():
                key = (lr, steps)
                versus_default[key] = min(
                    versus_default.get(key, float("inf")),
                    (value - start) / (default - start) if default > start else 1.0,
                )
                versus_best[key] = min(
                    versus_best.get(key, float("inf")), (value - start) / (best - start) if best > start else 1.0
                )
    for title, grid in [
        ("against the former default (steps=64, lr=0.2)", versus_default),
        ("against the best of the grid", versus_best),
    ]:
        print(f"-- worst progress over the five panels {title}: (value - start) / (reference - start)")
        print(
            _common.table(
                ["steps ->"] + [str(k) for k in CURVE_STEPS],
                [[f"lr {lr:g}"] + [f"{grid[(lr, k)]:.2f}" for k in CURVE_STEPS] for lr in CURVE_LRS],
            )
        )
    shapes_cost = sum(cost for title, cost in step_costs.items() if title.startswith("shapes"))
    default_share = versus_best[(REFERENCE_LR, REFERENCE_STEPS)]
    lines = [
        f"former default steps={REFERENCE_STEPS}, lr={REFERENCE_LR:g}: {default_share:.2f} "
        f"of the best (worst panel); the demo's four ascents at ~{shapes_cost * 1e3:.0f} ms per step cost "
        f"{REFERENCE_STEPS * shapes_cost:.2f} s per run"
    ]
    for owner, (steps, lr) in CHOSEN.items():
        lines.append(
            f"chosen default of {owner}: steps={steps}, lr={lr:g}: worst panel "
            f"{versus_default[(lr, steps)]:.2f} "
            f"of the former default's progress, {versus_best[(lr, steps)]:.2f} of the best; the demo's four "
            f"ascents {steps * shapes_cost:.2f} s per run, {steps / REFERENCE_STEPS:.2f}x the former cost"
        )

    def cheapest(grid: dict[tuple[float, int], float], level: float) -> tuple[int, float] | None:
        reaching = [(steps, lr) for (lr, steps), value in grid.items() if value >= level]
        if not reaching:
            return None
        steps = min(k for k, _ in reaching)
        return steps, max((grid[(lr, steps)], lr) for k, lr in reaching if k == steps)[1]

    for grid, level, what in [
        (versus_default, 1.0, "the former default's activation in every panel"),
        (versus_best, 0.9, "90% of the best of the grid in every panel"),
    ]:
        found = cheapest(grid, level)
        if found is None:
            lines.append(f"no (steps, lr) of the grid reaches {what}")
            continue
        steps, lr = found
        lines.append(
            f"fewest steps reaching {what}: steps={steps}, lr={lr:g} (worst panel {grid[(lr, steps)]:.2f}"
            f"); the demo's four ascents {steps * shapes_cost:.2f} s per run, {steps / REFERENCE_STEPS:.2f}x "
            "the former cost"
        )
    for line in lines:
        print(line)
    print()
    return lines


def draw(results: dict[str, dict[float, dict[int, float]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 3
    rows = -(-(len(results) + 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    axes = axes.flatten()
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    for axis, (title, by_lr) in zip(axes, results.items(), strict=True):
        for colour, lr in zip(colours, CURVE_LRS, strict=True):
            values = by_lr[lr]
            axis.plot(
                list(values),
                list(values.values()),
                marker="o",
                markersize=3,
                color=colour,
                label=f"Adam lr {lr:g}",
                linewidth=2.4 if lr == CHOSEN["filter_ascent"][1] else 1.3,
            )
        for owner, (steps, _) in CHOSEN.items():
            axis.axvline(steps, color="grey", linestyle="--" if owner == "CNNSee" else ":", linewidth=1)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("ascent steps")
        axis.set_ylabel("mean activation reached")
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    for axis in axes[len(results) :]:
        axis.axis("off")
    (core_steps, core_lr), (callback_steps, _) = CHOSEN["filter_ascent"], CHOSEN["CNNSee"]
    axes[len(results)].legend(
        handles,
        labels,
        loc="center",
        fontsize=9,
        title=f"defaults: lr {core_lr:g} (thick); steps {core_steps} filter_ascent (dotted),\n"
        f"{callback_steps} CNNSee (dashed); former: 64 steps at lr 0.2",
    )
    figure.suptitle(
        "filter_ascent: mean activation of each target channel on its final image, averaged over the channels",
        fontsize=11,
    )
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def draw_before_after(model: torch.nn.Module, path: str) -> list[str]:
    """The demo model's filter and class patterns, naive against ours, at the same steps and learning rate.

    Naive: ``parameterization="pixel", transforms=False`` (gradient ascent on the pixels, as a first implementation
    would do it); ours: ``filter_ascent``'s defaults (decorrelated-colour Fourier basis, random shift, scale and
    rotation). Both 48 steps at lr 0.4, 48x48, the same channels and seeds. Captions: channel and activation reached.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lightning_cnnsee import filter_ascent
    from lightning_cnnsee.demo.data import CLASS_NAMES, MEAN, STD
    from lightning_cnnsee.render.images import render_patterns

    steps, lr = CHOSEN["filter_ascent"]
    layers = [("features.8", CHANNELS), ("features.15", CHANNELS), ("classifier", list(range(6)))]
    styles = [
        ("naive: pixels, no transformations", dict(parameterization="pixel", transforms=False)),
        ("ours: Fourier basis, decorrelated colour, shift/scale/rotate", {}),
    ]
    figure, axes = plt.subplots(len(layers), len(styles), figsize=(7.2 * len(styles), 2.2 * len(layers)), squeeze=False)
    lines = []
    for row, (layer, channels) in enumerate(layers):
        for column, (title, options) in enumerate(styles):
            found = filter_ascent(
                model, layer, channels, (3, 48, 48), steps=steps, lr=lr, mean=MEAN, std=STD, **options
            )
            names = CLASS_NAMES if layer == "classifier" else [f"ch {c}" for c in channels]
            captions = [f"{names[c]}\n{a:.2f}" for c, a in zip(channels, found.activations.tolist(), strict=True)]
            image = render_patterns(found.images, captions, min_tile=48)
            axes[row][column].imshow(image.permute(1, 2, 0).numpy())
            axes[row][column].set_title(f"{layer}: {title}", fontsize=9)
            axes[row][column].axis("off")
            lines.append(f"{layer} {title.split(':')[0]}: mean activation {float(found.activations.mean()):.2f}")
    figure.suptitle(
        f"the demo model's patterns, {steps} steps at lr {lr:g} (caption: channel or class, activation reached)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return lines


# ------------------------------------------------------------------------------------------- diversity
DIVERSITY_WEIGHTS = [0.0, 1.0, 3.0, 10.0]


def diversity(args: argparse.Namespace) -> list[str]:
    import torchvision

    from lightning_cnnsee import filter_ascent
    from lightning_cnnsee.demo.data import MEAN, STD
    from lightning_cnnsee.explain.ascent import DIVERSITY_WEIGHT

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    shapes, accuracy, _ = train_shapes_model()
    panels = [
        ("ResNet-18 layer2", resnet, "layer2", 4, 32, IMAGENET_MEAN, IMAGENET_STD),
        ("ResNet-18 layer3", resnet, "layer3", 4, 32, IMAGENET_MEAN, IMAGENET_STD),
        ("shapes features.15", shapes, "features.15", 6, 48, MEAN, STD),
        ("shapes classifier", shapes, "classifier", 6, 48, MEAN, STD),
    ]
    print(f"== diversity: num_diverse=3 against the diversity weight (shapes model val acc {accuracy:.3f})")
    rows, kept = [], {w: [] for w in DIVERSITY_WEIGHTS}
    for title, model, layer, count, steps, mean, std in panels:
        channels = list(range(count))
        single = filter_ascent(model, layer, channels, (3, 48, 48), steps=steps, mean=mean, std=std)
        for weight in DIVERSITY_WEIGHTS:
            found = filter_ascent(
                model,
                layer,
                channels,
                (3, 48, 48),
                steps=steps,
                mean=mean,
                std=std,
                num_diverse=3,
                diversity_weight=weight,
            )
            output = layer_output(model, layer, found.images, mean, std).float()
            flat = output.reshape(len(found.channels), output.shape[1], -1)
            grams = torch.nn.functional.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
            grams = grams.reshape(count, 3, -1)
            similarity = float(((grams @ grams.transpose(1, 2)).sum(dim=(1, 2)) - 3).mean() / 6)
            pixels = found.images.reshape(count, 3, -1)
            distance = float(torch.cdist(pixels, pixels).sum(dim=(1, 2)).mean() / 6)
            activation = float(found.activations.mean() / single.activations.mean())
            kept[weight].append(activation)
            rows.append([title, f"{weight:g}", f"{similarity:.3f}", f"{distance:.1f}", f"{activation:.2f}"])
    print(_common.table(["panel", "weight", "Gram similarity", "pixel distance", "activation / one image"], rows))
    print()
    return [
        f"diversity weight {w:g}: activation / one image {min(v):.2f}-{max(v):.2f}"
        + (" (the default)" if w == DIVERSITY_WEIGHT else "")
        for w, v in kept.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, repeats=2)
    parser.add_argument("--parts", nargs="+", choices=["compare", "curve", "diversity"], default=["compare", "curve"])
    parser.add_argument(
        "--plot",
        default=os.path.join(ROOT, "docs", "images", "ascent_curve.png"),
        help="where the curve's PNG goes (default docs/images/ascent_curve.png)",
    )
    _common.add_device_arguments(parser, quick="1 round of compare (the part the GPU script runs)")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    _common.set_threads(args.threads)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    print("Filter-ascent benchmark")
    print(_common.machine_line())
    print()
    summary = []
    if "compare" in args.parts:
        summary += compare(args)
    if "curve" in args.parts:
        summary += curve(args)
    if "diversity" in args.parts:
        summary += diversity(args)
    _common.print_summary(summary, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
