"""Whether a saliency map sits on the object: the share of its mass inside, where it peaks, and, without objects,
whether the maps of different images all point at the same small place near the border (a shortcut's signature).

With objects (boxes or masks, turned into (N, H, W) masks by :func:`object_masks`):

- :func:`energy_inside`: the share of a map's positive mass inside the object, the energy-based pointing game of
  Wang et al. (2020, "Score-CAM"), Quantus's ``RelevanceMassAccuracy`` (Arras et al., 2022);
- :func:`object_area`: the object's share of the image, what a uniform map scores on :func:`energy_inside` (a map
  below it prefers the rest of the image to the object);
- :func:`pointing_game`: whether a map's peak falls on the object, within a tolerance of 15 pixels at 224 (Zhang et
  al., 2016, "Top-down neural attention by excitation backprop"; Quantus's ``PointingGame`` without tolerance).

Without objects, :func:`shared_spot` (see there for its definition).

Every map is first brought to the image's size the way CNNSee shows it (:func:`display_maps`: bilinear, then its
positive part), so a coarse CAM is judged on what the user sees.

Example::

    >>> import torch
    >>> from lightning_cnnsee.explain.localization import energy_inside, object_area, object_masks, pointing_game
    >>> masks = object_masks(torch.tensor([[0.0, 0.0, 4.0, 4.0]]), count=1, size=(8, 8))  # the top-left quarter
    >>> maps = torch.zeros(1, 8, 8)
    >>> maps[0, :4, :4] = 3.0
    >>> maps[0, 6, 6] = 1.0
    >>> energy_inside(maps, masks), object_area(masks), pointing_game(maps, masks)
    (tensor([0.9796]), tensor([0.2500]), tensor([1.]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SPOT_MASS",
    "SharedSpot",
    "display_maps",
    "energy_inside",
    "object_area",
    "object_masks",
    "pointing_game",
    "pointing_tolerance",
    "shared_spot",
]

#: The share of the mean map's mass that :func:`shared_spot`'s spot holds.
SPOT_MASS = 0.5


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def _boxes_to_mask(boxes: Tensor, size: tuple[int, int], where: str) -> Tensor:
    """One (H, W) bool mask: the union of ``boxes`` (K, 4), each pixel a box overlaps."""
    height, width = size
    mask = torch.zeros(height, width, dtype=torch.bool)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"objects{where}: boxes must be (K, 4) as (x0, y0, x1, y1), got shape {_shape(boxes)}.")
    for box in boxes.double().tolist():
        x0, y0, x1, y1 = box
        if not all(math.isfinite(v) for v in box):
            raise ValueError(f"objects{where}: box {box} is not finite.")
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(
                f"objects{where}: box {box} (x0, y0, x1, y1) is empty or outside the {height}x{width} image: it "
                f"needs 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} (pixels, not fractions)."
            )
        mask[math.floor(y0) : math.ceil(y1), math.floor(x0) : math.ceil(x1)] = True
    return mask


def object_masks(objects: Tensor | Sequence[Tensor], count: int, size: tuple[int, int]) -> Tensor:
    """Objects of ``count`` images of ``size`` (H, W) as (N, H, W) bool masks, checked.

    Args:
        objects: boxes (N, 4) ``(x0, y0, x1, y1)`` in pixels, one per image; a list of N (K, 4) boxes (K may be
            0: no object); or masks (N, H, W), bool or in [0, 1] (``> 0.5`` is the object). A pixel belongs to a
            box when the box overlaps it (integer boxes cover ``mask[y0:y1, x0:x1]``).
        count: how many images.
        size: their (H, W).

    Raises:
        ValueError: naming the value, for a wrong shape or count, a box that is empty or leaves the image, a mask
            of another size or with values outside [0, 1].

    Example::

        >>> object_masks([torch.tensor([[1, 1, 3, 2]]), torch.zeros(0, 4)], count=2, size=(3, 4)).int()
        tensor([[[0, 0, 0, 0],
                 [0, 1, 1, 0],
                 [0, 0, 0, 0]],
        <BLANKLINE>
                [[0, 0, 0, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]]], dtype=torch.int32)
    """
    height, width = int(size[0]), int(size[1])
    if isinstance(objects, Tensor):
        if objects.is_complex() or objects.ndim not in (2, 3):
            raise ValueError(
                f"objects of shape {_shape(objects)}: expected boxes (N, 4) (x0, y0, x1, y1), a list of N (K, 4) "
                f"boxes, or masks (N, H, W), for {count} images of {height}x{width}."
            )
        if objects.shape[0] != count:
            raise ValueError(f"objects of shape {_shape(objects)} has {objects.shape[0]} entries for {count} images.")
        if objects.ndim == 2:
            return (
                torch.stack(
                    [_boxes_to_mask(box[None].cpu(), (height, width), f"[{i}]") for i, box in enumerate(objects)]
                )
                if count
                else torch.zeros(0, height, width, dtype=torch.bool)
            )
        if tuple(objects.shape[1:]) != (height, width):
            raise ValueError(
                f"objects: masks of shape {_shape(objects)} do not match the images' size {height}x{width}."
            )
        if objects.dtype == torch.bool:
            return objects.cpu().clone()
        values = objects.detach().float().cpu()
        if not bool(((values >= 0) & (values <= 1)).all()):
            low, high = float(values.nan_to_num(-1).min()), float(values.nan_to_num(2).max())
            raise ValueError(f"objects: masks must be bool or in [0, 1], got values from {low} to {high}.")
        return values > 0.5
    if isinstance(objects, (str, bytes)) or not isinstance(objects, Sequence):
        raise ValueError(
            f"objects must be boxes (N, 4), a list of N (K, 4) boxes or masks (N, H, W), got a "
            f"{type(objects).__name__}."
        )
    if len(objects) != count:
        raise ValueError(f"objects: a list of {len(objects)} box sets for {count} images.")
    masks = []
    for index, boxes in enumerate(objects):
        boxes = torch.as_tensor(boxes, dtype=torch.float64).cpu()
        boxes = boxes.reshape(0, 4) if boxes.numel() == 0 else boxes
        masks.append(_boxes_to_mask(boxes, (height, width), f"[{index}]"))
    return torch.stack(masks) if masks else torch.zeros(0, height, width, dtype=torch.bool)


def display_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Maps (N, h, w), or attributions (N, C, h, w) (summed over channels, as CNNSee shows them), at ``size`` (H, W):
    bilinear (``align_corners=False``, as the heat maps are drawn), then the positive part, in float32; NaN and Inf
    become 0.

    Example::

        >>> display_maps(torch.tensor([[[1.0, -1.0]]]), (1, 4))
        tensor([[[1.0000, 0.5000, 0.0000, 0.0000]]])
    """
    if not isinstance(maps, Tensor) or maps.ndim not in (3, 4):
        raise ValueError(f"maps must be (N, h, w) maps or (N, C, h, w) attributions, got {_shape(maps)}.")
    maps = torch.nan_to_num(maps.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    maps = maps.sum(dim=1) if maps.ndim == 4 else maps
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return maps.clamp(min=0)


def _check(maps: Tensor, masks: Tensor) -> Tensor:
    if not isinstance(masks, Tensor) or masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) (see object_masks), got {_shape(masks)}.")
    if not isinstance(maps, Tensor) or maps.ndim not in (3, 4) or maps.shape[0] != masks.shape[0]:
        raise ValueError(f"maps of shape {_shape(maps)} do not go with masks of shape {_shape(masks)}.")
    return display_maps(maps, tuple(masks.shape[-2:]))


