"""How faithful a saliency map is to the model: what happens to the class score when the pixels it ranks first go.

:func:`faithfulness` scores a batch of maps (CAMs at a layer's resolution, or per-pixel attributions) on the model
they explain, per image, with the metrics of torchcam's ``ClassificationMetric`` and ``DeletionInsertionMetric``:

- ``avg_drop`` and ``conf_increase`` (Chattopadhay et al., 2018, "Grad-CAM++"): the image is multiplied by its map;
  a faithful map keeps the class score (a low drop, often an increase);
- ``deletion_auc`` and ``insertion_auc`` (Petsiuk et al., 2018, "RISE"): the pixels are replaced by a baseline (or
  put back onto it) in the order of the map; a faithful map makes the score fall fast (a low deletion area) and rise
  fast (a high insertion area).

:func:`random_faithfulness` gives the same numbers for random maps (seeded), the reference a map must beat. All the
perturbed inputs of a call run through the model in large batches under ``torch.inference_mode()``, in eval mode;
every module's ``training`` flag is restored and nothing is left on the model.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee.explain.metrics import faithfulness
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    >>> images, maps = torch.rand(2, 3, 16, 16), torch.rand(2, 4, 4)  # maps at any resolution
    >>> scores = faithfulness(model, images, maps, targets=[0, 3], steps=8)
    >>> sorted(scores), scores["deletion_auc"].shape
    (['avg_drop', 'conf_increase', 'deletion_auc', 'insertion_auc'], torch.Size([2]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_cnnsee.explain.attributions import attribution_map
from lightning_cnnsee.explain.checks import broadcast_baseline, image_batch
from lightning_cnnsee.explain.hooks import eval_mode
from lightning_cnnsee.explain.layers import OutputKey, logits_of
from lightning_cnnsee.explain.targets import Targets, class_probabilities, resolve_targets
from lightning_cnnsee.vocabulary.checks import positive_int

__all__ = ["METRICS", "faithfulness", "normalize_maps", "random_faithfulness", "random_maps"]

METRICS = ("avg_drop", "conf_increase", "deletion_auc", "insertion_auc")

# torchcam's constants: _CAM._normalize adds 1e-8 to the range, ClassificationMetric 1e-7 to the clean score
_NORMALIZE_EPS = 1e-8
_DROP_EPS = 1e-7


def normalize_maps(maps: Tensor, images: Tensor) -> Tensor:
    """Maps as the metrics use them: (N, H, W) float32 on the images' device, each scaled to [0, 1], input-sized.

    3-D maps (N, h, w) are taken as they are; 4-D maps (N, C, h, w), per-pixel attributions, are reduced to one value
    per position by :func:`~lightning_cnnsee.explain.attributions.attribution_map`, the signed sum over channels: the
    one reduction the run's faithfulness, drift and images use. Signed, because deletion and insertion rank pixels
    by the evidence they give *for* the class: with Integrated Gradients' completeness (the attributions add up to
    ``f(x) - f(baseline)``) a pixel's signed sum is its share of the score, while the absolute value would rank
    first the pixels that argue *against* the class, and deleting them raises the score. (Saliency's default
    ``abs=True`` gradients are non-negative: both reductions agree there.) Each map is then min-max scaled on its
    own, as torchcam's ``_CAM._normalize`` does, ``(m - min m) / (max m - min m + 1e-8)`` (a constant map becomes
    zeros), and resized to the images' (H, W) bilinearly (``align_corners=False``) if its size differs. NaN stays NaN.

    Args:
        maps: (N, h, w) maps (a CAM at its layer's resolution) or (N, C, h, w) attributions.
        images: the (N, C, H, W) batch the maps explain.

    Example::

        >>> normalize_maps(torch.tensor([[[1.0, 3.0], [5.0, 5.0]]]), torch.zeros(1, 3, 2, 2))
        tensor([[[0.0000, 0.5000],
                 [1.0000, 1.0000]]])
    """
    image_batch(images)
    if not isinstance(maps, Tensor) or maps.ndim not in (3, 4):
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(
            f"maps must be (N, h, w) maps or (N, C, h, w) attributions, got {shape} for images of shape "
            f"{tuple(images.shape)}."
        )
    if maps.shape[0] != images.shape[0]:
        raise ValueError(
            f"maps has {maps.shape[0]} entries (shape {tuple(maps.shape)}) for {images.shape[0]} images "
            f"(shape {tuple(images.shape)})."
        )
    maps = maps.detach().to(device=images.device, dtype=torch.float32)
    maps = attribution_map(maps)
    low = maps.amin(dim=(1, 2), keepdim=True)
    shifted = maps - low
    scaled = shifted / (shifted.amax(dim=(1, 2), keepdim=True) + _NORMALIZE_EPS)
    if tuple(scaled.shape[1:]) != tuple(images.shape[2:]):
        scaled = F.interpolate(scaled[:, None], size=tuple(images.shape[2:]), mode="bilinear", align_corners=False)
        scaled = scaled[:, 0]
    return scaled


def _same_for_every_image(baseline: float | Tensor | None) -> bool:
    """Whether the baseline has no batch dimension of its own (then one all-baseline input serves every image)."""
    return not isinstance(baseline, Tensor) or baseline.ndim < 4 or baseline.shape[0] == 1


def _perturbation_counts(positions: int, steps: int) -> list[int]:
    """How many positions are perturbed at each point of the curves: torchcam's ``0, s, 2s, ..., positions``."""
    step_size = (positions + steps - 1) // steps
    return [*range(0, positions, step_size), positions]


def _class_scores(logits: Tensor, classes: Tensor) -> Tensor:
    """Probability of each row's class (N,), in float32: softmax, or the sigmoid of a binary classifier's one logit
    (:func:`~lightning_cnnsee.explain.targets.class_probabilities`)."""
    return class_probabilities(logits).gather(1, classes[:, None])[:, 0]


def faithfulness(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    targets: Targets = None,
    *,
    steps: int = 20,
    baseline: float | Tensor | None = None,
    batch_size: int = 32,
    output_key: OutputKey = None,
) -> dict[str, Tensor]:
    """Per-image faithfulness of ``maps`` to ``model``: Average Drop, Increase in Confidence, deletion and insertion.

    Scores are softmax probabilities of each image's target class: ``y`` on the clean image. With ``m`` the map
    scaled to [0, 1] and resized to the image (:func:`normalize_maps`):

    - ``avg_drop = max(0, y - o) / (y + 1e-7)`` and ``conf_increase = 1.0 if o > y else 0.0``, with ``o`` the score
      of ``m * x`` (Chattopadhay et al., 2018, "Grad-CAM++", https://arxiv.org/abs/1710.11063);
    - the positions ranked by ``m`` (highest first, ties in raster order) are perturbed ``k`` at a time, ``k = 0,
      s, 2s, ..., P`` with ``s = ceil(P / steps)`` of the ``P = H * W`` positions, all channels alike. Deletion
      replaces the first ``k`` by the baseline; insertion starts from the baseline and puts the first ``k`` back.
      ``deletion_auc`` and ``insertion_auc`` are the areas under the score curves against the fraction ``k / P``, by
      the trapezoid rule (Petsiuk et al., 2018, "RISE", https://arxiv.org/abs/1806.07421).

    These are torchcam's ``ClassificationMetric`` and ``DeletionInsertionMetric`` (with ``logits_fn=softmax``) per
    image: their summaries are the means of these tensors. An image whose map holds a NaN gets NaN everywhere (torchcam
    leaves it out of its means: use ``nanmean``).

    Args:
        model: any ``nn.Module`` returning logits (N, num_classes); run in eval mode, its flags restored afterwards.
        images: input batch (N, C, H, W), normalized as the model expects.
        maps: (N, h, w) maps at any resolution (a CAM at its layer's size), or (N, C, h, w) per-pixel attributions
            (reduced by the signed sum over channels, :func:`normalize_maps`).
        targets: ``None`` for each image's predicted class on the clean images, an int for one class for every
            image, or N class indices.
        steps: the most intervals of the deletion and insertion curves (``steps + 1`` points at most).
        baseline: what deleted pixels become: ``None`` for zeros, a number, or a tensor broadcastable to ``images``
            (a per-channel mean (C, 1, 1), a blurred copy of the images, ...).
        batch_size: inputs per forward pass; all the perturbed inputs (``2 * steps`` or fewer per image) are cut
            into such batches, whatever image they come from. 32 is torchcam's default and close to the fastest per
            image for ResNet-18 on a CPU core (16-32; 64 is 10% slower there); a GPU usually gains from larger ones.
        output_key: where the logits are when the model returns a tuple or dict (see :func:`select_output`).

    Returns:
        ``{"avg_drop", "conf_increase", "deletion_auc", "insertion_auc"}``, each a float32 tensor (N,) on the images'
        device (``conf_increase`` is 0.0 or 1.0).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        >>> scores = faithfulness(model, torch.rand(2, 3, 16, 16), torch.rand(2, 4, 4), steps=8)
        >>> {name: tuple(value.shape) for name, value in scores.items()}
        {'avg_drop': (2,), 'conf_increase': (2,), 'deletion_auc': (2,), 'insertion_auc': (2,)}
    """
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    saliency = normalize_maps(maps, images)
    invalid = saliency.flatten(1).isnan().any(dim=1)
    saliency = torch.nan_to_num(saliency, nan=0.0)
    count, _, height, width = images.shape
    positions = height * width
    counts = _perturbation_counts(positions, steps)

    jobs = _Jobs.table(count, counts, shared=_same_for_every_image(baseline))
    with eval_mode(model), torch.inference_mode():
        inputs = images.detach()
        base = broadcast_baseline(baseline, inputs)
        logits = torch.cat([logits_of(model, chunk, output_key) for chunk in inputs.split(batch_size)])
        classes = resolve_targets(targets, logits)
        clean = _class_scores(logits, classes)
        scores, all_baseline = _score_jobs(model, inputs, base, saliency, classes, jobs, batch_size, output_key)
    results = _metrics(clean, scores, all_baseline, jobs, counts, positions)
    if invalid.any():
        for value in results.values():
            value[invalid] = float("nan")
    return results


@dataclass
class _Jobs:
    """Each image's perturbed inputs ("jobs"): the interior points of deletion, those of insertion, the masked image
    ``m * x`` and the all-baseline input (deletion's last point, insertion's first). A baseline that is the same for
    every image (None, a number, a tensor without a batch dimension) is scored once, as the first job (``shared``).
    One entry per job: its image, how many positions it takes from the image (the rest from the baseline), whether
    those are the first (insertion) or the others (deletion), and whether it is the masked image."""

    image: Tensor
    count: Tensor
    insert: Tensor
    masked: Tensor
    per_image: int
    interior: int
    shared: bool

    @classmethod
    def table(cls, images: int, counts: list[int], *, shared: bool) -> _Jobs:
        inner = counts[1:-1]
        rows = [(k, False, False) for k in inner] + [(k, True, False) for k in inner] + [(0, False, True)]
        if not shared:
            rows.append((0, True, False))
        jobs = [(0, 0, True, False)] if shared else []
        jobs += [(image, *row) for image in range(images) for row in rows]
        image, count, insert, masked = (torch.tensor(column) for column in zip(*jobs, strict=True))
        return cls(image, count, insert, masked, len(rows), len(inner), shared)


def _score_jobs(
    model: nn.Module,
    inputs: Tensor,
    base: Tensor,
    saliency: Tensor,
    classes: Tensor,
    jobs: _Jobs,
    batch_size: int,
    output_key: OutputKey,
) -> tuple[Tensor, Tensor | None]:
    """The class score of every job, ``batch_size`` jobs per forward pass whatever image they belong to; and with a
    shared baseline, the all-baseline input's score for each image's class (else ``None``)."""
    count, _, height, width = inputs.shape
    device = inputs.device
    # Rank of each position, highest map value first; ties keep raster order (torchcam's stable argsort).
    order = saliency.flatten(1).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(height * width, device=device).expand_as(order))
    scores = torch.empty(len(jobs.image), device=device)
    all_baseline = None
    for start in range(0, len(jobs.image), batch_size):
        part = slice(start, start + batch_size)
        image_index = jobs.image[part].to(device)
        first = ranks[image_index] < jobs.count[part].to(device)[:, None]
        original = torch.where(jobs.insert[part].to(device)[:, None], first, ~first)
        batch = torch.where(original.view(-1, 1, height, width), inputs[image_index], base[image_index])
        masked_rows = jobs.masked[part].nonzero()[:, 0]  # on the CPU: no device synchronization
        if len(masked_rows):
            masked_images = jobs.image[part][masked_rows].to(device)
            batch[masked_rows.to(device)] = (saliency[masked_images, None] * inputs[masked_images]).to(batch.dtype)
        batch_logits = logits_of(model, batch, output_key)
        scores[part] = _class_scores(batch_logits, classes[image_index])
        if jobs.shared and start == 0:
            all_baseline = _class_scores(batch_logits[:1].expand(count, -1), classes)
    return scores, all_baseline


