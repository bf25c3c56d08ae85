"""Read what CNNSee logged: the runs under a log folder, their images per tag and step, hyper-parameters and scalars.

A run is any folder that holds TensorBoard event files (``events.out.tfevents.*``): Lightning's
``<save_dir>/<name>/version_N``, or a folder of your own. Each is read with TensorBoard's own reader
(``EventAccumulator``), keeping every image (TensorBoard keeps a sample of 4 per tag by default). Next to the events
come the hyper-parameters: Lightning's ``hparams.yaml``, TensorBoard's hparams plugin, text summaries, and the
``config.yaml`` that ``LightningCLI`` saves.

Example::

    >>> from lightning_cnnsee.review.logs import load_runs
    >>> runs = load_runs("runs")  # doctest: +SKIP
    >>> [(run.name, sorted(run.images)) for run in runs]  # doctest: +SKIP
    [('demo/version_0', ['cnnsee/activations/features.0', ..., 'cnnsee/gradcam/features'])]
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TAG_PREFIX = "cnnsee/"
EVENT_FILE_MARK = "tfevents"
KIND_ORDER = ("gradcam", "filters", "classes", "activations")


class NothingToReview(ValueError):
    """The log folder is missing, holds no event files, or no CNNSee images; the message says which."""


@dataclass
class Frame:
    """One logged image: its step and the encoded bytes as TensorBoard stored them (PNG for CNNSee)."""

    step: int
    data: bytes
    width: int
    height: int

    @property
    def mime(self) -> str:
        if self.data.startswith(b"\x89PNG"):
            return "image/png"
        if self.data.startswith(b"\xff\xd8"):
            return "image/jpeg"
        if self.data.startswith(b"GIF8"):
            return "image/gif"
        return "application/octet-stream"


@dataclass
class Run:
    """Everything the review shows of one run.

    Attributes:
        name: the run's folder relative to the log folder (``"demo/version_0"``).
        path: the run's folder.
        images: ``{tag: frames sorted by step}``, CNNSee tags only, one frame per step (the last one logged).
        hparams: hyper-parameters from ``hparams.yaml`` (nested keys joined with ``.``) and TensorBoard's hparams.
        cnnsee_options: CNNSee's ``init_args`` from a ``LightningCLI`` ``config.yaml``, when there is one.
        config: the text of that ``config.yaml``, or ``None``.
        text: the last value of each TensorBoard text summary.
        scalars: ``{tag: (step, value)}``, the last value of each scalar.
    """

    name: str
    path: Path
    images: dict[str, list[Frame]] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    cnnsee_options: dict[str, Any] = field(default_factory=dict)
    config: str | None = None
    text: dict[str, str] = field(default_factory=dict)
    scalars: dict[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def frame_count(self) -> int:
        return sum(len(frames) for frames in self.images.values())


def natural_key(text: str) -> list[Any]:
    """Sort key that orders numbers by value: ``version_2`` before ``version_10``, ``features.4`` before ``.12``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def tag_order(tags: Iterable[str]) -> list[str]:
    """CNNSee tags in reading order: Grad-CAM, filters, classes, activations, anything else; first-seen order within
    a kind (the order CNNSee logs its layers: by depth)."""
    tags = list(dict.fromkeys(tags))

    def key(item: tuple[int, str]) -> tuple[int, int]:
        index, tag = item
        kind = tag[len(TAG_PREFIX):].split("/", 1)[0]
        return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), index)

    return [tag for _, tag in sorted(enumerate(tags), key=key)]


def find_run_dirs(logdir: str | os.PathLike[str]) -> list[Path]:
    """Every folder under ``logdir`` (itself included) that holds TensorBoard event files, in natural order."""
    root = Path(logdir)
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders.sort(key=natural_key)
        if any(EVENT_FILE_MARK in name and not name.startswith(".") for name in files):
            found.append(Path(folder))
    return sorted(found, key=lambda path: natural_key(path.relative_to(root).as_posix()))


def run_name(root: Path, folder: Path) -> str:
    relative = folder.relative_to(root).as_posix()
    return (root.resolve().name or "run") if relative == "." else relative


