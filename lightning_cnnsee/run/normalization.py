"""The input normalization of a data pipeline, read from its transforms, and a check that images fit [0, 1].

Most image pipelines end in ``Normalize(mean, std)``: torchvision's (``transforms`` and ``transforms.v2``) or
albumentations'. :func:`find_normalization` reads it from a DataLoader or a dataset without loading an image: it
follows the dataset's ``transform`` / ``transforms`` (a VisionDataset's ``StandardTransform`` included) into
``Compose``, ``nn.Sequential`` and albumentations' ``Compose`` / ``Sequential``, nested; ``RandomApply`` and
``RandomChoice`` / ``OneOf`` where they are unambiguous (always applied, or every choice normalizing alike); two
normalizations in a row compose into one. It goes through ``Subset``, ``ConcatDataset`` (when all parts agree) and
any wrapper with a ``dataset`` (or ``_dataset``) attribute, whose own transform then comes after the inner one.
Classes are recognized by their names and attributes (no torchvision or albumentations import), so stand-ins work.

A normalization that exists but has no one mean and std (a ``RandomApply`` with ``p`` < 1, choices that disagree,
parts of a ``ConcatDataset`` that disagree, albumentations' per-image ``normalization="image"``) raises
:class:`UnclearNormalization`, whose message says where and why.

:func:`outside_unit_range` tells when images (de-normalized, when a normalization is given) lie well outside
[0, 1], as normalized images do: the sign that a normalization is missing.

Example::

    >>> import torch
    >>> from torch.utils.data import Subset
    >>> from torchvision import transforms
    >>> from torchvision.datasets import FakeData
    >>> pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])])
    >>> found = find_normalization(Subset(FakeData(8, (3, 8, 8), transform=pipeline), [0, 1]))
    >>> found.mean, found.std
    ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    >>> found.where
    "the validation dataset's transform (Subset.dataset > FakeData.transform > Compose[1] > Normalize)"
    >>> outside_unit_range(torch.rand(4, 3, 8, 8)) is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MARGIN", "Normalization", "UnclearNormalization", "find_normalization", "outside_unit_range"]

#: How far past [0, 1] a channel of images may reach and still count as [0, 1] data (resampling overshoot, JPEG
#: ringing); normalized images reach about -mean/std, -2 for ImageNet's statistics, and beyond 2 above.
MARGIN = 0.25

#: The deepest nesting of datasets and transforms followed (a guard against cycles and pathological wrappers).
_MAX_DEPTH = 64

#: Containers that apply exactly one of their transforms (torchvision's, albumentations').
_ONE_OF = ("RandomChoice", "OneOf", "OneOrOther")
#: Containers that apply some of their transforms, chosen at random.
_SOME_OF = ("SomeOf",)


class UnclearNormalization(ValueError):
    """The transforms normalize, but not with one mean and std (the message says where and why)."""


@dataclass(frozen=True)
class Normalization:
    """A per-channel input normalization ``(x - mean) / std`` of images ``x`` in [0, 1], and where it was found.

    Args:
        mean: per-channel means (one value applies to every channel).
        std: per-channel standard deviations, as many as ``mean`` (or one).
        where: where it was found, for messages ("the validation dataset's transform (...)").
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    where: str = "given"

    def describe(self) -> str:
        """``"mean [...], std [...] from <where>"``, the values rounded to 4 significant digits."""
        return f"mean {_short(self.mean)}, std {_short(self.std)} from {self.where}"

    def for_channels(self, channels: int) -> Normalization:
        """The same normalization with one value per channel of images with ``channels`` channels (a single value
        repeated, as torchvision's ``Normalize`` broadcasts it); ``ValueError`` when the counts do not fit.

        Example::

            >>> Normalization((0.5,), (0.25,)).for_channels(3).mean
            (0.5, 0.5, 0.5)
        """
        values = []
        for name, found in (("mean", self.mean), ("std", self.std)):
            if len(found) not in (1, channels):
                raise ValueError(
                    f"the normalization found ({self.describe()}) has {len(found)} {name} values for images with "
                    f"{channels} channels"
                )
            values.append(found * channels if len(found) == 1 else found)
        return Normalization(values[0], values[1], self.where)


