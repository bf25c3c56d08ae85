"""How much a method's maps change while the model trains, and whether they change at all.

:func:`spearman` compares two batches of maps of the same images, image by image, by the Spearman rank correlation
of their values. :class:`DriftTracker` keeps, per key (a layer or a method), the first maps it was given (the
baseline, typically from the randomly initialized model) and the latest, and reports each new batch's correlation
with both. :func:`sanity_check` is the model-randomization test of Adebayo et al. (2018) in this setting: maps that
still rank the pixels as they did for the untrained model do not depend on what the model learned.

Example::

    >>> import torch
    >>> from lightning_cnnsee.explain.drift import DriftTracker
    >>> tracker = DriftTracker()
    >>> tracker.update("gradcam", torch.rand(2, 7, 7))
    {'vs_start': None, 'vs_previous': None}
    >>> same = tracker.update("gradcam", tracker.previous("gradcam"))
    >>> same["vs_start"]
    tensor([1., 1.])
    >>> tracker.sanity_check("gradcam").passed
    False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["DriftTracker", "SanityCheck", "average_ranks", "sanity_check", "spearman"]


def average_ranks(values: Tensor) -> Tensor:
    """Rank of each value in its row (1 for the smallest), ties sharing the mean of their ranks, as float64.

    The "fractional" ranking of ``scipy.stats.rankdata(method="average")``, for every row of a (N, P) tensor at once.

    Args:
        values: (N, P) tensor; NaN is not supported.

    Example::

        >>> average_ranks(torch.tensor([[10.0, 20.0, 10.0, 30.0]]))
        tensor([[1.5000, 3.0000, 1.5000, 4.0000]], dtype=torch.float64)
    """
    sorted_values, order = values.sort(dim=1, stable=True)
    count = values.shape[1]
    positions = torch.arange(count, device=values.device).expand_as(order)
    starts_group = torch.ones_like(order, dtype=torch.bool)
    starts_group[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    ends_group = torch.ones_like(starts_group)
    ends_group[:, :-1] = starts_group[:, 1:]
    # first and last sorted position of each value's group of ties
    first = torch.where(starts_group, positions, 0).cummax(dim=1).values
    last = torch.where(ends_group, positions, count - 1).flip(1).cummin(dim=1).values.flip(1)
    mean_rank = (first + last).double() / 2 + 1
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Spearman rank correlation of each image's two maps: (N,) float32 in [-1, 1].

    ``rho = pearson(rank(a), rank(b))`` over the values of each map, with average ranks for ties (Spearman, 1904;
    what ``scipy.stats.spearmanr`` computes). A constant map has no ranking: its correlation is NaN, as scipy's.

    Args:
        maps_a: (N, ...) maps, for example Grad-CAMs (N, h, w) of N images.
        maps_b: maps of the same N images, of exactly the same shape (resize one of them first if needed: the rank
            correlation of a resized map is not that of the original).

    Example::

        >>> a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]]])
        >>> spearman(a, torch.stack([a[0] * 10, -a[1]]))
        tensor([ 1., -1.])
    """
    if not isinstance(maps_a, Tensor) or not isinstance(maps_b, Tensor):
        raise TypeError(f"spearman takes two tensors, got {type(maps_a).__name__} and {type(maps_b).__name__}.")
    if maps_a.shape != maps_b.shape or maps_a.ndim < 2:
        raise ValueError(
            f"spearman needs two (N, ...) batches of maps of the same shape, got {tuple(maps_a.shape)} and "
            f"{tuple(maps_b.shape)}; resize one batch to the other's size first."
        )
    ranks_a = average_ranks(maps_a.detach().flatten(1))
    ranks_b = average_ranks(maps_b.detach().to(maps_a.device).flatten(1))
    centered_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    centered_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    covariance = (centered_a * centered_b).sum(dim=1)
    spread = (centered_a.square().sum(dim=1) * centered_b.square().sum(dim=1)).sqrt()
    rho = torch.where(spread > 0, covariance / spread.clamp(min=1e-300), torch.nan)
    return rho.clamp(-1.0, 1.0).float()


@dataclass
class SanityCheck:
    """Verdict of :func:`sanity_check`: ``passed``, the numbers it rests on, and a message that names them."""

    method: str
    passed: bool
    mean_similarity: float
    threshold: float
    similarity: Tensor
    message: str

    def __bool__(self) -> bool:
        return self.passed


def _similarity(baseline: Tensor, latest: Tensor) -> Tensor:
    """Per-image Spearman, with a defined value where a map is constant: 1 if both are, 0 if only one is."""
    rho = spearman(baseline, latest)
    constant_a = baseline.flatten(1).amin(dim=1) == baseline.flatten(1).amax(dim=1)
    constant_b = latest.flatten(1).amin(dim=1) == latest.flatten(1).amax(dim=1)
    constant_a, constant_b = constant_a.to(rho.device), constant_b.to(rho.device)
    rho = torch.where(constant_a & constant_b, 1.0, rho)
    return torch.where(constant_a ^ constant_b, 0.0, rho)


