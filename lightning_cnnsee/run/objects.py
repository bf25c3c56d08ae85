"""Find each image's object in a batch (``object_key``): boxes or masks, checked and turned into (N, H, W) masks.

Example::

    >>> import torch
    >>> from lightning_cnnsee.run.objects import split_objects
    >>> batch = {"image": torch.rand(2, 3, 8, 8), "box": torch.tensor([[0, 0, 4, 4], [2, 2, 8, 6]])}
    >>> split_objects(batch, "box", batch["image"]).float().mean(dim=(1, 2)).tolist()
    [0.25, 0.375]
    >>> split_objects(batch, "box", torch.rand(2, 3, 5, 5))
    Traceback (most recent call last):
    ...
    lightning_cnnsee.run.objects.ObjectsError: CNNSee(object_key='box'): objects[1]: box [2.0, 2.0, 8.0, 6.0] \
(x0, y0, x1, y1) is empty or outside the 5x5 image: it needs 0 <= x0 < x1 <= 5 and 0 <= y0 < y1 <= 5 (pixels, \
not fractions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_cnnsee.explain.localization import object_masks
from lightning_cnnsee.run.batches import BatchKey, _get

__all__ = ["ObjectsError", "split_objects"]


class ObjectsError(ValueError):
    """The objects of a batch cannot be read: a configuration error, raised (not warned) before training starts."""


def split_objects(batch: object, object_key: BatchKey, images: Tensor) -> Tensor | None:
    """The objects of ``images`` found at ``object_key`` in ``batch``, as (N, H, W) bool masks on the CPU (``None``
    without an ``object_key``).

    Accepted: boxes (N, 4) ``(x0, y0, x1, y1)`` in pixels, a list of N (K, 4) boxes per image, or masks (N, H, W)
    (bool or in [0, 1]); see :func:`~lightning_cnnsee.explain.localization.object_masks`.

    Raises:
        ObjectsError: the key is missing, or the value has a wrong shape or boxes outside the image; the message
            names ``object_key`` and the value.
    """
    if object_key is None:
        return None
    try:
        value = _get(batch, object_key)
        if not isinstance(value, (Tensor, Sequence)) and hasattr(value, "__array__"):
            value = torch.as_tensor(value)  # a numpy array
        return object_masks(value, count=int(images.shape[0]), size=tuple(images.shape[-2:]))  # type: ignore[arg-type]
    except ValueError as error:
        raise ObjectsError(f"CNNSee(object_key={object_key!r}): {error}") from None