def find_normalization(data: Any, role: str = "validation") -> Normalization | None:
    """The normalization the images of ``data`` went through, read from its transforms; ``None`` when it has none.

    Args:
        data: a DataLoader, a dataset, Lightning's ``CombinedLoader``, or a list or dict of DataLoaders (the first is
            read: the one CNNSee takes its images from).
        role: which data it is, for :attr:`Normalization.where` (``"validation"``, ``"training"``).

    Raises:
        UnclearNormalization: the transforms normalize, but not with one mean and std.
    """
    loader = _first_loader(data)
    found, _ = _in_dataset(loader, (), frozenset(), 0)
    if found is None:
        return None
    mean, std, path = found
    return Normalization(tuple(mean), tuple(std), f"the {role} dataset's {_attribute(path)} ({_path(path)})")


def outside_unit_range(
    images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> list[tuple[float, float]] | None:
    """Each channel's (min, max) when most channels of ``images`` lie well outside [0, 1]; ``None`` when they fit.

    A channel lies outside when its smallest finite value is below ``-MARGIN`` or its largest above ``1 + MARGIN``;
    the images lie outside when more than half of their channels do (a strict majority: one channel of three may be
    off, such as an alpha or depth channel). With ``mean`` and ``std``, the images are first de-normalized,
    ``x * std + mean``.

    Args:
        images: (N, C, H, W) images, any dtype.
        mean, std: their normalization, one value per channel or one for all.

    Example::

        >>> normalized = (torch.rand(2, 3, 8, 8) - 0.5) / 0.2
        >>> len(outside_unit_range(normalized)), outside_unit_range(normalized, [0.5], [0.2])
        (3, None)
    """
    if images.ndim != 4 or images.shape[0] == 0:
        return None
    values = images.detach().float().cpu()
    if std is not None:
        values = values * torch.as_tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1)
    if mean is not None:
        values = values + torch.as_tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1)
    finite = values.isfinite()
    if not finite.any():
        return None
    low = torch.where(finite, values, torch.inf).amin(dim=(0, 2, 3))
    high = torch.where(finite, values, -torch.inf).amax(dim=(0, 2, 3))
    ranges = [(float(lo), float(hi)) for lo, hi in zip(low.tolist(), high.tolist(), strict=True)]
    outside = sum(1 for lo, hi in ranges if lo < -MARGIN or hi > 1 + MARGIN)
    return ranges if 2 * outside > len(ranges) else None


# ---------------------------------------------------------------- datasets
_Found = tuple[list[float], list[float], tuple[str, ...]]  # mean, std, the path where it was found


def _first_loader(data: Any) -> Any:
    flattened = getattr(data, "flattened", None)  # Lightning's CombinedLoader
    if isinstance(flattened, list):
        data = flattened
    if isinstance(data, dict):
        return next(iter(data.values()), None)
    if isinstance(data, (list, tuple)) and data and all(hasattr(item, "dataset") for item in data):
        return data[0]
    return data


