"""The fixed images every run shows: collected from the first batches, kept on the CPU, the same on every rank.

Example::

    >>> import torch
    >>> from lightning_cnnsee.callback.fixed_images import FixedImages
    >>> fixed = FixedImages(num_samples=3)
    >>> fixed.collect((torch.rand(2, 1, 4, 4), torch.tensor([0, 1])))
    >>> fixed.collect((torch.rand(2, 1, 4, 4), torch.tensor([2, 3])))
    >>> fixed.images.shape, fixed.labels.tolist(), fixed.frozen
    (torch.Size([3, 1, 4, 4]), [0, 1, 2], True)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_cnnsee.callback.distributed import broadcast_from_zero
from lightning_cnnsee.run.batches import BatchKey, copy_to_cpu, split_batch
from lightning_cnnsee.run.objects import split_objects

__all__ = ["FixedImages"]


class FixedImages:
    """Up to ``num_samples`` images (and their labels, when every batch had them) taken from batches in order;
    with an ``object_key``, each image's object too (``objects``, (N, H, W) bool masks).

    ``frozen`` once full (or once shared); ``shared`` once every rank holds rank 0's images. Both, and the
    images, survive a checkpoint (:meth:`state_dict`), so a resumed run shows the same images.
    """

    def __init__(
        self, num_samples: int, image_key: BatchKey = None, label_key: BatchKey = None, object_key: BatchKey = None
    ) -> None:
        self.num_samples = num_samples
        self.image_key = image_key
        self.label_key = label_key
        self.object_key = object_key
        self.images: Tensor | None = None
        self.labels: Tensor | None = None
        self.objects: Tensor | None = None
        self.frozen = False
        self.shared = False

    @property
    def count(self) -> int:
        return 0 if self.images is None else int(self.images.shape[0])

    def collect(self, batch: Any) -> None:
        """Add the images (and labels) of ``batch`` until there are ``num_samples``; raises ``ValueError`` when the
        batch holds no (N, C, H, W) images, :class:`~lightning_cnnsee.run.objects.ObjectsError` (a ``ValueError``)
        when its objects cannot be read."""
        if self.frozen:
            return
        images, labels = split_batch(batch, self.image_key, self.label_key)
        take = min(self.num_samples - self.count, images.shape[0])
        if take <= 0:
            return
        objects = split_objects(batch, self.object_key, images)
        new_objects = None if objects is None else objects[:take]
        new_images = copy_to_cpu(images[:take])
        new_labels = None if labels is None else copy_to_cpu(labels[:take])
        if self.images is None:
            self.images, self.labels, self.objects = new_images, new_labels, new_objects
        else:
            self.images = torch.cat([self.images, new_images])
            if self.objects is not None and new_objects is not None:
                self.objects = torch.cat([self.objects, new_objects])
            both = self.labels is not None and new_labels is not None
            self.labels = torch.cat([self.labels, new_labels]) if both else None  # type: ignore[list-item]
        self.frozen = self.count >= self.num_samples

    def share(self, trainer: Any) -> None:
        """Make rank 0's images those of every rank (once; nothing to send in a single process)."""
        if self.shared:
            return
        self.images, self.labels, self.objects = broadcast_from_zero(trainer, (self.images, self.labels, self.objects))
        self.shared = self.frozen = self.images is not None

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images, "labels": self.labels, "objects": self.objects, "frozen": self.frozen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = state.get("images")
        self.labels = state.get("labels")
        self.objects = state.get("objects")
        self.frozen = bool(state.get("frozen", self.images is not None))
        self.shared = self.images is not None  # every rank loads the same checkpoint
