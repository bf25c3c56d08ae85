"""Where rendered images go: every TensorBoard logger of the trainer, or PNG files when there is none.

Example::

    >>> import tempfile, torch
    >>> from lightning_cnnsee.writers import PngWriter
    >>> folder = tempfile.mkdtemp()
    >>> path = PngWriter(folder).add_image("cnnsee/classes", torch.rand(3, 8, 8), 5)
    >>> path.endswith("cnnsee/classes/step_00000005.png")
    True
"""

from __future__ import annotations

import csv
import os
import re
from typing import Protocol

import numpy as np
from PIL import Image
from torch import Tensor


class ImageWriter(Protocol):
    """The part of ``torch.utils.tensorboard.SummaryWriter`` that CNNSee uses."""

    def add_image(self, tag: str, img_tensor: Tensor, global_step: int) -> object: ...

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> object: ...


def safe_path_part(text: str) -> str:
    """A file-system-safe version of a tag component (layer names keep their dots)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "_"


class PngWriter:
    """Writes each image as ``ROOT/<tag>/step_<step>.png`` and scalars to ``ROOT/scalars.csv``.

    ``strip_prefix`` is removed from the start of tags (``"cnnsee/"`` when ``ROOT`` is already a ``cnnsee`` folder).
    """

    def __init__(self, root: str, strip_prefix: str = "") -> None:
        self.root = root
        self.strip_prefix = strip_prefix

    def add_image(self, tag: str, img_tensor: Tensor, global_step: int) -> str:
        if self.strip_prefix and tag.startswith(self.strip_prefix):
            tag = tag[len(self.strip_prefix):]
        folder = os.path.join(self.root, *[safe_path_part(part) for part in tag.split("/")])
        os.makedirs(folder, exist_ok=True)
        array = (img_tensor.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round()
        path = os.path.join(folder, f"step_{int(global_step):08d}.png")
        Image.fromarray(array.astype(np.uint8)).save(path)
        return path

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None:
        os.makedirs(self.root, exist_ok=True)
        path = os.path.join(self.root, "scalars.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["tag", "step", "value"])
            writer.writerow([tag, int(global_step), float(scalar_value)])


def tensorboard_writers(loggers: list[object]) -> list[ImageWriter]:
    """The ``SummaryWriter`` of every TensorBoard logger among ``loggers`` (Lightning's or a compatible one)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    writers = []
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            writers.append(logger.experiment)
    return writers
