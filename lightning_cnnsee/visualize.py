"""One visualization run as a function: a module, images and options in, a :class:`Results` out. No Lightning.

The callback calls :func:`visualize` at each scheduled step; tests, benchmarks and notebooks call it directly.
Under DDP each rank computes its share of the filter and class patterns (``rank``, ``world_size``) and
:func:`gather_patterns` puts them together with whatever gathering function the caller has; with one process that
is the identity.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee.options import Options
    >>> from lightning_cnnsee.visualize import visualize
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    >>> results = visualize(model, torch.rand(2, 3, 16, 16), torch.tensor([0, 3]), Options(ascent_steps=2))
    >>> sorted(results.cams_predicted), sorted(results.filters), results.classes.channels
    (['3'], ['0', '2'], [0, 1, 2, 3])
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

from lightning_cnnsee.activations import capture_activations
from lightning_cnnsee.ascent import AscentResult, filter_ascent
from lightning_cnnsee.cam import cams_for_targets
from lightning_cnnsee.distributed import split_jobs, unsplit
from lightning_cnnsee.hooks import gradients_enabled
from lightning_cnnsee.options import Options
from lightning_cnnsee.selection import LayerChoice, choose_layers, device_and_dtype


class PatternJob(NamedTuple):
    """One filter or class pattern to optimize: ``layer`` (``None``: the model's logits), ``channel`` (or class)
    and ``kind`` (``"filters"`` or ``"classes"``)."""

    layer: str | None
    channel: int
    kind: str


@dataclass
class Results:
    """What one visualization run produced, before rendering (tensors on the CPU, or on the model's device for
    the maps)."""

    logits: Tensor | None = None
    cams_predicted: dict[str, Tensor] = field(default_factory=dict)
    cams_true: dict[str, Tensor] = field(default_factory=dict)
    activations: dict[str, Tensor] = field(default_factory=dict)
    filters: dict[str, AscentResult] = field(default_factory=dict)
    classes: AscentResult | None = None
    pattern_jobs: list[PatternJob] = field(default_factory=list)
    pattern_images: Tensor | None = None
    pattern_activations: Tensor | None = None
    patterns_seconds: float = 0.0


def pattern_jobs(choice: LayerChoice, options: Options) -> list[PatternJob]:
    """Every filter and class pattern of a run, in a fixed order (filters by layer, then classes)."""
    jobs: list[PatternJob] = []
    if "filters" in options.techniques:
        for layer in choice.filters:
            count = choice.output_shapes.get(layer, (0, options.num_filters))[1]
            for channel in options.filter_channels or range(min(options.num_filters, count)):
                jobs.append(PatternJob(layer, channel, "filters"))
    if "classes" in options.techniques and choice.num_classes:
        for channel in options.classes or range(min(options.max_classes, choice.num_classes)):
            jobs.append(PatternJob(choice.classes, channel, "classes"))
    return jobs


@contextlib.contextmanager
def isolated(module: nn.Module) -> Iterator[None]:
    """Gradients on (also inside inference mode), and the global random state restored afterwards (the CPU's and,
    on a GPU, the module's device's), so that a run never shifts training's random stream."""
    device, _ = device_and_dtype(module)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), gradients_enabled():
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
    choice: LayerChoice | None = None,
    include_maps: bool = True,
    include_patterns: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Results:
    """Every visualization of ``images`` that ``options`` asks for; leaves ``module`` exactly as it was (modes,
    gradients, statistics, hooks, the global random state).

    Args:
        module: any ``nn.Module`` returning logits (or a tuple/dict holding them: ``options.output_key``).
        images: (N, C, H, W) inputs, normalized as the model expects (any device: moved to the module's).
        labels: (N,) true classes, for the second row of Grad-CAM; ``None`` shows predictions only.
        options: what to show (default: :class:`Options` ()).
        choice: the layers, when already chosen (default: :func:`choose_layers` on the first image).
        include_maps: compute Grad-CAM and activations (rank 0 only under DDP).
        include_patterns: optimize this rank's share of the filter and class patterns.
        rank, world_size: this process's share of the patterns (see :func:`gather_patterns`).
    """
    options = options or Options()
    results = Results()
    with isolated(module):
        inputs = model_images(images, module)
        choice = choice or choose_layers(module, inputs, options)
        maps = rank == 0 and include_maps
        if maps and "gradcam" in options.techniques and choice.gradcam:
            target_sets = [None] if labels is None else [None, labels.to(inputs.device)]
            cam_sets, results.logits = cams_for_targets(
                module, inputs, choice.gradcam, target_sets, options.cam_method, output_key=options.output_key
            )
            results.cams_predicted = cam_sets[0]
            if len(cam_sets) > 1:
                results.cams_true = cam_sets[1]
        if maps and "activations" in options.techniques and choice.activations:
            results.activations = capture_activations(module, inputs, choice.activations)
        started = time.perf_counter()
        if include_patterns:
            results.pattern_jobs = pattern_jobs(choice, options)
            mine = split_jobs(results.pattern_jobs, rank, world_size)
            per_rank = -(-len(results.pattern_jobs) // world_size)
            results.pattern_images, results.pattern_activations = ascend(
                module, mine, tuple(inputs.shape[1:]), options, pad_to=per_rank
            )
        results.patterns_seconds = time.perf_counter() - started
    if world_size == 1:
        results = gather_patterns(results)
    return results


def ascend(
    module: nn.Module,
    jobs: list[PatternJob],
    shape: tuple[int, ...],
    options: Options,
    *,
    steps: int | None = None,
    pad_to: int = 0,
) -> tuple[Tensor, Tensor]:
    """Images (max(len(jobs), pad_to), C, H, W) and activations of ``jobs``, on the CPU: one batched ascent per
    layer, in order (rows past ``len(jobs)`` stay zero)."""
    images = torch.zeros(max(len(jobs), pad_to), *shape)
    activations = torch.zeros(images.shape[0])
    for layer in dict.fromkeys(job.layer for job in jobs):
        indices = [i for i, job in enumerate(jobs) if job.layer == layer]
        found = filter_ascent(
            module, layer, [jobs[i].channel for i in indices], shape,
            steps=options.ascent_steps if steps is None else steps, lr=options.ascent_lr, seed=options.seed,
            mean=options.mean, std=options.std, parameterization=options.parameterization,
            output_key=options.output_key,
        )
        images[indices] = found.images.cpu()
        activations[indices] = found.activations.cpu()
    return images, activations


def gather_patterns(results: Results, gather: Callable[[Tensor], Tensor] = lambda t: t[None]) -> Results:
    """Put every rank's patterns into ``results.filters`` and ``results.classes``.

    ``gather`` stacks a tensor of every rank along a new first dimension, in rank order (one call for the images,
    one for the activations); the default is the single-process identity.
    """
    jobs = results.pattern_jobs
    if not jobs or results.pattern_images is None or results.pattern_activations is None:
        return results
    images = unsplit(gather(results.pattern_images), len(jobs))
    activations = unsplit(gather(results.pattern_activations), len(jobs))
    for key in dict.fromkeys((job.kind, job.layer) for job in jobs):
        indices = [i for i, job in enumerate(jobs) if (job.kind, job.layer) == key]
        found = AscentResult(
            layer=key[1], channels=[jobs[i].channel for i in indices], images=images[indices],
            activations=activations[indices],
        )
        if key[0] == "classes":
            results.classes = found
        else:
            results.filters[str(key[1])] = found
    results.pattern_images = results.pattern_activations = None
    return results


def estimate_pattern_seconds(
    module: nn.Module, images: Tensor, choice: LayerChoice, options: Options, rank: int = 0, world_size: int = 1
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
