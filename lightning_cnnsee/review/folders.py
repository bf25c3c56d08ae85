"""CNNSee's PNG folders, CSV scalars and MLflow runs: the logs of a run without TensorBoard.

Without a ``TensorBoardLogger`` (a ``CSVLogger``, an ``MLFlowLogger``, no logger), CNNSee's ``PngWriter`` writes::

    <run folder>/cnnsee/<kind>/<layer>/step_00000512.png     # cnnsee/<instance>/<kind>/... for a named callback
    <run folder>/cnnsee/scalars.csv                           # columns tag, step, value

The tag of an image is its folder below the run folder (``cnnsee/gradcam/features.8``); the folder names are
file-safe (:func:`lightning_cnnsee.vocabulary.tags.safe_path_part`), so a layer ``blocks[0]`` comes back as
``blocks_0_``.
Next to them the review reads ``CSVLogger``'s ``metrics.csv`` (one column per metric, a ``step`` column) and, in an
MLflow file store (``mlruns/<experiment id>/<run id>/``, images under ``artifacts/cnnsee/``), the run's
``meta.yaml`` (its ``run_name``), ``params/<key>`` files (hyper-parameters) and ``metrics/<key>`` files (scalars,
lines of ``timestamp value step``). In any run's folder, Lightning's ``hparams.yaml`` and the ``config.yaml`` that
``LightningCLI`` saves give the hyper-parameters and CNNSee's options.
"""

from __future__ import annotations

import csv
import functools
import os
import re
import struct
from pathlib import Path
from typing import Any

from lightning_cnnsee.review.runs import FileRegion, Frame, RunLog

__all__ = [
    "LIGHTNING_METRICS_CSV",
    "PNG_SIGNATURE",
    "SCALARS_CSV",
    "STEP_FILE",
    "flatten",
    "is_mlflow_run",
    "mlflow_run_folder",
    "png_frame",
    "read_cli_config",
    "read_hparams_yaml",
    "read_lightning_metrics_csv",
    "read_mlflow_run",
    "read_png_images",
    "read_scalars_csv",
    "read_yaml",
]

