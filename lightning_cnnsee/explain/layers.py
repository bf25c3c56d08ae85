"""Find layers by name, pick sensible layers automatically, and pick the logits out of a model's output.

Layer names are those of ``model.named_modules()`` (``"features.3"``, ``"layer4.1.conv2"``).

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee.explain.layers import pick_layers
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    >>> picks = pick_layers(model, torch.rand(1, 3, 16, 16))
    >>> picks.gradcam, picks.features, picks.class_layer
    (['3'], ['0', '2'], '6')
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lightning_cnnsee.explain.registration import hooks_on
from lightning_cnnsee.explain.tokens import TokenLayout, feature_map, is_attention, token_layout

__all__ = [
    "COMPILED_PART",
    "LayerPicks",
    "OutputKey",
    "device_and_dtype",
    "find_layer",
    "logits_of",
    "named_layers",
    "pick_layers",
    "plain_name",
    "resolve_layer_names",
    "select_output",
    "spread",
    "trace_layers",
]

OutputKey = int | str | None


COMPILED_PART = "_orig_mod"


def plain_name(name: str) -> str:
    """A layer name without the ``_orig_mod`` part that ``torch.compile`` inserts (``net._orig_mod.3`` -> ``net.3``)."""
    return ".".join(part for part in name.split(".") if part != COMPILED_PART)


def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{name: module}`` for every submodule, by the names the model was written with: a ``torch.compile``-d
    module's layers appear once, without ``_orig_mod`` (``net.3``, not ``net._orig_mod.3``)."""
    layers: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        plain = plain_name(name)
        if plain and plain not in layers:
            layers[plain] = module
    return layers


def find_layer(model: nn.Module, name: str) -> nn.Module | None:
    """The submodule called ``name`` (with or without ``torch.compile``'s ``_orig_mod``), or ``None``."""
    return named_layers(model).get(plain_name(name))


