"""Objectives for filter ascent, composed as in lucent: ``channel("conv2", 3) + 0.5 * diversity("conv2")``.

An objective turns the outputs of the layers it needs into one score per image, which :func:`filter_ascent`
maximizes. It is a weighted sum of terms: :func:`channel` (a channel's mean), :func:`neuron` (one unit of a
channel's map) and :func:`diversity` (Lucid's penalty on images of a batch that look alike to a layer); ``+``,
``-``, ``*`` and ``/`` by a number, unary ``-`` and ``sum([...])`` combine them. Unlike lucent's objectives, which
are losses to minimize, these are scores to maximize: ``channel`` is the channel's mean itself, not its negative.

An objective knows the layers it needs (``.layers``), so :func:`forward_to` hooks exactly those, once for as many
forward passes as an ascent makes, and ends every pass after the deepest of them. A layer name ``None`` is the
model's own output (the logits).

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee.explain.objectives import channel, diversity, forward_to, neuron
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    >>> objective = channel("2", 5) - 0.5 * neuron("2", 1) + 10 * diversity("0")
    >>> objective
    channel('2', 5) - 0.5 * neuron('2', 1) + 10 * diversity('0')
    >>> objective.layers
    ('2', '0')
    >>> with forward_to(model, objective.layers) as forward:
    ...     scores = objective(forward(torch.rand(4, 3, 16, 16)))
    >>> scores.shape
    torch.Size([4])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_cnnsee.explain.hooks import StopForward, get_modules, record_outputs, stop_hooks
from lightning_cnnsee.explain.layers import OutputKey, select_output
from lightning_cnnsee.explain.tokens import TokenLayout, feature_map, token_layout

__all__ = ["Layer", "Objective", "channel", "diversity", "forward_to", "neuron"]

Layer = str | None
"""A layer name of ``model.named_modules()``, or ``None`` for the model's output."""


@dataclass(frozen=True)
class _Term:
    """One primitive of an objective; ``index`` is the channel of ``channel`` and ``neuron``."""

    kind: str
    layer: Layer
    index: int | None = None
    x: int | None = None
    y: int | None = None

    def __repr__(self) -> str:
        arguments = [repr(self.layer)] + ([] if self.index is None else [str(self.index)])
        arguments += [f"{name}={value}" for name, value in (("x", self.x), ("y", self.y)) if value is not None]
        return f"{self.kind}({', '.join(arguments)})"


