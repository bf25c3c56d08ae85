"""Pixel attributions: our ``attribute`` against Captum, method by method, at Captum's defaults.

    python benchmarks/attributions.py [--threads N] [--repeats N] [--methods NAME ...]

Workload: torchvision ResNet-18 with 10 classes and random weights (``weights=None``, seeded), in eval mode, a batch
of 4 random 3x64x64 images, one fixed random class per image. For each method, two cases timed in turns:

- ``ours``: ``attribute(model, images, method, targets, **options)``;
- ``captum``: the Captum class of the same name on the same model and images, ``.attribute(images, target=targets,
  **options)`` (SmoothGrad: ``NoiseTunnel(Saliency(model))``; guided Grad-CAM: ``GuidedGradCam(model,
  model.layer4)``).

Options: Captum's defaults on both sides (Integrated Gradients: 50 Gauss-Legendre steps; SmoothGrad: 5 samples at
stdevs 1.0), except Occlusion's window, which has no default: ``sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4)``
(225 positions; Captum's default stride of 1 would be 3249), with Captum's ``perturbations_per_eval=1`` and ours left
at its default (None: about 64 images per pass). Guided Grad-CAM: ``layer="layer4"`` (a 2x2 map; at ``layer3``
the random network's maps are all zero).

Figures: per method the median of the per-round time ratios ours / Captum with its min-max, and the relative error
``max |ours - Captum| / max |Captum|`` (SmoothGrad at the same seed, so with the same noise). Target: Occlusion
ours / Captum <= 0.5; every relative error <= 1e-3.

Two clocks: wall time (``time.perf_counter``, as the other scripts) and the process's CPU time
(``time.process_time``), taken around the same calls. With one torch thread the work runs on the calling thread,
so CPU time is the work done, and it stays steady while other users load the machine; wall time does not.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import _common
import torch

BATCH, SIZE, NUM_CLASSES = 4, 64, 10
OCCLUSION = {"sliding_window_shapes": (3, 8, 8), "strides": (3, 4, 4)}
TARGET_OCCLUSION, TARGET_ERROR = 0.5, 1e-3
METHODS = [
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "guided_backprop",
    "guided_gradcam",
]


def captum_case(method: str, model: torch.nn.Module, images: torch.Tensor, targets: list[int]):
    """A function running Captum's version of ``method`` at its defaults (the window for Occlusion)."""
    from captum import attr

    if method == "saliency":
        explainer, options = attr.Saliency(model), {}
    elif method == "input_x_gradient":
        explainer, options = attr.InputXGradient(model), {}
    elif method == "smoothgrad":
        explainer, options = attr.NoiseTunnel(attr.Saliency(model)), {}
    elif method == "integrated_gradients":
        explainer, options = attr.IntegratedGradients(model), {}
    elif method == "occlusion":
        explainer, options = attr.Occlusion(model), OCCLUSION
    elif method == "guided_backprop":
        explainer, options = attr.GuidedBackprop(model), {}
    else:
        explainer, options = attr.GuidedGradCam(model, model.layer4), {}
    return lambda: explainer.attribute(images.clone(), target=targets, **options).detach()


def our_case(method: str, model: torch.nn.Module, images: torch.Tensor, targets: list[int]):
    from lightning_cnnsee.explain.attributions import attribute

    options = {"occlusion": OCCLUSION, "guided_gradcam": {"layer": "layer4"}}.get(method, {})
    return lambda: attribute(model, images, method, targets, **options)


def cpu_timed(function, record: list[float]):
    """``function``, also appending the process CPU time of each call to ``record``."""

    def run() -> None:
        started = time.process_time()
        function()
        record.append(time.process_time() - started)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, repeats=5)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, help="methods to time (default all)")
    args = parser.parse_args()
    started = time.perf_counter()
    _common.set_threads(args.threads)
    warnings.filterwarnings("ignore")  # Captum's GuidedBackprop warns that it sets hooks, at every call

    import torchvision

    try:
        import captum  # noqa: F401
    except ImportError as error:
        print(_common.missing_package_message("captum", error))
        return 2

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES).eval()
    images = torch.rand(BATCH, 3, SIZE, SIZE)
    targets = torch.randint(0, NUM_CLASSES, (BATCH,)).tolist()

    print(
        f"Attribution benchmark: ResNet-18 ({NUM_CLASSES} classes, random weights, eval mode), batch {BATCH} of "
        f"3x{SIZE}x{SIZE}, targets {targets}; Captum's defaults, Occlusion window {OCCLUSION}"
    )
    print(_common.machine_line())
    print(f"rounds: {args.repeats} per method (interleaved, 1 warm-up call each); figures: median [min-max]")
    print()
    rows, summary = [], []
    for method in args.methods:
        ours, theirs = our_case(method, model, images, targets), captum_case(method, model, images, targets)
        torch.manual_seed(1)
        mine = ours()
        torch.manual_seed(1)
        reference = theirs()
        error = float((mine - reference).abs().max() / reference.abs().max())
        cpu: dict[str, list[float]] = {"ours": [], "captum": []}
        wall = _common.interleaved(
            {"ours": cpu_timed(ours, cpu["ours"]), "captum": cpu_timed(theirs, cpu["captum"])},
            repeats=args.repeats,
            warmup=1,
        )
        cpu = {name: values[1:] for name, values in cpu.items()}  # without the warm-up call
        wall_ratio = _common.paired_ratio(wall["ours"], wall["captum"])
        cpu_ratio = _common.paired_ratio(cpu["ours"], cpu["captum"])
        rows.append(
            [
                method,
                _common.spread(cpu["ours"]),
                _common.spread(cpu["captum"]),
                _common.ratio_text(cpu_ratio),
                _common.ratio_text(wall_ratio),
                f"{error:.1e}",
            ]
        )
        if method == "occlusion":
            summary.append(
                f"occlusion ours / captum, CPU time: {_common.verdict(cpu_ratio[0], TARGET_OCCLUSION)}; "
                f"wall time: {_common.verdict(wall_ratio[0], TARGET_OCCLUSION)}"
            )
        summary.append(f"{method} relative error: {_common.verdict(error, TARGET_ERROR)}")
        print(
            f"{method}: CPU ms ours {_common.spread(cpu['ours'])}, captum {_common.spread(cpu['captum'])}, "
            f"ratio {_common.ratio_text(cpu_ratio)}; wall ratio {_common.ratio_text(wall_ratio)}; "
            f"relative error {error:.1e}",
            flush=True,
        )
    print()
    print(
        _common.table(
            ["method", "ours, CPU ms", "captum, CPU ms", "ours / captum, CPU", "ours / captum, wall", "relative error"],
            rows,
        )
    )
    print()
    _common.print_summary(summary, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
