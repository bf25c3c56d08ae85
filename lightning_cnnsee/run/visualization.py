"""One visualization run as a function: a module, images and options in, a :class:`Results` out. No Lightning.

The callback calls :func:`visualize` at each scheduled step; tests, benchmarks and notebooks call it directly.
Under DDP each rank computes its share of the filter and class patterns (``rank``, ``world_size``) and
:func:`gather_patterns` puts them together with whatever gathering function the caller has; with one process that
is the identity.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee.run.options import Options
    >>> from lightning_cnnsee.run.visualization import visualize
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    >>> results = visualize(model, torch.rand(2, 3, 16, 16), torch.tensor([0, 3]), Options(ascent_steps=2))
    >>> sorted(results.cams_predicted), sorted(results.filters), results.class_patterns.channels
    (['3'], ['0', '2'], [0, 1, 2, 3])
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from lightning_cnnsee.explain.activations import capture_activations
from lightning_cnnsee.explain.ascent import AscentResult, filter_ascent
from lightning_cnnsee.explain.attributions import attribute
from lightning_cnnsee.explain.cam import cams_for_targets
from lightning_cnnsee.explain.checkpointing import checkpointing_off
from lightning_cnnsee.explain.hooks import eval_mode, gradients_enabled
from lightning_cnnsee.explain.layers import device_and_dtype, select_output
from lightning_cnnsee.explain.localization import object_masks
from lightning_cnnsee.explain.metrics import faithfulness, random_faithfulness
from lightning_cnnsee.explain.targets import class_indices, class_probabilities, model_kind, multilabel_targets
from lightning_cnnsee.run.failures import contained
from lightning_cnnsee.run.localization import measure_localization
from lightning_cnnsee.run.options import Options
from lightning_cnnsee.run.results import PER_IMAGE_KINDS, PatternJob, Results, explained_maps
from lightning_cnnsee.run.selection import ChosenLayers, choose_layers
from lightning_cnnsee.run.shares import split_jobs, unsplit

__all__ = [
    "PER_IMAGE_DICTS",
    "PER_IMAGE_KINDS",
    "ascend",
    "attribution_settings",
    "estimate_pattern_seconds",
    "gather_measures",
    "gather_patterns",
    "isolated",
    "model_images",
    "pattern_jobs",
    "segmentation_targets",
    "visualize",
]


def pattern_jobs(choice: ChosenLayers, options: Options) -> list[PatternJob]:
    """Every filter and class pattern of a run, in a fixed order (filters by layer, then classes)."""
    jobs: list[PatternJob] = []
    if "filters" in options.techniques:
        for layer in choice.filters:
            count = choice.output_shapes.get(layer, (0, options.num_filters))[1]
            for channel in options.filter_channels or range(min(options.num_filters, count)):
                jobs.append(PatternJob(layer, channel, "filters"))
    if "classes" in options.techniques and choice.num_classes:
        for channel in options.classes or range(min(options.max_classes, choice.num_classes)):
            jobs.append(PatternJob(choice.class_layer, channel, "classes"))
    return jobs


@contextlib.contextmanager
def isolated(module: nn.Module) -> Iterator[None]:
    """Gradients on (also inside inference mode), reentrant gradient checkpoints run as plain calls
    (:func:`~lightning_cnnsee.explain.checkpointing.checkpointing_off`), and the global random state restored
    afterwards (the CPU's and, on a GPU, the module's device's), so that a run never shifts training's random
    stream."""
    device, _ = device_and_dtype(module)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), gradients_enabled():
        with checkpointing_off():
            yield


def model_images(images: Tensor, module: nn.Module, count: int | None = None) -> Tensor:
    """The first ``count`` of ``images`` (all by default) on ``module``'s device in its dtype (float32 for integer
    images), NaN and Inf replaced."""
    device, dtype = device_and_dtype(module)
    dtype = dtype if images.is_floating_point() else torch.float32
    return torch.nan_to_num(images[:count].to(device=device, dtype=dtype))


def visualize(
    module: nn.Module,
    images: Tensor,
    labels: Tensor | None = None,
    options: Options | None = None,
    *,
    choice: ChosenLayers | None = None,
    include_maps: bool = True,
    include_patterns: bool = True,
    rank: int = 0,
    world_size: int = 1,
    objects: Tensor | list[Tensor] | None = None,
) -> Results:
    """Every visualization of ``images`` that ``options`` asks for; leaves ``module`` exactly as it was (modes,
    gradients, statistics, hooks, the global random state).

    Args:
        module: any ``nn.Module`` returning logits (or a tuple/dict holding them: ``options.output_key``).
        images: (N, C, H, W) inputs, normalized as the model expects (any device: moved to the module's).
        labels: the true classes: (N,) class indices (or one-hot (N, C)) of a classifier, for the second row of
            its maps; (N, C) multi-hot labels of a multi-label model; (N, H, W) masks of a segmentation model.
            ``None`` shows predictions only.
        options: what to show (default: :class:`Options` ()).
        choice: the layers, when already chosen (default: :func:`choose_layers` on the first image).
        include_maps: compute the maps (CAMs, attributions) and their faithfulness, each rank for its share of the
            images (see :func:`gather_measures`), and the activations (rank 0).
        include_patterns: optimize this rank's share of the filter and class patterns.
        rank, world_size: this process's share of the patterns (see :func:`gather_patterns`).
        objects: each image's object, for the localization of a classifier's maps (``"localization"`` in
            ``options.techniques``): boxes (N, 4), a list of N (K, 4) boxes, or masks (N, H, W); see
            :func:`~lightning_cnnsee.explain.localization.object_masks`.
    """
    options = options or Options()
    results = Results(image_size=(int(images.shape[-2]), int(images.shape[-1])))
    masks = None if objects is None else object_masks(objects, int(images.shape[0]), results.image_size)
    with isolated(module):
        inputs = model_images(images, module)
        choice = choice or choose_layers(module, inputs, options)
        labels = None if labels is None else labels.to(inputs.device)
        if include_maps:
            with torch.no_grad(), eval_mode(module):
                scores = select_output(module(inputs), options.output_key).detach().float()
            kind = options.model_kind if options.model_kind != "auto" else model_kind(scores, labels)
            labels = class_indices(labels, kind)
            share = _share_of_images(kind, inputs.shape[0], rank, world_size)
            results.kind, results.measured_images = kind, share
            if share:
                index = torch.tensor(share, device=inputs.device)
                my_labels = None if labels is None else labels[index]
                _explain(module, inputs[index], scores[index], my_labels, options, choice, results)
                if "faithfulness" in options.techniques and kind in PER_IMAGE_KINDS:
                    with contained(results, "faithfulness", options.strict):
                        _measure(module, inputs[index], options, results)
                if masks is not None and "localization" in options.techniques and kind in PER_IMAGE_KINDS:
                    with contained(results, "localization", options.strict):
                        results.localization = measure_localization(explained_maps(results), masks[index.cpu()])
        if include_maps and rank == 0 and "activations" in options.techniques and choice.activations:
            with contained(results, "activations", options.strict):
                results.activations = capture_activations(module, inputs, choice.activations)
        started = time.perf_counter()
        if include_patterns:
            results.pattern_jobs = pattern_jobs(choice, options)
            my_jobs = split_jobs(results.pattern_jobs, rank, world_size)
            per_rank = -(-len(results.pattern_jobs) // world_size)
            results.pattern_images, results.pattern_activations = ascend(
                module, my_jobs, tuple(inputs.shape[1:]), options, pad_to=per_rank, failures_in=results
            )
        results.patterns_seconds = time.perf_counter() - started
    if world_size == 1:
        results = gather_measures(gather_patterns(results))
    return results


def _share_of_images(kind: str, count: int, rank: int, world_size: int) -> list[int]:
    """The images whose maps this rank makes. A classifier's maps and their faithfulness are per image: each rank
    takes every ``world_size``-th image (the masked forwards of Score-CAM, Ablation-CAM, occlusion and the metrics
    cost the most). Multi-label and segmentation maps come in (image, class) pairs: rank 0 makes them all."""
    if kind in PER_IMAGE_KINDS:
        return split_jobs(list(range(count)), rank, world_size)
    return list(range(count)) if rank == 0 else []


def _explain(
    module: nn.Module,
    inputs: Tensor,
    scores: Tensor,
    labels: Tensor | None,
    options: Options,
    choice: ChosenLayers,
    results: Results,
) -> None:
    """The CAMs and attributions of ``inputs`` (whose model outputs are ``scores``), for ``results.kind``."""
    results.logits = scores
    cams = "gradcam" in options.techniques and choice.gradcam
    common = dict(kind=results.kind, output_key=options.output_key)
    if results.kind in PER_IMAGE_KINDS:
        target_sets = [None] if labels is None else [None, labels]
        if cams:
            with contained(results, "gradcam", options.strict):
                cam_sets, _ = cams_for_targets(module, inputs, choice.gradcam, target_sets, choice.cam_method, **common)
                results.cams_predicted = cam_sets[0]
                results.cams_true = cam_sets[1] if len(cam_sets) > 1 else {}
        if "attributions" in options.techniques:
            for method in options.attribution_methods:
                with contained(results, f"attributions/{method}", options.strict):
                    settings = attribution_settings(method, inputs, choice)
                    made = [_attribution(module, inputs, method, targets, options, settings) for targets in target_sets]
                    for found, maps in zip(
                        (results.attributions_predicted, results.attributions_true), made, strict=False
                    ):
                        found[method] = maps
        return
    if results.kind == "multilabel":
        image_index, class_index = multilabel_targets(scores, labels)
    else:
        image_index, class_index = segmentation_targets(scores, options.max_classes_per_image)
    results.pairs = (image_index.cpu(), class_index.cpu())
    if cams and image_index.numel():
        with contained(results, "gradcam", options.strict):
            (results.pair_cams,), _ = cams_for_targets(
                module, inputs[image_index], choice.gradcam, [class_index], choice.cam_method, **common
            )


def _attribution(
    module: nn.Module, inputs: Tensor, method: str, targets: Tensor | None, options: Options, settings: dict
) -> Tensor:
    torch.manual_seed(options.seed)  # SmoothGrad's noise: the same on every rank and at every run
    return attribute(module, inputs, method, targets, output_key=options.output_key, **settings)


def segmentation_targets(scores: Tensor, per_image: int) -> tuple[Tensor, Tensor]:
    """``(image index, class index)`` of the ``per_image`` largest classes of each image's predicted mask."""
    predicted = scores.argmax(dim=1)
    images, classes = [], []
    for index in range(scores.shape[0]):
        found, counts = predicted[index].unique(return_counts=True)
        for value in found[counts.argsort(descending=True)][:per_image].tolist():
            images.append(index)
            classes.append(value)
    as_long = dict(dtype=torch.long, device=scores.device)
    return torch.tensor(images, **as_long), torch.tensor(classes, **as_long)


def attribution_settings(method: str, inputs: Tensor, choice: ChosenLayers) -> dict[str, object]:
    """What CNNSee gives :func:`~lightning_cnnsee.explain.attributions.attribute` beyond Captum's defaults: occlusion's
    window (an eighth of the image, moved by half a window), guided Grad-CAM's layer (the last Grad-CAM layer)."""
    channels, height, width = inputs.shape[1:]
    if method == "occlusion":
        window = (max(1, height // 8), max(1, width // 8))
        return {
            "sliding_window_shapes": (channels, *window),
            "strides": (channels, max(1, window[0] // 2), max(1, window[1] // 2)),
        }
    if method == "guided_gradcam":
        return {"layer": choice.gradcam[-1]} if choice.gradcam else {"layer": choice.filters[-1]}
    return {}


def _measure(module: nn.Module, inputs: Tensor, options: Options, results: Results) -> None:
    """Faithfulness of the maps of ``inputs`` (the predicted class), and of random maps of the same sizes as the
    reference."""
    predicted = class_probabilities(results.logits).argmax(dim=1).to(inputs.device)  # type: ignore[arg-type]
    settings = dict(steps=options.faithfulness_steps, output_key=options.output_key)
    references: dict[tuple[int, ...], dict[str, Tensor]] = {}
    for name, maps in explained_maps(results).items():
        results.faithfulness[name] = faithfulness(module, inputs, maps.to(inputs.device), predicted, **settings)
        size = tuple(maps.shape[-2:])
        if size not in references:
            references[size] = random_faithfulness(
                module, inputs, predicted, map_size=size, seed=options.seed, **settings
            )
        results.faithfulness_random[name] = references[size]


#: The per-image fields of :class:`Results` that ranks compute for their share of the images.
PER_IMAGE_DICTS = (
    "cams_predicted",
    "cams_true",
    "attributions_predicted",
    "attributions_true",
    "faithfulness",
    "faithfulness_random",
    "localization",
)


def gather_measures(results: Results, gather: Callable[[object], list] = lambda value: [value]) -> Results:
    """Put every rank's share of the per-image results (the logits, the maps, their faithfulness) together, in image
    order; ``gather`` returns every rank's object in rank order (the default is the single-process identity)."""
    if results.kind not in PER_IMAGE_KINDS:
        return results
    fields = {name: getattr(results, name) for name in PER_IMAGE_DICTS}
    shares = [share for share in gather((results.measured_images, results.logits, fields)) if share[0]]
    if len(shares) < 2:
        return results
    order = torch.tensor([index for indices, _, _ in shares for index in indices]).argsort()

    def joined(parts: list[Tensor]) -> Tensor:
        return torch.cat([part.cpu() for part in parts])[order]

    results.logits = joined([logits for _, logits, _ in shares])
    for name in PER_IMAGE_DICTS:
        first = {  # a part that failed on some rank is left out (the failure is named); a field a caller's
            # gather left out: none
            key: value
            for key, value in shares[0][2].get(name, {}).items()
            if all(key in share[2].get(name, {}) for share in shares)
        }
        if name.startswith("faithfulness") or name == "localization":
            merged = {
                key: {metric: joined([share[2][name][key][metric] for share in shares]) for metric in metrics}
                for key, metrics in first.items()
            }
        else:
            merged = {key: joined([share[2][name][key] for share in shares]) for key in first}
        setattr(results, name, merged)
    results.measured_images = sorted(index for indices, _, _ in shares for index in indices)
    return results


def ascend(
    module: nn.Module,
    jobs: list[PatternJob],
    shape: tuple[int, ...],
    options: Options,
    *,
    steps: int | None = None,
    pad_to: int = 0,
    failures_in: Results | None = None,
) -> tuple[Tensor, Tensor]:
    """Images (max(len(jobs), pad_to), num_diverse, C, H, W) and activations (..., num_diverse) of ``jobs``, on the
    CPU: one batched ascent per layer, in order (rows past ``len(jobs)`` stay zero). With ``failures_in`` (a run's
    :class:`Results`), a layer whose ascent fails is recorded in its ``failures`` (``filters/<layer>`` or
    ``classes``; its rows stay zero) and the others go on."""
    diverse = options.num_diverse
    images = torch.zeros(max(len(jobs), pad_to), diverse, *shape)
    activations = torch.zeros(images.shape[:2])
    for layer in dict.fromkeys(job.layer for job in jobs):
        indices = [i for i, job in enumerate(jobs) if job.layer == layer]
        unit = "classes" if jobs[indices[0]].kind == "classes" else f"filters/{layer}"
        guard = contextlib.nullcontext() if failures_in is None else contained(failures_in, unit, options.strict)
        with guard:
            found = _ascend_layer(module, layer, [jobs[i].channel for i in indices], shape, options, steps)
            images[indices] = found.images.cpu().view(len(indices), diverse, *shape)
            activations[indices] = found.activations.cpu().view(len(indices), diverse)
    return images, activations


def _ascend_layer(
    module: nn.Module,
    layer: str | None,
    channels: list[int],
    shape: tuple[int, ...],
    options: Options,
    steps: int | None,
) -> AscentResult:
    return filter_ascent(
        module,
        layer,
        channels,
        shape,
        steps=options.ascent_steps if steps is None else steps,
        lr=options.ascent_lr,
        seed=options.seed,
        mean=options.mean,
        std=options.std,
        parameterization=options.parameterization,
        output_key=options.output_key,
        num_diverse=options.num_diverse,
    )


def gather_patterns(results: Results, gather: Callable[[Tensor], Tensor] = lambda t: t[None]) -> Results:
    """Put every rank's patterns into ``results.filters`` and ``results.class_patterns``.

    ``gather`` stacks a tensor of every rank along a new first dimension, in rank order (one call for the images,
    one for the activations); the default is the single-process identity.
    """
    jobs = results.pattern_jobs
    if not jobs or results.pattern_images is None or results.pattern_activations is None:
        return results
    images = unsplit(gather(results.pattern_images), len(jobs))
    activations = unsplit(gather(results.pattern_activations), len(jobs))
    for key in dict.fromkeys((job.kind, job.layer) for job in jobs):
        if ("classes" if key[0] == "classes" else f"filters/{key[1]}") in results.failures:
            continue  # its ascent failed on some rank: zeros, not patterns
        indices = [i for i, job in enumerate(jobs) if (job.kind, job.layer) == key]
        found = AscentResult(  # num_diverse images per channel, channel-major, as filter_ascent gives them
            layer=key[1],
            channels=[jobs[i].channel for i in indices for _ in range(images.shape[1])],
            images=images[indices].flatten(0, 1),
            activations=activations[indices].flatten(),
        )
        if key[0] == "classes":
            results.class_patterns = found
        else:
            results.filters[str(key[1])] = found
    results.pattern_images = results.pattern_activations = None
    return results


def estimate_pattern_seconds(
    module: nn.Module, images: Tensor, choice: ChosenLayers, options: Options, rank: int = 0, world_size: int = 1
) -> float:
    """This rank's share of a run's pattern ascent, in seconds, timed at 0 and 1 steps (about two steps of work)
    and extrapolated to ``options.ascent_steps``."""
    with isolated(module):
        inputs = model_images(images, module, count=1)
        mine = split_jobs(pattern_jobs(choice, options), rank, world_size)
        seconds = []
        for steps in (0, 1):
            started = time.perf_counter()
            ascend(module, mine, tuple(inputs.shape[1:]), options, steps=steps)
            seconds.append(time.perf_counter() - started)
    return seconds[0] + max(seconds[1] - seconds[0], 0.0) * options.ascent_steps
