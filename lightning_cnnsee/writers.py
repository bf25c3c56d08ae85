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
import struct
import zlib
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor


class ImageWriter(Protocol):
    """The part of ``torch.utils.tensorboard.SummaryWriter`` that CNNSee uses."""

    def add_image(self, tag: str, img_tensor: Tensor, global_step: int) -> object: ...

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> object: ...


def safe_path_part(text: str) -> str:
    """A file-system-safe version of a tag component (layer names keep their dots)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "_"


#: zlib level and strategy of every PNG CNNSee writes: level 1 with run-length matching (``Z_RLE``) encodes an
#: activation grid (402x852) in 9 ms where TensorBoard's ``add_image`` (Lanczos resampling at scale 1, level 6, the
#: default strategy) takes 55, and the file is 5% smaller: CNNSee's grids are mostly flat tiles and borders.
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE


def to_uint8_hwc(img_tensor: Tensor) -> np.ndarray:
    """A (C, H, W) float image in [0, 1] as the contiguous (H, W, C) ``uint8`` array a PNG holds (C of 1 is
    dropped)."""
    scaled = img_tensor.detach().float().permute(1, 2, 0).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    array = scaled.contiguous().cpu().numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


def encode_png(img_tensor: Tensor, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """A (C, H, W) float image in [0, 1] as PNG bytes.

    Example::

        >>> import torch
        >>> encode_png(torch.rand(3, 4, 5))[:4]
        b'\\x89PNG'
    """
    output = io.BytesIO()
    Image.fromarray(to_uint8_hwc(img_tensor)).save(
        output, format="PNG", compress_level=compress_level, compress_type=PNG_STRATEGY
    )
    return output.getvalue()


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of a TFRecord (what TensorBoard's pure-Python ``masked_crc32c`` returns), computed in C.

    Example::

        >>> from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as in_python
        >>> masked_crc32c(b"cnnsee") == in_python(b"cnnsee")
        True
    """
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def use_fast_checksums(summary_writer: Any) -> bool:
    """Make the event file of a ``torch.utils.tensorboard.SummaryWriter`` checksum its records in C.

    TensorBoard's ``RecordWriter`` computes each record's CRC-32C in pure Python, on its writer thread but holding
    the GIL: 15 ms for a 130 KB PNG, three times what encoding it costs, taken from training. This replaces the
    ``write`` of that one writer's ``RecordWriter`` (the same bytes, the same checksums, by ``google-crc32c``). Returns
    whether it could; a writer of another shape, or ``google-crc32c`` without its C extension, is left as it is.
    """
    try:
        import google_crc32c
        from tensorboard.summary.writer.record_writer import RecordWriter

        record_writer = summary_writer._get_file_writer().event_writer._async_writer._writer
    except (AttributeError, ImportError):
        return False
    if not isinstance(record_writer, RecordWriter) or google_crc32c.implementation != "c":
        return False
    if getattr(record_writer, "_cnnsee_fast_checksums", False):
        return True
    file = record_writer._writer

    def write(data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        file.write(header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data)))

    record_writer.write = write
    record_writer._cnnsee_fast_checksums = True
    return True


class TensorBoardImageWriter:
    """Writes into a ``torch.utils.tensorboard.SummaryWriter`` the PNG that :func:`encode_png` makes.

    ``SummaryWriter.add_image`` resamples every image (``resize`` at scale 1, with Lanczos) and compresses it at zlib
    level 6; this writes the same ``Summary.Image`` record without the resampling, at level 1 with ``Z_RLE``, 6 times
    faster on CNNSee's grids, and has the event records checksummed in C (:func:`use_fast_checksums`). Any other
    writer (tensorboardX's, say) gets its own ``add_image``.
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
        use_fast_checksums(self.writer)  # at every image: a SummaryWriter opens a new file after a close
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
