"""A synthetic image-classification dataset: one coloured shape among clutter, classified by its outline.

Each image holds one large shape (:data:`CLASS_NAMES`: circle, square, triangle, cross, ring, star) at a random
position, size and rotation, drawn over a background with a colour gradient, a few small blobs and line segments
of other colours, and pixel noise. The class is decided by the outline only: the colours of the shape, the
background and the clutter are drawn independently of the class, so a model cannot classify by colour and has to
find the shape. That makes it a good test bed for Grad-CAM (the map should sit on the shape, not on the clutter)
and for filter ascent (edges, corners and curves appear in the filters).

Everything is rendered with numpy from coordinate grids and anti-aliased signed distances, in one vectorized pass
at construction: 2048 images of 48x48 take a fraction of a second, and the same ``seed`` always gives the same
images. No Lightning here; :mod:`lightning_cnnsee.demo.train` wraps it in a ``LightningDataModule``.

Images are float32 (3, H, W) in [0, 1]. With ``normalize=True`` they come out standardized with :data:`MEAN` and
:data:`STD` (what a real training pipeline feeds a network); give the same ``MEAN``/``STD`` to
:class:`~lightning_cnnsee.CNNSee` so it can show them in their true colours.

Example::

    >>> from lightning_cnnsee.demo.data import CLASS_NAMES, ShapesDataset
    >>> dataset = ShapesDataset(num_images=12, image_size=32, seed=0)
    >>> image, label = dataset[0]
    >>> image.shape, image.dtype, label.dtype
    (torch.Size([3, 32, 32]), torch.float32, torch.int64)
    >>> bool(image.min() >= 0 and image.max() <= 1), CLASS_NAMES[label] in CLASS_NAMES
    (True, True)
    >>> dataset.labels.bincount().tolist()
    [2, 2, 2, 2, 2, 2]
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_cnnsee.vocabulary.checks import positive_int

__all__ = ["CLASS_NAMES", "MEAN", "STD", "ShapesDataset", "render_shapes"]

CLASS_NAMES: list[str] = ["circle", "square", "triangle", "cross", "ring", "star"]

# Per-channel mean and standard deviation of ShapesDataset images (measured on 16384 images of 48x48, seed 0;
# they hardly depend on the seed or the image size, because every colour is drawn uniformly).
MEAN: list[float] = [0.5, 0.5, 0.5]
STD: list[float] = [0.263, 0.263, 0.263]

_CHUNK = 1024  # images rendered at once; bounds the memory of the (chunk, H, W) grids


class ShapesDataset(Dataset):
    """Synthetic images of one coloured shape among clutter; the label is the shape (see :data:`CLASS_NAMES`).

    All images are generated once, in ``__init__``, from ``seed``; the dataset is then plain in-memory tensors,
    :attr:`images` (N, 3, H, W) and :attr:`labels` (N,). Classes are balanced (counts differ by at most one) and in
    random order.

    Args:
        num_images: how many images to generate.
        image_size: height and width in pixels (at least 24).
        seed: seed of every random draw; the same seed gives the same images.
        normalize: return ``(image - MEAN) / STD`` instead of the image in [0, 1].
        marker: paint a class-coded marker (a square of :data:`MARKER_COLORS`, an eighth of the image wide) in the
            top-left corner of every image: a shortcut that predicts the label better than the shape, as a
            watermark or a hospital tag would (see "Catching shortcuts" in the README).
        with_boxes: items are ``(image, label, box)``, ``box`` the shape's (4,) ``(x0, y0, x1, y1)`` in pixels
            (:attr:`boxes`), for ``CNNSee(object_key=2)``.

    Example::

        >>> from lightning_cnnsee.demo.data import ShapesDataset
        >>> train = ShapesDataset(num_images=64, normalize=True, seed=0)
        >>> image, label = train[3]
        >>> tuple(image.shape), int(label) in range(6)
        ((3, 48, 48), True)
    """

    def __init__(
        self,
        num_images: int = 2048,
        image_size: int = 48,
        seed: int = 0,
        normalize: bool = False,
        marker: bool = False,
        with_boxes: bool = False,
    ) -> None:
        positive_int("num_images", num_images)
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 24:
            raise ValueError(f"image_size must be an int of at least 24 (pixels), got {image_size!r}")
        self.num_images = num_images
        self.image_size = image_size
        self.seed = seed
        self.normalize = normalize
        self.class_names = list(CLASS_NAMES)
        self.marker, self.with_boxes = marker, with_boxes
        rng = np.random.default_rng(seed)
        labels = rng.permutation(np.arange(num_images) % len(CLASS_NAMES))
        images = np.empty((num_images, 3, image_size, image_size), dtype=np.float32)
        boxes = np.empty((num_images, 4), dtype=np.float32)
        for start in range(0, num_images, _CHUNK):
            stop = min(start + _CHUNK, num_images)
            images[start:stop] = render_shapes(labels[start:stop], image_size, rng, boxes=boxes[start:stop])
        if marker:
            paint_marker(images, labels)
        self.images = torch.from_numpy(images)
        self.boxes = torch.from_numpy(boxes)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        if normalize:
            mean = torch.tensor(MEAN).view(1, 3, 1, 1)
            std = torch.tensor(STD).view(1, 3, 1, 1)
            self.images = (self.images - mean) / std

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if self.with_boxes:
            return self.images[index], self.labels[index], self.boxes[index]
        return self.images[index], self.labels[index]


#: The marker's colour for each class (``ShapesDataset(marker=True)``): far apart, so one look tells the class.
MARKER_COLORS = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
    dtype=np.float32,
)


def paint_marker(images: np.ndarray, labels: np.ndarray) -> None:
    """Paint each image's class-coded marker in place: a square of :data:`MARKER_COLORS` ``[label]``, an eighth of
    the image wide, in the top-left corner."""
    side = max(2, images.shape[-1] // 8)
    images[:, :, :side, :side] = MARKER_COLORS[labels % len(MARKER_COLORS)][:, :, None, None]


def render_shapes(
    labels: np.ndarray, image_size: int, rng: np.random.Generator, boxes: np.ndarray | None = None
) -> np.ndarray:
    """Render one image per label (an index into :data:`CLASS_NAMES`): (N, 3, S, S) float32 in [0, 1]; ``boxes``
    (N, 4), when given, receives each shape's box ``(x0, y0, x1, y1)`` in pixels (its outline's farthest reach,
    1.13 times the radius, in every direction, within the image).

    Example::

        >>> import numpy as np
        >>> from lightning_cnnsee.demo.data import render_shapes
        >>> render_shapes(np.array([0, 5]), 32, np.random.default_rng(0)).shape
        (2, 3, 32, 32)
    """
    n, size = len(labels), image_size
    coords = np.arange(size, dtype=np.float32) + 0.5
    ys, xs = coords[None, :, None], coords[None, None, :]  # (1, S, 1) and (1, 1, S)

    # Background: a random colour with a linear gradient towards a second random colour.
    colour_a, colour_b = _random_colours(rng, n), _random_colours(rng, n)
    angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    ramp = ((xs - size / 2) * np.cos(angle) + (ys - size / 2) * np.sin(angle)) / size + 0.5  # (N, S, S)
    mix = np.clip(ramp, 0, 1) * _col(rng.uniform(0.0, 0.6, n))
    images = np.repeat(colour_a[:, :, None, None], size, axis=2).repeat(size, axis=3)
    _paint(images, mix, colour_b)

    # Clutter: small blobs and thin line segments of random colours, up to 3 of each per image.
    for _ in range(3):
        visible = rng.random(n) < 0.75
        cy, cx = rng.uniform(0, size, n), rng.uniform(0, size, n)
        radius = rng.uniform(0.03, 0.07, n) * size
        distance = np.hypot(ys - _col(cy), xs - _col(cx)) - _col(radius)
        _paint(images, _coverage(distance) * _col(visible), _random_colours(rng, n))
    for _ in range(3):
        visible = rng.random(n) < 0.75
        cy, cx = rng.uniform(0, size, n), rng.uniform(0, size, n)
        half_length = rng.uniform(0.08, 0.2, n) * size
        theta = rng.uniform(0, np.pi, n)
        along, across = _rotate(ys - _col(cy), xs - _col(cx), theta)
        distance = np.maximum(np.abs(along) - _col(half_length), np.abs(across) - 0.6)
        _paint(images, _coverage(distance) * _col(visible), _random_colours(rng, n))

    # The shape: random size, rotation and position (fully inside the image), a colour far from the background's.
    radius = rng.uniform(0.2, 0.32, n) * size
    cy = rng.uniform(radius + 1, size - radius - 1)
    cx = rng.uniform(radius + 1, size - radius - 1)
    theta = rng.uniform(0, 2 * np.pi, n)
    shape_colour = _contrasting_colours(rng, (colour_a + colour_b) / 2)
    along, across = _rotate(ys - _col(cy), xs - _col(cx), theta)
    distance = np.empty((n, size, size), dtype=np.float32)
    for label, signed_distance in enumerate(_SHAPES):
        chosen = labels == label
        if chosen.any():
            distance[chosen] = signed_distance(along[chosen], across[chosen], _col(radius[chosen]))
    _paint(images, _coverage(distance), shape_colour)
    if boxes is not None:
        reach = 1.13 * radius  # the square's corner (0.8 r * sqrt 2) and the star's points (1.12 r) reach farthest
        boxes[:] = np.clip(np.stack([cx - reach, cy - reach, cx + reach, cy + reach], axis=1), 0, size)

    images += 0.04 * rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(images, 0, 1, out=images)


def _col(values: np.ndarray) -> np.ndarray:
    """Per-image values as (N, 1, 1) float32, to broadcast against (N, S, S) grids."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _rotate(dy: np.ndarray, dx: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to a centre, rotated by ``theta`` per image: (along, across), each (N, S, S)."""
    cos, sin = _col(np.cos(theta)), _col(np.sin(theta))
    return dx * cos + dy * sin, dy * cos - dx * sin


