"""Turn visualization tensors into images a person can read: heat-map overlays, channel grids, captioned tiles.

Everything returns a float32 (3, H, W) tensor in [0, 1], ready for ``SummaryWriter.add_image``. Inputs may have 1,
3 or more channels (1 is shown grey, 2 as the grey mean, more than 3 by their first three) and any size.

Example::

    >>> import torch
    >>> from lightning_cnnsee.render.images import render_maps
    >>> grid = render_maps(torch.rand(4, 1, 28, 40), [torch.rand(4, 7, 10)], ["pred 3"] * 4)
    >>> grid.shape[0], float(grid.min()) >= 0, float(grid.max()) <= 1
    (3, True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import make_grid

from lightning_cnnsee.explain.attributions import attribution_map
from lightning_cnnsee.explain.targets import class_indices, class_probabilities
from lightning_cnnsee.vocabulary.checks import known
from lightning_cnnsee.vocabulary.choices import CAM_SCALES
from lightning_cnnsee.vocabulary.tags import make_tag

__all__ = [
    "CORRECT_COLOUR",
    "MISTAKE_COLOUR",
    "SIGNED_ATTRIBUTIONS",
    "caption",
    "class_colours",
    "class_name",
    "denormalize",
    "diverging",
    "grid",
    "overlay",
    "render_activations",
    "render_columns",
    "render_maps",
    "render_patterns",
    "render_results",
    "robust_max",
    "scale_cams",
    "to_rgb",
    "turbo",
    "upscale",
]

if TYPE_CHECKING:
    from lightning_cnnsee.run.options import Options
    from lightning_cnnsee.run.results import Results

MISTAKE_COLOUR = (1.0, 0.15, 0.15)
CORRECT_COLOUR = (0.2, 0.8, 0.3)

# Google's Turbo colormap (Mikhailov, 2019), perceptually smooth and readable on dark and light: 65 entries of its
# 256-entry table, evenly spaced and interpolated linearly (within 0.002 of the full table, interpolated).
_TURBO = torch.tensor(
    [
        [0.1900, 0.0718, 0.2322],
        [0.2086, 0.1180, 0.3461],
        [0.2250, 0.1635, 0.4510],
        [0.2392, 0.2083, 0.5469],
        [0.2511, 0.2524, 0.6337],
        [0.2607, 0.2957, 0.7116],
        [0.2682, 0.3382, 0.7805],
        [0.2733, 0.3801, 0.8404],
        [0.2763, 0.4212, 0.8912],
        [0.2770, 0.4615, 0.9331],
        [0.2754, 0.5012, 0.9659],
        [0.2711, 0.5402, 0.9893],
        [0.2586, 0.5796, 0.9988],
        [0.2387, 0.6193, 0.9948],
        [0.2138, 0.6589, 0.9796],
        [0.1862, 0.6978, 0.9550],
        [0.1584, 0.7355, 0.9230],
        [0.1328, 0.7716, 0.8858],
        [0.1117, 0.8057, 0.8452],
        [0.0975, 0.8371, 0.8034],
        [0.0927, 0.8655, 0.7623],
        [0.0996, 0.8904, 0.7239],
        [0.1201, 0.9119, 0.6866],
        [0.1532, 0.9315, 0.6431],
        [0.1966, 0.9490, 0.5947],
        [0.2480, 0.9642, 0.5430],
        [0.3051, 0.9770, 0.4899],
        [0.3658, 0.9870, 0.4369],
        [0.4278, 0.9942, 0.3858],
        [0.4888, 0.9983, 0.3382],
        [0.5466, 0.9991, 0.2958],
        [0.5989, 0.9964, 0.2604],
        [0.6436, 0.9900, 0.2336],
        [0.6849, 0.9794, 0.2160],
        [0.7260, 0.9647, 0.2064],
        [0.7661, 0.9463, 0.2031],
        [0.8047, 0.9245, 0.2046],
        [0.8413, 0.8999, 0.2093],
        [0.8753, 0.8727, 0.2156],
        [0.9060, 0.8434, 0.2219],
        [0.9330, 0.8124, 0.2267],
        [0.9556, 0.7800, 0.2284],
        [0.9732, 0.7468, 0.2254],
        [0.9855, 0.7125, 0.2165],
        [0.9931, 0.6741, 0.2035],
        [0.9965, 0.6319, 0.1874],
        [0.9959, 0.5870, 0.1690],
        [0.9915, 0.5404, 0.1491],
        [0.9836, 0.4929, 0.1285],
        [0.9723, 0.4456, 0.1080],
        [0.9580, 0.3996, 0.0883],
        [0.9408, 0.3557, 0.0703],
        [0.9210, 0.3149, 0.0548],
        [0.8989, 0.2782, 0.0424],
        [0.8742, 0.2453, 0.0330],
        [0.8466, 0.2141, 0.0249],
        [0.8161, 0.1846, 0.0181],
        [0.7826, 0.1569, 0.0126],
        [0.7462, 0.1310, 0.0085],
        [0.7068, 0.1068, 0.0057],
        [0.6645, 0.0844, 0.0042],
        [0.6192, 0.0637, 0.0041],
        [0.5710, 0.0447, 0.0053],
        [0.5199, 0.0276, 0.0078],
        [0.4796, 0.0158, 0.0106],
    ]
)


def denormalize(images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Tensor:
    """Undo ``(x - mean) / std`` per channel and clamp to [0, 1]. Non-finite values become 0."""
    images = torch.nan_to_num(images.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
    channels = images.shape[1]
    if std is not None:
        images = images * torch.as_tensor(list(std), dtype=torch.float32).reshape(1, channels, 1, 1)
    if mean is not None:
        images = images + torch.as_tensor(list(mean), dtype=torch.float32).reshape(1, channels, 1, 1)
    return images.clamp(0, 1)


def to_rgb(images: Tensor) -> Tensor:
    """(N, C, H, W) with any C to (N, 3, H, W): grey for 1 channel, the grey mean for 2, the first three for more."""
    channels = images.shape[1]
    if channels == 3:
        return images
    if channels > 3:
        return images[:, :3]
    return images.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)


def turbo(values: Tensor) -> Tensor:
    """Map values in [0, 1] of shape (...) to RGB colours of shape (..., 3) with the Turbo colormap."""
    position = values.float().clamp(0, 1) * (_TURBO.shape[0] - 1)
    low = position.floor().long().clamp(max=_TURBO.shape[0] - 2)
    fraction = (position - low)[..., None]
    return _TURBO[low] * (1 - fraction) + _TURBO[low + 1] * fraction


def robust_max(values: Tensor, quantile: float = 0.99) -> Tensor:
    """A high quantile of ``values`` (a maximum that one hot pixel cannot dominate); at least a tiny epsilon."""
    flat = values.float().flatten()
    if flat.numel() > 100_000:
        flat = flat[torch.linspace(0, flat.numel() - 1, 100_000).long()]
    return torch.quantile(flat, quantile).clamp(min=1e-12)


def scale_cams(cams: Sequence[Tensor], scale: str = "batch", *, signed: bool = False) -> list[Tensor]:
    """Map raw maps (each (N, h, w)) to [0, 1].

    ``"batch"`` divides all maps by one robust maximum, so a weak map looks weak next to a strong one (per-image
    scaling makes every map look equally confident and hides that). ``"image"`` scales each map on its own.
    CAMs are >= 0 and go from 0 to 1; ``signed`` maps (attributions) are scaled by their largest magnitude and go
    from 0 (most negative) through 0.5 (zero) to 1 (most positive), for :func:`diverging`.
    """
    known("CAM scale", scale, CAM_SCALES)
    cams = [torch.nan_to_num(cam.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0) for cam in cams]
    magnitudes = [cam.abs() if signed else cam for cam in cams]
    if scale == "batch":
        top = robust_max(torch.cat([magnitude.flatten() for magnitude in magnitudes]))
        tops = [top] * len(cams)
    else:
        tops = [magnitude.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None] for magnitude in magnitudes]
    if signed:
        return [((cam / top).clamp(-1, 1) + 1) / 2 for cam, top in zip(cams, tops, strict=True)]
    return [(cam / top).clamp(0, 1) for cam, top in zip(cams, tops, strict=True)]


# A diverging colormap for signed maps: blue (negative), light grey (zero), red (positive), Moreland's cool-warm ends.
_DIVERGING = torch.tensor([[0.230, 0.299, 0.754], [0.865, 0.865, 0.865], [0.706, 0.016, 0.150]])


def diverging(values: Tensor) -> Tensor:
    """Map values in [0, 1] (0.5: zero) of shape (...) to RGB colours (..., 3): blue, light grey, red."""
    position = values.float().clamp(0, 1) * 2
    low = position.floor().long().clamp(max=1)
    fraction = (position - low)[..., None]
    return _DIVERGING[low] * (1 - fraction) + _DIVERGING[low + 1] * fraction


def overlay(
    images: Tensor, heat: Tensor, alpha: float = 0.5, colormap: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """Blend heat maps (N, h, w) in [0, 1], upsampled bilinearly, over RGB images (N, 3, H, W) in [0, 1], coloured
    with ``colormap`` (default :func:`turbo`)."""
    size = images.shape[-2:]
    heat = F.interpolate(heat[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    colours = (colormap or turbo)(heat).permute(0, 3, 1, 2)
    return ((1 - alpha) * images + alpha * colours).clamp(0, 1)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def upscale(images: Tensor, min_size: int) -> Tensor:
    """Enlarge (N, C, H, W) by an integer factor (nearest) until the shorter side is at least ``min_size``."""
    factor = max(1, -(-min_size // max(1, min(images.shape[-2:]))))
    if factor == 1:
        return images
    return F.interpolate(images, scale_factor=factor, mode="nearest")


def caption(
    tiles: Tensor,
    captions: Sequence[str],
    frame_colours: Sequence[tuple[float, float, float] | None] | None = None,
    *,
    border: int = 2,
    lines: int | None = None,
) -> Tensor:
    """Add a caption strip under each tile (N, 3, H, W); ``frame_colours`` optionally frames a tile (e.g. red: mistake).

    The strip is high enough for ``lines`` lines (default: the longest caption), so grids of several rows match.
    """
    count, _, height, width = tiles.shape
    lines = lines or max(1, max((text.count("\n") + 1 for text in captions), default=1))
    font_size = max(9, min(14, width // 8))
    strip = lines * (font_size + 3) + 4
    result = torch.zeros(count, 3, height + strip, width)
    result[:, :, :height] = tiles
    for index, text in enumerate(captions):
        colour = frame_colours[index] if frame_colours is not None else None
        if colour is not None:
            frame = torch.tensor(colour, dtype=torch.float32)[:, None, None]
            result[index, :, :, :border] = frame
            result[index, :, :, width - border :] = frame
            result[index, :, :border, :] = frame
            result[index, :, height + strip - border :, :] = frame
        if not text:
            continue
        canvas = Image.new("RGB", (width, strip), (0, 0, 0))
        ImageDraw.Draw(canvas).multiline_text((3, 2), text, fill=(255, 255, 255), font=_font(font_size), spacing=2)
        pixels = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1)
        inner = slice(border, width - border) if colour is not None else slice(0, width)
        result[index, :, height : height + strip - (border if colour is not None else 0), inner] = pixels[
            :, : strip - (border if colour is not None else 0), inner
        ]
    return result


def grid(tiles: Tensor, columns: int, padding: int = 2) -> Tensor:
    """Lay out tiles (N, 3, H, W) in rows of ``columns`` with torchvision's ``make_grid``, on a grey background."""
    return make_grid(tiles, nrow=max(1, columns), padding=padding, pad_value=0.25).clamp(0, 1)


