"""Intermediate activations: the feature maps a batch of images produces at chosen layers.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee import capture_activations
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> maps = capture_activations(model, torch.rand(2, 3, 12, 12), ["1"])
    >>> maps["1"].shape
    torch.Size([2, 8, 10, 10])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_cnnsee.explain.hooks import eval_mode, get_modules, record_outputs, stop_after
from lightning_cnnsee.explain.tokens import feature_map, token_layout

__all__ = ["capture_activations"]


def capture_activations(model: nn.Module, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """Feature maps (N, C, h, w) of ``images`` at each layer, detached, from one forward pass in eval mode; a
    transformer's tokens on their patch grid and its (N, H, W, C) stages permuted (see
    :func:`~lightning_cnnsee.explain.tokens.feature_map`).

    The forward pass stops as soon as the deepest requested layer has run. The model's train/eval flags are
    restored afterwards.

    Raises:
        ValueError: if a layer does not output a (N, C, H, W) tensor.
    """
    layers = list(layers)
    with torch.no_grad(), eval_mode(model), record_outputs(model, layers, detach=True) as recorded:
        with stop_after(model, layers):
            model(images)
    result = {}
    layout = token_layout(model, images.shape[-2:])
    modules = get_modules(model, layers)
    for name in layers:
        output = recorded.get(name)
        try:
            result[name] = feature_map(output, layout, modules[name])  # type: ignore[arg-type]
        except ValueError as error:
            raise ValueError(f"Activation layer {name!r} must output a (N, C, H, W) map, but {error}.") from None
    return result
