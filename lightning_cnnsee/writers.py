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
import io
import os
import re
from typing import Any, Protocol

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


#: zlib level of every PNG CNNSee writes. Level 1 encodes CNNSee's grids about 4 times faster than the default 6
#: (TensorBoard's) for files about 1.3 times larger (measured in benchmarks/overhead.py).
PNG_COMPRESS_LEVEL = 1


def to_uint8_hwc(img_tensor: Tensor) -> np.ndarray:
    """A (C, H, W) float image in [0, 1] as the (H, W, C) ``uint8`` array a PNG holds (C of 1 is dropped)."""
    array = (img_tensor.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return array[:, :, 0] if array.shape[2] == 1 else array


def encode_png(img_tensor: Tensor, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """A (C, H, W) float image in [0, 1] as PNG bytes.

    Example::

        >>> import torch
        >>> encode_png(torch.rand(3, 4, 5))[:4]
        b'\\x89PNG'
    """
    output = io.BytesIO()
    Image.fromarray(to_uint8_hwc(img_tensor)).save(output, format="PNG", compress_level=compress_level)
    return output.getvalue()


class TensorBoardImageWriter:
    """Writes into a ``torch.utils.tensorboard.SummaryWriter`` the PNG that :func:`encode_png` makes.

    ``SummaryWriter.add_image`` resamples every image (``resize`` at scale 1, with Lanczos) and compresses it at zlib
    level 6; this writes the same ``Summary.Image`` record without the resampling and at level 1, 4 times faster on
    CNNSee's grids. Any other writer (tensorboardX's, say) gets its own ``add_image``.
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def add_image(self, tag: str, img_tensor: Tensor, global_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if not isinstance(self.writer, SummaryWriter):
            self.writer.add_image(tag, img_tensor, global_step)
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        channels, height, width = img_tensor.shape
        image = Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=encode_png(img_tensor)
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        self.writer._get_file_writer().add_summary(summary, global_step)

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None:
        self.writer.add_scalar(tag, scalar_value, global_step)


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
        path = os.path.join(folder, f"step_{int(global_step):08d}.png")
        with open(path, "wb") as handle:
            handle.write(encode_png(img_tensor))
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
    """A writer into the ``SummaryWriter`` of every TensorBoard logger among ``loggers`` (Lightning's or a
    subclass)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    writers = []
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            writers.append(TensorBoardImageWriter(logger.experiment))
    return writers