def sanity_check(method: str, baseline_maps: Tensor, latest_maps: Tensor, *, threshold: float = 0.9) -> SanityCheck:
    """Model-randomization check: do a method's maps of a trained model still look like those of its random start?

    Adebayo et al. (2018), "Sanity Checks for Saliency Maps" (https://arxiv.org/abs/1810.03292): a saliency method
    that gives (nearly) the same maps for a trained model and for a model with random weights explains the input (an
    edge detector does as well), not the model. Here the random model is the model at the start of training: the
    check fails when the mean per-image Spearman correlation (:func:`spearman`) of the ``latest_maps`` with the
    ``baseline_maps`` of the same images is ``>= threshold``. An image whose map is constant in both counts as 1
    (nothing changed), in one only as 0. Meaningful once training has changed the model.

    Args:
        method: the name of the method or layer, used in the message.
        baseline_maps: (N, ...) maps of the randomly initialized model.
        latest_maps: the maps of the same images from the trained model, of the same shape.
        threshold: the mean correlation from which the maps count as unchanged.

    Returns:
        a :class:`SanityCheck` (true when passed) with the per-image and mean similarity and a message.

    Example::

        >>> maps = torch.rand(4, 7, 7)
        >>> check = sanity_check("sobel", maps, maps + 0.01)
        >>> check.passed, check.message.split(":")[0]
        (False, 'sobel fails the model-randomization sanity check')
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}.")
    similarity = _similarity(baseline_maps, latest_maps)
    mean = float(similarity.nanmean()) if not similarity.isnan().all() else float("nan")
    passed = mean < threshold
    numbers = (
        f"mean Spearman correlation {mean:.3f} with the maps of the randomly initialized model over "
        f"{similarity.numel()} images (min {float(similarity.nan_to_num(1.0).min()):.3f}, "
        f"max {float(similarity.nan_to_num(-1.0).max()):.3f}), threshold {threshold:g}"
    )
    if passed:
        message = (
            f"{method} passes the model-randomization sanity check: {numbers}; its maps changed as the model learned."
        )
    else:
        message = (
            f"{method} fails the model-randomization sanity check: {numbers}; its maps do not follow what the model "
            "learned (Adebayo et al., 2018)."
        )
    return SanityCheck(method, passed, mean, threshold, similarity.cpu(), message)


class DriftTracker:
    """Per key (a layer or method name), the first and the latest maps, and each update's correlation with them.

    Maps are stored detached, as float32 copies on the CPU. ``state_dict()`` / ``load_state_dict()`` carry them
    through a checkpoint, so that a resumed run still compares with the maps of the very start.

    Example::

        >>> tracker = DriftTracker()
        >>> tracker.update("layer4", torch.rand(3, 7, 7))["vs_start"] is None
        True
        >>> sorted(tracker.update("layer4", torch.rand(3, 7, 7)))
        ['vs_previous', 'vs_start']
    """

    def __init__(self) -> None:
        self._start: dict[str, Tensor] = {}
        self._previous: dict[str, Tensor] = {}
        self._updates: dict[str, int] = {}

    def keys(self) -> list[str]:
        """The keys seen so far, in the order of their first update."""
        return list(self._start)

    def start(self, key: str) -> Tensor:
        """The first (baseline) maps given for ``key``."""
        return self._start[self._known(key)]

    def previous(self, key: str) -> Tensor:
        """The latest maps given for ``key``."""
        return self._previous[self._known(key)]

    def updates(self, key: str) -> int:
        """How many times ``key`` was updated."""
        return self._updates[self._known(key)]

    def _known(self, key: str) -> str:
        if key not in self._start:
            raise KeyError(f"DriftTracker has no maps for {key!r}; keys so far: {self.keys()}.")
        return key

    def update(self, key: str, maps: Tensor) -> dict[str, Tensor | None]:
        """Record ``maps`` (N, ...) for ``key``; return their per-image Spearman correlation with the first and the
        previous maps of that key: ``{"vs_start": (N,), "vs_previous": (N,)}``, both ``None`` at the first update.

        Every update of a key must use the same images, so the same shape: the correlation is image by image.
        """
        if not isinstance(key, str):
            raise TypeError(f"key must be a string (a layer or method name), got {key!r}.")
        stored = maps.detach().to(device="cpu", dtype=torch.float32, copy=True)
        if key not in self._start:
            self._start[key] = stored
            self._previous[key] = stored
            self._updates[key] = 1
            return {"vs_start": None, "vs_previous": None}
        if stored.shape != self._start[key].shape:
            raise ValueError(
                f"maps for {key!r} have shape {tuple(stored.shape)}, but its first maps had "
                f"{tuple(self._start[key].shape)}; every update of a key must map the same images the same way."
            )
        result = {"vs_start": spearman(self._start[key], stored), "vs_previous": spearman(self._previous[key], stored)}
        self._previous[key] = stored
        self._updates[key] += 1
        return result

    def sanity_check(self, key: str, *, threshold: float = 0.9) -> SanityCheck:
        """:func:`sanity_check` of the latest maps of ``key`` against its first ones."""
        return sanity_check(key, self.start(key), self.previous(key), threshold=threshold)

    def state_dict(self) -> dict[str, Any]:
        """The first and latest maps and the update count of every key (tensors and ints only)."""
        return {
            "start": dict(self._start),
            "previous": dict(self._previous),
            "updates": dict(self._updates),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Replace the tracker's content by a :meth:`state_dict`."""
        missing = {"start", "previous", "updates"} - set(state_dict)
        if missing:
            raise KeyError(f"DriftTracker state_dict lacks {sorted(missing)}; it has {sorted(state_dict)}.")
        self._start = {key: value.detach().cpu().float() for key, value in state_dict["start"].items()}
        self._previous = {key: value.detach().cpu().float() for key, value in state_dict["previous"].items()}
        self._updates = {key: int(value) for key, value in state_dict["updates"].items()}