class Objective:
    """A weighted sum of terms that maps the outputs of its layers to a score per image, to be maximized.

    Made by :func:`channel`, :func:`neuron` and :func:`diversity`, and combined with ``+``, ``-``, ``*`` and ``/`` by
    numbers and ``sum([...])``. Calling it on ``{layer: output}`` (for example what :func:`forward_to` returns)
    scores a batch of N images, all under this objective: (N,) float32. A :func:`diversity` term couples all N.

    Args:
        terms: ``(weight, term)`` pairs; equal terms are merged and terms of weight 0 dropped.
        constant: a number added to every image's score.

    Example::

        >>> from lightning_cnnsee.explain.objectives import channel
        >>> sum([channel("conv", 0), channel("conv", 1)]) / 2 - channel("conv", 0)
        -0.5 * channel('conv', 0) + 0.5 * channel('conv', 1)
    """

    def __init__(self, terms: Sequence[tuple[float, _Term]] = (), constant: float = 0.0) -> None:
        merged: dict[_Term, float] = {}
        for weight, term in terms:
            merged[term] = merged.get(term, 0.0) + float(weight)
        self.terms: tuple[tuple[float, _Term], ...] = tuple((w, t) for t, w in merged.items() if w != 0.0)
        self.constant = float(constant)

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers whose outputs the objective reads, in the order its terms name them."""
        return tuple(dict.fromkeys(term.layer for _, term in self.terms))

    def __call__(self, outputs: Mapping[Layer, Tensor]) -> Tensor:
        if not self.terms:
            raise ValueError(f"The objective {self!r} has no term, so it gives no score per image.")
        num_images = outputs[self.terms[0][1].layer].shape[0]
        return _ObjectiveBatch([self], num_images)(outputs)

    # arithmetic ---------------------------------------------------------------------------------------------
    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, Objective):
            return Objective(self.terms + other.terms, self.constant + other.constant)
        return Objective(self.terms, self.constant + _number(other, "add"))

    __radd__ = __add__  # sum([...]) starts from 0

    def __mul__(self, other: float) -> Objective:
        factor = _number(other, "multiply")
        return Objective([(factor * w, t) for w, t in self.terms], factor * self.constant)

    __rmul__ = __mul__

    def __truediv__(self, other: float) -> Objective:
        return self * (1.0 / _number(other, "divide"))

    def __neg__(self) -> Objective:
        return self * -1.0

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return -self + other

    def __repr__(self) -> str:
        text = ""
        for weight, term in self.terms:
            sign = "-" if weight < 0 else "+"
            size = abs(weight)
            part = repr(term) if size == 1 else f"{size:g} * {term!r}"
            text = (f"-{part}" if sign == "-" else part) if not text else f"{text} {sign} {part}"
        if self.constant or not text:
            sign = "-" if self.constant < 0 else "+"
            text = f"{self.constant:g}" if not text else f"{text} {sign} {abs(self.constant):g}"
        return text.replace("-1 * ", "-")


def _number(value: object, verb: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Can only {verb} an objective and a number (int or float), not {type(value).__name__}.")
    if not math.isfinite(value):
        raise ValueError(f"Cannot {verb} an objective and {value}: the number must be finite.")
    return float(value)


def _check_layer(layer: object) -> Layer:
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str) or None for the model's output, got {layer!r}.")
    return layer


def _check_index(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}.")
    return value


def channel(layer: Layer, n: int) -> Objective:
    """The mean over space of channel ``n`` of ``layer`` (a class logit on an (N, C) output).

    Args:
        layer: a name of ``model.named_modules()``, or ``None`` for the model's output.
        n: the channel (or class) index.

    Example::

        >>> import torch
        >>> from lightning_cnnsee.explain.objectives import channel
        >>> channel("conv", 1)({"conv": torch.arange(16.0).reshape(1, 2, 2, 4)})
        tensor([11.5000])
    """
    return Objective([(1.0, _Term("channel", _check_layer(layer), _check_index(n, "channel")))])


def neuron(layer: Layer, n: int, x: int | None = None, y: int | None = None) -> Objective:
    """The value of one unit of channel ``n`` of ``layer``: column ``x``, row ``y``, by default the centre unit.

    The centre of an even side is the later of its two middle units (``width // 2``, ``height // 2``), as in
    lucent and Lucid. On an (N, C) output the neuron is the unit ``n`` itself (no ``x`` or ``y``).

    Args:
        layer: a name of ``model.named_modules()``, or ``None`` for the model's output.
        n: the channel index.
        x, y: the column and row in the channel's map.

    Example::

        >>> import torch
        >>> from lightning_cnnsee.explain.objectives import neuron
        >>> maps = {"conv": torch.arange(18.0).reshape(1, 2, 3, 3)}
        >>> neuron("conv", 1)(maps), neuron("conv", 1, x=0, y=2)(maps)
        (tensor([13.]), tensor([15.]))
    """
    x = None if x is None else _check_index(x, "x")
    y = None if y is None else _check_index(y, "y")
    return Objective([(1.0, _Term("neuron", _check_layer(layer), _check_index(n, "channel"), x, y))])


def diversity(layer: Layer) -> Objective:
    """Lucid's diversity: minus how alike the images of a batch look to ``layer``, by their Gram matrices.

    For image i with activations ``A_i`` (C, H*W), ``G_i = A_i A_i^T`` normalized to unit Frobenius norm; the score
    of image i is ``-sum_{j != i} <G_i, G_j> / N`` over the N images that share the objective (in
    :func:`filter_ascent`, the ``num_diverse`` images of one channel). The batch's total is lucent's
    ``objectives.diversity(layer)`` value (Olah et al., 2017, "Feature Visualization", section Diversity); lucent
    subtracts it from a loss, here it is added to a score: ``channel(l, n) + weight * diversity(l)``. One image
    alone scores 0. On an (N, C) output ``<G_i, G_j>`` is the squared cosine between the two vectors.

    Args:
        layer: a name of ``model.named_modules()``, or ``None`` for the model's output.

    Example::

        >>> import torch
        >>> from lightning_cnnsee.explain.objectives import diversity
        >>> same = torch.rand(1, 4, 5, 5).expand(3, 4, 5, 5)
        >>> diversity("conv")({"conv": same})  # three equal images: each has similarity 1 to two others, / 3
        tensor([-0.6667, -0.6667, -0.6667])
    """
    return Objective([(1.0, _Term("diversity", _check_layer(layer)))])


# ------------------------------------------------------------------------------------------------ term scores
def _channel_scores(output: Tensor, indices: Tensor, group_size: int, term: _Term) -> Tensor:
    picked = output[torch.arange(output.shape[0], device=output.device), indices]
    return picked.float().reshape(picked.shape[0], -1).mean(dim=1)


def _neuron_scores(output: Tensor, indices: Tensor, group_size: int, term: _Term) -> Tensor:
    rows = torch.arange(output.shape[0], device=output.device)
    if output.ndim == 2 and term.x is None and term.y is None:
        return output[rows, indices].float()
    if output.ndim != 4:
        raise ValueError(
            f"neuron on layer {term.layer!r} needs an (N, C, H, W) output (or (N, C) without x and y), "
            f"but it gave {tuple(output.shape)}."
        )
    height, width = output.shape[2:]
    x = width // 2 if term.x is None else term.x
    y = height // 2 if term.y is None else term.y
    if x >= width or y >= height:
        raise ValueError(f"{term!r}: (x={x}, y={y}) is outside the {height}x{width} map (height x width).")
    return output[rows, indices, y, x].float()


def _diversity_scores(output: Tensor, indices: Tensor | None, group_size: int, term: _Term) -> Tensor:
    num_rows, num_channels = output.shape[:2]
    groups = num_rows // group_size
    flattened = output.float().reshape(groups, group_size, num_channels, -1)
    grams = F.normalize((flattened @ flattened.transpose(-1, -2)).reshape(groups, group_size, -1), dim=2)
    similarity = grams @ grams.transpose(1, 2)  # (groups, N, N) cosine similarity of the Gram matrices
    to_others = similarity.sum(dim=2) - similarity.diagonal(dim1=1, dim2=2)
    return (-to_others / group_size).reshape(num_rows)


_TERM_SCORES: dict[str, Callable[[Tensor, Tensor | None, int, _Term], Tensor]] = {
    "channel": _channel_scores,
    "neuron": _neuron_scores,
    "diversity": _diversity_scores,
}


@dataclass
class _Bucket:
    """Terms of one kind, layer and position across groups, computed with one call of the kind's function."""

    key: _Term
    rows: Tensor | None  # the images the terms score, None for every image in order
    channels: list[int | None]  # per term
    indices: Tensor | None  # per image
    weights: Tensor | None  # per image, None when all are 1


class _ObjectiveBatch:
    """Scores a batch of images in groups: images ``[g * group_size, (g + 1) * group_size)`` by ``objectives[g]``.

    An image feeds only its own group's objective; only a :func:`diversity` term looks across the images of a
    group. Terms of one kind on one layer (``channel(l, 3)`` of group 0, ``channel(l, 5)`` of group 1) are computed
    for all groups with one call, so K channel objectives cost what one batched objective costs. Built once per
    ascent; its index tensors are moved to a device once.

    Example::

        >>> import torch
        >>> from lightning_cnnsee.explain.objectives import _ObjectiveBatch, channel
        >>> batch = _ObjectiveBatch([channel("conv", 1), channel("conv", 0)], group_size=1)
        >>> batch({"conv": torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]]])})
        tensor([2., 3.])
    """

    def __init__(self, objectives: Sequence[Objective], group_size: int) -> None:
        self.group_size = int(group_size)
        self.num_images = len(objectives) * self.group_size
        self.layers: tuple[Layer, ...] = tuple(dict.fromkeys(lay for o in objectives for lay in o.layers))
        entries: dict[_Term, list[tuple[int, float, int | None]]] = {}
        for group, objective in enumerate(objectives):
            for weight, term in objective.terms:
                key = _Term(term.kind, term.layer, None, term.x, term.y)
                entries.setdefault(key, []).append((group, weight, term.index))
        if not entries:
            raise ValueError(f"No objective of {list(objectives)} has a term; nothing to score.")
        per_image = torch.arange(self.group_size)
        self._buckets = []
        for key, found in entries.items():
            groups = torch.tensor([group for group, _, _ in found])
            in_order = groups.tolist() == list(range(len(objectives)))
            channels = [index for _, _, index in found]
            weights = torch.tensor([weight for _, weight, _ in found]).repeat_interleave(self.group_size)
            self._buckets.append(
                _Bucket(
                    key=key,
                    rows=None if in_order else (groups[:, None] * self.group_size + per_image).reshape(-1),
                    channels=channels,
                    indices=None
                    if key.kind == "diversity"
                    else torch.tensor(channels).repeat_interleave(self.group_size),
                    weights=None if bool((weights == 1.0).all()) else weights,
                )
            )
        constants = torch.tensor([objective.constant for objective in objectives]).repeat_interleave(self.group_size)
        self._constants = constants if bool(constants.any()) else None
        self._on_device: dict[tuple[int, torch.device], Tensor] = {}

    def _to(self, tensor: Tensor | None, device: torch.device) -> Tensor | None:
        if tensor is None or tensor.device == device:
            return tensor
        key = (id(tensor), device)
        if key not in self._on_device:
            self._on_device[key] = tensor.to(device)
        return self._on_device[key]

    def __call__(self, outputs: Mapping[Layer, Tensor]) -> Tensor:
        """(num_images,) float32: each image's score under its group's objective."""
        scores: Tensor | None = None
        for bucket in self._buckets:
            output = outputs[bucket.key.layer]
            if output.shape[0] != self.num_images:
                raise ValueError(
                    f"Layer {bucket.key.layer!r} gave {output.shape[0]} images; the objectives score {self.num_images}."
                )
            device = output.device
            rows = self._to(bucket.rows, device)
            if rows is not None:
                output = output[rows]
            if bucket.indices is not None:
                _check_channel_range(output, bucket.channels, bucket.key.layer)
            indices = self._to(bucket.indices, device)
            values = _TERM_SCORES[bucket.key.kind](output, indices, self.group_size, bucket.key)
            if bucket.weights is not None:
                values = values * self._to(bucket.weights, device)
            if rows is not None:
                values = values.new_zeros(self.num_images).index_add(0, rows, values)
            scores = values if scores is None else scores + values
        if self._constants is not None:
            scores = scores + self._to(self._constants, scores.device)
        return scores


def _check_channel_range(output: Tensor, channels: list[int | None], layer: Layer) -> None:
    num_channels = output.shape[1]
    bad = [c for c in channels if c is not None and c >= num_channels]
    if bad:
        what, plural = ("class", "classes") if layer is None or output.ndim == 2 else ("channel", "channels")
        raise ValueError(
            f"{what} index {bad} out of range for layer {layer!r} with {num_channels} {plural} "
            f"(valid: 0..{num_channels - 1})."
        )


def as_channels_first(layout: TokenLayout, module: nn.Module, value: Tensor) -> Tensor:
    """A transformer layer's output as (N, C, h, w) (tokens on their patch grid, NHWC stages permuted, see
    :func:`~lightning_cnnsee.explain.tokens.feature_map`), so that channel ``n`` is a channel; any other output
    as it is. ``layout`` is the model's :func:`~lightning_cnnsee.explain.tokens.token_layout` for the input."""
    if not layout.transformer or value.ndim not in (3, 4):
        return value
    try:
        return feature_map(value, layout, module)
    except ValueError:
        return value


@contextlib.contextmanager
def forward_to(
    model: nn.Module, layers: Sequence[Layer], *, output_key: OutputKey = None
) -> Iterator[Callable[[Tensor], dict[Layer, Tensor]]]:
    """Hook ``layers`` once for the whole block; each ``forward(inputs)`` inside returns ``{layer: output}``.

    Each forward pass ends once every named layer has run (after the deepest), unless ``None`` (the model's
    output, picked with ``output_key``) is among ``layers``. The hooks are removed when the block ends, also on an
    error. Outputs keep their autograd graph.

    Args:
        model: any ``nn.Module``.
        layers: names of ``model.named_modules()``, and ``None`` for the model's output.
        output_key: where the logits are when the model returns a tuple or dict (see ``select_output``).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from lightning_cnnsee.explain.objectives import forward_to
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
        >>> with forward_to(model, ["1"]) as forward:
        ...     [tuple(forward(torch.rand(2, 3, 8, 8))["1"].shape) for _ in range(2)]
        [(2, 4, 6, 6), (2, 4, 6, 6)]
        >>> sum(len(m._forward_hooks) for m in model.modules())
        0
    """
    layers = [_check_layer(layer) for layer in dict.fromkeys(layers)]
    names = [layer for layer in layers if layer is not None]
    to_output = None in layers
    # the stop hooks come after record_outputs' hooks, so those have recorded when a pass stops
    stopping = contextlib.nullcontext(lambda: None) if to_output else stop_hooks(model, names)
    modules = get_modules(model, names)
    layouts: dict[tuple[int, ...], TokenLayout] = {}  # by input size: read from the model once, not at every step

    def layout_of(inputs: Tensor) -> TokenLayout:
        size = tuple(inputs.shape[-2:])
        if size not in layouts:
            layouts[size] = token_layout(model, size)
        return layouts[size]

    with record_outputs(model, names) as recorded, stopping as arm:

        def forward(inputs: Tensor) -> dict[Layer, Tensor]:
            recorded.clear()
            arm()
            outputs: dict[Layer, Tensor] = {}
            try:
                output = model(inputs)
            except StopForward:
                pass
            else:
                if to_output:
                    outputs[None] = select_output(output, output_key)
            for name in names:
                value = _batched_output(recorded.get(name), name)
                outputs[name] = as_channels_first(layout_of(inputs), modules[name], value)
            return outputs

        yield forward


def _batched_output(value: object, name: str) -> Tensor:
    """A recorded layer output an objective can use: a tensor of at least (N, C)."""
    if not isinstance(value, Tensor) or value.ndim < 2:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"Objective layer {name!r} must output (N, C, ...), but it gave {shape}.")
    return value
