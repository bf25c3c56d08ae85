"""Where rendered images go: into every logger of the trainer, the way that logger shows images.

:meth:`LogSinks.for_loggers` looks at ``trainer.loggers`` once, at setup, and gives each logger a writer:

- ``TensorBoardLogger``: ``Summary.Image`` records in its event file (:class:`TensorBoardImageWriter`);
- ``WandbLogger``: ``wandb.Image`` media under the tag, at ``trainer/global_step`` (:class:`WandbImageWriter`);
- ``MLFlowLogger``: artifacts ``cnnsee/<kind>/<layer>/step_<N>.png`` of its run, scalars as metrics
  (:class:`MlflowImageWriter`);
- any other logger (``CSVLogger``, ...): PNG files under ``<log_dir>/cnnsee`` (:class:`PngWriter`), or under
  ``<default_root_dir>/cnnsee`` for a logger without a folder of its own, and when there is no logger at all.

Loggers of both ``lightning.pytorch`` and ``pytorch_lightning`` are recognised (subclasses too); neither package is
imported here. Each image is encoded to PNG once, however many loggers get it (:class:`Png`).

Example::

    >>> import os, tempfile, torch
    >>> from pytorch_lightning.loggers import CSVLogger
    >>> from lightning_cnnsee.sinks.writers import LogSinks
    >>> root = tempfile.mkdtemp()
    >>> sinks = LogSinks.for_loggers([CSVLogger(root, name="csv")], root)  # trainer.loggers, trainer.default_root_dir
    >>> sinks.add_image("cnnsee/gradcam/features.8", torch.rand(3, 8, 8), 5)
    >>> sinks.add_scalar("cnnsee/overhead", 0.04, 5)
    >>> sorted(os.listdir(os.path.join(root, "csv", "version_0", "cnnsee", "gradcam", "features.8")))
    ['step_00000005.png']
    >>> sinks.describe().replace(root, "ROOT")
    'CNNSee logs its images to CSVLogger: PNG files in ROOT/csv/version_0/cnnsee.'
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from lightning_cnnsee.sinks.guard import WriteGuard
from lightning_cnnsee.vocabulary.tags import PREFIX, path_parts

__all__ = [
    "Destination",
    "ImageWriter",
    "LOGGER_NAMESPACES",
    "LogSinks",
    "MlflowImageWriter",
    "PNG_COMPRESS_LEVEL",
    "PNG_STRATEGY",
    "Png",
    "PngWriter",
    "TensorBoardImageWriter",
    "WandbImageWriter",
    "Writer",
    "encode_png",
    "is_lightning_logger",
    "masked_crc32c",
    "step_file_name",
    "to_uint8_hwc",
    "use_fast_checksums",
]


class ImageWriter(Protocol):
    """What CNNSee logs through: the part of ``torch.utils.tensorboard.SummaryWriter`` it uses. Every writer here and
    :class:`LogSinks` have it."""

    def add_image(self, tag: str, img_tensor: Tensor, global_step: int) -> object: ...

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> object: ...


#: zlib level and strategy of every PNG CNNSee writes: level 1 with run-length matching (``Z_RLE``) is several times
#: faster than TensorBoard's ``add_image`` (Lanczos resampling at scale 1, level 6) and makes smaller files, as
#: CNNSee's grids are mostly flat tiles and borders (figures: ``benchmarks/README.md``).
PNG_COMPRESS_LEVEL = 1
PNG_STRATEGY = zlib.Z_RLE


def to_uint8_hwc(img_tensor: Tensor) -> np.ndarray:
    """A (C, H, W) float image in [0, 1] as the contiguous (H, W, C) ``uint8`` array a PNG holds (C of 1 is
    dropped)."""
    scaled = img_tensor.detach().float().permute(1, 2, 0).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    array = scaled.contiguous().cpu().numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


def _encode_pixels(pixels: np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    output = io.BytesIO()
    Image.fromarray(pixels).save(output, format="PNG", compress_level=compress_level, compress_type=PNG_STRATEGY)
    return output.getvalue()


def encode_png(img_tensor: Tensor, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """A (C, H, W) float image in [0, 1] as PNG bytes.

    Example::

        >>> import torch
        >>> encode_png(torch.rand(3, 4, 5))[:4]
        b'\\x89PNG'
    """
    return _encode_pixels(to_uint8_hwc(img_tensor), compress_level)


@dataclass(frozen=True)
class Png:
    """One image, encoded once for every writer: the PNG bytes and the ``uint8`` pixels they hold ((H, W, C), or
    (H, W) for one channel).

    Example::

        >>> import torch
        >>> png = Png.encode(torch.rand(3, 4, 5))
        >>> (png.channels, png.height, png.width), png.data[:4]
        ((3, 4, 5), b'\\x89PNG')
    """

    data: bytes
    pixels: np.ndarray = field(repr=False)

    @classmethod
    def encode(cls, img_tensor: Tensor) -> Png:
        """The PNG of a (C, H, W) float image in [0, 1] (by :func:`encode_png`'s settings)."""
        pixels = to_uint8_hwc(img_tensor)
        return cls(_encode_pixels(pixels), pixels)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else int(self.pixels.shape[2])


def step_file_name(global_step: int) -> str:
    """The file name of one step's image, zero-padded so that names sort by step: ``step_00000012.png``."""
    return f"step_{int(global_step):08d}.png"


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path``; an ``OSError`` that names no file (a full disk, at ``write`` or ``close``) is
    raised again naming ``path``, so that the user is told where."""
    try:
        with open(path, "wb") as handle:
            handle.write(data)
    except OSError as error:
        if error.filename is None and error.errno is not None:
            raise type(error)(error.errno, error.strerror, path) from error
        raise


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
    the GIL: more than encoding the image costs, taken from training (``benchmarks/README.md``). This replaces the
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


class Writer:
    """One destination of CNNSee's images and scalars. A subclass writes an encoded :class:`Png` (``add_png``) and a
    scalar (``add_scalar``); ``add_image`` encodes a (C, H, W) image and hands it to ``add_png``."""

    def add_png(self, tag: str, png: Png, global_step: int) -> object:
        raise NotImplementedError

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> object:
        raise NotImplementedError

    def add_image(self, tag: str, img_tensor: Tensor, global_step: int) -> object:
        return self.add_png(tag, Png.encode(img_tensor), global_step)


class TensorBoardImageWriter(Writer):
    """Writes into a ``torch.utils.tensorboard.SummaryWriter`` the PNG that :func:`encode_png` makes.

    ``SummaryWriter.add_image`` resamples every image (``resize`` at scale 1, with Lanczos) and compresses it at zlib
    level 6; this writes the same ``Summary.Image`` record without the resampling, at level 1 with ``Z_RLE``, 6 times
    faster on CNNSee's grids, and has the event records checksummed in C (:func:`use_fast_checksums`). Any other
    writer (tensorboardX's, say) gets its own ``add_image``: the tensor, or the PNG's ``uint8`` pixels.
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def _is_summary_writer(self) -> bool:
        from torch.utils.tensorboard import SummaryWriter

        return isinstance(self.writer, SummaryWriter)

    def add_image(self, tag: str, img_tensor: Tensor, global_step: int) -> None:
        if not self._is_summary_writer():
            self.writer.add_image(tag, img_tensor, global_step)
            return
        self.add_png(tag, Png.encode(img_tensor), global_step)

    def add_png(self, tag: str, png: Png, global_step: int) -> None:
        if not self._is_summary_writer():
            dataformats = "HW" if png.pixels.ndim == 2 else "HWC"
            self.writer.add_image(tag, png.pixels, global_step, dataformats=dataformats)
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        image = Summary.Image(
            height=png.height, width=png.width, colorspace=png.channels, encoded_image_string=png.data
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        use_fast_checksums(self.writer)  # at every image: a SummaryWriter opens a new file after a close
        self.writer._get_file_writer().add_summary(summary, global_step)

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None:
        self.writer.add_scalar(tag, scalar_value, global_step)


class PngWriter(Writer):
    """Writes each image as ``ROOT/<tag>/step_<step>.png`` and scalars to ``ROOT/scalars.csv``.

    ``strip_prefix`` is removed from the start of tags (``"cnnsee/"`` when ``ROOT`` is already a ``cnnsee`` folder).
    Tag components become safe folder names (:func:`~lightning_cnnsee.vocabulary.tags.path_parts`; ``..`` becomes
    ``_``).
    """

    def __init__(self, root: str, strip_prefix: str = "") -> None:
        self.root = root
        self.strip_prefix = strip_prefix

    def add_png(self, tag: str, png: Png, global_step: int) -> str:
        if self.strip_prefix and tag.startswith(self.strip_prefix):
            tag = tag[len(self.strip_prefix) :]
        folder = os.path.join(self.root, *path_parts(tag))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, step_file_name(global_step))
        write_file(path, png.data)
        return path

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None:
        os.makedirs(self.root, exist_ok=True)
        path = os.path.join(self.root, "scalars.csv")
        new = not os.path.exists(path)
        try:
            with open(path, "a", newline="") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(["tag", "step", "value"])
                writer.writerow([tag, int(global_step), float(scalar_value)])
        except OSError as error:
            if error.filename is None and error.errno is not None:  # a full disk names no file: name it
                raise type(error)(error.errno, error.strerror, path) from error
            raise


class WandbImageWriter(Writer):
    """Logs into the run of a Lightning ``WandbLogger``: each image as a ``wandb.Image`` under its tag, each scalar
    under its tag, both with the step as ``trainer/global_step``.

    That is how ``WandbLogger.log_metrics`` and ``log_image`` log (they never pass ``step=``; the logger defines
    ``trainer/global_step`` as the x-axis of every key), so CNNSee's rows line up with the training curves and the
    media panel steps through them. ``wandb.log(..., step=global_step)`` would fight Lightning's own rows: W&B counts
    its ``_step`` up at every row and drops, with a warning, any row whose step is below the last. Each image is its
    own ``image-file`` (``log_image`` would make a list of one) and reaches W&B as the PNG file, not encoded again
    (``wandb.Image(array)`` would encode at zlib's default level). The logger is asked for its run at each write, so
    building this writer starts nothing.
    """

    #: The key Lightning's ``WandbLogger`` logs the trainer's step under.
    STEP_KEY = "trainer/global_step"

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self._kept: str | None = None
        self._kept_count = itertools.count()

    def add_png(self, tag: str, png: Png, global_step: int) -> None:
        import wandb

        run = self.logger.experiment
        if getattr(getattr(run, "settings", None), "allow_media_symlink", False):
            # W&B links the file instead of copying it and reads it later: it must stay
            self._kept = self._kept or tempfile.mkdtemp(prefix="cnnsee-wandb-")
            path = os.path.join(self._kept, f"{next(self._kept_count):08d}.png")
            self._log_file(wandb, run, tag, png, global_step, path)
            return
        with tempfile.TemporaryDirectory(prefix="cnnsee-wandb-") as folder:  # W&B copies it into the run
            self._log_file(wandb, run, tag, png, global_step, os.path.join(folder, step_file_name(global_step)))

    def _log_file(self, wandb: Any, run: Any, tag: str, png: Png, global_step: int, path: str) -> None:
        write_file(path, png.data)
        run.log({tag: wandb.Image(path), self.STEP_KEY: int(global_step)})

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None:
        self.logger.experiment.log({tag: float(scalar_value), self.STEP_KEY: int(global_step)})


class MlflowImageWriter(Writer):
    """Logs into the run of a Lightning ``MLFlowLogger``: each image as the artifact
    ``cnnsee/<kind>/<layer>/step_<N>.png`` of that run (the PNG's own bytes, by ``MlflowClient.log_artifact``), each
    scalar as a metric at its step. Tag components become safe path parts, so nothing lands outside the run's
    artifacts. The logger is asked for its client and run at each write, so building this writer starts no run."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def add_png(self, tag: str, png: Png, global_step: int) -> None:
        client, run_id = self.logger.experiment, self.logger.run_id
        with tempfile.TemporaryDirectory(prefix="cnnsee-mlflow-") as folder:
            path = os.path.join(folder, step_file_name(global_step))
            write_file(path, png.data)
            client.log_artifact(run_id, path, artifact_path="/".join(path_parts(tag)))

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None:
        client, run_id = self.logger.experiment, self.logger.run_id
        client.log_metric(run_id, "/".join(path_parts(tag)), float(scalar_value), step=int(global_step))


#: The packages a Lightning logger can come from: ``lightning`` and the standalone ``pytorch_lightning``.
LOGGER_NAMESPACES = ("lightning.pytorch.loggers", "pytorch_lightning.loggers")


def is_lightning_logger(logger: object, class_name: str) -> bool:
    """Whether ``logger`` is a ``class_name`` (``"WandbLogger"``, ...) of either Lightning package, or a subclass.

    Only packages already imported are looked at: a logger of a package that is not imported cannot exist. So this
    never imports ``lightning`` for a ``pytorch_lightning`` user, nor the other way round.

    Example::

        >>> from pytorch_lightning.loggers import CSVLogger
        >>> is_lightning_logger(CSVLogger("logs"), "CSVLogger"), is_lightning_logger(CSVLogger("logs"), "WandbLogger")
        (True, False)
    """
    for namespace in LOGGER_NAMESPACES:
        module = sys.modules.get(namespace)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and isinstance(logger, cls):
            return True
    return False


def _own_folder(logger: object) -> str | None:
    """The logger's run folder (``log_dir``), or ``None`` for a logger without one."""
    try:
        folder = getattr(logger, "log_dir", None)
    except Exception:  # a property that needs what the logger lacks (an uninstalled package, a service)
        return None
    return folder if isinstance(folder, str) and folder else None


@dataclass
class Destination:
    """One writer of :class:`LogSinks`, with the loggers it serves and where it puts their images (in words)."""

    writer: Writer
    where: str
    loggers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        notes = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"{', '.join(self.loggers)}: {self.where}{notes}"


class LogSinks:
    """Every writer of one Trainer's loggers, behind one ``add_image`` and ``add_scalar``.

    An image is encoded to PNG once and handed to each writer. A writer that fails does not keep the image from the
    others, nor ends training: each is tried through a :class:`~lightning_cnnsee.sinks.guard.WriteGuard`, which says
    once per destination and kind of cause (a missing folder, a refused permission, a full disk) what failed and
    where, tries again at later writes and says when writing works again. Build it with :meth:`for_loggers`.

    Args:
        destinations: the writers, each with the loggers it serves and where it puts the images (for
            :meth:`describe`); none for a rank that logs nothing.
        guard: how failed writes are told (default: a ``UserWarning`` each); ``WriteGuard(strict=True)`` raises.
    """

    def __init__(self, destinations: Sequence[Destination] = (), guard: WriteGuard | None = None) -> None:
        self._destinations = list(destinations)
        self.guard = guard or WriteGuard()

    @property
    def writers(self) -> list[Writer]:
        return [destination.writer for destination in self._destinations]

    @classmethod
    def for_loggers(cls, loggers: Iterable[object], default_root_dir: str) -> LogSinks:
        """A writer for each of ``loggers`` (``trainer.loggers``), the way that logger shows images; PNG files under
        ``<default_root_dir>/cnnsee`` (``trainer.default_root_dir``) when there is no logger.

        Loggers without images of their own share one :class:`PngWriter` per folder: ``<log_dir>/cnnsee``, or
        ``<default_root_dir>/cnnsee`` for a logger without a ``log_dir`` (``CometLogger``: CNNSee does not send
        images to Comet). Building touches no W&B or MLflow run; a ``TensorBoardLogger``'s ``SummaryWriter`` is opened
        (on global rank zero; elsewhere Lightning hands out a dummy).
        """
        destinations: list[Destination] = []
        by_folder: dict[str, Destination] = {}
        seen: set[int] = set()

        def png_destination(root: str) -> Destination:
            folder = os.path.join(root, PREFIX)
            key = os.path.realpath(folder)
            if key not in by_folder:
                by_folder[key] = Destination(PngWriter(folder, strip_prefix=f"{PREFIX}/"), f"PNG files in {folder}")
                destinations.append(by_folder[key])
            return by_folder[key]

        for logger in loggers:
            if id(logger) in seen:
                continue
            seen.add(id(logger))
            name = type(logger).__name__
            if is_lightning_logger(logger, "TensorBoardLogger"):
                where = f"TensorBoard images in {_own_folder(logger)}"
                destinations.append(Destination(TensorBoardImageWriter(logger.experiment), where, [name]))
            elif is_lightning_logger(logger, "WandbLogger"):
                where = f"W&B media under {PREFIX}/..., stepped by {WandbImageWriter.STEP_KEY}"
                destinations.append(Destination(WandbImageWriter(logger), where, [name]))
            elif is_lightning_logger(logger, "MLFlowLogger"):
                where = f"artifacts {PREFIX}/<kind>/<layer>/step_<N>.png of its run"
                destinations.append(Destination(MlflowImageWriter(logger), where, [name]))
            else:
                folder = _own_folder(logger)
                destination = png_destination(folder or default_root_dir)
                destination.loggers.append(name)
                if not folder:
                    destination.notes.append(f"CNNSee cannot send images to {name}, which keeps no folder")
        if not destinations:
            png_destination(default_root_dir)
        return cls(destinations)

    def add_png(self, tag: str, png: Png, global_step: int) -> None:
        self._each("add_png", tag, png, global_step)

    def add_image(self, tag: str, img_tensor: Tensor, global_step: int) -> None:
        """Log a (C, H, W) float image in [0, 1] to every logger, encoded once."""
        if self._destinations:
            self.add_png(tag, Png.encode(img_tensor), global_step)

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> None:
        """Log a number to every logger."""
        self._each("add_scalar", tag, scalar_value, global_step)

    def _each(self, method: str, *args: Any) -> None:
        for destination in self._destinations:
            write = getattr(destination.writer, method)
            self.guard.attempt(destination.where, lambda write=write: write(*args))

    @property
    def falls_back(self) -> bool:
        """Whether some images go to a PNG folder because no logger, or a logger without a folder, could take them
        (worth a warning: the user may look for them elsewhere)."""
        return not any(d.loggers for d in self._destinations) or any(d.notes for d in self._destinations)

    def describe(self) -> str:
        """One sentence saying where the images go, for the callback to log once."""
        if not self._destinations:
            return "CNNSee logs no images here."
        if not any(destination.loggers for destination in self._destinations):
            return "CNNSee found no logger: " + "; ".join(d.where for d in self._destinations) + "."
        return "CNNSee logs its images to " + "; ".join(d.describe() for d in self._destinations) + "."
