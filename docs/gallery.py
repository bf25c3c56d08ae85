"""Every explanation CNNSee offers, on the demo model: the README's gallery and its faithfulness and drift chart.

    python docs/gallery.py [--out docs/images] [--epochs 8]

Trains the demo (``lightning_cnnsee.demo.train.run_demo``) with a CNNSee that shows everything, then draws with the core
functions, on 6 fixed validation images of the trained model:

- ``gallery_cams.png``: a row per CAM method (Grad-CAM's family and the gradient-free ones), predicted class;
- ``gallery_attributions.png``: a row per pixel-attribution method (signed ones in blue-grey-red);
- ``gallery_objectives.png``: filter ascent with a channel, a neuron, and three diverse images per channel;
- ``faithfulness_drift.png``: the scalars CNNSee logged during the fit (matplotlib, from the ``bench`` extra);
- ``gallery_vit.png``: the tiny ViT of ``benchmarks/transformers.py`` (trained here, 300 steps) on 6 held-out images
  of its coloured-square task, a row per method: the default attention rollout, the gradient-weighted rollout, and
  Grad-CAM at ``blocks[-1].norm1`` (pytorch-grad-cam's recipe). ``--vit-only`` draws this one alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile

import torch
from torchvision.utils import save_image

from lightning_cnnsee import GRADIENT_CAM_METHODS, CNNSee, attribute, filter_ascent, grad_cam
from lightning_cnnsee.demo.data import CLASS_NAMES, MEAN, STD
from lightning_cnnsee.demo.train import ShapesDataModule, run_demo
from lightning_cnnsee.explain.attributions import ATTRIBUTION_METHODS, attribution_map
from lightning_cnnsee.explain.cam import GRADIENT_FREE_CAM_METHODS
from lightning_cnnsee.explain.objectives import neuron
from lightning_cnnsee.render.images import (
    SIGNED_ATTRIBUTIONS,
    caption,
    denormalize,
    diverging,
    grid,
    overlay,
    render_patterns,
    scale_cams,
    to_rgb,
    turbo,
    upscale,
)


def rows_of_methods(display, maps_by_method, predicted, signed_methods=(), names=CLASS_NAMES):
    """The images on top, then a row of overlays per method, each map stretched to its own maximum."""
    rgb = upscale(to_rgb(display), 96)
    rows = [caption(rgb, [f"#{i} pred {names[int(c)]}" for i, c in enumerate(predicted)])]
    for method, maps in maps_by_method.items():
        signed = method in signed_methods
        [heat] = scale_cams([maps], "image", signed=signed)
        rows.append(caption(overlay(rgb, heat, 0.6, diverging if signed else turbo), [method] * len(predicted)))
    return grid(torch.cat(rows), columns=len(predicted))


def vit_gallery(path: str) -> None:
    """The tiny ViT of ``benchmarks/transformers.py`` on 6 held-out images: a row per method on its token grid."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
    sys.path.append(folder)  # the benchmark imports its folder's _common
    spec = importlib.util.spec_from_file_location("cnnsee_vit_benchmark", os.path.join(folder, "transformers.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    model, accuracy = bench.train_vit(0, 300)
    images, _, _ = bench.make_task(6, 7)
    with torch.no_grad():
        predicted = model(images).argmax(dim=1)
    rows = {
        "attention_rollout (default)": ("blocks", "attention_rollout"),
        "gradient_rollout": ("blocks", "gradient_rollout"),
        "gradcam blocks[-1].norm1": ("blocks.3.norm1", "gradcam"),
    }
    maps = {name: grad_cam(model, images, [layer], predicted, method)[layer] for name, (layer, method) in rows.items()}
    display = (images * 0.3 + 0.3).clamp(0, 1)
    save_image(rows_of_methods(display, maps, predicted, names=["red", "green", "blue"]), path)
    print(f"tiny ViT accuracy {accuracy:.3f}; {path}")


def chart(log_dir: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]

    def series(tag):
        return [e.step for e in events.Scalars(tag)], [e.value for e in events.Scalars(tag)]

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, style in (("features", "-"), ("integrated_gradients", "--")):
        for metric, colour in (("deletion_auc", "tab:red"), ("insertion_auc", "tab:blue")):
            tag = f"cnnsee/faithfulness/{name}/{metric}"
            if tag in tags:
                axes[0 if name == "features" else 1].plot(*series(tag), style, color=colour, label=metric)
                axes[0 if name == "features" else 1].plot(
                    *series(tag + "_random"), ":", color=colour, label=f"{metric}, random maps"
                )
    for name, colour in (("features", "tab:green"), ("integrated_gradients", "tab:purple")):
        for comparison, style in (("vs_start", "-"), ("vs_previous", "--")):
            tag = f"cnnsee/drift/{name}/{comparison}"
            if tag in tags:
                axes[2].plot(*series(tag), style, color=colour, label=f"{name} {comparison}")
    titles = ("Grad-CAM (features): faithfulness", "Integrated Gradients: faithfulness", "drift (Spearman)")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
    axes[2].set_ylim(-0.1, 1.05)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--vit-only", action="store_true", help="draw gallery_vit.png alone")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    vit_gallery(os.path.join(args.out, "gallery_vit.png"))
    if args.vit_only:
        return
    logdir = tempfile.mkdtemp()
    callback = CNNSee(
        mean=MEAN,
        std=STD,
        class_names=CLASS_NAMES,
        max_overhead=None,
        ascent_steps=16,
        techniques=["gradcam", "attributions", "faithfulness", "drift"],
        attribution_methods=["integrated_gradients"],
    )
    trainer = run_demo(logdir, max_epochs=args.epochs, num_val=256, callback=callback)
    model = trainer.lightning_module.eval()
    data = ShapesDataModule(num_train=64, num_val=256)
    data.setup("fit")
    images, labels = next(iter(data.val_dataloader()))
    images, labels = images[:6], labels[:6]
    display = denormalize(images, MEAN, STD)
    predicted = model(images).argmax(dim=1)

    cnn_methods = [
        *GRADIENT_CAM_METHODS,
        *GRADIENT_FREE_CAM_METHODS,
    ]  # the attention methods are for ViTs: gallery_vit.png
    cams = {method: grad_cam(model, images, ["features"], method=method)["features"] for method in cnn_methods}
    save_image(rows_of_methods(display, cams, predicted), os.path.join(args.out, "gallery_cams.png"))
    settings = {
        "occlusion": {"sliding_window_shapes": (3, 6, 6), "strides": (3, 3, 3)},
        "guided_gradcam": {"layer": "features"},
    }
    attributions = {
        method: attribution_map(attribute(model, images, method, **settings.get(method, {})))
        for method in sorted(ATTRIBUTION_METHODS)
    }
    save_image(
        rows_of_methods(display, attributions, predicted, SIGNED_ATTRIBUTIONS),
        os.path.join(args.out, "gallery_attributions.png"),
    )

    layer, channels = "features.8", [0, 1, 2, 3]
    shape = tuple(images.shape[1:])
    common = dict(steps=48, mean=MEAN, std=STD)
    plain = filter_ascent(model, layer, channels, shape, **common)
    single = filter_ascent(model, layer, channels, shape, objective=lambda c: neuron(layer, c), **common)
    diverse = filter_ascent(model, layer, channels, shape, num_diverse=3, **common)
    patterns = torch.cat([plain.images.cpu(), single.images.cpu(), diverse.images.cpu()])
    captions = (
        [f"channel {c}" for c in plain.channels]
        + [f"neuron {c}" for c in single.channels]
        + [f"diverse {c}" for c in diverse.channels]
    )
    save_image(render_patterns(patterns, captions, columns=4), os.path.join(args.out, "gallery_objectives.png"))
    chart(trainer.logger.log_dir, os.path.join(args.out, "faithfulness_drift.png"))
    print(
        f"validation accuracy {float(trainer.callback_metrics['val/acc']):.3f}; CAM methods {sorted(cams)} "
        f"(gradient: {sorted(GRADIENT_CAM_METHODS)}); images in {args.out}"
    )


if __name__ == "__main__":
    main()