OUTLINE_COLOUR = (1.0, 1.0, 1.0)


def draw_outlines(tiles: Tensor, masks: Tensor, colour: tuple[float, float, float] = OUTLINE_COLOUR) -> Tensor:
    """Draw the outline of each object mask (N, h, w) (any size: resized nearest to the tiles') on tiles
    (N, 3, H, W), a line about a hundredth of the tile wide (at least one pixel).

    Example::

        >>> masks = torch.zeros(1, 8, 8, dtype=torch.bool)
        >>> masks[0, 2:6, 2:6] = True
        >>> drawn = draw_outlines(torch.zeros(1, 3, 8, 8), masks)
        >>> drawn[0, 0].int().tolist()[2], drawn[0, 0, 3, 3].item()
        ([0, 0, 1, 1, 1, 1, 0, 0], 0.0)
    """
    inside = F.interpolate(masks[:, None].float().cpu(), size=tiles.shape[-2:], mode="nearest")
    width = max(1, round(min(tiles.shape[-2:]) / 100))
    eroded = -F.max_pool2d(-inside, 2 * width + 1, stride=1, padding=width)
    line = (inside > 0.5) & (eroded < 0.5)
    colour = torch.tensor(colour, dtype=tiles.dtype)[None, :, None, None].expand_as(tiles)
    return torch.where(line.expand_as(tiles), colour, tiles)