def _coverage(distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a pixel from a signed distance in pixels (negative inside): 1 inside, 0 outside."""
    return np.clip(0.5 - distance, 0, 1)


def _paint(images: np.ndarray, coverage: np.ndarray, colours: np.ndarray) -> None:
    """Blend ``colours`` (N, 3) into ``images`` (N, 3, S, S) in place, weighted by ``coverage`` (N, S, S)."""
    alpha = coverage[:, None]
    images *= 1 - alpha
    images += alpha * colours[:, :, None, None]


def _random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0, 1, (n, 3)).astype(np.float32)


def _contrasting_colours(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """Uniform random colours, redrawn until each is at least 0.4 (RGB distance) from its background colour."""
    colours = _random_colours(rng, len(background))
    for _ in range(100):
        close = np.linalg.norm(colours - background, axis=1) < 0.4
        if not close.any():
            break
        colours[close] = _random_colours(rng, int(close.sum()))
    return colours


# Signed distances (pixels, negative inside) of each class's shape, from rotated coordinates and a radius.
def _circle(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.hypot(u, v) - r


def _square(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) - 0.8 * r


def _triangle(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    # Equilateral, circumradius 1.1 r: the largest distance past any of the three edges.
    edges = [u * np.cos(a) + v * np.sin(a) for a in (0.0, 2 * np.pi / 3, 4 * np.pi / 3)]
    return np.maximum(np.maximum(edges[0], edges[1]), edges[2]) - 0.55 * r


def _cross(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    arm, half_width = r, 0.3 * r
    horizontal = np.maximum(np.abs(u) - arm, np.abs(v) - half_width)
    vertical = np.maximum(np.abs(u) - half_width, np.abs(v) - arm)
    return np.minimum(horizontal, vertical)


def _ring(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.abs(np.hypot(u, v) - 0.72 * r) - 0.28 * r


def _star(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    # Five points: the outline's radius goes from 1.12 r at a point to 0.42 r between two points.
    phase = (np.arctan2(v, u) * 5 / (2 * np.pi)) % 1.0
    to_point = np.abs(phase - 0.5) * 2  # 1 at a point, 0 halfway between two
    outline = r * (0.42 + 0.7 * to_point**1.5)
    return (np.hypot(u, v) - outline) * 0.6  # the outline is steep in angle, so scale down for an even edge


_SHAPES = [_circle, _square, _triangle, _cross, _ring, _star]