def energy_inside(maps: Tensor, masks: Tensor) -> Tensor:
    """The share of each map's positive mass inside its object, (N,) in [0, 1]: ``sum(map * mask) / sum(map)`` at
    the image's size (Wang et al. 2020; Quantus's ``RelevanceMassAccuracy``). NaN for a map without positive mass
    or an image without object.

    Args:
        maps: (N, h, w) maps or (N, C, h, w) attributions (see :func:`display_maps`).
        masks: (N, H, W) object masks (:func:`object_masks`).
    """
    shown = _check(maps, masks)
    inside = masks.to(shown.device).bool()
    total = shown.sum(dim=(1, 2))
    share = (shown * inside).sum(dim=(1, 2)) / total
    empty = (total <= 0) | ~inside.flatten(1).any(dim=1)
    return share.masked_fill(empty, float("nan"))


def object_area(masks: Tensor) -> Tensor:
    """Each object's share of its image, (N,): what a uniform map scores on :func:`energy_inside`."""
    if not isinstance(masks, Tensor) or masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) (see object_masks), got {_shape(masks)}.")
    return masks.bool().float().mean(dim=(1, 2))


def pointing_tolerance(size: tuple[int, int]) -> float:
    """The pointing game's tolerance in pixels: Zhang et al.'s 15 pixels at 224, scaled to the shorter side."""
    return 15 / 224 * min(size)