def render_maps(
    images: Tensor,
    cam_rows: Sequence[Tensor],
    row_captions: Sequence[Sequence[str]] | Sequence[str],
    *,
    image_captions: Sequence[str] | None = None,
    mistakes: Tensor | None = None,
    alpha: float = 0.5,
    scale: str = "batch",
    signed: bool = False,
    min_tile: int = 96,
    objects: Tensor | None = None,
) -> Tensor:
    """A grid with one column per image: the image on top, then one heat-map overlay per row of ``cam_rows``.

    Args:
        images: (N, C, H, W) display images in [0, 1] (already denormalized).
        cam_rows: one (N, h, w) raw CAM tensor per row (for example the predicted class, then the true class).
        row_captions: per row, N captions (a flat list of N strings is taken as one row).
        image_captions: N captions for the image row.
        mistakes: (N,) bool; those columns get a red frame, the others green.
        alpha: heat-map opacity.
        scale: ``"batch"`` (one scale for all maps) or ``"image"`` (see :func:`scale_cams`).
        signed: the maps have a sign (attributions): shown in the :func:`diverging` colormap, zero light grey.
        objects: (N, H, W) object masks, whose outlines are drawn on every tile (:func:`draw_outlines`).
    """
    count = images.shape[0]
    if row_captions and isinstance(row_captions[0], str):
        row_captions = [row_captions]  # type: ignore[list-item]
    rgb = upscale(to_rgb(images.float().cpu()), min_tile)
    frame_colours = None
    if mistakes is not None:
        frame_colours = [MISTAKE_COLOUR if bool(wrong) else CORRECT_COLOUR for wrong in mistakes]
    image_captions = list(image_captions or [""] * count)
    lines = max(text.count("\n") + 1 for text in image_captions + [t for row in row_captions for t in row])

    def outlined(tiles: Tensor) -> Tensor:
        return tiles if objects is None else draw_outlines(tiles, objects)

    rows = [caption(outlined(rgb), image_captions, frame_colours, lines=lines)]
    colormap = diverging if signed else turbo
    for heat, captions in zip(scale_cams(cam_rows, scale, signed=signed), row_captions, strict=True):
        rows.append(caption(outlined(overlay(rgb, heat, alpha, colormap)), list(captions), frame_colours, lines=lines))
    return grid(torch.cat(rows), columns=count)


