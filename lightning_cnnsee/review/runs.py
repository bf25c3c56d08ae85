"""What the review holds of a run: its frames (where each image's bytes lie, not the bytes), scalar series, settings.

A :class:`Frame` read from a log keeps a :class:`FileRegion` (file, offset, length) and reads its bytes when asked,
so reading a long run holds a few hundred bytes per image instead of the image; a frame made in code may hold its
bytes instead.

Example::

    >>> frame = Frame(3, b"\\x89PNG...", 20, 10)
    >>> frame.step, frame.mime, len(frame.data)
    (3, 'image/png', 7)
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from lightning_cnnsee.vocabulary.names import readable
from lightning_cnnsee.vocabulary.tags import tag_order

__all__ = [
    "FileRegion",
    "Frame",
    "NothingToReview",
    "Run",
    "RunLog",
    "evenly_spaced",
    "format_value",
    "natural_key",
    "relative_name",
    "sniff_mime",
]


class NothingToReview(ValueError):
    """The log folder is missing, holds no CNNSee logs, or no CNNSee images or scalars; the message says which."""


class FileRegion(NamedTuple):
    """``length`` bytes at ``offset`` of the file at ``path``: where a logged image lies in its log file."""

    path: str
    offset: int
    length: int

    def read(self) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(self.length)
        if len(data) != self.length:
            raise OSError(f"{self.path} is shorter than when it was read ({self.length} bytes at {self.offset})")
        return data


def sniff_mime(head: bytes) -> str:
    """The MIME type of encoded image bytes, from their first bytes."""
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if head.startswith(b"GIF8"):
        return "image/gif"
    return "application/octet-stream"


class Frame:
    """One logged image: its step, its size, and its encoded bytes (PNG for CNNSee).

    Args:
        step: the training step it was logged at.
        data: the encoded bytes, when held in memory; or ``None`` with ``source``.
        width, height: its size in pixels.
        source: where the bytes lie in a log file; they are read at each use of :attr:`data`.
        mime: the MIME type, when known without reading the bytes.
    """

    __slots__ = ("step", "width", "height", "source", "_data", "_mime", "_digest")

    def __init__(
        self,
        step: int,
        data: bytes | None = None,
        width: int = 0,
        height: int = 0,
        *,
        source: FileRegion | None = None,
        mime: str | None = None,
    ) -> None:
        if data is None and source is None:
            raise ValueError("a Frame needs its bytes (data) or where they lie (source)")
        self.step, self.width, self.height, self.source = int(step), int(width), int(height), source
        self._data, self._mime, self._digest = data, mime, None

    @property
    def data(self) -> bytes:
        """The encoded bytes (read from :attr:`source` at each call when not held)."""
        if self._data is not None:
            return self._data
        assert self.source is not None
        return self.source.read()

    @property
    def mime(self) -> str:
        if self._mime is None:
            self._mime = sniff_mime(self.data[:8])
        return self._mime

    @property
    def digest(self) -> str:
        """SHA-1 of the bytes (computed once): the same picture logged at several steps is embedded once."""
        if self._digest is None:
            self._digest = hashlib.sha1(self.data).hexdigest()
        return self._digest

    def __repr__(self) -> str:
        where = f"source={self.source!r}" if self._data is None else f"data=<{len(self._data)} bytes>"
        return f"Frame(step={self.step}, width={self.width}, height={self.height}, {where})"


@dataclass
class Run:
    """Everything the review shows of one run.

    Attributes:
        name: the run's folder relative to the log folder (``"demo/version_0"``; for MLflow, the run's folder
            ``"<experiment id>/<run id>"``).
        path: the run's folder.
        images: ``{tag: frames sorted by step}``, CNNSee tags only, one frame per step (the last one logged).
        hparams: hyper-parameters from ``hparams.yaml`` (nested keys joined with ``.``), TensorBoard's hparams, and
            MLflow's params (with MLflow's run name as ``mlflow.run_name``).
        cnnsee_options: CNNSee's ``init_args`` from a ``LightningCLI`` ``config.yaml``, when there is one.
        config: the text of that ``config.yaml``, or ``None``.
        text: the last value of each TensorBoard text summary.
        scalars: ``{tag: [(step, value), ...]}`` sorted by step, one value per step (the last one logged).
        problems: what could not be read (a record failing its checksum, an unreadable file), one line each.
    """

    name: str
    path: Path
    images: dict[str, list[Frame]] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    cnnsee_options: dict[str, Any] = field(default_factory=dict)
    config: str | None = None
    text: dict[str, str] = field(default_factory=dict)
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def frame_count(self) -> int:
        return sum(len(frames) for frames in self.images.values())


class RunLog:
    """What the readers of one run's logs gather, in the order they read it: a later image or value at a step
    replaces the earlier one (a resumed run logs its steps again). :meth:`fill` hands it to a :class:`Run`."""

    def __init__(self) -> None:
        self.images: dict[str, dict[int, Frame]] = {}
        self.scalars: dict[str, dict[int, float]] = {}
        self.hparams: dict[str, Any] = {}
        self.text: dict[str, str] = {}
        self.other_image_tags: set[str] = set()
        self.problems: list[str] = []

    def add_image(self, tag: str, frame: Frame) -> None:
        self.images.setdefault(tag, {})[frame.step] = frame

    def add_scalar(self, tag: str, step: int, value: float) -> None:
        self.scalars.setdefault(tag, {})[int(step)] = float(value)

    def fill(self, run: Run) -> None:
        """Give ``run`` the images (tags in reading order, frames by step), scalars, texts and problems."""
        run.images = {
            tag: [self.images[tag][step] for step in sorted(self.images[tag])] for tag in tag_order(self.images)
        }
        run.scalars = {tag: sorted(values.items()) for tag, values in self.scalars.items()}
        run.text.update(self.text)
        run.problems.extend(self.problems)


def natural_key(text: str) -> list[Any]:
    """Sort key that orders numbers by value: ``version_2`` before ``version_10``, ``features.4`` before ``.12``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def format_value(value: Any) -> str:
    """A hyper-parameter or option as one line of text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def evenly_spaced(frames: list[Frame], count: int | None) -> list[Frame]:
    """At most ``count`` of ``frames``, evenly spaced, the first and the last always kept (``None``: all).

    Example::

        >>> frames = [Frame(step, b"", 1, 1) for step in range(0, 100, 10)]
        >>> [frame.step for frame in evenly_spaced(frames, 4)]
        [0, 30, 60, 90]
    """
    if count is None or len(frames) <= count:
        return list(frames)
    if count == 1:
        return [frames[-1]]
    picks = sorted({round(i * (len(frames) - 1) / (count - 1)) for i in range(count)})
    return [frames[i] for i in picks]


def relative_name(root: Path, folder: Path) -> str:
    """A run's name: its folder relative to the log folder, or the log folder's own name when it is the run."""
    try:
        relative = folder.relative_to(root).as_posix()
    except ValueError:  # the run's folder is above the log folder (the log folder was its cnnsee/ folder)
        return readable(folder.resolve().name or "run")
    return readable((root.resolve().name or "run") if relative == "." else relative)
