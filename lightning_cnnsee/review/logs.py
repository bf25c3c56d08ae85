"""Find and read what CNNSee logged: the runs under a log folder, their images per tag and step, scalars, settings.

A run is any folder that holds

- TensorBoard event files (``events.out.tfevents.*``): Lightning's ``<save_dir>/<name>/version_N``, or a folder of
  your own; read by :mod:`.events`;
- a ``cnnsee/`` folder of ``step_*.png`` files (or a ``cnnsee/scalars.csv``), which CNNSee writes without a
  TensorBoard logger: ``CSVLogger``'s ``version_N``, the trainer's ``default_root_dir``; read by :mod:`.folders`;
- in an MLflow file store, an MLflow run: ``mlruns/<experiment id>/<run id>/`` with ``meta.yaml``, its images under
  ``artifacts/cnnsee/``, params and metrics beside; the run is named by that folder.

A folder may be several of these at once (a ``version_N`` with event files and a ``cnnsee/`` folder): one run. Next
to the logs come the hyper-parameters: Lightning's ``hparams.yaml``, TensorBoard's hparams plugin, MLflow's params,
text summaries, and the ``config.yaml`` that ``LightningCLI`` saves.

Only where each image lies is read (:class:`~.runs.FileRegion`), not the image: the report and the export read the
bytes of the images they write, one at a time.

Example::

    >>> from lightning_cnnsee.review.logs import load_runs
    >>> runs = load_runs("runs")  # doctest: +SKIP
    >>> [(run.name, sorted(run.images)) for run in runs]  # doctest: +SKIP
    [('demo/version_0', ['cnnsee/activations/features.0', ..., 'cnnsee/gradcam/features'])]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_cnnsee.review import folders
from lightning_cnnsee.review.events import EventReader, is_event_file
from lightning_cnnsee.review.runs import (
    FileRegion,
    Frame,
    NothingToReview,
    Run,
    RunLog,
    evenly_spaced,
    format_value,
    natural_key,
    relative_name,
)
from lightning_cnnsee.vocabulary.tags import PREFIX, is_cnnsee_tag, parse_tag

__all__ = [
    "FileRegion",
    "Frame",
    "NothingToReview",
    "Run",
    "RunFolder",
    "evenly_spaced",
    "find_run_dirs",
    "find_runs",
    "format_value",
    "load_runs",
    "natural_key",
    "progress_bar",
    "read_run",
]


@dataclass
class RunFolder:
    """Where the logs of one run lie.

    Attributes:
        path: the run's folder (names the run).
        event_files: its TensorBoard event files, in the order written.
        png_images: ``{tag: [(step, PNG file), ...]}`` from its ``cnnsee/`` folder.
        scalar_files: ``cnnsee/scalars.csv`` files.
        mlflow: whether it is an MLflow run (``meta.yaml``, ``params/``, ``metrics/``).
    """

    path: Path
    event_files: list[Path] = field(default_factory=list)
    png_images: dict[str, list[tuple[int, Path]]] = field(default_factory=dict)
    scalar_files: list[Path] = field(default_factory=list)
    mlflow: bool = False


def _cnnsee_folder(root: Path, folder: Path) -> tuple[Path, str] | None:
    """For a folder of ``step_*.png`` files: the ``cnnsee`` folder it is under, and the tag it holds.

    Of the ``cnnsee`` parts of its path (the log folder's own name included), the outermost that leaves a valid tag
    (``cnnsee/<kind>/...`` or ``cnnsee/<instance>/<kind>/...``): a run's folder may itself be under a folder named
    ``cnnsee``, and a layer may be named so. Without a valid one, the innermost; ``None`` when there is no ``cnnsee``
    part at all (PNG files that are not CNNSee's).
    """
    relative = folder.relative_to(root).parts
    chain = (root.name, *relative)
    candidates = [index for index, part in enumerate(chain) if part == PREFIX]
    if not candidates:
        return None
    valid = [index for index in candidates if parse_tag("/".join(chain[index:])).kind]
    index = valid[0] if valid else candidates[-1]
    return root.joinpath(*relative[:index]) if index else root, "/".join(chain[index:])


def _run_folder_of(cnnsee_folder: Path) -> tuple[Path, bool]:
    """The run a ``cnnsee`` folder belongs to (its parent; for MLflow artifacts, the MLflow run) and whether it is an
    MLflow run."""
    mlflow_run = folders.mlflow_run_folder(cnnsee_folder.parent)
    return (mlflow_run, True) if mlflow_run is not None else (cnnsee_folder.parent, False)


def find_runs(logdir: str | os.PathLike[str]) -> list[RunFolder]:
    """Every run under ``logdir`` (itself included), with where its logs lie, in natural order of their folders."""
    root = Path(logdir)
    runs: dict[Path, RunFolder] = {}

    def run(path: Path) -> RunFolder:
        if path not in runs:
            runs[path] = RunFolder(path)
        return runs[path]

    for current, subfolders, files in os.walk(root):
        subfolders.sort(key=natural_key)
        folder = Path(current)
        events = sorted((name for name in files if is_event_file(name)), key=natural_key)
        if events:
            run(folder).event_files.extend(folder / name for name in events)
        if folders.is_mlflow_run(folder, files, subfolders):
            run(folder).mlflow = True
        steps = [(int(match.group(1)), name) for name in files if (match := folders.STEP_FILE.fullmatch(name))]
        if steps:
            found = _cnnsee_folder(root, folder)
            if found is not None:
                cnnsee_folder, tag = found
                path, mlflow = _run_folder_of(cnnsee_folder)
                entry = run(path)
                entry.mlflow = entry.mlflow or mlflow
                entry.png_images.setdefault(tag, []).extend((step, folder / name) for step, name in sorted(steps))
        if folders.SCALARS_CSV in files and folder.name == PREFIX:
            path, mlflow = _run_folder_of(folder)
            entry = run(path)
            entry.mlflow = entry.mlflow or mlflow
            entry.scalar_files.append(folder / folders.SCALARS_CSV)
    return sorted(runs.values(), key=lambda entry: natural_key(relative_name(root, entry.path)))


def find_run_dirs(logdir: str | os.PathLike[str]) -> list[Path]:
    """Every folder under ``logdir`` (itself included) that holds a run's logs (see :func:`find_runs`)."""
    return [entry.path for entry in find_runs(logdir)]


def load_runs(logdir: str | os.PathLike[str], *, progress: bool | None = None) -> list[Run]:
    """Read every run under ``logdir`` that holds CNNSee images or scalars (tags starting ``cnnsee/``).

    Args:
        logdir: a log folder: a run's own folder or any folder above runs.
        progress: show a progress bar on stderr (``None``: only when stderr is a terminal).

    Raises:
        NothingToReview: ``logdir`` is missing, holds no logs, or none of CNNSee.
    """
    root = Path(logdir)
    if not root.exists():
        raise NothingToReview(f"the log folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise NothingToReview(f"{str(root)!r} is not a folder; give the folder your logger wrote to.")
    found = find_runs(root)
    if not found:
        raise NothingToReview(
            f"no TensorBoard event files (events.out.tfevents.*), CNNSee PNG folders (cnnsee/<kind>/<layer>/"
            f"step_N.png) or MLflow runs under {str(root)!r}; give the folder your logger wrote to (the save_dir of "
            "a TensorBoardLogger or CSVLogger, one version_N folder, or an MLflow store such as mlruns)."
        )
    runs, other_tags, unread = [], set(), []
    bar = progress_bar(found, progress, desc="reading runs", unit="run")
    for entry in bar:
        bar.set_postfix_str(relative_name(root, entry.path), refresh=False)
        run, others = read_run(root, entry)
        other_tags.update(others)
        if run.images or any(is_cnnsee_tag(tag) for tag in run.scalars):
            runs.append(run)
        else:  # a run with nothing of CNNSee's: what kept it from being read is still said
            unread.extend(run.problems)
    if not runs:
        raise NothingToReview(
            f"no CNNSee images (image tags starting with {PREFIX + '/'!r}) in the {len(found)} run(s) under "
            f"{str(root)!r}; {what_was_found(other_tags, unread)}"
        )
    runs[0].problems.extend(unread)  # named in the page and on stderr with the file they are about
    return runs


def what_was_found(other_tags: set[str], problems: list[str]) -> str:
    """What a log folder without CNNSee images held instead: the damaged files (each named), or other images.

    Example::

        >>> what_was_found({"train/inputs"}, [])
        "found instead: image tags ['train/inputs']. Was CNNSee in the trainer's callbacks?"
        >>> what_was_found(set(), ["runs/a/events.out.tfevents.1: is empty (0 bytes)"])
        'found instead: 1 file(s) that cannot be read: runs/a/events.out.tfevents.1: is empty (0 bytes).'
    """
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        return f"found instead: {len(problems)} file(s) that cannot be read: {shown}."
    if other_tags:
        return f"found instead: image tags {sorted(other_tags)[:10]}. Was CNNSee in the trainer's callbacks?"
    return "found no images at all, only scalars or settings. Was CNNSee in the trainer's callbacks?"


def read_run(root: Path, entry: RunFolder) -> tuple[Run, list[str]]:
    """One run: its CNNSee images, scalar series, hyper-parameters and texts; and the other image tags it has."""
    log = RunLog()
    if entry.event_files:
        reader = EventReader(log)
        for path in entry.event_files:
            reader.read(path)
        reader.finish()
    folders.read_png_images(entry.png_images, log)
    for path in entry.scalar_files:
        folders.read_scalars_csv(path, log)
    if (entry.path / folders.LIGHTNING_METRICS_CSV).is_file():
        folders.read_lightning_metrics_csv(entry.path / folders.LIGHTNING_METRICS_CSV, log)
    if entry.mlflow:
        folders.read_mlflow_run(entry.path, log)
    run = Run(name=relative_name(root, entry.path), path=entry.path)
    log.fill(run)
    run.hparams = {**log.hparams, **folders.read_hparams_yaml(entry.path)}
    run.config, run.cnnsee_options = folders.read_cli_config(entry.path)
    return run, sorted(log.other_image_tags)


def progress_bar(iterable: Iterable[Any] | None, progress: bool | None, **options: Any) -> Any:
    """A ``tqdm`` bar on stderr; ``progress=None`` shows it only when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, disable=None if progress is None else not progress, **options)
