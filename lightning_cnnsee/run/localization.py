"""A run's localization: whether the maps sit on the objects (with objects) or all on the same spot near the border
(without), and the shortcut warning when they do not while the model is right.

Per image, on each rank's share (:func:`measure_localization`, gathered like faithfulness): ``energy_inside``,
``object_area``, ``pointing_game``. Over all images, on the gathered maps (:func:`localization_numbers`): their
means, and :func:`~lightning_cnnsee.explain.localization.shared_spot`'s ``spot_area`` and ``spot_edge``.
:func:`shortcut_message` says when they point at a shortcut.

Example::

    >>> import torch
    >>> from lightning_cnnsee.run.localization import localization_numbers, shortcut_message
    >>> from lightning_cnnsee.run.results import Results
    >>> maps = torch.zeros(8, 6, 6)
    >>> maps[:, 0, 0] = 1.0  # every map on the top-left corner
    >>> results = Results(cams_predicted={"features": maps}, image_size=(48, 48))
    >>> numbers = localization_numbers(results)
    >>> sorted(numbers["features"])
    ['spot_agreement', 'spot_area', 'spot_edge']
    >>> print(shortcut_message("features", numbers["features"], accuracy=1.0, kind="gradcam"))  # doctest: +ELLIPSIS
    CNNSee: the features maps may show a shortcut: ...
"""

from __future__ import annotations

import math

from torch import Tensor

from lightning_cnnsee.explain.localization import energy_inside, object_area, pointing_game, shared_spot
from lightning_cnnsee.explain.targets import class_probabilities
from lightning_cnnsee.run.results import PER_IMAGE_KINDS, Results, explained_maps
from lightning_cnnsee.vocabulary.tags import make_tag

__all__ = [
    "MAX_SPOT_AREA",
    "MIN_ACCURACY",
    "MIN_SPOT_AGREEMENT",
    "MIN_SPOT_EDGE",
    "MIN_SPOT_IMAGES",
    "fixed_accuracy",
    "localization_numbers",
    "measure_localization",
    "shortcut_message",
]

#: The shortcut warning needs the model to get at least this share of the fixed images right.
MIN_ACCURACY = 0.8
#: A spot (half the mean map's mass) on at most this share of the image (uniform maps: 0.5) ...
MAX_SPOT_AREA = 0.2
#: ... at least this far from the centre (0: the centre, 1: the border; 0.5: outside the central square of half the
#: image's width and height) ...
MIN_SPOT_EDGE = 0.5
#: ... which at least this share of one image's map already covers (the images agree) ...
MIN_SPOT_AGREEMENT = 0.5
#: ... over at least this many images.
MIN_SPOT_IMAGES = 4


def measure_localization(maps: dict[str, Tensor], masks: Tensor) -> dict[str, dict[str, Tensor]]:
    """``{name: {"energy_inside", "object_area", "pointing_game": (N,)}}`` of each map of ``maps`` (each (N, h, w)
    or (N, C, H, W)) against the objects ``masks`` (N, H, W), on the CPU."""
    masks = masks.bool()
    measured = {}
    for name, found in maps.items():
        found = found.detach().to(masks.device)
        measured[name] = {
            "energy_inside": energy_inside(found, masks).cpu(),
            "object_area": object_area(masks).cpu(),
            "pointing_game": pointing_game(found, masks).cpu(),
        }
    return measured


def localization_numbers(results: Results) -> dict[str, dict[str, float]]:
    """``{name: {metric: value}}``: the mean over the images of each per-image measure of ``results.localization``,
    and, for every map explaining the predicted class, ``spot_area`` and ``spot_edge`` of
    :func:`~lightning_cnnsee.explain.localization.shared_spot` (with at least :data:`MIN_SPOT_IMAGES` images)."""
    numbers: dict[str, dict[str, float]] = {}
    for name, metrics in results.localization.items():
        numbers[name] = {metric: float(values.float().nanmean()) for metric, values in metrics.items()}
    if results.kind != "classification" or results.image_size is None:
        return numbers
    for name, maps in explained_maps(results).items():
        if maps.shape[0] >= MIN_SPOT_IMAGES:
            spot = shared_spot(maps, results.image_size)
            numbers.setdefault(name, {}).update(spot_area=spot.area, spot_edge=spot.edge, spot_agreement=spot.agreement)
    return numbers


def fixed_accuracy(results: Results, labels: Tensor | None) -> float | None:
    """The share of the images a classifier (one logit per class, or one logit of a binary classifier) gets right
    (``None`` without class-index labels or logits)."""
    if results.kind not in PER_IMAGE_KINDS or results.logits is None or labels is None or labels.ndim != 1:
        return None
    if labels.shape[0] != results.logits.shape[0]:
        return None
    predicted = class_probabilities(results.logits).argmax(dim=1)
    return float((predicted.cpu() == labels.cpu()).float().mean())


def shortcut_message(
    name: str, numbers: dict[str, float], accuracy: float | None, *, kind: str, instance: str | None = None
) -> str | None:
    """The warning for map ``name`` (a CAM layer, ``kind="gradcam"``, or an attribution method, ``"attributions"``)
    when its numbers point at a shortcut while the model gets at least :data:`MIN_ACCURACY` of the images right,
    else ``None``.

    With objects: the maps put less of their mass inside the objects than the objects' share of the image (a uniform
    map would do better). With or without: half of the mean map sits on at most :data:`MAX_SPOT_AREA` of the image,
    at least :data:`MIN_SPOT_EDGE` of the way from the centre to the border, with an agreement of at least
    :data:`MIN_SPOT_AGREEMENT` (see :func:`~lightning_cnnsee.explain.localization.shared_spot`).
    """
    if accuracy is None or not accuracy >= MIN_ACCURACY:
        return None
    where = f"See {make_tag('localization', name, instance=instance)}/"
    images = f" and the {make_tag(kind, name, instance=instance)} images"
    right = f"the model gets {accuracy:.0%} of the fixed images right"
    energy, area = numbers.get("energy_inside", math.nan), numbers.get("object_area", math.nan)
    with_objects = math.isfinite(energy) and math.isfinite(area)
    if with_objects and energy < area:
        return (
            f"CNNSee: the {name} maps may show a shortcut: {right}, but its maps put {energy:.1%} of their mass "
            f"inside the objects, less than the objects' {area:.1%} of the image (what a uniform map scores; "
            f"pointing game {numbers.get('pointing_game', math.nan):.0%}). The model may decide from something "
            f"else than the object (a marker, a border, the background). {where}energy_inside{images}."
        )
    spot_area, spot_edge = numbers.get("spot_area", math.nan), numbers.get("spot_edge", math.nan)
    agreement = numbers.get("spot_agreement", math.nan)
    if spot_area <= MAX_SPOT_AREA and spot_edge >= MIN_SPOT_EDGE and agreement >= MIN_SPOT_AGREEMENT:
        return (
            f"CNNSee: the {name} maps may show a shortcut: {right}, and the maps of all these images point at "
            f"the same small place near the border: half of their mass on {spot_area:.1%} of the image, "
            f"{spot_edge:.2f} of the way from the centre to the border, agreement {agreement:.2f}. "
            "Data artifacts sit there (a watermark, a tag, a ruler, padding); "
            + (
                f"the objects hold {energy:.1%} of the maps' mass on {area:.1%} of the image. "
                if with_objects
                else "give the objects' boxes (object_key=) to check. "
            )
            + f"{where}spot_area{images}."
        )
    return None
