"""Turn visualization tensors into images a person can read: heat-map overlays, channel grids, captioned tiles.

Everything returns a float32 (3, H, W) tensor in [0, 1], ready for ``SummaryWriter.add_image``. Inputs may have 1,
3 or more channels (1 is shown grey, 2 as the grey mean, more than 3 by their first three) and any size.

Example::

    >>> import torch
    >>> from lightning_cnnsee.render import render_gradcam
    >>> grid = render_gradcam(torch.rand(4, 1, 28, 40), [torch.rand(4, 7, 10)], ["pred 3"] * 4)
    >>> grid.shape[0], float(grid.min()) >= 0, float(grid.max()) <= 1
    (3, True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import make_grid

CAM_SCALES = ("batch", "image")
MISTAKE_COLOR = (1.0, 0.15, 0.15)
CORRECT_COLOR = (0.2, 0.8, 0.3)

# Polynomial fit of Google's Turbo colormap (Mikhailov, 2019): perceptually smooth, readable on dark and light.
_TURBO_LOW = torch.tensor(
    [[0.13572138, 4.61539260, -42.66032258, 132.13108234],
     [0.09140261, 2.19418839, 4.84296658, -14.18503333],
     [0.10667330, 12.64194608, -60.58204836, 110.36276771]]
)
_TURBO_HIGH = torch.tensor([[-152.94239396, 59.28637943], [4.27729857, 2.82956604], [-89.90310912, 27.34824973]])


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
    x = values.float().clamp(0, 1)[..., None]
    low = torch.cat([torch.ones_like(x), x, x**2, x**3], dim=-1)
    high = torch.cat([x**4, x**5], dim=-1)
    return (low @ _TURBO_LOW.T + high @ _TURBO_HIGH.T).clamp(0, 1)


def robust_max(values: Tensor, quantile: float = 0.99) -> Tensor:
    """A high quantile of ``values`` (a maximum that one hot pixel cannot dominate); at least a tiny epsilon."""
    flat = values.float().flatten()
    if flat.numel() > 100_000:
        flat = flat[torch.linspace(0, flat.numel() - 1, 100_000).long()]
    return torch.quantile(flat, quantile).clamp(min=1e-12)


def scale_cams(cams: Sequence[Tensor], scale: str = "batch") -> list[Tensor]:
    """Map raw CAMs (each (N, h, w), >= 0) to [0, 1].

    ``"batch"`` divides all maps by one robust maximum, so a weak map looks weak next to a strong one (per-image
    scaling makes every map look equally confident and hides that). ``"image"`` scales each map on its own.
    """
    if scale not in CAM_SCALES:
        raise ValueError(f"Unknown CAM scale {scale!r}; valid choices: {list(CAM_SCALES)}.")
    cams = [torch.nan_to_num(cam.detach().float().cpu(), nan=0.0, posinf=0.0) for cam in cams]
    if scale == "batch":
        top = robust_max(torch.cat([cam.flatten() for cam in cams]))
        return [(cam / top).clamp(0, 1) for cam in cams]
    scaled = []
    for cam in cams:
        top = cam.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None]
        scaled.append((cam / top).clamp(0, 1))
    return scaled


def overlay(images: Tensor, heat: Tensor, alpha: float = 0.5) -> Tensor:
    """Blend heat maps (N, h, w) in [0, 1], upsampled bilinearly, over RGB images (N, 3, H, W) in [0, 1]."""
    size = images.shape[-2:]
    heat = F.interpolate(heat[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    colours = turbo(heat).permute(0, 3, 1, 2)
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


def caption(tiles: Tensor, captions: Sequence[str], colors: Sequence[tuple[float, float, float] | None] | None = None,
            *, border: int = 2, lines: int | None = None) -> Tensor:
    """Add a caption strip under each tile (N, 3, H, W); ``colors`` optionally frames a tile (e.g. red: mistake).

    The strip is high enough for ``lines`` lines (default: the longest caption), so grids of several rows match.
    """
    count, _, height, width = tiles.shape
    lines = lines or max(1, max((text.count("\n") + 1 for text in captions), default=1))
    font_size = max(9, min(14, width // 8))
    strip = lines * (font_size + 3) + 4
    result = torch.zeros(count, 3, height + strip, width)
    result[:, :, :height] = tiles
    for index, text in enumerate(captions):
        colour = colors[index] if colors is not None else None
        if colour is not None:
            frame = torch.tensor(colour, dtype=torch.float32)[:, None, None]
            result[index, :, :, :border] = frame
            result[index, :, :, width - border:] = frame
            result[index, :, :border, :] = frame
            result[index, :, height + strip - border:, :] = frame
        if not text:
            continue
        canvas = Image.new("RGB", (width, strip), (0, 0, 0))
        ImageDraw.Draw(canvas).multiline_text((3, 2), text, fill=(255, 255, 255), font=_font(font_size), spacing=2)
        pixels = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1)
        inner = slice(border, width - border) if colour is not None else slice(0, width)
        result[index, :, height:height + strip - (border if colour is not None else 0), inner] = pixels[
            :, : strip - (border if colour is not None else 0), inner
        ]
    return result


def grid(tiles: Tensor, columns: int, padding: int = 2) -> Tensor:
    """Lay out tiles (N, 3, H, W) in rows of ``columns`` with torchvision's ``make_grid``, on a grey background."""
    return make_grid(tiles, nrow=max(1, columns), padding=padding, pad_value=0.25).clamp(0, 1)


def render_gradcam(
    images: Tensor,
    cam_rows: Sequence[Tensor],
    row_captions: Sequence[Sequence[str]] | Sequence[str],
    *,
    image_captions: Sequence[str] | None = None,
    mistakes: Tensor | None = None,
    alpha: float = 0.5,
    scale: str = "batch",
    min_tile: int = 96,
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
    """
    count = images.shape[0]
    if row_captions and isinstance(row_captions[0], str):
        row_captions = [row_captions]  # type: ignore[list-item]
    rgb = upscale(to_rgb(images.float().cpu()), min_tile)
    colors = None
    if mistakes is not None:
        colors = [MISTAKE_COLOR if bool(wrong) else CORRECT_COLOR for wrong in mistakes]
    image_captions = list(image_captions or [""] * count)
    lines = max(text.count("\n") + 1 for text in image_captions + [t for row in row_captions for t in row])
    rows = [caption(rgb, image_captions, colors, lines=lines)]
    for heat, captions in zip(scale_cams(cam_rows, scale), row_captions):
        rows.append(caption(overlay(rgb, heat, alpha), list(captions), colors, lines=lines))
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
