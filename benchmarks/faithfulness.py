"""Faithfulness metrics of Grad-CAM on ResNet-18: our ``faithfulness`` against torchcam's two metric classes.

    python benchmarks/faithfulness.py [--threads N] [--repeats N] [--device cpu|cuda] [--quick] [--json PATH]

Workload: torchvision ResNet-18 with random weights (``weights=None``, seeded), a batch of 8 random images of 96x96,
Grad-CAM of ``layer4`` for each image's predicted class, scored with softmax probabilities: Average Drop and
Increase in Confidence (one masked input per image) and deletion and insertion AUC with torchcam's defaults (20
steps, zero baseline: 21 points per curve; per image 2 x 19 interior points and the all-zero input, which ours
scores once for all images). Cases, timed in turns:

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
grad_cam / torchcam <= 1. Each call is timed in wall time and, on a CPU, in the process's CPU time (with one
torch thread, the work done; steadier than wall time on a crowded machine).
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
import warnings
from collections.abc import Callable

import _common
import torch

BATCH, SIZE, LAYER, STEPS = 8, 96, "layer4", 20
TARGET = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, repeats=8)
    parser.add_argument("--device", default="cpu", help="torch device for model and images (default cpu)")
    parser.add_argument("--quick", action="store_true", help="a short run: 3 rounds")
    parser.add_argument("--json", default=None, help="also write the headline ratios to this JSON file")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 3
    _common.set_threads(args.threads)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()

    import torchvision

    from lightning_cnnsee import grad_cam
    from lightning_cnnsee.explain.metrics import METRICS, faithfulness

    try:
        from torchcam.methods import GradCAM
        from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric
    except ImportError as error:
        # not (yet) in the bench extra of pyproject.toml
        print(f"torchcam is not importable ({type(error).__name__}: {error}); pip install 'torchcam>=0.5'")
        return 2

    device = _common.device_of(args.device)
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

    cases = {
        "torchcam": theirs,
        "ours": ours,
        "ours + grad_cam": ours_with_grad_cam,
        "ours, batch_size=64": functools.partial(ours, 64),
    }
    # CPU time of the process as well as wall time: with one torch thread it is the work done, and it barely moves
    # when other processes crowd the machine (wall time of one call varied 3x in a round under a load of 7 on 2 cores)
    cpu_times: dict[str, list[float]] = {name: [] for name in cases}

    def timed_on_cpu(name: str) -> Callable[[], object]:
        def call() -> object:
            started_cpu = time.process_time()
            result = cases[name]()
            cpu_times[name].append(time.process_time() - started_cpu)
            return result

        return call

    times = _common.interleaved({name: timed_on_cpu(name) for name in cases}, repeats=args.repeats, warmup=1)
    cpu_times = {name: values[1:] for name, values in cpu_times.items()}  # without the warm-up call
    measures = {"wall": times} if device.type == "cuda" else {"wall": times, "CPU": cpu_times}
    ratios = {
        (label, measure): _common.paired_ratio(values[case], values["torchcam"])
        for measure, values in measures.items()
        for label, case in [
            ("ours + grad_cam", "ours + grad_cam"),
            ("ours (same maps)", "ours"),
            ("ours, batch_size=64", "ours, batch_size=64"),
        ]
    }

    print(
        f"Faithfulness benchmark: ResNet-18 (random weights), batch {BATCH} of 3x{SIZE}x{SIZE}, Grad-CAM of "
        f"{LAYER}, predicted class, softmax scores, {STEPS} steps, zero baseline; device {device}"
    )
    print(_common.machine_line())
    print(f"rounds: {args.repeats} (interleaved, 1 warm-up call each); figures: median [min-max]")
    print()
    print(
        _common.table(
            ["case", *[f"ms per call ({measure})" for measure in measures]],
            [[name, *[_common.spread(values[name]) for values in measures.values()]] for name in cases],
        )
    )
    print()
    rows = []
    for (label, measure), ratio in ratios.items():
        target = label != "ours, batch_size=64"
        rows.append(
            [
                f"{label} / torchcam ({measure})",
                _common.ratio_text(ratio),
                f"<= {TARGET:g}" if target else "(info)",
                _common.verdict(ratio[0], TARGET) if target else "",
            ]
        )
    print(_common.table(["ratio (per round, median [min-max])", "value", "target", "verdict"], rows))
    print()
    print(
        "same numbers? |mean of ours per image - torchcam's summary| on torchcam's maps: "
        + ", ".join(f"{name} {differences[name]:.1e}" for name in METRICS)
    )
    print(
        "values: torchcam "
        + ", ".join(f"{name} {reference[name]:.4f}" for name in METRICS)
        + "; ours + grad_cam (logit Grad-CAM) "
        + ", ".join(f"{name} {float(user[name].mean()):.4f}" for name in METRICS)
    )
    _common.print_summary(
        [f"{label} / torchcam ({measure}): {_common.ratio_text(ratio)}" for (label, measure), ratio in ratios.items()]
        + [f"largest difference from torchcam's numbers (same maps): {max(differences.values()):.1e}"],
        started,
    )
    headline = "CPU" if device.type == "cpu" else "wall"
    entries = [
        _common.ratio_entry(f"faithfulness: {label} / torchcam ({measure})", ratio, TARGET)
        for (label, measure), ratio in ratios.items()
        if measure == headline and label != "ours, batch_size=64"
    ]
    _common.write_ratios(args.json, "faithfulness", entries, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