def render_activations(images: Tensor, activations: Tensor, *, max_channels: int = 16, min_tile: int = 48) -> Tensor:
    """One row per image: the image, then its first ``max_channels`` feature maps, each tile scaled on its own.

    A channel that is constant on an image (a dead ReLU) shows black.
    """
    maps = torch.nan_to_num(activations.detach().float().cpu()[:, :max_channels])
    count, channels = maps.shape[:2]
    low = maps.flatten(2).amin(dim=2)[..., None, None]
    high = maps.flatten(2).amax(dim=2)[..., None, None]
    maps = ((maps - low) / (high - low).clamp(min=1e-12)).clamp(0, 1)
    rgb = to_rgb(images.float().cpu())
    tile = max(min_tile, *maps.shape[-2:])
    rgb = F.interpolate(rgb, size=(tile, round(tile * rgb.shape[-1] / rgb.shape[-2])), mode="bilinear")
    maps = F.interpolate(maps, size=rgb.shape[-2:], mode="nearest")
    colours = turbo(maps).permute(0, 1, 4, 2, 3)  # (N, C, 3, H, W)
    tiles = torch.cat([rgb[:, None], colours], dim=1).reshape(count * (channels + 1), 3, *rgb.shape[-2:])
    return grid(tiles, columns=channels + 1)


def render_patterns(images: Tensor, captions: Sequence[str], *, columns: int = 8, min_tile: int = 96) -> Tensor:
    """Filter or class patterns (K, C, H, W) in [0, 1] as a captioned grid."""
    tiles = upscale(to_rgb(images.detach().float().cpu().clamp(0, 1)), min_tile)
    return grid(caption(tiles, list(captions)), columns=min(columns, tiles.shape[0]))


def class_name(index: int, names: Sequence[str] | None) -> str:
    """The name of class ``index`` from ``names`` (indexed by class), or the index itself."""
    if names is not None and 0 <= index < len(names):
        return str(names[index])
    return str(index)