def _in_dataset(
    dataset: Any, path: tuple[str, ...], seen: frozenset[int], depth: int
) -> tuple[_Found | None, frozenset[int]]:
    """The normalization of ``dataset``: that of what it wraps (or of its parts), then its own transform's; and the
    transforms applied (a wrapper that holds the very transform of what it wraps applies it once, not twice)."""
    if dataset is None or isinstance(dataset, (str, bytes, Tensor)) or id(dataset) in seen or depth > _MAX_DEPTH:
        return None, frozenset()
    seen = seen | {id(dataset)}
    name = type(dataset).__name__
    parts = getattr(dataset, "datasets", None)
    inner: _Found | None = None
    applied: frozenset[int] = frozenset()
    if isinstance(parts, (list, tuple)) and parts:  # ConcatDataset, ChainDataset
        results = [_in_dataset(part, (*path, f"{name}.datasets[{i}]"), seen, depth + 1) for i, part in enumerate(parts)]
        found = [result[0] for result in results]
        applied = frozenset().union(*(result[1] for result in results))
        inner = found[0]
        if any(not _same(inner, other) for other in found[1:]):
            said = "; ".join(
                f"part {i}: " + ("no normalization" if f is None else f"mean {_short(f[0])}, std {_short(f[1])}")
                for i, f in enumerate(found)
            )
            raise UnclearNormalization(
                f"the {len(parts)} parts of the {_path((*path, name))} normalize differently ({said})"
            )
        if inner is not None and len(parts) > 1:
            inner = (inner[0], inner[1], (*inner[2][:-1], f"{inner[2][-1]}, as all {len(parts)} parts of {name}"))
    else:
        for attribute in ("dataset", "_dataset"):
            wrapped = getattr(dataset, attribute, None)
            if wrapped is not None and not isinstance(wrapped, (str, bytes, Tensor)):
                inner, applied = _in_dataset(wrapped, (*path, f"{name}.{attribute}"), seen, depth + 1)
                break
    own: _Found | None = None
    transform, attribute = _own_transform(dataset)
    if transform is not None and id(transform) not in applied:
        own = _in_transform(transform, (*path, f"{name}.{attribute}"), depth + 1)
        applied = applied | {id(transform)}
    return _then(inner, own), applied


def _own_transform(dataset: Any) -> tuple[Any, str]:
    """A dataset's image transform: ``transform``, else ``transforms`` (a VisionDataset's StandardTransform holds the
    same ``transform``; a joint ``transforms`` of (image, target) is read as it is)."""
    transform = getattr(dataset, "transform", None)
    if callable(transform):
        return transform, "transform"
    transforms = getattr(dataset, "transforms", None)
    if callable(transforms) or isinstance(transforms, (list, tuple)):
        return transforms, "transforms"
    return None, ""


# -------------------------------------------------------------- transforms
def _in_transform(transform: Any, path: tuple[str, ...], depth: int) -> _Found | None:
    """The normalization a transform applies (every step in order, composed), or ``None``."""
    if transform is None or depth > _MAX_DEPTH:
        return None
    name = type(transform).__name__
    probability = _probability(transform)
    if probability is not None and probability <= 0:
        return None
    if name == "Normalize" and hasattr(transform, "mean") and hasattr(transform, "std"):
        found = _normalize(transform, path)
    elif name == "StandardTransform":
        found = _in_transform(getattr(transform, "transform", None), (*path, f"{name}.transform"), depth + 1)
    else:
        children = _children(transform)
        if children is None:
            return None
        steps = [_in_transform(child, (*path, f"{name}[{i}]"), depth + 1) for i, child in enumerate(children)]
        normalizing = [step for step in steps if step is not None]
        if name in _ONE_OF:
            first = steps[0] if steps else None
            if any(not _same(first, other) for other in steps[1:]):
                raise UnclearNormalization(
                    f"{_path((*path, name))} applies one of its transforms at random, and they do not all normalize "
                    f"alike"
                )
            found = first
        elif name in _SOME_OF and normalizing:
            raise UnclearNormalization(f"{_path((*path, name))} applies a normalization only in some draws")
        elif name == "RandomOrder" and len(normalizing) > 1:
            raise UnclearNormalization(f"{_path((*path, name))} applies {len(normalizing)} normalizations in any order")
        else:
            found = None
            for step in normalizing:
                found = _then(found, step)
    if found is not None and probability is not None and probability < 1:
        inside = "" if name == "Normalize" else f" (in {_path(found[2][len(path) :])})"
        raise UnclearNormalization(
            f"{_path((*path, name))} normalizes{inside} only with probability p={probability:g}, not always"
        )
    return found