def pointing_game(maps: Tensor, masks: Tensor, tolerance: float | None = None) -> Tensor:
    """Whether each map's peak falls on its object, (N,) of 1.0 (a hit) and 0.0 (a miss): a hit when a pixel where
    the map is largest lies within ``tolerance`` pixels (Euclidean, between pixel centres) of a pixel of the object
    (Zhang et al. 2016; Quantus's ``PointingGame`` is ``tolerance=0``). NaN for a map without positive mass or an
    image without object.

    Args:
        maps: (N, h, w) maps or (N, C, h, w) attributions (see :func:`display_maps`).
        masks: (N, H, W) object masks (:func:`object_masks`).
        tolerance: in pixels (default :func:`pointing_tolerance`).
    """
    shown = _check(maps, masks)
    inside = masks.to(shown.device).bool()
    radius = pointing_tolerance(tuple(masks.shape[-2:])) if tolerance is None else float(tolerance)
    if radius < 0 or not math.isfinite(radius):
        raise ValueError(f"tolerance must be a finite number of pixels >= 0, got {tolerance!r}.")
    reach = int(math.floor(radius))
    offsets = torch.arange(-reach, reach + 1, device=shown.device, dtype=torch.float32)
    disk = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).float()[None, None]
    near = F.conv2d(inside.float()[:, None], disk, padding=reach)[:, 0] > 0.5
    peaks = shown == shown.amax(dim=(1, 2), keepdim=True)
    hit = (peaks & near).flatten(1).any(dim=1).float()
    empty = (shown.sum(dim=(1, 2)) <= 0) | ~inside.flatten(1).any(dim=1)
    return hit.masked_fill(empty, float("nan"))


class SharedSpot(NamedTuple):
    """Where the maps of a set of images agree: ``area``, the smallest share of the image that holds half of the
    mean map's mass; ``edge``, how far that spot lies from the centre (0: the centre, 1: the border);
    ``agreement``, how much of it one image's map already explains (1: every map the same spot)."""

    area: float
    edge: float
    agreement: float


def _spot(values: Tensor) -> Tensor:
    """The indices of the smallest set of the largest of ``values`` (flat, >= 0) holding ``SPOT_MASS`` of their sum."""
    sorted_values, order = values.sort(descending=True)
    before = sorted_values.cumsum(0) - sorted_values  # the mass of the larger values before each one
    return order[before < SPOT_MASS * float(sorted_values.sum())]


def shared_spot(maps: Tensor, size: tuple[int, int]) -> SharedSpot:
    """Whether the maps of different images all point at the same small place, and how far from the centre.

    Definition: each map, at the image's ``size`` (:func:`display_maps`), is divided by its own positive mass, so
    that every image counts once, whatever its map's scale; the mean of these maps over the images says where the
    maps agree. The *spot* is the smallest set of pixels holding ``SPOT_MASS`` (half) of the mean map's mass (its
    largest pixels first).

    - ``area`` is the spot's share of the image: 0.5 for maps spread evenly; small only when the images' maps
      concentrate on the same few pixels (maps on objects at different places spread the mean map out).
    - ``agreement`` is the median over the images of the area of each image's own spot (the same definition on its
      own map) divided by ``area``, at most 1: near 1 when every image's map sits on the same spot, about 1/k when
      the maps sit on k different places (sharp maps on objects at different places have a small mean spot too,
      but a low agreement).
    - ``edge`` is the mean, weighted by the mean map over the spot, of each pixel's distance from the image's centre
      in the max norm, ``max(|x - cx| / (W / 2), |y - cy| / (H / 2))``: 0 at the centre, 1 at the border. It is the
      centre prior: data sets frame their objects near the middle, so maps that agree there are expected, while a
      spot at a border or corner is where watermarks, tags, rulers and padding sit.

    A shortcut's signature is a small ``area``, a large ``edge`` and a high ``agreement`` (CNNSee warns at an area
    of at most 0.2, an edge of at least 0.5, outside the central square of half the image's width and height, and
    an agreement of at least 0.5). Maps without positive mass are left
    out; with fewer than two maps left, all three are NaN.

    Args:
        maps: (N, h, w) maps or (N, C, h, w) attributions of N different images.
        size: the images' (H, W).

    Example::

        >>> maps = torch.zeros(4, 6, 6)
        >>> maps[:, 0, 0] = 1.0  # every image's map on the top-left cell
        >>> spot = shared_spot(maps, (48, 48))
        >>> round(spot.area, 3), round(spot.edge, 2), spot.agreement
        (0.015, 0.92, 1.0)
    """
    shown = display_maps(maps, size)
    mass = shown.sum(dim=(1, 2))
    shown = shown[mass > 0] / mass[mass > 0][:, None, None]
    if shown.shape[0] < 2:
        return SharedSpot(float("nan"), float("nan"), float("nan"))
    mean = shown.double().mean(dim=0)
    height, width = mean.shape
    ys = (torch.arange(height, dtype=torch.float64, device=mean.device) + 0.5 - height / 2).abs() / (height / 2)
    xs = (torch.arange(width, dtype=torch.float64, device=mean.device) + 0.5 - width / 2).abs() / (width / 2)
    distance = torch.maximum(ys[:, None], xs[None, :]).flatten()
    spot = _spot(mean.flatten())
    weights = mean.flatten()[spot]
    edge = float((weights * distance[spot]).sum() / weights.sum())
    own = torch.tensor([_spot(image.double().flatten()).numel() for image in shown], dtype=torch.float64)
    agreement = min(1.0, float(own.median()) / spot.numel())
    return SharedSpot(spot.numel() / mean.numel(), edge, agreement)
