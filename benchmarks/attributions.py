"""Pixel attributions: our ``attribute`` against Captum, method by method, at Captum's defaults.

    python benchmarks/attributions.py [--threads N] [--repeats N] [--methods NAME ...] [--device cuda] [--quick]

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

Occlusion is timed in four cases: ResNet-18 and a plain VGG-style stack of the same cost (:func:`plain_stack`), each
with the window above (stride 4 < window 8, 225 positions) and with Captum's default stride of 1 (window (3, 8, 8),
one 3x32x32 image: 625 positions). Its relative error is also given against our own full forward pass
(``incremental=False``).

Figures: per method the median of the per-round time ratios ours / Captum with its min-max, and the relative error
``max |ours - Captum| / max |Captum|`` (SmoothGrad at the same seed, so with the same noise). Target: Occlusion
ours / Captum <= 0.5 with a relative error <= 1e-4; every other relative error <= 1e-3. On a GPU (``--device
cuda``) the ratios are of wall time, each call ending with ``torch.cuda.synchronize``.

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
OCCLUSION_CASES = {
    # name: (options, images, side); Captum's perturbations_per_eval=1 in both
    "stride 4 < window 8": (OCCLUSION, BATCH, SIZE),
    "Captum's default stride 1": ({"sliding_window_shapes": (3, 8, 8)}, 1, 32),
}
OCCLUSION_MODELS = ("resnet18", "plain stack")
TARGET_OCCLUSION, TARGET_ERROR, TARGET_OCCLUSION_ERROR = 0.5, 1e-3, 1e-4
METHODS = [
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "guided_backprop",
    "guided_gradcam",
]


def plain_stack() -> torch.nn.Sequential:
    """A VGG-style stack: three stages of two 3x3 conv-BN-ReLU and a 2x2 max pooling (32, 64, 128 channels), average
    pooling to 4x4 (VGG's head pools to 7x7), a linear layer; 155 M multiply-adds per 64x64 image (ResNet-18: 146 M).
    With global pooling instead, an 8x8 window moves this random network's scores by 1e-3 of their size, and float32
    rounding alone (Captum against our full pass) puts the relative error of the maps at 1.2e-4."""
    from torch import nn

    layers: list[nn.Module] = []
    channels = 3
    for width in (32, 64, 128):
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(channels * 16, NUM_CLASSES)]
    return nn.Sequential(*layers)


def captum_case(method: str, model: torch.nn.Module, images: torch.Tensor, targets: list[int], options=None):
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
        explainer, options = attr.Occlusion(model), options or OCCLUSION
    elif method == "guided_backprop":
        explainer, options = attr.GuidedBackprop(model), {}
    else:
        explainer, options = attr.GuidedGradCam(model, model.layer4), {}
    return lambda: explainer.attribute(images.clone(), target=targets, **options).detach()


def our_case(method: str, model: torch.nn.Module, images: torch.Tensor, targets: list[int], options=None, **extra):
    from lightning_cnnsee.explain.attributions import attribute

    options = options or {"occlusion": OCCLUSION, "guided_gradcam": {"layer": "layer4"}}.get(method, {})
    return lambda: attribute(model, images, method, targets, **options, **extra)


def cpu_timed(function, record: list[float]):
    """``function``, also appending the process CPU time of each call to ``record``."""

    def run() -> None:
        started = time.process_time()
        function()
        record.append(time.process_time() - started)

    return run


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, repeats=5)
    _common.add_device_arguments(parser, quick="3 rounds")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, help="methods to time (default all)")
    parser.add_argument(
        "--occlusion-models", nargs="+", default=list(OCCLUSION_MODELS), choices=OCCLUSION_MODELS, help="(default both)"
    )
    parser.add_argument(
        "--occlusion-cases",
        nargs="+",
        default=list(OCCLUSION_CASES),
        choices=list(OCCLUSION_CASES),
        help="(default all)",
    )
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    started = time.perf_counter()
    _common.set_threads(args.threads)
    device = _common.device_of(args.device)
    on_cpu = device.type == "cpu"
    warnings.filterwarnings("ignore")  # Captum's GuidedBackprop warns that it sets hooks, at every call

    import torchvision

    try:
        import captum  # noqa: F401
    except ImportError as error:
        print(_common.missing_package_message("captum", error))
        return 2

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES).eval().to(device)
    images = torch.rand(BATCH, 3, SIZE, SIZE).to(device)
    targets = torch.randint(0, NUM_CLASSES, (BATCH,)).tolist()
    torch.manual_seed(0)
    models = {"resnet18": model, "plain stack": plain_stack().eval().to(device)}

    print(
        f"Attribution benchmark: ResNet-18 ({NUM_CLASSES} classes, random weights, eval mode), batch {BATCH} of "
        f"3x{SIZE}x{SIZE}, targets {targets}; Captum's defaults, Occlusion window {OCCLUSION}; device {device}"
    )
    print(_common.machine_line())
    print(f"rounds: {repeats} per case (interleaved, 1 warm-up call each); figures: median [min-max]")
    print()
    cases = []  # (row name, method, ours, theirs, extra reference or None)
    for method in args.methods:
        if method != "occlusion":
            cases.append((method, method, our_case(method, model, images, targets), None))
            continue
        for model_name in args.occlusion_models:
            for case_name in args.occlusion_cases:
                options, count, side = OCCLUSION_CASES[case_name]
                generator = torch.Generator().manual_seed(2)
                occluded = torch.rand(count, 3, side, side, generator=generator).to(device)
                classes = targets[:count]
                net = models[model_name]
                cases.append(
                    (
                        f"occlusion, {model_name}, {case_name} ({count}x3x{side}x{side})",
                        method,
                        our_case(method, net, occluded, classes, options),
                        (
                            captum_case(method, net, occluded, classes, options),
                            our_case(method, net, occluded, classes, options, incremental=False),
                        ),
                    )
                )
    rows, summary, entries = [], [], []
    clock = "CPU" if on_cpu else "wall"
    for name, method, ours, occlusion_extra in cases:
        if occlusion_extra is None:
            theirs, full = captum_case(method, model, images, targets), None
        else:
            theirs, full = occlusion_extra
        torch.manual_seed(1)
        mine = ours()
        torch.manual_seed(1)
        reference = theirs()
        error = relative_error(mine, reference)
        full_error = None if full is None else relative_error(mine, full())
        ours_timed, theirs_timed = _common.synchronized(ours, device), _common.synchronized(theirs, device)
        cpu: dict[str, list[float]] = {"ours": [], "captum": []}
        wall = _common.interleaved(
            {"ours": cpu_timed(ours_timed, cpu["ours"]), "captum": cpu_timed(theirs_timed, cpu["captum"])},
            repeats=repeats,
            warmup=1,
        )
        cpu = {key: values[1:] for key, values in cpu.items()}  # without the warm-up call
        wall_ratio = _common.paired_ratio(wall["ours"], wall["captum"])
        cpu_ratio = _common.paired_ratio(cpu["ours"], cpu["captum"])
        headline, times = (cpu_ratio, cpu) if on_cpu else (wall_ratio, wall)
        error_text = f"{error:.1e}" + ("" if full_error is None else f" (full pass {full_error:.1e})")
        rows.append(
            [
                name,
                _common.spread(times["ours"]),
                _common.spread(times["captum"]),
                _common.ratio_text(cpu_ratio) if on_cpu else "",
                _common.ratio_text(wall_ratio),
                error_text,
            ]
        )
        if method == "occlusion":
            summary.append(
                f"{name} ours / captum, {clock} time: {_common.verdict(headline[0], TARGET_OCCLUSION)}; relative "
                f"error {error:.1e} {'<=' if error <= TARGET_OCCLUSION_ERROR else '>'} {TARGET_OCCLUSION_ERROR:g}"
            )
            entries.append(_common.ratio_entry(f"attributions: {name}", headline, TARGET_OCCLUSION))
        else:
            summary.append(
                f"{name} relative error: {error:.1e} {'<=' if error <= TARGET_ERROR else '>'} {TARGET_ERROR:g}"
            )
            entries.append(_common.ratio_entry(f"attributions: {name}", headline, None))
        print(
            f"{name}: {clock} ms ours {_common.spread(times['ours'])}, captum {_common.spread(times['captum'])}, "
            f"ratio {_common.ratio_text(headline)}; wall ratio {_common.ratio_text(wall_ratio)}; "
            f"relative error {error_text}",
            flush=True,
        )
    print()
    print(
        _common.table(
            [
                "case",
                f"ours, {clock} ms",
                f"captum, {clock} ms",
                "ours / captum, CPU",
                "ours / captum, wall",
                "relative error",
            ],
            rows,
        )
    )
    print()
    _common.print_summary(summary, started)
    _common.write_ratios(args.json, "attributions", entries, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
