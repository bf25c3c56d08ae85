"""Gradient-free CAMs on a ResNet-18: our Score-CAM against torchcam's, our Ablation-CAM and Eigen-CAM against
pytorch-grad-cam's, each peer at its defaults.

    python benchmarks/cams.py [--threads N] [--repeats N] [--images N] [--size N] [--layer NAME]

Workload: torchvision ResNet-18 with random weights (``weights=None``, seeded, 1000 classes), a batch of 2 random
images of 64x64, the map of ``layer4`` (512 channels) for each image's predicted class. Cases, timed in turns:

- ``ours scorecam``: ``cam(model, images, ["layer4"], method="scorecam")`` (``batch_size=32``, torchcam's default):
  one recording forward, then the masked images, 32 per forward, under ``torch.inference_mode()``;
- ``torchcam ScoreCAM``: ``ScoreCAM(model, "layer4")`` (built once; ``batch_size=32``), the user's forward under
  ``torch.no_grad()``, then ``extractor(class_idx=predicted)`` (``normalized=True``, its default);
- ``ours ablationcam``: ``cam(..., method="ablationcam")``: the layer's output recorded once, 32 ablated copies per
  forward, the layers before ``layer4`` run on the one image;
- ``pytorch-grad-cam AblationCAM``: ``AblationCAM(model, [model.layer4])`` (built once; ``batch_size=32``),
  ``cam(input_tensor=images, targets=None)``; its tqdm progress bars go to a discarded stream;
- ``ours eigencam`` and ``pytorch-grad-cam EigenCAM``: likewise (no extra forward pass; one SVD per image).

Each case has its own copy of the same weights (pytorch-grad-cam puts its copy in eval mode and leaves hooks). The
peers return maps min-max scaled (and, for pytorch-grad-cam, resized to the input); ours are compared after the same
scaling. Targets: ours / theirs <= 1.0 for each method. The per-image correlation of the maps is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
import warnings

import _common
import numpy as np
import torch
import torch.nn.functional as F

TARGET = 1.0


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    maps = maps - low
    return maps / (maps.flatten(1).max(dim=1).values[:, None, None] + 1e-7)


def _like_pytorch_grad_cam(maps: torch.Tensor, size: int) -> torch.Tensor:
    """``scale_cam_image`` twice, as pytorch-grad-cam does for one layer: min-max, bilinear resize, min-max."""
    return _minmax(F.interpolate(_minmax(maps)[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0])


def _correlations(ours: torch.Tensor, theirs: torch.Tensor) -> list[float]:
    return [
        float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])
        for a, b in zip(ours, theirs, strict=True)
    ]


def main() -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, repeats=5)
    parser.add_argument("--images", type=int, default=2, help="images in the batch (default 2)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--layer", default="layer4", help="CAM layer (default layer4)")
    _common.add_device_arguments(parser, quick="3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 3
    _common.set_threads(args.threads)
    device = _common.device_of(args.device)
    warnings.filterwarnings("ignore")

    import torchvision

    from lightning_cnnsee.explain.cam import cam

    try:
        from pytorch_grad_cam import AblationCAM, EigenCAM
        from torchcam.methods import ScoreCAM
    except ImportError as error:
        print(_common.missing_package_message("torchcam and pytorch-grad-cam (pip install torchcam grad-cam)", error))
        return 2

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).to(device)
    images = torch.rand(args.images, 3, args.size, args.size).to(device)
    layer = args.layer
    ours_model = copy.deepcopy(model)
    torchcam_model = copy.deepcopy(model).eval()
    ablation_model = copy.deepcopy(model)
    eigen_model = copy.deepcopy(model)
    score_extractor = ScoreCAM(torchcam_model, layer)  # batch_size=32
    ablation_extractor = AblationCAM(ablation_model, [dict(ablation_model.named_modules())[layer]])  # batch_size=32
    eigen_extractor = EigenCAM(eigen_model, [dict(eigen_model.named_modules())[layer]])

    def ours(method: str):
        return lambda: cam(ours_model, images, [layer], method=method)[layer]

    def torchcam_scorecam() -> torch.Tensor:
        with torch.no_grad():
            predicted = torchcam_model(images).argmax(dim=1).tolist()
        return score_extractor(class_idx=predicted)[0]

    def pytorch_grad_cam(extractor):
        def call() -> torch.Tensor:
            with contextlib.redirect_stderr(io.StringIO()):
                return torch.from_numpy(extractor(input_tensor=images, targets=None))

        return call

    pairs = {
        "scorecam": ("ours scorecam", ours("scorecam"), "torchcam ScoreCAM", torchcam_scorecam),
        "ablationcam": (
            "ours ablationcam",
            ours("ablationcam"),
            "pytorch-grad-cam AblationCAM",
            pytorch_grad_cam(ablation_extractor),
        ),
        "eigencam": ("ours eigencam", ours("eigencam"), "pytorch-grad-cam EigenCAM", pytorch_grad_cam(eigen_extractor)),
    }

    # Same maps? Ours scaled as each peer scales its own.
    agreement = {}
    for method, (_, mine, _, theirs) in pairs.items():
        our_maps, their_maps = mine().cpu(), theirs().cpu()
        scaled = _minmax(our_maps) if method == "scorecam" else _like_pytorch_grad_cam(our_maps, args.size)
        agreement[method] = (_correlations(scaled, their_maps), float((scaled - their_maps).abs().max()))
    with torch.no_grad():
        seen = []
        module = dict(eigen_model.named_modules())[layer]
        handle = module.register_forward_hook(lambda m, a, o: seen.append(o.detach()))
        eigen_model(images)
        handle.remove()
    numpy_sign = []
    for activation in seen[0].cpu().numpy():
        centred = activation.reshape(activation.shape[0], -1).T
        centred = centred - centred.mean(axis=0)
        numpy_sign.append(bool(np.linalg.svd(centred)[2][0].sum() >= 0))

    cases = {}
    for name_a, case_a, name_b, case_b in pairs.values():
        cases[name_a], cases[name_b] = case_a, case_b
    cases = {name: _common.synchronized(case, device) for name, case in cases.items()}
    times = _common.interleaved(cases, repeats=args.repeats, warmup=1)
    ratios = {method: _common.paired_ratio(times[a], times[b]) for method, (a, _, b, _) in pairs.items()}

    shape = tuple(seen[0].shape)
    print(
        f"Gradient-free CAM benchmark: ResNet-18 (random weights), batch {args.images} of 3x{args.size}x{args.size}, "
        f"{layer} output {shape[1:]}, predicted class; peers at their defaults (batch_size 32)"
    )
    print(_common.machine_line())
    print(f"rounds: {args.repeats} (interleaved, 1 warm-up call each); figures: median [min-max]")
    print()
    print(_common.table(["case", "ms per call"], [[name, _common.spread(values)] for name, values in times.items()]))
    print()
    rows = []
    for method, (a, _, b, _) in pairs.items():
        rows.append(
            [
                f"{a} / {b}",
                _common.ratio_text(ratios[method]),
                f"<= {TARGET:g}",
                _common.verdict(ratios[method][0], TARGET),
            ]
        )
    print(_common.table(["ratio (per round, median [min-max])", "value", "target", "verdict"], rows))
    print()
    lines = []
    for method, (correlations, difference) in agreement.items():
        text = ", ".join(f"{c:.5f}" for c in correlations)
        lines.append(f"{method}: per-image correlation with the peer's map {text}; max |diff| {difference:.2e}")
    lines.append(
        "eigencam: numpy's SVD kept our orientation (loadings summing to >= 0) for images "
        f"{[i for i, kept in enumerate(numpy_sign) if kept]} of {len(numpy_sign)}; elsewhere "
        "pytorch-grad-cam shows the opposite side of the same component"
    )
    for line in lines:
        print(line)
    print()
    _common.print_summary(
        [
            f"{method}: ours / peer {_common.ratio_text(ratios[method])}, "
            f"min correlation {min(agreement[method][0]):.5f}"
            for method in pairs
        ],
        started,
    )
    entries = [_common.ratio_entry(f"cams: {method} ours / peer", ratios[method], TARGET) for method in pairs]
    _common.write_ratios(args.json, "cams", entries, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