def _probability(transform: Any) -> float | None:
    """A transform's probability of being applied (torchvision's ``RandomApply``, any albumentations transform)."""
    p = getattr(transform, "p", None)
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        return None
    return float(p)


def _children(transform: Any) -> list[Any] | None:
    if isinstance(transform, nn.Sequential):
        return list(transform)
    if isinstance(transform, (list, tuple)):
        return list(transform)
    children = getattr(transform, "transforms", None)
    if isinstance(children, (list, tuple, nn.ModuleList, nn.Sequential)):
        return list(children)
    return None


def _normalize(transform: Any, path: tuple[str, ...]) -> _Found:
    """``Normalize``'s mean and std for images in [0, 1] (albumentations': of pixels divided by ``max_pixel_value``,
    as it defines them)."""
    where = (*path, "Normalize")
    if hasattr(transform, "max_pixel_value") or hasattr(transform, "normalization"):  # albumentations
        kind = getattr(transform, "normalization", "standard")
        if kind != "standard":
            raise UnclearNormalization(
                f"{_path(where)} normalizes each image by its own statistics (normalization={kind!r}): there is no "
                "one mean and std to undo"
            )
        maximum = getattr(transform, "max_pixel_value", None)
        if maximum is not None:
            where = (
                *path,
                f"Normalize (albumentations, max_pixel_value={maximum:g}: pixels of 0..{maximum:g} as 0..1)",
            )
    mean, std = _values(transform.mean), _values(transform.std)
    if not mean or not std or not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise UnclearNormalization(f"{_path(where)} has mean={transform.mean!r}, std={transform.std!r}: not usable")
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise UnclearNormalization(f"{_path(where)} has {len(mean)} mean and {len(std)} std values")
    return mean, std, where


def _values(value: Any) -> list[float]:
    """Numbers as a list of Python floats (the values as given, not rounded to float32)."""
    if isinstance(value, Tensor):
        return [float(v) for v in value.detach().flatten().tolist()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return []


# ------------------------------------------------------------- arithmetic
def _broadcast(a: list[float], b: list[float]) -> tuple[list[float], list[float]]:
    if len(a) == len(b):
        return a, b
    if len(a) == 1:
        return a * len(b), b
    if len(b) == 1:
        return a, b * len(a)
    raise UnclearNormalization(f"normalizations with {len(a)} and {len(b)} channels follow each other")


def _then(first: _Found | None, second: _Found | None) -> _Found | None:
    """``first`` then ``second``: ``((x - m1) / s1 - m2) / s2 = (x - (m1 + m2 s1)) / (s1 s2)``."""
    if first is None or second is None:
        return first if second is None else second
    (m1, m2), (s1, s2) = _broadcast(first[0], second[0]), _broadcast(first[1], second[1])
    m1, s1 = _broadcast(m1, s1)
    m2, s2 = _broadcast(m2, s2)
    mean = [a + b * s for a, b, s in zip(m1, m2, s1, strict=True)]
    std = [a * b for a, b in zip(s1, s2, strict=True)]
    return mean, std, (*first[2], "then", *second[2])


def _same(first: _Found | None, second: _Found | None) -> bool:
    if first is None or second is None:
        return first is None and second is None
    try:
        pairs = [_broadcast(first[0], second[0]), _broadcast(first[1], second[1])]
    except UnclearNormalization:
        return False
    return all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for x, y in pairs for a, b in zip(x, y, strict=True))


# ---------------------------------------------------------------- messages
def _short(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _path(path: Sequence[str]) -> str:
    steps = [step for step in path if not step.startswith(("DataLoader.", "_DataLoader"))]
    return " > ".join(steps).replace(" > then > ", ", then ")


def _attribute(path: Sequence[str]) -> str:
    """``transform`` or ``transforms``: the dataset attribute the normalization was found in."""
    for step in path:
        for attribute in ("transforms", "transform"):
            if step.endswith(f".{attribute}") and not step.startswith("StandardTransform"):
                return attribute
    return "transform"