def render_columns(
    columns: Sequence[Sequence[tuple[Tensor, str, tuple[float, float, float] | None]]], *, min_tile: int = 96
) -> Tensor:
    """A grid of one column per image, each a list of ``(tile (3, H, W), caption, frame colour or None)`` from the
    top; shorter columns are filled with empty tiles. All tiles of the grid have the same size."""
    rows = max(len(column) for column in columns)
    size = columns[0][0][0].shape[-2:]
    blank = (torch.full((3, *size), 0.25), "", None)
    padded = [list(column) + [blank] * (rows - len(column)) for column in columns]
    tiles = [[upscale(tile[None], min_tile)[0] for tile, _, _ in column] for column in padded]
    lines = max(text.count("\n") + 1 for column in padded for _, text, _ in column)
    grid_rows = []
    for row in range(rows):
        grid_rows.append(
            caption(
                torch.stack([column[row] for column in tiles]),
                [column[row][1] for column in padded],
                [column[row][2] for column in padded],
                lines=lines,
            )
        )
    return grid(torch.cat(grid_rows), columns=len(columns))


def class_colours(masks: Tensor, num_classes: int) -> Tensor:
    """(N, H, W) class masks as RGB (N, 3, H, W), one Turbo colour per class."""
    return turbo(masks.float() / max(1, num_classes - 1)).permute(0, 3, 1, 2)


def render_results(
    results: Results,
    images: Tensor,
    labels: Tensor | None,
    options: Options,
    *,
    instance: str | None = None,
    objects: Tensor | None = None,
) -> dict[str, Tensor]:
    """Turn a run's :class:`~lightning_cnnsee.run.results.Results` into ``{tag: (3, H, W) image}``.

    ``images`` are the (normalized) inputs the run saw, shown denormalized with ``options.mean`` and ``std``;
    ``labels`` add the true class (a second row, and a red frame on each mistake). ``instance`` names the
    callback in the tags (see :mod:`lightning_cnnsee.vocabulary.tags`). ``objects``, (N, H, W) masks
    (:func:`~lightning_cnnsee.explain.localization.object_masks`), are outlined on a classifier's maps.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from lightning_cnnsee.run.options import Options
        >>> from lightning_cnnsee.run.visualization import visualize
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                       nn.Linear(4, 2))
        >>> options = Options(techniques=["gradcam", "activations"])
        >>> images, labels = torch.rand(2, 3, 12, 12), torch.tensor([0, 1])
        >>> sorted(render_results(visualize(model, images, labels, options), images, labels, options))
        ['cnnsee/activations/0', 'cnnsee/gradcam/1']
    """
    display = denormalize(images, options.mean, options.std)
    rendered: dict[str, Tensor] = {}
    if results.kind in ("classification", "binary") and results.logits is not None:
        labels = class_indices(labels, results.kind)
        rendered.update(_render_classification(results, display, labels, options, instance, objects))
    elif results.pairs is not None and results.logits is not None:
        rendered.update(_render_pairs(results, display, labels, options, instance))
    for layer, maps in results.activations.items():
        rendered[make_tag("activations", layer, instance=instance)] = render_activations(
            display, maps, max_channels=options.activation_channels
        )
    names = options.class_names
    for layer, found in results.filters.items():
        captions = [f"ch {c}\n{a:.2f}" for c, a in zip(found.channels, found.activations.tolist(), strict=True)]
        rendered[make_tag("filters", layer, instance=instance)] = render_patterns(found.images, captions)
    if results.class_patterns is not None:
        found = results.class_patterns
        captions = [
            f"{class_name(c, names)}\n{a:.2f}" for c, a in zip(found.channels, found.activations.tolist(), strict=True)
        ]
        rendered[make_tag("classes", instance=instance)] = render_patterns(found.images, captions)
    return rendered


#: Attribution methods whose maps have a sign (shown in the diverging colormap); the others are magnitudes.
SIGNED_ATTRIBUTIONS = ("input_x_gradient", "integrated_gradients", "occlusion", "guided_backprop", "guided_gradcam")


