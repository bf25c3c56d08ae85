"""CNNSee logs as plain files: a PNG per tag and step, and an animated GIF per tag.

Layout, for a run ``demo/version_0`` and the tag ``cnnsee/gradcam/features``::

    OUT/demo/version_0/cnnsee/gradcam/features/step_00000000.png
    OUT/demo/version_0/cnnsee/gradcam/features/step_00000512.png
    OUT/demo/version_0/cnnsee/gradcam/features.gif      # one frame per step, the step written on each

Characters that do not belong in a file name are replaced by ``_`` (layer names keep their dots;
:func:`lightning_cnnsee.vocabulary.tags.path_parts`, the rule of CNNSee's own PNG writer). PNG images are written as
they were
logged, byte for byte, read one at a time from the log files. The output is itself a log folder that ``cnnsee
report`` reads (CNNSee's PNG-folder layout).

Example::

    >>> from lightning_cnnsee.review import export_images
    >>> summary = export_images("runs", "cnnsee-images")  # doctest: +SKIP
    >>> summary.pngs, summary.gifs  # doctest: +SKIP
    (160, 16)
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lightning_cnnsee.review.logs import load_runs, progress_bar
from lightning_cnnsee.review.runs import Frame, evenly_spaced
from lightning_cnnsee.vocabulary.tags import path_parts

__all__ = ["BANNER_HEIGHT", "ExportSummary", "export_images", "write_gif"]

BANNER_HEIGHT = 16


@dataclass
class ExportSummary:
    """What :func:`export_images` wrote; ``problems``: what could not be read."""

    folder: Path
    pngs: int = 0
    gifs: int = 0
    paths: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


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
    summary = ExportSummary(root, problems=[problem for run in runs for problem in run.problems])
    total = sum(len(evenly_spaced(frames, max_steps)) for run in runs for frames in run.images.values())
    bar = progress_bar(None, progress, total=total, desc="exporting images", unit="image")
    used: set[Path] = set()
    for run in runs:
        run_folder = root.joinpath(*path_parts(run.name))
        for tag, frames in run.images.items():
            folder = _unique(run_folder.joinpath(*path_parts(tag)), used)
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
    merging two identical consecutive images into one frame, so the GIF has exactly one frame per step. Each image is
    decoded when its frame is drawn (the sizes come from the log), not all of them first.

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
    sizes = [(frame.width, frame.height) for frame in frames]
    if not all(width > 0 and height > 0 for width, height in sizes):
        sizes = [Image.open(io.BytesIO(frame.data)).size for frame in frames]
    width = max(max(width for width, _ in sizes), 64)
    height = max(height for _, height in sizes) + BANNER_HEIGHT
    font = ImageFont.load_default()
    canvases = []
    for frame in frames:
        canvas = Image.new("RGB", (width, height), "white")
        with Image.open(io.BytesIO(frame.data)) as picture:
            canvas.paste(picture.convert("RGB"), (0, BANNER_HEIGHT))
        ImageDraw.Draw(canvas).text((3, 2), f"step {frame.step}", fill="black", font=font)
        canvases.append(canvas)
    canvases[0].save(
        path, format="GIF", save_all=True, append_images=canvases[1:], duration=frame_ms, loop=0, disposal=1
    )
