"""Grad-CAM on two layers of a ResNet-18: our ``grad_cam`` against a training step and against pytorch-grad-cam.

    python benchmarks/gradcam.py [--threads N] [--repeats N]

Workload (from the issue): torchvision ResNet-18 with random weights (``weights=None``, seeded), a batch of 16 random
images of 96x96, CAMs of ``layer3`` and ``layer4`` for each image's predicted class. Cases, timed in turns:

- ``ours``: ``grad_cam(model, images, ["layer3", "layer4"])`` (one forward, one ``torch.autograd.grad``);
- ``train step``: one training forward (train mode) and ``cross_entropy(...).backward()`` of the same batch;
- ``pytorch-grad-cam``: ``GradCAM(model, target_layers=[model.layer3, model.layer4])(input_tensor=images,
  targets=None)``, built once. With two target layers it computes each layer's CAM, upsamples both to the input and
  returns their mean: one forward and one ``.backward()`` for the same work (both layers, predicted class);
- ``pytorch-grad-cam x2``: one single-layer ``GradCAM`` per layer (what it takes to get the two maps separately,
  as ``grad_cam`` returns them); shown for information, not a target.

Each case has its own copy of the same weights (pytorch-grad-cam leaves hooks and ``.grad`` behind; the training
step updates BatchNorm statistics). Targets: ours / train step <= 0.4, ours / pytorch-grad-cam <= 0.5.
A check that both compute the same maps (correlation of the upsampled, min-max scaled per-layer maps) is printed.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings

import _common
import torch
import torch.nn.functional as F

LAYERS = ["layer3", "layer4"]
BATCH, SIZE = 16, 96
TARGET_VS_TRAIN, TARGET_VS_PYTORCH_GRAD_CAM = 0.4, 0.5


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    return (maps - low[:, None, None]) / (high - low + 1e-7)[:, None, None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, repeats=30)
    _common.add_device_arguments(parser, quick="5 rounds")
    args = parser.parse_args()
    repeats = 5 if args.quick else args.repeats
    _common.set_threads(args.threads)
    device = _common.device_of(args.device)
    warnings.filterwarnings("ignore")

    import torchvision

    from lightning_cnnsee import grad_cam

    try:
        from pytorch_grad_cam import GradCAM
    except ImportError as error:
        print(_common.missing_package_message("pytorch-grad-cam (pip install grad-cam)", error))
        return 2

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).to(device)
    images = torch.rand(BATCH, 3, SIZE, SIZE).to(device)
    labels = torch.randint(0, 1000, (BATCH,)).to(device)
    ours_model = copy.deepcopy(model)
    train_model = copy.deepcopy(model).train()
    theirs_model = copy.deepcopy(model)
    separate_model = copy.deepcopy(model)

    def ours() -> None:
        grad_cam(ours_model, images, LAYERS)

    def train_step() -> None:
        train_model.zero_grad(set_to_none=True)
        F.cross_entropy(train_model(images), labels).backward()

    theirs_cam = GradCAM(model=theirs_model, target_layers=[theirs_model.layer3, theirs_model.layer4])

    def theirs() -> None:
        theirs_cam(input_tensor=images, targets=None)

    separate_cams = [GradCAM(model=separate_model, target_layers=[getattr(separate_model, name)]) for name in LAYERS]

    def theirs_separately() -> None:
        for cam in separate_cams:
            cam(input_tensor=images, targets=None)

    # Same work? Per-layer maps of both, scaled to [0, 1] and upsampled to the input as pytorch-grad-cam does.
    ours_maps = grad_cam(ours_model, images, LAYERS)
    agreement = []
    for name, cam in zip(LAYERS, separate_cams, strict=True):
        theirs_map = torch.from_numpy(cam(input_tensor=images, targets=None)).to(device)
        mine = F.interpolate(
            _minmax(ours_maps[name])[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False
        )[:, 0]
        mine = _minmax(mine)
        stacked = torch.stack([mine.flatten(), theirs_map.flatten()])
        agreement.append((name, float(torch.corrcoef(stacked)[0, 1]), float((mine - theirs_map).abs().max())))

    cases = {
        "ours": ours,
        "train step": train_step,
        "pytorch-grad-cam": theirs,
        "pytorch-grad-cam x2": theirs_separately,
    }
    times = _common.interleaved(
        {name: _common.synchronized(case, device) for name, case in cases.items()},
        repeats=repeats,
        warmup=3,
    )
    vs_train = _common.paired_ratio(times["ours"], times["train step"])
    vs_theirs = _common.paired_ratio(times["ours"], times["pytorch-grad-cam"])
    vs_separate = _common.paired_ratio(times["ours"], times["pytorch-grad-cam x2"])

    print(
        "Grad-CAM benchmark: ResNet-18 (random weights), batch 16 of 3x96x96, layers layer3 + layer4, predicted class; "
        f"device {device}"
    )
    print(_common.machine_line())
    print(f"rounds: {repeats} (interleaved, 3 warm-up calls each); figures: median [min-max]")
    print()
    print(_common.table(["case", "ms per call"], [[name, _common.spread(values)] for name, values in times.items()]))
    print()
    print(
        _common.table(
            ["ratio (per round, median [min-max])", "value", "target", "verdict"],
            [
                [
                    "ours / train step (fwd + backward)",
                    _common.ratio_text(vs_train),
                    f"<= {TARGET_VS_TRAIN}",
                    _common.verdict(vs_train[0], TARGET_VS_TRAIN),
                ],
                [
                    "ours / pytorch-grad-cam (2 layers, 1 call)",
                    _common.ratio_text(vs_theirs),
                    f"<= {TARGET_VS_PYTORCH_GRAD_CAM}",
                    _common.verdict(vs_theirs[0], TARGET_VS_PYTORCH_GRAD_CAM),
                ],
                ["ours / pytorch-grad-cam x2 (1 call per layer)", _common.ratio_text(vs_separate), "(info)", ""],
            ],
        )
    )
    print()
    print(
        "same maps? ours vs pytorch-grad-cam per layer (min-max scaled, upsampled to 96x96): "
        + "; ".join(f"{name}: correlation {corr:.5f}, max |diff| {diff:.2e}" for name, corr, diff in agreement)
    )
    entries = [
        _common.ratio_entry("gradcam: ours / train step", vs_train, TARGET_VS_TRAIN),
        _common.ratio_entry("gradcam: ours / pytorch-grad-cam", vs_theirs, TARGET_VS_PYTORCH_GRAD_CAM),
    ]
    _common.write_ratios(args.json, "gradcam", entries, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