def device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of ``model``'s first floating parameter or buffer (CPU, float32 without one)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def resolve_layer_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Check that every name is a layer of ``model``; raise ``ValueError`` listing the closest real names.

    A ``torch.compile``-d submodule's layers answer to their names with or without ``_orig_mod``.
    """
    if isinstance(names, str):
        raise TypeError(f"layer names must be a list of strings, got the string {names!r}; write [{names!r}]")
    layers = named_layers(model)
    known = list(layers)
    for name in names:
        if plain_name(str(name)) not in layers:
            close = difflib.get_close_matches(str(name), known, n=5, cutoff=0.3)
            hint = f" Closest layer names: {close}." if close else ""
            sample = known[:20]
            raise ValueError(
                f"Unknown layer name {name!r} for {type(model).__name__}.{hint} "
                f"Valid names are those of model.named_modules(), for example {sample}"
                f"{' ...' if len(known) > 20 else ''}."
            )
    return list(names)


def select_output(output: object, key: OutputKey = None) -> torch.Tensor:
    """Pick the logits tensor out of a model's output.

    ``key=None`` accepts a tensor, the first tensor of a tuple or list, or the entry ``"logits"`` (a Hugging Face
    style output) or else ``"out"`` (torchvision's segmentation models) of a mapping. An int indexes a tuple or list;
    a string indexes a mapping or names an attribute.
    """
    if key is None:
        if isinstance(output, torch.Tensor):
            return output
        if isinstance(output, Mapping) and "logits" not in output and isinstance(output.get("out"), torch.Tensor):
            return output["out"]  # torchvision's segmentation models: {"out": ..., "aux": ...}
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            return output[0]
        if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
            return output["logits"]
        if isinstance(getattr(output, "logits", None), torch.Tensor):
            return output.logits
        raise TypeError(
            f"Cannot find the logits in a model output of type {type(output).__name__}; pass output_key "
            "(an int for a tuple or list, a string for a dict) to say where they are."
        )
    try:
        if isinstance(key, str) and not isinstance(output, Mapping):
            selected = getattr(output, key)
        else:
            selected = output[key]  # type: ignore[index]
    except (KeyError, IndexError, AttributeError, TypeError) as error:
        choices = list(output.keys()) if isinstance(output, Mapping) else None
        if isinstance(output, (tuple, list)):
            choices = list(range(len(output)))
        raise TypeError(
            f"output_key={key!r} does not select anything from a model output of type {type(output).__name__}"
            f"{f'; valid keys: {choices}' if choices is not None else ''}."
        ) from error
    if not isinstance(selected, torch.Tensor):
        raise TypeError(f"output_key={key!r} selects a {type(selected).__name__}, not a logits tensor.")
    return selected


def logits_of(model: nn.Module, inputs: torch.Tensor, output_key: OutputKey = None) -> torch.Tensor:
    """The (N, num_classes) logits of ``model`` on ``inputs``, found in its output by :func:`select_output`.

    Example::

        >>> logits_of(nn.Linear(3, 2), torch.zeros(4, 3)).shape
        torch.Size([4, 2])
    """
    logits = select_output(model(inputs), output_key)
    if logits.ndim != 2:
        raise ValueError(f"Expected logits of shape (N, num_classes), got {tuple(logits.shape)}.")
    return logits


@dataclass
class LayerPicks:
    """Layers chosen for each technique: the CAM layers and method, filter ascent and activations (features), and
    classes; ``output_shapes`` gives each layer's output as an (N, C, h, w) map where it is one (tokens on their
    patch grid, NHWC stages permuted), its raw shape otherwise; ``reason`` says why the CAM was chosen."""

    gradcam: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    class_layer: str | None = None
    num_classes: int | None = None
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    cam_method: str = "gradcam"
    reason: str = "a CNN: Grad-CAM on the last feature map larger than 1x1"
    rollout_layers: list[str] = field(default_factory=list)


def trace_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, object, bool]]:
    """Run ``model`` once on ``example``; return ``(name, module, output, passes_through)`` in finishing order.

    ``passes_through`` is true when a layer returned its own input object (``nn.Identity``, ``nn.Dropout`` in eval
    mode, an in-place activation) or a view of all of it (a permutation): such a layer adds nothing worth looking at.
    """
    order: list[tuple[str, nn.Module, object, bool]] = []

    def make_hook(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            first = args[0] if args else None
            passes_through = output is first or (  # or a view of its input (torchvision Swin's final permute)
                isinstance(output, torch.Tensor)
                and isinstance(first, torch.Tensor)
                and output.numel() == first.numel()
                and output.data_ptr() == first.data_ptr()
            )
            order.append((name, module, output, passes_through))

        return hook

    with hooks_on((module, make_hook(name)) for name, module in named_layers(model).items()), torch.no_grad():
        final = model(example)
    order.append(("", model, final, False))
    return order


def spread(items: Sequence[str], count: int) -> list[str]:
    """Up to ``count`` items evenly spread from the first to the last, in order."""
    if count <= 0 or not items:
        return []
    if len(items) <= count:
        return list(items)
    if count == 1:
        return [items[-1]]
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


def pick_layers(
    model: nn.Module, example: torch.Tensor, *, num_feature_layers: int = 3, output_key: OutputKey = None
) -> LayerPicks:
    """Choose layers on a model by running it once on ``example`` (a batch of one input is enough).

    - Grad-CAM: the last layer, in execution order, whose output is a (N, C, H, W) map larger than 1x1 (the last
      convolutional block, before global pooling), as torchcam and the Grad-CAM paper do; layers that hand their
      input on unchanged (``nn.Dropout`` in eval mode, ``nn.Identity``, in-place activations) are skipped, so the
      block that made the map is named; a segmentation model's output layer is not a candidate.
    - Filters and activations: ``num_feature_layers`` ``nn.Conv2d`` layers spread from the first to the last.
    - Classes: the last ``nn.Linear`` layer whose output has as many units as the logits.

    A transformer (see :func:`~lightning_cnnsee.explain.tokens.token_layout`) has its layers' tokens and (N, H, W, C)
    stages read as maps. One whose every self-attention spans the whole patch grid (ViT, DeiT, register tokens) gets
    the layer holding its blocks with ``cam_method="attention_rollout"``: Grad-CAM on its last token layer sees no
    gradient on the patch tokens of a class-token model, and on the tiny ViT of ``benchmarks/transformers.py``
    attention rollout points at the deciding patch most often (0.91 against 0.76 for the gradient-weighted rollout
    and 0.44 for Grad-CAM on ``blocks[-1].norm1``), at the lowest cost. One with windowed attention (Swin) gets
    Grad-CAM on its last stage larger than 1x1. Filters and activations are spread over the blocks or stages.
    """
    order = trace_layers(model, example)
    layout = token_layout(model, example.shape[-2:])
    maps = _map_shapes(order[:-1], layout)
    logits = select_output(order[-1][2], output_key)
    num_classes = int(logits.shape[1]) if logits.ndim in (2, 4) else None  # (N, C) or segmentation's (N, C, H, W)
    picks = LayerPicks(num_classes=num_classes)
    spatial = [
        name
        for name, module, out, passes_through in order[:-1]
        if name in maps
        and maps[name][-1] * maps[name][-2] > 1
        and not passes_through
        and out is not logits  # a segmentation model's output layer: the map explains itself
    ]
    picks.gradcam = spatial[-1:]
    convs: list[str] = []
    for name, module, out, _ in order[:-1]:
        if isinstance(module, nn.Conv2d) and name not in convs:
            convs.append(name)
    picks.features = spread(convs, num_feature_layers)
    if layout.transformer:
        picks.features = spread(_blocks(model, maps), num_feature_layers) or picks.features
        blocks, attentions = _global_attention(order[:-1], layout, named_layers(model))
        picks.rollout_layers = _holders(attentions, named_layers(model)) if blocks else []
        if blocks is not None:
            picks.gradcam, picks.cam_method = [blocks], "attention_rollout"
            picks.reason = (
                "a ViT: every attention spans the patch grid, and attention rollout pointed at the deciding patch "
                "most often, at the lowest cost (benchmarks/transformers.py); cam_method='gradient_rollout' gives "
                "class-specific maps"
            )
        else:
            picks.reason = "a transformer with windowed attention: Grad-CAM on its last stage larger than 1x1"
    for name, module, out, _ in reversed(order[:-1]):
        if (
            logits.ndim == 2
            and isinstance(module, nn.Linear)
            and isinstance(out, torch.Tensor)
            and out.shape[-1] == num_classes
        ):
            picks.class_layer = name
            break
    if layout.readout is not None and len(layout.readout) > 1:
        picks.class_layer = None  # DeiT averages two heads: class patterns ascend the model's output
    picks.output_shapes = {
        name: maps.get(name, tuple(out.shape)) for name, module, out, _ in order[:-1] if isinstance(out, torch.Tensor)
    }
    return picks


def _map_shapes(order: list[tuple[str, nn.Module, object, bool]], layout: TokenLayout) -> dict[str, tuple[int, ...]]:
    """``{name: (N, C, h, w)}`` of the layers whose output is a map (see
    :func:`~lightning_cnnsee.explain.tokens.feature_map`)."""
    shapes = {}
    for name, module, out, _ in order:
        if isinstance(out, torch.Tensor) and (out.ndim == 4 or (layout.transformer and out.ndim == 3)):
            try:
                shapes[name] = tuple(feature_map(out, layout, module).shape)
            except ValueError:
                continue
    return shapes


def _blocks(model: nn.Module, maps: dict[str, tuple[int, ...]]) -> list[str]:
    """The children of a transformer's sequence of blocks or stages that output maps: the shallowest
    ``nn.Sequential`` or ``nn.ModuleList`` with such children, the one with most of them among equals (timm
    ``blocks`` or ``layers``, torchvision ``encoder.layers`` or ``features``)."""
    layers = named_layers(model)
    children: dict[str, list[str]] = {}
    for name in maps:
        parent, _, _ = name.rpartition(".")
        if parent and isinstance(layers.get(parent), (nn.Sequential, nn.ModuleList)):
            children.setdefault(parent, []).append(name)
    found = [(parent.count("."), -len(names), parent) for parent, names in children.items()]
    return children[min(found)[2]] if found else []


def _holders(names: list[str], layers: dict[str, nn.Module]) -> list[str]:
    """The layers holding one or more of the attention modules ``names`` (themselves included), outermost first."""
    found = {".".join(name.split(".")[:end]) for name in names for end in range(1, name.count(".") + 2)}
    return sorted((name for name in found if name in layers), key=lambda name: (name.count("."), name))


def _global_attention(
    order: list[tuple[str, nn.Module, object, bool]], layout: TokenLayout, layers: dict[str, nn.Module]
) -> tuple[str | None, list[str]]:
    """The layer holding every self-attention of a model whose attentions all span its prefix and patch tokens and
    their names, or ``(None, [])``: the common parent of their names, or the sequence of blocks above it (a ViT of
    one block: ``blocks``, not ``blocks.0.attn``)."""
    if layout.grid is None:
        return None, []
    tokens = layout.prefix + layout.grid[0] * layout.grid[1]
    names = []
    for name, module, out, _ in order:
        if not is_attention(module):
            continue
        out = out[0] if isinstance(out, (tuple, list)) and out else out
        if not isinstance(out, torch.Tensor) or out.ndim != 3 or out.shape[1] != tokens:
            return None, []
        names.append(name)
    if not names:
        return None, []
    parts = [name.split(".") for name in names]
    common = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) > 1:
            break
        common.append(pieces[0])
    for end in range(len(common), 0, -1):
        if isinstance(layers.get(".".join(common[:end])), (nn.Sequential, nn.ModuleList)):
            return ".".join(common[:end]), names
    return ".".join(common) or None, names