STEP_FILE = re.compile(r"step_(\d+)\.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCALARS_CSV = "scalars.csv"
LIGHTNING_METRICS_CSV = "metrics.csv"


def png_frame(path: Path, step: int) -> Frame:
    """A frame for the PNG file at ``path``: its size from the PNG header, its bytes read when used.

    Raises:
        ValueError: the file is not a PNG.
    """
    with open(path, "rb") as handle:
        head = handle.read(24)
        size = os.fstat(handle.fileno()).st_size
    if len(head) < 24 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return Frame(step, None, width, height, source=FileRegion(str(path), 0, size), mime="image/png")


def read_png_images(images: dict[str, list[tuple[int, Path]]], log: RunLog) -> None:
    """``{tag: [(step, file), ...]}`` into ``log``; a file that is not a PNG becomes a problem line."""
    for tag, files in images.items():
        for step, path in files:
            try:
                log.add_image(tag, png_frame(path, step))
            except (OSError, ValueError) as error:
                log.problems.append(f"{path}: {error}" if isinstance(error, OSError) else str(error))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_scalars_csv(path: Path, log: RunLog) -> None:
    """``PngWriter``'s ``scalars.csv`` (``tag,step,value``); rows that are not a tag, a whole step and a number are
    counted in one problem line."""
    bad = 0
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            for row in csv.DictReader(handle):
                tag, step, value = row.get("tag"), row.get("step"), _number(row.get("value") or "")
                if not tag or not (step or "").strip().isdigit() or value is None:
                    bad += 1
                    continue
                log.add_scalar(tag, int(step), value)
    except OSError as error:
        log.problems.append(f"{path}: {error.strerror or error}")
    if bad:
        log.problems.append(f"{path}: {bad} row(s) without a tag, a whole step and a number; skipped")


def read_lightning_metrics_csv(path: Path, log: RunLog) -> None:
    """``CSVLogger``'s ``metrics.csv``: one column per metric and a ``step`` column; empty cells are skipped."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            for row in csv.DictReader(handle):
                step = (row.get("step") or "").strip()
                if not step.isdigit():
                    continue
                for key, text in row.items():
                    if key in (None, "step") or not text:
                        continue
                    value = _number(text)
                    if value is not None:
                        log.add_scalar(key, int(step), value)
    except OSError as error:
        log.problems.append(f"{path}: {error.strerror or error}")


def is_mlflow_run(folder: Path, files: list[str], subfolders: list[str]) -> bool:
    """An MLflow file store's run folder: a ``meta.yaml`` beside ``metrics``, ``params`` or ``artifacts``."""
    return "meta.yaml" in files and any(name in subfolders for name in ("metrics", "params", "artifacts"))


def mlflow_run_folder(folder: Path) -> Path | None:
    """The MLflow run that ``folder`` (a run's ``artifacts`` folder) belongs to, if it is one."""
    if folder.name == "artifacts" and (folder.parent / "meta.yaml").is_file():
        return folder.parent
    return None


def _key_files(folder: Path) -> list[tuple[str, Path]]:
    """``(key, file)`` of every file under ``folder``; MLflow keeps a key ``a/b`` as the file ``a/b``."""
    found = []
    for parent, subfolders, files in os.walk(folder):
        subfolders.sort()
        for name in sorted(files):
            path = Path(parent) / name
            found.append((path.relative_to(folder).as_posix(), path))
    return found


def read_mlflow_run(folder: Path, log: RunLog) -> None:
    """An MLflow run's name (``meta.yaml``), params (as hyper-parameters) and metrics (as scalars)."""
    meta = read_yaml(folder / "meta.yaml")
    name = meta.get("run_name") if isinstance(meta, dict) else None
    if not name and (folder / "tags" / "mlflow.runName").is_file():
        name = (folder / "tags" / "mlflow.runName").read_text(encoding="utf-8", errors="replace").strip()
    if name:
        log.hparams["mlflow.run_name"] = str(name)
    for key, path in _key_files(folder / "params"):
        try:
            log.hparams[key.replace("/", ".")] = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            log.problems.append(f"{path}: {error.strerror or error}")
    for key, path in _key_files(folder / "metrics"):
        bad = 0
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    fields = line.split()
                    if not fields:
                        continue
                    value = _number(fields[1]) if len(fields) >= 3 else None
                    if value is None or not fields[2].lstrip("-").isdigit():
                        bad += 1
                        continue
                    log.add_scalar(key, int(fields[2]), value)
        except OSError as error:
            log.problems.append(f"{path}: {error.strerror or error}")
        if bad:
            log.problems.append(f"{path}: {bad} line(s) not of the form 'timestamp value step'; skipped")


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


def read_yaml(path: Path) -> Any:
    """The YAML file at ``path``, or ``None`` when it is missing or not YAML."""
    import yaml

    try:
        return yaml.load(path.read_text(encoding="utf-8", errors="replace"), Loader=_lenient_loader())
    except (OSError, yaml.YAMLError):
        return None


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level, keys joined with ``.``; lists and scalars kept as values.

    Example::

        >>> flatten({"model": {"lr": 0.1, "widths": [8, 16]}, "seed": 0})
        {'model.lr': 0.1, 'model.widths': [8, 16], 'seed': 0}
    """
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


def read_hparams_yaml(folder: Path) -> dict[str, Any]:
    """Lightning's ``hparams.yaml`` (``TensorBoardLogger``, ``CSVLogger``), without private ``_`` keys."""
    path = folder / "hparams.yaml"
    if not path.is_file():
        return {}
    values = flatten(read_yaml(path))
    return {key: value for key, value in values.items() if not key.startswith("_")}


def read_cli_config(folder: Path) -> tuple[str | None, dict[str, Any]]:
    """``LightningCLI``'s saved ``config.yaml``: its text, and CNNSee's ``init_args`` in ``trainer.callbacks``."""
    path = folder / "config.yaml"
    if not path.is_file():
        return None, {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, {}
    config = read_yaml(path)
    callbacks = config.get("trainer", {}).get("callbacks") if isinstance(config, dict) else None
    options: dict[str, Any] = {}
    for callback in callbacks if isinstance(callbacks, list) else []:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("CNNSee"):
            init_args = callback.get("init_args") or {}
            options = dict(init_args) if isinstance(init_args, dict) else {}
    return text, options