def load_runs(logdir: str | os.PathLike[str], *, progress: bool | None = None) -> list[Run]:
    """Read every run under ``logdir`` that holds CNNSee images (tags starting ``cnnsee/``).

    Args:
        logdir: a log folder: a run's own folder or any folder above runs.
        progress: show a progress bar on stderr (``None``: only when stderr is a terminal).

    Raises:
        NothingToReview: ``logdir`` is missing, holds no event files, or no CNNSee images.
    """
    root = Path(logdir)
    if not root.exists():
        raise NothingToReview(f"the log folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise NothingToReview(f"{str(root)!r} is not a folder; give the folder TensorBoard logged to.")
    folders = find_run_dirs(root)
    if not folders:
        raise NothingToReview(
            f"no TensorBoard event files (events.out.tfevents.*) under {str(root)!r}; give the folder your "
            "TensorBoardLogger wrote to (its save_dir, or one version_N folder)."
        )
    runs, other_tags = [], set()
    bar = progress_bar(folders, progress, desc="reading runs", unit="run")
    for folder in bar:
        bar.set_postfix_str(run_name(root, folder), refresh=False)
        run, others = read_run(root, folder)
        other_tags.update(others)
        if run.images:
            runs.append(run)
    if not runs:
        seen = f"; image tags found: {sorted(other_tags)[:10]}" if other_tags else "; no images at all"
        raise NothingToReview(
            f"no CNNSee images (image tags starting with {TAG_PREFIX!r}) in the {len(folders)} run(s) under "
            f"{str(root)!r}{seen}. Was CNNSee in the trainer's callbacks, with a TensorBoardLogger?"
        )
    return runs


def read_run(root: Path, folder: Path) -> tuple[Run, list[str]]:
    """One run: its CNNSee images, hyper-parameters, texts and last scalars; and the other image tags it has."""
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(folder),
        size_guidance={
            event_accumulator.IMAGES: 0,  # 0: keep every image, not a sample
            event_accumulator.SCALARS: 0,
            event_accumulator.TENSORS: 0,
        },
    )
    accumulator.Reload()
    tags = accumulator.Tags()
    run = Run(name=run_name(root, folder), path=folder)
    image_tags = tag_order(tag for tag in tags.get("images", []) if tag.startswith(TAG_PREFIX))
    for tag in image_tags:
        by_step: dict[int, Frame] = {}
        for event in accumulator.Images(tag):  # in the order written: a later image at a step replaces the earlier
            by_step[int(event.step)] = Frame(int(event.step), event.encoded_image_string, event.width, event.height)
        run.images[tag] = [by_step[step] for step in sorted(by_step)]
    for tag in tags.get("scalars", []):
        events = accumulator.Scalars(tag)
        if events:
            run.scalars[tag] = (int(events[-1].step), float(events[-1].value))
    run.hparams = {**_tensorboard_hparams(accumulator), **_hparams_yaml(folder)}
    run.text = _text_summaries(accumulator, tags.get("tensors", []))
    run.config, run.cnnsee_options = _cli_config(folder)
    others = [tag for tag in tags.get("images", []) if not tag.startswith(TAG_PREFIX)]
    return run, others


def progress_bar(iterable: Iterable[Any] | None, progress: bool | None, **options: Any) -> Any:
    """A ``tqdm`` bar on stderr; ``progress=None`` shows it only when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, disable=None if progress is None else not progress, **options)


@functools.lru_cache(maxsize=1)
def _lenient_loader() -> type:
    """A ``yaml.SafeLoader`` that reads unknown tags (``!!python/object``...) as their text instead of failing."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def unknown(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
        if isinstance(node, yaml.ScalarNode):
            return f"{node.tag} {loader.construct_scalar(node)}"
        return str(node.tag)

    Loader.add_multi_constructor("", unknown)
    return Loader


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.load(path.read_text(encoding="utf-8", errors="replace"), Loader=_lenient_loader())
    except (OSError, yaml.YAMLError):
        return None


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level, keys joined with ``.``; lists and scalars kept as values."""
    if not isinstance(values, dict):
        return {prefix or "value": values} if values is not None or prefix else {}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _hparams_yaml(folder: Path) -> dict[str, Any]:
    """Lightning's ``hparams.yaml`` (written by ``TensorBoardLogger``), without private ``_`` keys."""
    path = folder / "hparams.yaml"
    if not path.is_file():
        return {}
    values = flatten(_read_yaml(path))
    return {key: value for key, value in values.items() if not key.startswith("_")}


def _tensorboard_hparams(accumulator: Any) -> dict[str, Any]:
    """The hyper-parameters of TensorBoard's hparams plugin (``session_start_info``), nested keys joined with ``.``."""
    try:
        from google.protobuf.json_format import MessageToDict
        from tensorboard.plugins.hparams import plugin_data_pb2

        contents = accumulator.PluginTagToContent("hparams")
    except (ImportError, KeyError):
        return {}
    hparams: dict[str, Any] = {}
    for content in contents.values():
        try:
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
        except Exception:  # a corrupt or foreign record: skip it, keep the rest of the review
            continue
        if data.HasField("session_start_info"):
            for key, value in data.session_start_info.hparams.items():
                hparams[key.replace("/", ".")] = MessageToDict(value)
    return {key: value for key, value in hparams.items() if not key.startswith("_")}


def _text_summaries(accumulator: Any, tensor_tags: list[str]) -> dict[str, str]:
    """The last value of each TensorBoard text summary (``SummaryWriter.add_text``)."""
    from tensorboard.util import tensor_util

    texts = {}
    for tag in tensor_tags:
        try:
            if accumulator.SummaryMetadata(tag).plugin_data.plugin_name != "text":
                continue
            events = accumulator.Tensors(tag)
            if not events:
                continue
            array = tensor_util.make_ndarray(events[-1].tensor_proto)
        except Exception:  # not a readable text summary: skip it
            continue
        parts = [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in array.flat]
        name = tag[: -len("/text_summary")] if tag.endswith("/text_summary") else tag
        texts[name] = "\n".join(parts)
    return texts


def _cli_config(folder: Path) -> tuple[str | None, dict[str, Any]]:
    """``LightningCLI``'s saved ``config.yaml``: its text, and CNNSee's ``init_args`` in ``trainer.callbacks``."""
    path = folder / "config.yaml"
    if not path.is_file():
        return None, {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, {}
    config = _read_yaml(path)
    callbacks = config.get("trainer", {}).get("callbacks") if isinstance(config, dict) else None
    options: dict[str, Any] = {}
    for callback in callbacks if isinstance(callbacks, list) else []:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("CNNSee"):
            init_args = callback.get("init_args") or {}
            options = dict(init_args) if isinstance(init_args, dict) else {}
    return text, options


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
