"""CNNSee logs as plain files: a PNG per tag and step, and an animated GIF per tag.

Layout, for a run ``demo/version_0`` and the tag ``cnnsee/gradcam/features``::

    OUT/demo/version_0/cnnsee/gradcam/features/step_00000000.png
    OUT/demo/version_0/cnnsee/gradcam/features/step_00000512.png
    OUT/demo/version_0/cnnsee/gradcam/features.gif      # one frame per step, the step written on each

Characters that do not belong in a file name are replaced by ``_`` (layer names keep their dots). PNG images are
written as TensorBoard stored them, byte for byte.

Example::

    >>> from lightning_cnnsee.review import export_images
    >>> summary = export_images("runs", "cnnsee-images")  # doctest: +SKIP
    >>> summary.pngs, summary.gifs  # doctest: +SKIP
    (160, 16)
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lightning_cnnsee.review.logs import Frame, evenly_spaced, load_runs, progress_bar

BANNER_HEIGHT = 16


@dataclass
class ExportSummary:
    """What :func:`export_images` wrote."""

    folder: Path
    pngs: int = 0
    gifs: int = 0
    paths: list[Path] = field(default_factory=list)


def export_images(
    logdir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    gif: bool = True,
    frame_ms: int = 500,
    max_steps: int | None = None,
    progress: bool | None = None,
) -> ExportSummary:
    """Write every CNNSee image under ``logdir`` as ``output/<run>/<tag>/step_<step>.png``, and a GIF per tag.

    Args:
        logdir: the log folder (a run's folder or any folder above runs).
        output: the folder to write to (created; files already there are overwritten).
        gif: also write ``output/<run>/<tag>.gif``, one frame per step.
        frame_ms: how long each GIF frame shows, in milliseconds.
        max_steps: at most this many steps per tag and run, evenly spaced, first and last kept (``None``: all).
        progress: show progress bars on stderr (``None``: only when stderr is a terminal).

    Raises:
        NothingToReview: no runs with CNNSee images under ``logdir``.
    """
    if frame_ms < 1:
        raise ValueError(f"frame_ms must be a positive number of milliseconds, got {frame_ms!r}")
    runs = load_runs(logdir, progress=progress)
    root = Path(output)
    summary = ExportSummary(root)
    total = sum(len(evenly_spaced(frames, max_steps)) for run in runs for frames in run.images.values())
    bar = progress_bar(None, progress, total=total, desc="exporting images", unit="image")
    used: set[Path] = set()
    for run in runs:
        run_folder = root.joinpath(*[safe_path_part(part) for part in run.name.split("/")])
        for tag, frames in run.images.items():
            folder = _unique(run_folder.joinpath(*[safe_path_part(part) for part in tag.split("/")]), used)
            folder.mkdir(parents=True, exist_ok=True)
            frames = evenly_spaced(frames, max_steps)
            for frame in frames:
                path = folder / f"step_{frame.step:08d}.png"
                path.write_bytes(frame.data if frame.mime == "image/png" else _to_png(frame))
                summary.paths.append(path)
                summary.pngs += 1
                bar.update(1)
            if gif:
                path = folder.with_name(folder.name + ".gif")
                write_gif(frames, path, frame_ms)
                summary.paths.append(path)
                summary.gifs += 1
    bar.close()
    return summary


def safe_path_part(text: str) -> str:
    """A file-system-safe version of one tag or run-name component (the rule of ``writers.PngWriter``, kept here so
    that reviewing logs needs no torch)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "_"


def _unique(folder: Path, used: set[Path]) -> Path:
    """``folder``, or ``folder_2``, ``folder_3``... when two tags became the same path once made file-safe."""
    candidate, number = folder, 1
    while candidate in used:
        number += 1
        candidate = folder.with_name(f"{folder.name}_{number}")
    used.add(candidate)
    return candidate


def _to_png(frame: Frame) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(frame.data)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_gif(frames: list[Frame], path: Path, frame_ms: int = 500) -> None:
    """An animated GIF of ``frames``, one GIF frame per step, each with ``step N`` in a white band on top.

    Frames of different sizes are placed top-left on a canvas of the largest size. The band also keeps Pillow from
    merging two identical consecutive images into one frame, so the GIF has exactly one frame per step.

    Example::

        >>> import io, tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from lightning_cnnsee.review.logs import Frame
        >>> def png(color):
        ...     buffer = io.BytesIO(); Image.new("RGB", (20, 10), color).save(buffer, "PNG"); return buffer.getvalue()
        >>> path = Path(tempfile.mkdtemp()) / "a.gif"
        >>> write_gif([Frame(0, png("red"), 20, 10), Frame(5, png("red"), 20, 10)], path)
        >>> Image.open(path).n_frames
        2
    """
    pictures = [Image.open(io.BytesIO(frame.data)).convert("RGB") for frame in frames]
    width = max(max(picture.width for picture in pictures), 64)
    height = max(picture.height for picture in pictures) + BANNER_HEIGHT
    font = ImageFont.load_default()
    canvases = []
    for frame, picture in zip(frames, pictures):
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(picture, (0, BANNER_HEIGHT))
        ImageDraw.Draw(canvas).text((3, 2), f"step {frame.step}", fill="black", font=font)
        canvases.append(canvas)
    canvases[0].save(
        path, format="GIF", save_all=True, append_images=canvases[1:], duration=frame_ms, loop=0, disposal=1
    )
