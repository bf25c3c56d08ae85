"""Which map of a vision transformer points at what decides the class: every method on every candidate layer of a
tiny ViT trained on a task whose deciding patch is known, and what the default costs against pytorch-grad-cam.

The task: 32x32 images of noise with two squares, each inside one cell of the 4x4 patch grid: one coloured (red,
green or blue: the class) and one grey (a distractor of the same size and brightness). A timm ViT (class token,
patch 8, depth 4, width 64, 4 heads, ``pretrained=False``) is trained on it from a fixed seed, then each (method,
layer) explains its predicted class on held-out images:

- pointing game: the share of images whose map peaks (on the 4x4 grid) in the coloured square's cell;
- deletion and insertion AUC (``lightning_cnnsee.explain.metrics.faithfulness``, 16 steps, zero baseline): lower
  deletion and higher insertion are better;
- time: median of interleaved rounds for the held-out batch, milliseconds.

The pointing game of the two rollouts and of Grad-CAM on ``blocks[-1].norm1`` is repeated on ViTs trained from other
seeds (``--seeds``), which says whether the ranking holds beyond one training run.

Then the default map (``grad_cam(model, images, None)``, the layer and method CNNSee picks) and pytorch-grad-cam's
``GradCAM`` with a ``reshape_transform`` on ``blocks[-1].norm1`` (the recipe of its tutorial) are timed side by side
on the same images, interleaved, and their cost ratio printed.

Run: ``python benchmarks/transformers.py`` (about 3 minutes on one CPU thread).
"""

from __future__ import annotations

import argparse
import time

import _common
import torch
import torch.nn.functional as F

from lightning_cnnsee.explain.cam import default_cam, grad_cam
from lightning_cnnsee.explain.metrics import faithfulness

GRID, PATCH, SIZE = 4, 8, 32
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])


