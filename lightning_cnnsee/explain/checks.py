"""The tensor checks the pure-torch core shares: each raises ``ValueError`` naming the argument, the bad value and
what was expected, before any work is done (plain numbers: :mod:`lightning_cnnsee.vocabulary.checks`).

Example::

    >>> image_batch(torch.zeros(0, 3, 4, 4))
    Traceback (most recent call last):
    ...
    ValueError: images is an empty batch, of shape (0, 3, 4, 4).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["broadcast_baseline", "feature_map", "image_batch"]


def _shape_of(value: object) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


def image_batch(images: object, name: str = "images") -> Tensor:
    """``images`` if it is a floating-point (N, C, H, W) tensor with at least one image.

    Example::

        >>> image_batch(torch.zeros(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point (N, C, H, W) batch, got {_shape_of(images)}.")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch, of shape {tuple(images.shape)}.")
    return images


def feature_map(output: object, layer: str, role: str, hint: str = "") -> Tensor:
    """A layer's recorded output if it is an (N, C, H, W) feature map.

    Args:
        output: what the layer gave.
        layer: its name, for the message.
        role: what the layer was chosen for (``"CAM"``, ``"Activation"``), for the message.
        hint: a sentence to add to the message (what to choose instead).

    Example::

        >>> feature_map(torch.zeros(1, 2, 3, 3), "conv", "CAM").shape
        torch.Size([1, 2, 3, 3])
    """
    if not isinstance(output, Tensor) or output.ndim != 4:
        message = f"{role} layer {layer!r} must output a (N, C, H, W) feature map, but it gave {_shape_of(output)}"
        raise ValueError(f"{message}; {hint}" if hint else f"{message}.")
    return output


def broadcast_baseline(baseline: float | Tensor | None, images: Tensor, name: str = "baseline") -> Tensor:
    """The reference input of attributions and faithfulness as a tensor of the images' shape: ``None`` means 0; a
    number, or a tensor that broadcasts to the images (N, C, H, W), in their dtype and device.

    Example::

        >>> broadcast_baseline(0.5, torch.zeros(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """
    if baseline is not None and not isinstance(baseline, (int, float, Tensor)) or isinstance(baseline, bool):
        raise ValueError(f"{name} must be None, a number or a tensor, got {type(baseline).__name__}.")
    value = torch.as_tensor(0.0 if baseline is None else baseline, dtype=images.dtype, device=images.device).clone()
    try:
        return torch.broadcast_to(value, images.shape)
    except RuntimeError as error:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast to the images' shape {tuple(images.shape)}."
        ) from error