def _metrics(
    clean: Tensor, scores: Tensor, all_baseline: Tensor | None, jobs: _Jobs, counts: list[int], positions: int
) -> dict[str, Tensor]:
    """The four numbers of each image from its clean score and its jobs' scores: the drop to the masked image, and
    the areas under the deletion and insertion curves over the fraction of positions perturbed."""
    interior = jobs.interior
    per_image = (scores[1:] if jobs.shared else scores).view(len(clean), jobs.per_image)
    removed, inserted = per_image[:, :interior], per_image[:, interior : 2 * interior]
    masked = per_image[:, 2 * interior]
    if all_baseline is None:
        all_baseline = per_image[:, -1]
    deletion = torch.cat([clean[:, None], removed, all_baseline[:, None]], dim=1)
    insertion = torch.cat([all_baseline[:, None], inserted, clean[:, None]], dim=1)
    fractions = torch.tensor(counts, device=clean.device, dtype=torch.float32).div_(positions)
    return {
        "avg_drop": torch.relu(clean - masked).div(clean + _DROP_EPS),
        "conf_increase": (clean < masked).float(),
        "deletion_auc": torch.trapezoid(deletion, fractions, dim=1),
        "insertion_auc": torch.trapezoid(insertion, fractions, dim=1),
    }


def random_maps(
    count: int, size: tuple[int, int], *, seed: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """``count`` maps of ``size`` (h, w) with values drawn uniformly from [0, 1) by a generator seeded with ``seed``.

    The draw is made on the CPU and then moved to ``device``, so a seed gives the same maps on every device. Maps at a
    CAM's resolution are the fair reference for that CAM: resized to the input like it, they rank blobs of the same
    size, where maps at the input's resolution scatter single pixels.

    Args:
        count: number of maps (images).
        size: (h, w) of each map.
        seed: seed of the ``torch.Generator``.
        device: where the maps go.

    Example::

        >>> random_maps(2, (3, 3), seed=1).shape, torch.equal(random_maps(2, (3, 3)), random_maps(2, (3, 3)))
        (torch.Size([2, 3, 3]), True)
    """
    count = positive_int("count", count)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(side, int) and not isinstance(side, bool) and side >= 1 for side in size)
    ):
        raise ValueError(f"size must be (h, w) with positive ints, got {size!r}.")
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, *size, generator=generator).to(device)


def random_faithfulness(
    model: nn.Module,
    images: Tensor,
    targets: Targets = None,
    *,
    map_size: tuple[int, int] | None = None,
    seed: int = 0,
    steps: int = 20,
    baseline: float | Tensor | None = None,
    batch_size: int = 32,
    output_key: OutputKey = None,
) -> dict[str, Tensor]:
    """:func:`faithfulness` of :func:`random_maps`: the reference line that a map which explains the model must beat.

    Args:
        model, images, targets, steps, baseline, batch_size, output_key: as for :func:`faithfulness`.
        map_size: (h, w) of the random maps; ``None`` for the images' size. Give the size of the maps you compare
            with (a CAM's layer resolution).
        seed: seed of the random maps.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
        >>> reference = random_faithfulness(model, torch.rand(2, 3, 16, 16), map_size=(4, 4), steps=8)
        >>> reference["insertion_auc"].shape
        torch.Size([2])
    """
    image_batch(images)
    size = tuple(images.shape[2:]) if map_size is None else map_size
    maps = random_maps(images.shape[0], size, seed=seed, device=images.device)
    return faithfulness(
        model, images, maps, targets, steps=steps, baseline=baseline, batch_size=batch_size, output_key=output_key
    )
