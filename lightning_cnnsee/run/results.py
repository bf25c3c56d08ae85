"""What one visualization run produced, before rendering: :class:`Results`, and the patterns it optimizes.

Example::

    >>> import torch
    >>> from lightning_cnnsee.run.results import Results, explained_maps
    >>> results = Results(cams_predicted={"layer4": torch.rand(2, 4, 4)})
    >>> sorted(explained_maps(results))
    ['layer4']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from torch import Tensor

from lightning_cnnsee.explain.ascent import AscentResult
from lightning_cnnsee.explain.attributions import attribution_map

__all__ = ["PER_IMAGE_KINDS", "PatternJob", "Results", "explained_maps"]


#: The kinds of model whose maps are one per image (the predicted and the true class), shared among ranks by image.
PER_IMAGE_KINDS = ("classification", "binary")


class PatternJob(NamedTuple):
    """One filter or class pattern to optimize: ``layer`` (``None``: the model's logits), ``channel`` (or class)
    and ``kind`` (``"filters"`` or ``"classes"``)."""

    layer: str | None
    channel: int
    kind: str


@dataclass
class Results:
    """What one visualization run produced, before rendering (tensors on the CPU, or on the model's device for
    the maps).

    ``kind`` is the model's kind (``"classification"``, ``"multilabel"``, ``"segmentation"``). For classification,
    ``cams_*`` and ``attributions_*`` hold a map per image for the predicted and the true class; for the other kinds,
    ``pairs`` lists ``(image index, class index)`` of every map in ``pair_cams`` (the labels predicted or true, or the
    classes of the predicted mask). Under DDP a classifier's per-image results (``logits``, the maps,
    ``faithfulness[name][metric]``) hold this process's share of the images (``measured_images``) until
    :func:`gather_measures` puts every rank's together. ``localization[name][metric]`` holds each image's
    ``energy_inside``, ``object_area`` and ``pointing_game`` when objects are given; ``image_size`` the images' (H, W).
    """

    kind: str = "classification"
    logits: Tensor | None = None
    cams_predicted: dict[str, Tensor] = field(default_factory=dict)
    cams_true: dict[str, Tensor] = field(default_factory=dict)
    pairs: tuple[Tensor, Tensor] | None = None
    pair_cams: dict[str, Tensor] = field(default_factory=dict)
    attributions_predicted: dict[str, Tensor] = field(default_factory=dict)
    attributions_true: dict[str, Tensor] = field(default_factory=dict)
    faithfulness: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    faithfulness_random: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    measured_images: list[int] = field(default_factory=list)
    activations: dict[str, Tensor] = field(default_factory=dict)
    filters: dict[str, AscentResult] = field(default_factory=dict)
    class_patterns: AscentResult | None = None
    pattern_jobs: list[PatternJob] = field(default_factory=list)
    pattern_images: Tensor | None = None
    pattern_activations: Tensor | None = None
    patterns_seconds: float = 0.0
    #: the parts of the run that failed (``"gradcam"``, ``"attributions/<method>"``, ``"faithfulness"``,
    #: ``"activations"``, ``"filters/<layer>"``, ``"classes"``) and why: the other parts are kept.
    failures: dict[str, str] = field(default_factory=dict)
    localization: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None


def explained_maps(results: Results) -> dict[str, Tensor]:
    """Every map a run explains the predicted class with, by name: the CAM layers, then the attribution methods
    (channels summed), each (N, h, w)."""
    maps = dict(results.cams_predicted)
    for method, found in results.attributions_predicted.items():
        maps[method] = attribution_map(found)
    return maps