def _render_classification(
    results: Results,
    display: Tensor,
    labels: Tensor | None,
    options: Options,
    instance: str | None,
    objects: Tensor | None = None,
) -> dict[str, Tensor]:
    """Grad-CAM and attributions: a column per image, the image, the map of the predicted class, of the true class."""
    names = options.class_names
    probabilities = class_probabilities(results.logits).cpu()  # type: ignore[arg-type]  # sigmoid for one logit
    predicted = probabilities.argmax(dim=-1)
    image_captions, predicted_captions, true_captions = [], [], []
    for index in range(display.shape[0]):
        guess = int(predicted[index])
        predicted_captions.append(f"pred {class_name(guess, names)}\np={probabilities[index, guess]:.2f}")
        if labels is not None:
            truth = int(labels[index])
            mark = "ok" if guess == truth else "WRONG"
            image_captions.append(f"#{index} {mark}\nlabel {class_name(truth, names)}")
            true_captions.append(f"true {class_name(truth, names)}\np={probabilities[index, truth]:.2f}")
        else:
            image_captions.append(f"#{index}")
    mistakes = None if labels is None else predicted != labels.cpu()
    rendered = {}
    sets = [
        ("gradcam", results.cams_predicted, results.cams_true),
        ("attributions", results.attributions_predicted, results.attributions_true),
    ]
    for kind, predicted_maps, true_maps in sets:
        for name, maps in predicted_maps.items():
            rows = [attribution_map(maps)]
            captions = [predicted_captions]
            if name in true_maps:
                rows.append(attribution_map(true_maps[name]))
                captions.append(true_captions)
            rendered[make_tag(kind, name, instance=instance)] = render_maps(
                display,
                rows,
                captions,
                image_captions=image_captions,
                mistakes=mistakes,
                alpha=options.cam_alpha,
                scale=options.cam_scale,
                signed=name in SIGNED_ATTRIBUTIONS,
                objects=objects,
            )
    return rendered


def _render_pairs(
    results: Results, display: Tensor, labels: Tensor | None, options: Options, instance: str | None
) -> dict[str, Tensor]:
    """Multi-label and segmentation models: a column per image, the image (for segmentation also the predicted and
    the true mask), then a map per label predicted or true, or per class of the predicted mask."""
    scores = results.logits.float().cpu()  # type: ignore[union-attr]
    images, classes = results.pairs  # type: ignore[misc]
    rgb = upscale(to_rgb(display.float().cpu()), 96)
    rendered = {}
    for layer, maps in results.pair_cams.items():
        heat = overlay(rgb[images], scale_cams([maps], options.cam_scale)[0], options.cam_alpha)
        columns = []
        for index in range(display.shape[0]):
            column = [(rgb[index], f"#{index}", None), *_mask_tiles(results.kind, scores, labels, index, rgb)]
            for pair in (images == index).nonzero().flatten().tolist():
                text, colour = _pair_caption(results.kind, scores, labels, index, int(classes[pair]), options)
                column.append((heat[pair], text, colour))
            columns.append(column)
        rendered[make_tag("gradcam", layer, instance=instance)] = render_columns(columns)
    return rendered


Tile = tuple[Tensor, str, "tuple[float, float, float] | None"]


def _mask_tiles(kind: str, scores: Tensor, labels: Tensor | None, index: int, rgb: Tensor) -> list[Tile]:
    """A segmentation image's predicted mask, and its true mask when the labels are masks; nothing for other kinds."""
    if kind != "segmentation":
        return []
    size = rgb.shape[-2:]
    predicted = F.interpolate(scores.argmax(dim=1)[index][None, None].float(), size=size, mode="nearest")[0, 0]
    tiles: list[Tile] = [(class_colours(predicted[None], scores.shape[1])[0], "predicted mask", None)]
    if labels is not None and labels.ndim == 3:
        truth = F.interpolate(labels[index][None, None].float().cpu(), size=size, mode="nearest")[0, 0]
        tiles.append((class_colours(truth[None], scores.shape[1])[0], "true mask", None))
    return tiles


def _pair_caption(
    kind: str, scores: Tensor, labels: Tensor | None, index: int, label: int, options: Options
) -> tuple[str, tuple[float, float, float] | None]:
    """The caption of one (image, class) map and its frame: for segmentation the class's share of the predicted
    mask; for multi-label the label's probability, whether it is predicted and true, and a green frame where the
    two agree, red where not (no frame without labels)."""
    names = options.class_names
    if kind == "segmentation":
        area = float((scores[index].argmax(dim=0) == label).float().mean())
        return f"{class_name(label, names)}\narea {area:.0%}", None
    chance = float(scores[index, label].sigmoid())
    is_true = labels is not None and labels.ndim == 2 and bool(labels[index, label])
    guessed = chance > 0.5
    marks = "+".join(m for m, on in (("pred", guessed), ("true", is_true)) if on)
    colour = None if labels is None else (CORRECT_COLOUR if guessed == is_true else MISTAKE_COLOUR)
    return f"{class_name(label, names)}\np={chance:.2f} {marks}", colour
