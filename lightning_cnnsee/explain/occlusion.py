"""Occlusion's forward passes by incremental inference: each occluded copy recomputes only what its window reaches.

An occluded copy of an image differs from the image only inside the window, so each layer's output differs from the
unoccluded image's only in the region the window reaches through the layers before it: a box that grows by each
convolution's or pooling's kernel and shrinks by its stride. :func:`incremental_forward` runs the unoccluded images
once and keeps every layer's output; then, for a batch of occluded copies, it recomputes at each layer only that box
(from the kept output of the layer before, with the box of the changed values pasted in), and once a box covers the
whole feature map, the rest of the network runs on whole maps as usual. Residual blocks take the union of the boxes
of their two paths. This is incremental inference for occlusion (Nakandala, Kumar and Papakonstantinou, "Incremental
and Approximate Inference for Faster Occlusion-based Deep CNN Explanations", SIGMOD 2019, "Krypton"), exact form
only: values are the full forward pass's to float rounding (a box computed larger than needed is recomputed from the
same inputs, so it holds the same values).

Eval-mode BatchNorm is folded into the convolution before it (``w * gamma / sqrt(var + eps)``), which is also
exact to float rounding, and ReLUs run in place on tensors that nothing else reads.

Which models: the model's forward is traced with ``torch.fx`` when the model is an ``nn.Sequential`` or a
torchvision ``ResNet`` (their blocks ``BasicBlock`` and ``Bottleneck`` are traced through, every other module is
called as it is); ``Conv2d`` (zero padding), eval-mode ``BatchNorm2d``, ``MaxPool2d``, ``AvgPool2d``
(``count_include_pad=True``), element-wise activations, ``Dropout`` (eval mode) and the sum of two feature maps are
recomputed incrementally; anything else (pooling to a fixed size, flattening, linear layers, a module of the user's)
gets whole maps and runs as it is. :func:`incremental_forward` returns None, and occlusion uses the full forward
pass, for any other model, for a model that any forward hook or pre-hook is registered on (a hook would see only
boxes of feature maps, or nothing), and for a model whose forward the tracer cannot follow. Other models' forwards
are not traced, because tracing runs the forward's Python code, which might change the model.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee.explain.occlusion import incremental_forward
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
    ...                       nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                       nn.Linear(8, 4)).eval()
    >>> images = torch.rand(2, 3, 16, 16)
    >>> engine = incremental_forward(model, images)
    >>> occluded = images.repeat(3, 1, 1, 1)  # 3 window positions x 2 images
    >>> top, left = torch.tensor([0, 4, 12]), torch.tensor([0, 8, 12])
    >>> for row in range(6):
    ...     occluded[row, :, top[row // 2]:top[row // 2] + 4, left[row // 2]:left[row // 2] + 4] = 0
    >>> with torch.inference_mode():
    ...     fast, full = engine(occluded, top, left, (4, 4)), model(occluded)
    >>> bool(torch.allclose(fast, full, atol=1e-5))
    True
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as module_globals

__all__ = ["IncrementalForward", "incremental_forward"]

POINTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Mish,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)
"""Modules that act on each value alone (Dropout: in eval mode), so they keep a box as it is."""

POINTWISE_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.leaky_relu, F.silu, F.gelu, torch.sigmoid, torch.tanh)
POINTWISE_METHODS = ("relu", "sigmoid", "tanh")
SUMS = (operator.add, operator.iadd, torch.add)


def _traced_through() -> tuple[type, ...]:
    """The module classes whose forward is traced (exact classes: a subclass may have its own forward)."""
    kinds: list[type] = [nn.Sequential]
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

        kinds += [ResNet, BasicBlock, Bottleneck]
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    return tuple(kinds)


class _Tracer(fx.Tracer):
    def __init__(self, traced: tuple[type, ...]) -> None:
        super().__init__()
        self.traced = traced

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return type(module) not in self.traced


def _has_forward_hooks(model: nn.Module) -> bool:
    global_hooks = ("_global_forward_hooks", "_global_forward_pre_hooks")
    if any(getattr(module_globals, name, None) for name in global_hooks):
        return True
    return any(module._forward_hooks or module._forward_pre_hooks for module in model.modules())


@dataclass
class _Box:
    """A batch of feature maps given as the kept maps of the unoccluded images with a box replaced.

    Row ``b = p * N + n`` (window position ``p``, image ``n``) is ``kept[n]`` except at rows ``top[p]:top[p] + h``
    and columns ``left[p]:left[p] + w``, where it is ``values[b]`` (P * N, C, h, w). ``top`` and ``left`` (P,) live
    on the CPU (no device syncs for the box arithmetic)."""

    values: Tensor
    top: Tensor
    left: Tensor
    kept: Tensor


def _span(start: Tensor, size: int, kernel: int, stride: int, padding: int, dilation: int, extent: int):
    """The output positions (one axis) that inputs ``start:start + size`` reach through a sliding window, as one
    span of the same size for every row: (first position per row, size). The span is moved inside the map where
    it would overhang, which only recomputes positions that did not change."""
    first = -torch.div(-(start + padding - dilation * (kernel - 1)), stride, rounding_mode="floor")
    last = torch.div(start + size - 1 + padding, stride, rounding_mode="floor")
    first, last = first.clamp(min=0), last.clamp(max=extent - 1)
    length = max(1, int((last - first + 1).max()))
    if length >= extent:
        return torch.zeros_like(first), extent
    return torch.minimum(first, torch.full_like(first, extent - length)), length


def _gather(box: _Box, rows: tuple[list[int], int], columns: tuple[list[int], int], fill: float) -> Tensor:
    """The maps ``box`` stands for at rows ``first[p]:first[p] + length`` and columns alike, per window position
    ``p`` (``rows = (first, length)``), ``fill`` outside the map: (P * N, C, length, length') in the layout of the
    kept maps. Copies of slices, one per position: cheaper than one gather with index tensors."""
    kept = box.kept
    height, width = kept.shape[-2:]
    images = len(kept)
    (row_firsts, row_length), (column_firsts, column_length) = rows, columns
    pad = (
        max(0, -min(column_firsts)),
        max(0, max(column_firsts) + column_length - width),
        max(0, -min(row_firsts)),
        max(0, max(row_firsts) + row_length - height),
    )
    if any(pad):
        kept = _padded(kept, pad, fill)
    box_height, box_width = box.values.shape[-2:]
    out = kept.new_empty((len(row_firsts) * images, kept.shape[1], row_length, column_length))
    if _channels_last(kept):
        out = out.contiguous(memory_format=torch.channels_last)
    box_tops, box_lefts = box.top.tolist(), box.left.tolist()
    for position, (row, column, box_top, box_left) in enumerate(
        zip(row_firsts, column_firsts, box_tops, box_lefts, strict=True)
    ):
        rows_here = slice(position * images, (position + 1) * images)
        out[rows_here] = kept[
            :, :, row + pad[2] : row + pad[2] + row_length, column + pad[0] : column + pad[0] + column_length
        ]
        # the box, where it overlaps the slab
        top, bottom = max(row, box_top), min(row + row_length, box_top + box_height)
        left, right = max(column, box_left), min(column + column_length, box_left + box_width)
        if top < bottom and left < right:
            out[rows_here, :, top - row : bottom - row, left - column : right - column] = box.values[
                rows_here, :, top - box_top : bottom - box_top, left - box_left : right - box_left
            ]
    return out


def _padded(kept: Tensor, pad: tuple[int, ...], fill: float) -> Tensor:
    padded = F.pad(kept, pad, value=fill)
    return padded.contiguous(memory_format=torch.channels_last) if _channels_last(kept) else padded


def _channels_last(maps: Tensor) -> bool:
    return maps.is_contiguous(memory_format=torch.channels_last) and not maps.is_contiguous()


def _whole(box: _Box) -> Tensor:
    """The full maps (P * N, C, H, W) that ``box`` stands for."""
    positions = len(box.top)
    return _gather(box, ([0] * positions, box.kept.shape[-2]), ([0] * positions, box.kept.shape[-1]), 0.0)


class _Window:
    """A convolution (BatchNorm folded in) or a pooling: whole maps, or a box in and a box out."""

    def __init__(self, function: Callable[..., Tensor], kernel, stride, padding, dilation, fill: float) -> None:
        self.function, self.fill = function, fill  # function(maps, padding)
        pair = nn.modules.utils._pair
        self.kernel, self.stride, self.padding, self.dilation = (
            pair(kernel),
            pair(stride),
            pair(padding),
            pair(dilation),
        )

    def whole(self, maps: Tensor) -> Tensor:
        return self.function(_layout(maps), self.padding)

    def boxed(self, box: _Box, out_shape: torch.Size) -> _Box | Tensor:
        spans = _spans(box, self, out_shape[-2:])
        reads = [
            ((first * stride - padding).tolist(), (length - 1) * stride + dilation * (kernel - 1) + 1)
            for (first, length), kernel, stride, padding, dilation in zip(
                spans, self.kernel, self.stride, self.padding, self.dilation, strict=True
            )
        ]
        values = self.function(_layout(_gather(box, reads[0], reads[1], self.fill)), 0)
        (top, height), (left, width) = spans
        if (height, width) == tuple(out_shape[-2:]):
            return values
        return _Box(values, top, left, box.kept)  # kept is replaced by the caller


SMALL_MAPS = 16
"""Feature maps of at most this many positions (4x4) go through convolutions in the usual (N, C, H, W) layout: on
oneDNN (CPU) convolutions of such maps take 1.4-2.2x longer in the channels-last layout, which is faster from 16x16
on (batches of 64 at 512 channels and 2x2: 13 against 29 ms)."""


def _layout(maps: Tensor) -> Tensor:
    return maps.contiguous() if maps.shape[-1] * maps.shape[-2] <= SMALL_MAPS else maps


def _conv_window(conv: nn.Conv2d, norm: nn.Module | None) -> _Window:
    weight, bias = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
    if norm is not None:
        scale = norm.running_var.detach() + norm.eps
        scale = scale.rsqrt() if norm.weight is None else norm.weight.detach() * scale.rsqrt()
        shift = -norm.running_mean.detach() * scale
        shift = shift if norm.bias is None else shift + norm.bias.detach()
        weight = weight * scale.view(-1, 1, 1, 1).to(weight.dtype)
        bias = shift.to(weight.dtype) if bias is None else bias * scale.to(weight.dtype) + shift.to(weight.dtype)
    stride, dilation, groups = conv.stride, conv.dilation, conv.groups

    def function(maps: Tensor, padding) -> Tensor:
        return F.conv2d(maps, weight, bias, stride, padding, dilation, groups)

    return _Window(function, conv.kernel_size, stride, conv.padding, dilation, 0.0)


def _pool_window(pool: nn.Module) -> _Window:
    if isinstance(pool, nn.MaxPool2d):

        def function(maps: Tensor, padding) -> Tensor:
            return F.max_pool2d(maps, pool.kernel_size, pool.stride, padding, pool.dilation)

        return _Window(function, pool.kernel_size, pool.stride, pool.padding, pool.dilation, -math.inf)

    def average(maps: Tensor, padding) -> Tensor:
        return F.avg_pool2d(maps, pool.kernel_size, pool.stride, padding)

    return _Window(average, pool.kernel_size, pool.stride, pool.padding, 1, 0.0)


def _window_of(module: nn.Module) -> bool:
    if type(module) is nn.Conv2d:
        return module.padding_mode == "zeros" and not isinstance(module.padding, str)
    if type(module) is nn.MaxPool2d:
        return not module.return_indices and not module.ceil_mode
    if type(module) is nn.AvgPool2d:
        return module.count_include_pad and not module.ceil_mode and module.divisor_override is None
    return False


def _running_norm(module: nn.Module) -> bool:
    return (
        type(module) in (nn.BatchNorm2d, nn.SyncBatchNorm)
        and not module.training
        and module.running_mean is not None
        and module.running_var is not None
    )


class IncrementalForward:
    """The model's forward pass for occluded copies of a batch of images, recomputing only what each window reaches.

    Built by :func:`incremental_forward`, which also says which models qualify. Call it under
    ``torch.inference_mode()`` (or ``no_grad``) with the model in eval mode, as occlusion does.

    Args:
        model: the model; it must stay unchanged (parameters, modes) while this object is used.
        graph: the model's forward, traced with the modules of :func:`_traced_through` followed through.
        images: the unoccluded images (N, C, H, W), run once here.

    Attributes:
        output: the model's output for ``images`` (computed as the occluded copies are, so differences between the
            two are the occlusion's, not float rounding's).
    """

    def __init__(self, model: nn.Module, graph: fx.Graph, images: Tensor) -> None:
        modules = dict(model.named_modules())
        self.nodes = list(graph.nodes)
        self.batch = len(images)
        self.windows: dict[fx.Node, _Window] = {}
        self.folded: dict[fx.Node, fx.Node] = {}  # BatchNorm node -> the convolution it is folded into
        self.pointwise: set[fx.Node] = set()
        self.sums: set[fx.Node] = set()
        for node in self.nodes:
            target = modules.get(node.target) if node.op == "call_module" else None
            if target is not None and _window_of(target):
                norm = None
                users = list(node.users)
                if len(users) == 1 and users[0].op == "call_module" and _running_norm(modules[users[0].target]):
                    if users[0].args == (node,) and not users[0].kwargs:
                        norm = modules[users[0].target]
                        self.folded[users[0]] = node
                if type(target) is nn.Conv2d:
                    self.windows[node] = _conv_window(target, norm)
                else:
                    self.windows[node] = _pool_window(target)
            elif node.op == "call_module" and node not in self.folded:
                if type(target) in POINTWISE_MODULES or _running_norm(target):
                    self.pointwise.add(node)
            elif node.op == "call_function" and node.target in POINTWISE_FUNCTIONS:
                self.pointwise.add(node)
            elif node.op == "call_method" and node.target in POINTWISE_METHODS:
                self.pointwise.add(node)
            elif node.op == "call_function" and node.target in SUMS and len(node.args) == 2 and not node.kwargs:
                self.sums.add(node)
        self.modules = modules
        self.last_use: dict[fx.Node, list[fx.Node]] = {}
        seen: set[fx.Node] = set()
        for node in reversed(self.nodes):
            for used in node.all_input_nodes:
                if used not in seen:
                    seen.add(used)
                    self.last_use.setdefault(node, []).append(used)
        self.kept: dict[fx.Node, Tensor] = {}
        self.output = self._run(images.contiguous(memory_format=torch.channels_last), reference=True)

    def __call__(self, copies: Tensor, top: Tensor, left: Tensor, window: tuple[int, int]) -> object:
        """The model's output for ``copies`` (P * N, C, H, W): rows ``p * N`` to ``p * N + N - 1`` are the N images
        with window position ``p`` occluded, equal to the images outside rows ``top[p]:top[p] + h`` and columns
        ``left[p]:left[p] + w``, ``(h, w) = window`` (a box inside the images)."""
        if len(copies) != len(top) * self.batch or len(top) != len(left):
            raise ValueError(
                f"Expected {self.batch} copies per window position, got {len(copies)} copies for {len(top)} positions."
            )
        top, left = top.to("cpu", torch.long), left.to("cpu", torch.long)
        values = copies.new_empty((len(copies), copies.shape[1], *window))
        for position, (row, column) in enumerate(zip(top.tolist(), left.tolist(), strict=True)):
            rows_here = slice(position * self.batch, (position + 1) * self.batch)
            values[rows_here] = copies[rows_here, :, row : row + window[0], column : column + window[1]]
        return self._run(_Box(values, top, left, self.kept[self.nodes[0]]), reference=False)

    def _run(self, inputs: Tensor | _Box, *, reference: bool) -> object:
        """One pass over the graph: the unoccluded images (``reference``: every layer's output is kept) or a batch
        of boxes."""
        env: dict[fx.Node, object] = {}
        fresh: set[fx.Node] = set()  # nodes whose tensor this pass made and nothing else holds

        def whole(node: fx.Node) -> object:
            value = env[node]
            if isinstance(value, _Box):
                value = env[node] = _whole(value)
            return value

        def private(node: fx.Node, tensor: Tensor) -> Tensor:
            """``tensor`` if an in-place operation on it can harm nothing, else a copy."""
            return tensor if node in fresh and len(node.users) == 1 else tensor.clone()

        for node in self.nodes:
            if node.op == "placeholder":
                if env:
                    raise ValueError("a forward with more than one input")
                env[node] = inputs
            elif node.op == "output":
                return fx.node.map_arg(node.args[0], whole)
            elif node in self.folded:
                conv = self.folded[node]
                env[node] = env[conv]  # the convolution computed this BatchNorm's output
                if conv in fresh:
                    fresh.add(node)
            else:
                env[node] = self._step(node, env, whole, private, fresh, reference)
            if reference and isinstance(env[node], Tensor):
                self.kept[node] = env[node].clone()
            for used in self.last_use.get(node, ()):
                env.pop(used, None)
        raise ValueError("the traced forward has no output")  # pragma: no cover

    def _step(self, node: fx.Node, env, whole, private, fresh: set[fx.Node], reference: bool) -> object:
        first = node.args[0] if node.args else None
        value = env.get(first) if isinstance(first, fx.Node) else None
        keep = self.kept.get(node)
        if node in self.windows and isinstance(value, (Tensor, _Box)):
            window = self.windows[node]
            fresh.add(node)
            if isinstance(value, _Box) and _mostly(value, keep, window):
                value = whole(first)
            if isinstance(value, Tensor):
                return window.whole(value)
            result = window.boxed(value, keep.shape)
            if isinstance(result, _Box):
                result.kept = keep
            return result
        if node in self.pointwise and isinstance(value, _Box):
            values = self._call(node, [private(first, value.values)] + self._rest(node, env, whole))
            fresh.add(node)
            return _Box(values, value.top, value.left, keep)
        if node in self.sums and all(isinstance(env.get(arg), _Box) for arg in node.args):
            a, b = env[node.args[0]], env[node.args[1]]
            if a.kept.shape == b.kept.shape:
                fresh.add(node)
                return self._sum(a, b, keep)
        if node in self.pointwise and isinstance(value, Tensor) and not reference and first in fresh:
            if node.op == "call_module" and type(self.modules[node.target]) is nn.ReLU and len(first.users) == 1:
                fresh.add(node)
                return value.relu_()
        # anything else: whole maps, run as the model runs it
        args = fx.node.map_arg(node.args, whole)
        kwargs = fx.node.map_arg(node.kwargs, whole)
        if reference:  # keep the kept maps safe from in-place operations
            args, kwargs = _copies(args), _copies(kwargs)
        try:
            return self._call(node, args, kwargs)
        except RuntimeError:
            if not _any_strided(args) and not _any_strided(kwargs):
                raise
            return self._call(node, _contiguous(args), _contiguous(kwargs))

    def _rest(self, node: fx.Node, env, whole) -> list[object]:
        return list(fx.node.map_arg(tuple(node.args[1:]), whole))

    def _call(self, node: fx.Node, args, kwargs=None) -> object:
        kwargs = dict(node.kwargs if kwargs is None else kwargs)
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            target = self.modules[""]
            for name in node.target.split("."):
                target = getattr(target, name)
            return target
        raise ValueError(f"unknown graph operation {node.op!r}")  # pragma: no cover

    @staticmethod
    def _sum(a: _Box, b: _Box, keep: Tensor) -> _Box | Tensor:
        spans = []
        for start_a, size_a, start_b, size_b, extent in zip(
            (a.top, a.left), a.values.shape[-2:], (b.top, b.left), b.values.shape[-2:], a.kept.shape[-2:], strict=True
        ):
            first = torch.minimum(start_a, start_b)
            length = int((torch.maximum(start_a + size_a, start_b + size_b) - first).max())
            spans.append((torch.minimum(first, torch.full_like(first, extent - length)), length))
        (top, height), (left, width) = spans

        def on_spans(box: _Box) -> Tensor:
            if box.values.shape[-2:] == (height, width) and torch.equal(box.top, top) and torch.equal(box.left, left):
                return box.values
            return _gather(box, (top.tolist(), height), (left.tolist(), width), 0.0)

        values = on_spans(a) + on_spans(b)
        if (height, width) == tuple(keep.shape[-2:]):
            return values
        return _Box(values, top, left, keep)


MOSTLY = 0.5
"""A convolution or pooling runs on whole maps once its output box would cover more than this share of the map:
cutting out and pasting boxes then costs more than the positions it saves."""


def _spans(box: _Box, window: _Window, extents: Sequence[int]) -> list[tuple[Tensor, int]]:
    """:func:`_span` of ``box`` through ``window`` along rows and columns, into maps of ``extents`` (height, width)."""
    return [
        _span(start, size, *params, extent)
        for start, size, *params, extent in zip(
            (box.top, box.left),
            box.values.shape[-2:],
            window.kernel,
            window.stride,
            window.padding,
            window.dilation,
            extents,
            strict=True,
        )
    ]


def _mostly(box: _Box, keep: Tensor, window: _Window) -> bool:
    height, width = keep.shape[-2:]
    (_, rows), (_, columns) = _spans(box, window, (height, width))
    return rows * columns > MOSTLY * height * width


def _copies(value):
    return fx.node.map_aggregate(value, lambda item: item.clone() if isinstance(item, Tensor) else item)


def _any_strided(value) -> bool:
    found = []
    fx.node.map_aggregate(value, lambda item: found.append(isinstance(item, Tensor) and not item.is_contiguous()))
    return any(found)


def _contiguous(value):
    return fx.node.map_aggregate(value, lambda item: item.contiguous() if isinstance(item, Tensor) else item)


def incremental_forward(model: nn.Module, images: Tensor) -> IncrementalForward | None:
    """An :class:`IncrementalForward` of ``model`` for occluded copies of ``images``, or None where it does not
    apply (then run the model itself): a model other than an ``nn.Sequential`` or a torchvision ``ResNet``, forward
    hooks on any module, a forward the tracer cannot follow, or no layer it could recompute in part.

    Args:
        model: the model, in eval mode (BatchNorm uses its running statistics: the per-box recomputation is exact
            only then); nothing of it changes.
        images: the unoccluded images (N, C, H, W); run through the model once here, under the caller's grad mode.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> engine = incremental_forward(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()).eval(), torch.rand(1, 3, 8, 8))
        >>> engine.output.shape
        torch.Size([1, 144])
        >>> incremental_forward(nn.Linear(3, 2), torch.rand(1, 3)) is None
        True
    """
    traced = _traced_through()
    if type(model) not in traced or images.ndim != 4 or _has_forward_hooks(model):
        return None
    try:
        graph = _Tracer(traced).trace(model)
    except Exception:  # noqa: BLE001 - a forward the tracer cannot follow runs as it is
        return None
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    engine = IncrementalForward(model, graph, images)
    if not any(user in engine.windows for user in placeholders[0].users):
        return None
    return engine
