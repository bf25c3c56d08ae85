"""Find the images and labels in whatever a data loader yields: a tensor, a tuple or list, or a dict.

Defaults: a tensor is the images; a tuple or list holds the images first and, when it is a vector of class
indices, the labels second; a dict holds them under ``"image"``/``"images"``/``"x"``/``"input"``/``"inputs"``/
``"pixel_values"`` and ``"label"``/``"labels"``/``"y"``/``"target"``/``"targets"``. ``image_key`` and
``label_key`` (an int for a tuple or list, a string for a dict) say where they are otherwise.

Example::

    >>> import torch
    >>> from lightning_cnnsee.run.batches import split_batch
    >>> images, labels = split_batch({"img": torch.rand(4, 3, 8, 8), "cls": torch.arange(4)}, "img", "cls")
    >>> images.shape, labels.tolist()
    (torch.Size([4, 3, 8, 8]), [0, 1, 2, 3])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["BatchKey", "IMAGE_KEYS", "LABEL_KEYS", "copy_to_cpu", "split_batch"]

BatchKey = int | str | None

IMAGE_KEYS = ("image", "images", "x", "input", "inputs", "pixel_values")
LABEL_KEYS = ("label", "labels", "y", "target", "targets")


def _describe(batch: object) -> str:
    if isinstance(batch, Tensor):
        return f"a tensor of shape {tuple(batch.shape)}"
    if isinstance(batch, Mapping):
        return f"a dict with keys {list(batch.keys())}"
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)} items"
    return f"a {type(batch).__name__}"


def _get(batch: object, key: int | str) -> object:
    try:
        return batch[key]  # type: ignore[index]
    except (KeyError, IndexError, TypeError) as error:
        raise ValueError(f"Batch key {key!r} not found in {_describe(batch)}.") from error


def _is_labels(value: object, count: int) -> bool:
    """Labels of ``count`` images: (N,) class indices, (N, C) multi-hot labels (0 and 1, of a multi-label model) or
    (N, H, W) class masks (of a segmentation model)."""
    if not isinstance(value, Tensor) or value.ndim not in (1, 2, 3) or value.shape[0] != count or value.is_complex():
        return False
    if value.ndim == 2:
        return bool(((value == 0) | (value == 1)).all())
    return not value.is_floating_point()


def split_batch(batch: object, image_key: BatchKey = None, label_key: BatchKey = None) -> tuple[Tensor, Tensor | None]:
    """Return ``(images (N, C, H, W), labels or None)`` from a batch; labels are (N,) class indices, (N, C)
    multi-hot labels or (N, H, W) class masks.

    Raises:
        ValueError: when no (N, C, H, W) image tensor can be found; the message describes the batch.
    """
    if image_key is not None:
        images = _get(batch, image_key)
    elif isinstance(batch, Tensor):
        images = batch
    elif isinstance(batch, Mapping):
        images = next((batch[key] for key in IMAGE_KEYS if key in batch), None)
    elif isinstance(batch, (tuple, list)) and batch:
        images = batch[0]
    else:
        images = None
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(
            f"Cannot find (N, C, H, W) images in {_describe(batch)}; set image_key (an int for a tuple or list, "
            f"a string for a dict; default dict keys: {list(IMAGE_KEYS)})."
        )
    count = images.shape[0]
    labels: object = None
    if label_key is not None:
        labels = _get(batch, label_key)
        if not _is_labels(labels, count):
            raise ValueError(
                f"label_key {label_key!r} does not select labels of {count} images: (N,) class indices, (N, C) "
                "multi-hot labels or (N, H, W) class masks."
            )
    elif isinstance(batch, Mapping):
        labels = next((batch[key] for key in LABEL_KEYS if key in batch), None)
    elif isinstance(batch, (tuple, list)) and len(batch) > 1:
        labels = batch[1]
    if not _is_labels(labels, count):
        labels = None
    return images, labels  # type: ignore[return-value]


def copy_to_cpu(tensor: Tensor) -> Tensor:
    """A plain CPU copy, usable outside ``torch.inference_mode`` even when ``tensor`` was made inside it."""
    with torch.inference_mode(False):
        return tensor.detach().to("cpu", copy=True).clone()
