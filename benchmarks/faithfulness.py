"""Faithfulness metrics of Grad-CAM on ResNet-18: our ``faithfulness`` against torchcam's two metric classes.

    python benchmarks/faithfulness.py [--threads N] [--repeats N] [--device cpu|cuda]

Workload: torchvision ResNet-18 with random weights (``weights=None``, seeded), a batch of 8 random images of 96x96,
Grad-CAM of ``layer4`` for each image's predicted class, scored with softmax probabilities: Average Drop and
Increase in Confidence (one masked input per image) and deletion and insertion AUC with torchcam's defaults (20
steps, zero baseline: 21 points per curve, 39 perturbed inputs per image). Cases, timed in turns:

- ``torchcam``: ``ClassificationMetric(extractor, softmax)`` and ``DeletionInsertionMetric(extractor, softmax)``, each
  ``update(images)`` then ``summary()``, with ``extractor = torchcam.methods.GradCAM(model, "layer4")`` built once
  (torchcam's metrics call the extractor themselves: each computes the CAMs and the clean scores again; 32
  perturbed inputs per forward, its default and ours);
- ``ours``: ``faithfulness(model, images, maps)`` with ``maps`` the very CAMs torchcam's metrics use (torchcam's
  Grad-CAM of the softmax score, computed once outside the timing): the same four numbers, checked below;
- ``ours + grad_cam``: ``grad_cam(model, images, ["layer4"])`` then ``faithfulness`` of its maps: what a user of this
  package runs, CAM included (our Grad-CAM is of the logit, as in the paper, so its numbers differ slightly);
- ``ours, batch_size=64``: ``ours`` with twice the default batch size (information: what the batch size does on
  the machine at hand).

Each case has its own copy of the same weights (torchcam's extractor keeps hooks on its model). Target: ours +
grad_cam / torchcam <= 1.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
import warnings

import torch

import _common

BATCH, SIZE, LAYER, STEPS = 8, 96, "layer4", 20
TARGET = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, repeats=8)
    parser.add_argument("--device", default="cpu", help="torch device for model and images (default cpu)")
    args = parser.parse_args()
    _common.set_threads(args.threads)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()

    import torchvision

    from lightning_cnnsee import grad_cam
    from lightning_cnnsee.faithfulness import METRICS, faithfulness

    try:
        from torchcam.methods import GradCAM
        from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric
    except ImportError as error:
        print(_common.missing_package_message("torchcam", error))
        return 2

    device = torch.device(args.device)
    softmax = functools.partial(torch.softmax, dim=-1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).to(device)
    images = torch.rand(BATCH, 3, SIZE, SIZE, device=device)
    ours_model, user_model, theirs_model = (copy.deepcopy(model) for _ in range(3))
    extractor = GradCAM(theirs_model, LAYER)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def theirs() -> dict[str, float]:
        classification = ClassificationMetric(extractor, softmax)
        classification.update(images)
        deletion = DeletionInsertionMetric(extractor, softmax, steps=STEPS)
        deletion.update(images)
        synchronize()
        return {**classification.summary(), **deletion.summary()}

    # torchcam's maps, as its metrics compute them (Grad-CAM of the softmax score of the predicted class)
    theirs_model.eval()
    scores = softmax(theirs_model(images))
    maps = extractor(scores.argmax(dim=1).tolist(), scores, normalized=False)[0].detach()
    theirs_model.train()

    def ours(batch_size: int = 32) -> dict[str, torch.Tensor]:
        result = faithfulness(ours_model, images, maps, steps=STEPS, batch_size=batch_size)
        synchronize()
        return result

    def ours_with_grad_cam() -> dict[str, torch.Tensor]:
        cams = grad_cam(user_model, images, [LAYER])[LAYER]
        result = faithfulness(user_model, images, cams, steps=STEPS)
        synchronize()
        return result

    same = ours()
    reference = theirs()
    differences = {name: abs(float(same[name].mean()) - reference[name]) for name in METRICS}
    user = ours_with_grad_cam()

    times = _common.interleaved(
        {
            "torchcam": theirs,
            "ours": ours,
            "ours + grad_cam": ours_with_grad_cam,
            "ours, batch_size=64": functools.partial(ours, 64),
        },
        repeats=args.repeats,
        warmup=1,
    )
    vs_theirs = _common.paired_ratio(times["ours"], times["torchcam"])
    user_vs_theirs = _common.paired_ratio(times["ours + grad_cam"], times["torchcam"])
    batch_vs_theirs = _common.paired_ratio(times["ours, batch_size=64"], times["torchcam"])

    print(f"Faithfulness benchmark: ResNet-18 (random weights), batch {BATCH} of 3x{SIZE}x{SIZE}, Grad-CAM of "
          f"{LAYER}, predicted class, softmax scores, {STEPS} steps, zero baseline; device {device}")
    print(_common.machine_line())
    print(f"rounds: {args.repeats} (interleaved, 1 warm-up call each); figures: median [min-max]")
    print()
    print(_common.table(["case", "ms per call"], [[name, _common.spread(values)] for name, values in times.items()]))
    print()
    print(_common.table(
        ["ratio (per round, median [min-max])", "value", "target", "verdict"],
        [
            ["ours + grad_cam / torchcam", _common.ratio_text(user_vs_theirs), f"<= {TARGET:g}",
             _common.verdict(user_vs_theirs[0], TARGET)],
            ["ours (same maps) / torchcam", _common.ratio_text(vs_theirs), f"<= {TARGET:g}",
             _common.verdict(vs_theirs[0], TARGET)],
            ["ours, batch_size=64 / torchcam", _common.ratio_text(batch_vs_theirs), "(info)", ""],
        ],
    ))
    print()
    print("same numbers? |mean of ours per image - torchcam's summary| on torchcam's maps: "
          + ", ".join(f"{name} {differences[name]:.1e}" for name in METRICS))
    print("values: torchcam " + ", ".join(f"{name} {reference[name]:.4f}" for name in METRICS)
          + "; ours + grad_cam (logit Grad-CAM) " + ", ".join(f"{name} {float(user[name].mean()):.4f}"
                                                            for name in METRICS))
    _common.print_summary(
        [
            f"ours + grad_cam / torchcam: {_common.ratio_text(user_vs_theirs)} "
            f"({_common.verdict(user_vs_theirs[0], TARGET)})",
            f"ours (same maps) / torchcam: {_common.ratio_text(vs_theirs)}",
            f"largest difference from torchcam's numbers: {max(differences.values()):.1e}",
        ],
        started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