def make_task(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (count, 3, 32, 32), labels (count,) and the deciding cell of each (count,) on the 4x4 grid."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, SIZE, SIZE, generator=generator) * 0.3
    labels = torch.randint(0, len(COLOURS), (count,), generator=generator)
    cells = torch.empty(count, dtype=torch.long)
    for index in range(count):
        coloured, grey = torch.randperm(GRID * GRID, generator=generator)[:2].tolist()
        for cell, colour in ((coloured, COLOURS[labels[index]]), (grey, torch.full((3,), 0.4))):
            row, column = divmod(cell, GRID)
            offset = torch.randint(0, 3, (2,), generator=generator).tolist()  # a 6x6 square inside the 8x8 cell
            top, left = row * PATCH + offset[0], column * PATCH + offset[1]
            images[index, :, top : top + 6, left : left + 6] = colour[:, None, None]
        cells[index] = coloured
    return (images - 0.3) / 0.3, labels, cells


def train_vit(seed: int, steps: int) -> tuple[torch.nn.Module, float]:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=SIZE,
        patch_size=PATCH,
        depth=4,
        embed_dim=64,
        num_heads=4,
        num_classes=len(COLOURS),
    )
    images, labels, _ = make_task(4096, seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.train()
    for step in range(steps):
        index = torch.randint(0, len(images), (64,))
        loss = F.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test, test_labels, _ = make_task(512, seed + 2)
    with torch.no_grad():
        accuracy = float((model(test).argmax(1) == test_labels).float().mean())
    return model, accuracy


def pointing(maps: torch.Tensor, cells: torch.Tensor) -> float:
    """Share of maps whose peak, on the 4x4 grid, is the deciding cell."""
    grid = F.adaptive_avg_pool2d(maps[:, None].float(), GRID)[:, 0]
    return float((grid.flatten(1).argmax(1) == cells).float().mean())


def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ViT recipe: drop the class token, tokens back on the grid, channels first."""
    return tokens[:, 1:].reshape(tokens.shape[0], GRID, GRID, tokens.shape[2]).permute(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, repeats=5)
    parser.add_argument("--steps", type=int, default=300, help="training steps of the tiny ViT (default 300)")
    parser.add_argument("--seeds", type=int, default=2, help="ViTs trained from seeds 0, 1, ... (default 2)")
    parser.add_argument("--images", type=int, default=128, help="held-out images explained (default 128)")
    args = parser.parse_args()
    _common.set_threads(args.threads)
    started = time.perf_counter()
    model, accuracy = train_vit(0, args.steps)
    print(f"tiny ViT trained {args.steps} steps in {time.perf_counter() - started:.0f} s: accuracy {accuracy:.3f}")
    images, _, cells = make_task(args.images, 7)
    with torch.no_grad():
        predicted = model(images).argmax(1)
    default_layers, default_method = default_cam(model, images)
    print(f"default (layers=None): {default_method} on {default_layers}")
    depth = len(model.blocks)
    candidates = [("gradient_rollout", "blocks"), ("attention_rollout", "blocks")]
    token_layers = [f"blocks.{i}" for i in range(depth)] + [f"blocks.{depth - 1}.norm1", "norm"]
    for method in ("gradcam", "gradcam++", "layercam", "hirescam"):
        candidates += [(method, layer) for layer in token_layers]
    candidates += [("eigencam", f"blocks.{depth - 1}"), ("scorecam", f"blocks.{depth - 2}")]
    rows, found = [], {}
    for method, layer in candidates:

        def run(method: str = method, layer: str = layer) -> torch.Tensor:
            return grad_cam(model, images, [layer], targets=predicted, method=method)[layer]

        maps = run()
        seconds = _common.interleaved({"run": run}, 1 if method == "scorecam" else 3, warmup=0)["run"]
        scores = faithfulness(model, images, maps, predicted, steps=16)
        found[(method, layer)] = pointing(maps, cells)
        rows.append(
            [
                method,
                layer,
                f"{found[(method, layer)]:.3f}",
                f"{float(scores['deletion_auc'].nanmean()):.3f}",
                f"{float(scores['insertion_auc'].nanmean()):.3f}",
                f"{_common.median(seconds) * 1e3:.0f}",
            ]
        )
    headers = ["method", "layer", "pointing game", "deletion AUC (lower)", "insertion AUC (higher)", "ms"]
    print(_common.table(headers, rows))
    best = max(found, key=found.get)
    print(f"best pointing game: {best[0]} on {best[1]} ({found[best]:.3f})")
    recipe = ("gradcam", f"blocks.{depth - 1}.norm1")
    per_seed = {key: [found[key]] for key in (candidates[0], candidates[1], recipe)}
    for seed in range(1, args.seeds):
        other, other_accuracy = train_vit(seed, args.steps)
        other_images, _, other_cells = make_task(args.images, 7 + seed)
        with torch.no_grad():
            other_predicted = other(other_images).argmax(1)
        line = []
        for (method, layer), values in per_seed.items():
            maps = grad_cam(other, other_images, [layer], targets=other_predicted, method=method)[layer]
            values.append(pointing(maps, other_cells))
            line.append(f"{method} on {layer} {values[-1]:.3f}")
        print(f"seed {seed} (accuracy {other_accuracy:.3f}): pointing game " + ", ".join(line))

    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as error:
        print(_common.missing_package_message("grad-cam", error))
        return
    targets = [ClassifierOutputTarget(int(c)) for c in predicted]
    library = GradCAM(model=model, target_layers=[model.blocks[-1].norm1], reshape_transform=reshape_transform)
    library_maps = torch.from_numpy(library(input_tensor=images, targets=targets))
    model.zero_grad(set_to_none=True)
    cases = {
        "ours (default)": lambda: grad_cam(model, images, default_layers, targets=predicted, method=default_method),
        "gradient_rollout": lambda: grad_cam(model, images, ["blocks"], targets=predicted, method="gradient_rollout"),
        "pytorch-grad-cam": lambda: library(input_tensor=images, targets=targets),
    }
    times = _common.interleaved(cases, args.repeats)
    ratio = _common.paired_ratio(times["ours (default)"], times["pytorch-grad-cam"])
    gradient_ratio = _common.paired_ratio(times["gradient_rollout"], times["pytorch-grad-cam"])
    print(
        _common.table(
            ["case", "ms per batch", "pointing game"],
            [
                [
                    f"ours: {default_method} on {default_layers}",
                    _common.spread(times["ours (default)"]),
                    f"{found[(default_method, default_layers[0])]:.3f}",
                ],
                [
                    "ours: gradient_rollout on ['blocks']",
                    _common.spread(times["gradient_rollout"]),
                    f"{found[candidates[0]]:.3f}",
                ],
                [
                    "pytorch-grad-cam GradCAM, blocks[-1].norm1 + reshape_transform",
                    _common.spread(times["pytorch-grad-cam"]),
                    f"{pointing(library_maps, cells):.3f}",
                ],
            ],
        )
    )
    _common.print_summary(
        [
            f"accuracy of the tiny ViT: {accuracy:.3f}",
            "pointing game per seed: "
            + "; ".join(f"{m} on {layer} {', '.join(f'{v:.3f}' for v in vs)}" for (m, layer), vs in per_seed.items()),
            f"default: {default_method} on {default_layers}; best pointing game of the table: {best[0]} on {best[1]}",
            f"cost of the default against pytorch-grad-cam (median [min-max] of paired ratios): "
            f"{_common.ratio_text(ratio)}: {_common.verdict(ratio[0], 1.0)}",
            f"cost of gradient_rollout against pytorch-grad-cam: {_common.ratio_text(gradient_ratio)}",
        ],
        started,
    )


if __name__ == "__main__":
    main()
