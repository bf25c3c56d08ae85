"""A run's model, data and CNNSee, built from what LightningCLI gives: its saved ``config.yaml``, classes, arguments.

LightningCLI saves the configuration of every fit as ``config.yaml`` beside the logs. :func:`run_parts` reads it (or
takes the classes and arguments alone), applies ``--model.x=...``-style overrides, seeds as ``seed_everything`` says,
and instantiates the ``LightningModule``, the ``LightningDataModule`` and the :class:`CNNSee` with jsonargparse, the
way LightningCLI does: a value of the wrong type fails with jsonargparse's message naming the key. What ``cnnsee
replay`` needs besides (the accelerator, the sanity-check batches) comes from the config's ``trainer`` section.

Example::

    >>> from lightning_cnnsee.callback.run_config import run_parts
    >>> parts = run_parts(
    ...     model="lightning_cnnsee.demo.train.ShapesClassifier", model_args={"width": 4},
    ...     data="lightning_cnnsee.demo.train.ShapesDataModule", overrides=["--data.num_val=8"],
    ...     cnnsee={"num_samples": 2, "techniques": ["gradcam"]})
    >>> type(parts.model).__name__, parts.model.hparams.width, parts.datamodule.num_val
    ('ShapesClassifier', 4, 8)
    >>> parts.callback.options.num_samples, parts.accelerator, parts.num_sanity_val_steps
    (2, 'auto', 2)
"""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass
from typing import Any

import yaml

from lightning_cnnsee.callback.cnnsee import CNNSee
from lightning_cnnsee.callback.compat import NAMESPACES, namespace_of
from lightning_cnnsee.callback.replay import saved_hyper_parameters

__all__ = ["RunParts", "parse_overrides", "run_parts"]

SECTIONS = ("model", "data")


@dataclass
class RunParts:
    """What :func:`run_parts` built: the model, the data module (``None`` without data), the CNNSee, and the
    trainer settings of the run that matter to a replay."""

    model: Any
    datamodule: Any
    callback: CNNSee
    accelerator: str = "auto"
    num_sanity_val_steps: int = 2

    def logger(self, kind: str, save_dir: str, name: str) -> Any:
        """A ``"tensorboard"`` or ``"csv"`` logger of the model's Lightning namespace: ``save_dir/name/version_N``."""
        loggers = namespace_of(self.model).loggers
        choices = {"tensorboard": loggers.TensorBoardLogger, "csv": loggers.CSVLogger}
        if kind not in choices:
            raise ValueError(f"logger {kind!r}: expected one of {sorted(choices)}.")
        return choices[kind](save_dir, name=name)


def parse_overrides(arguments: list[str]) -> dict[str, dict[str, Any]]:
    """``{"model": {...}, "data": {...}}`` from ``--model.KEY=VALUE`` / ``--data.KEY VALUE`` arguments (values read
    as YAML, dotted keys nested; a leading ``init_args.`` is dropped); ``ValueError`` naming any other argument.

    Example::

        >>> parse_overrides(["--model.lr=0.1", "--data.sizes", "[1, 2]", "--model.init_args.head.depth=2"])
        {'model': {'lr': 0.1, 'head': {'depth': 2}}, 'data': {'sizes': [1, 2]}}
    """
    found: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        section, _, key = argument.removeprefix("--").partition(".")
        if not argument.startswith("--") or section not in SECTIONS or not key:
            raise ValueError(
                f"unrecognized argument {argument!r}: expected --model.KEY=VALUE or --data.KEY=VALUE "
                "(the arguments of the model's and the data module's classes)."
            )
        if "=" in key:
            key, _, text = key.partition("=")
        elif index + 1 < len(arguments):
            index += 1
            text = arguments[index]
        else:
            raise ValueError(f"argument {argument!r} has no value: expected {argument}=VALUE.")
        parts = key.removeprefix("init_args.").split(".")
        target = found[section]
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = yaml.safe_load(text)
        index += 1
    return found


def read_yaml(text_or_path: str | os.PathLike | None, what: str) -> dict[str, Any]:
    """A YAML mapping from a file's path or from the text itself (``None``: empty); ``ValueError`` naming ``what``."""
    if text_or_path is None:
        return {}
    path = os.fspath(text_or_path)
    text = open(path).read() if os.path.isfile(path) else path
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{what}: not YAML (nor a file): {error}") from error
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a YAML mapping such as '{{key: value}}', got {value!r}.")
    return value


def _section(config: dict[str, Any], name: str) -> tuple[str | None, dict[str, Any]]:
    """``(class_path, init_args)`` of a config section, in LightningCLI's subclass form or its plain form."""
    value = config.get(name) or {}
    if not isinstance(value, dict):
        raise ValueError(f"config.yaml: '{name}' must be a mapping, got {value!r}.")
    if "class_path" in value:
        return value["class_path"], copy.deepcopy(value.get("init_args") or {})
    return None, copy.deepcopy(value)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _cnnsee_in(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The first CNNSee (or subclass) of ``trainer.callbacks``: ``(class_path, init_args)``."""
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    for entry in callbacks if isinstance(callbacks, list) else [callbacks]:
        if not isinstance(entry, dict) or "class_path" not in entry:
            continue
        class_path = entry["class_path"]
        try:
            cls = _import(class_path)
        except Exception:  # a short name LightningCLI resolved among its known classes
            cls, class_path = (CNNSee, "lightning_cnnsee.CNNSee") if class_path == "CNNSee" else (None, class_path)
        if isinstance(cls, type) and issubclass(cls, CNNSee):
            return class_path, copy.deepcopy(entry.get("init_args") or {})
    return "lightning_cnnsee.CNNSee", {}


def _import(class_path: str) -> Any:
    from jsonargparse.typing import import_object  # type: ignore[attr-defined]

    return import_object(class_path)


def _accepted(class_path: str | None, hyper_parameters: Any) -> dict[str, Any]:
    """The saved hyper-parameters that ``class_path``'s ``__init__`` takes by name (all, with ``**kwargs``)."""
    if class_path is None or not isinstance(hyper_parameters, dict):
        return {}
    try:
        parameters = inspect.signature(_import(class_path).__init__).parameters
    except Exception:  # jsonargparse names the class that does not import, below
        return {}
    takes_any = any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values())
    return {
        key: copy.deepcopy(value)
        for key, value in hyper_parameters.items()
        if isinstance(key, str) and not key.startswith("_") and (takes_any or key in parameters) and key != "self"
    }


def run_parts(
    config: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    model_args: dict[str, Any] | str | None = None,
    data: str | None = None,
    data_args: dict[str, Any] | str | None = None,
    overrides: list[str] | None = None,
    cnnsee: dict[str, Any] | str | None = None,
    checkpoints: list[str] | None = None,
    weights_only: bool = True,
) -> RunParts:
    """The run's ``LightningModule``, ``LightningDataModule`` and ``CNNSee``, as LightningCLI built them.

    Args:
        config: LightningCLI's ``config.yaml`` of the run (``model``, ``data``, ``seed_everything``, the first
            CNNSee of ``trainer.callbacks``, ``trainer.accelerator``, ``num_sanity_val_steps``, ``limit_val_batches``).
        model: the model's class path (needed when the config has none: LightningCLI given the class in a script).
        model_args: the model's arguments (a dict, or YAML text or file), over the config's.
        data: the data module's class path.
        data_args: the data module's arguments, over the config's.
        overrides: ``--model.KEY=VALUE`` and ``--data.KEY=VALUE`` arguments, over the rest (:func:`parse_overrides`).
        cnnsee: CNNSee's options (a dict, or YAML text or file), over those of the config's CNNSee.
        checkpoints: the run's checkpoints: the first that loads gives its ``hyper_parameters`` and
            ``datamodule_hyper_parameters`` (what ``save_hyperparameters()`` kept) as the arguments under all the
            others, those the class takes.
        weights_only: ``torch.load``'s safety switch for reading them.

    Raises ``ValueError`` naming what is missing or wrong (jsonargparse's message for a value of the wrong type).
    """
    from jsonargparse import ArgumentParser

    values = read_yaml(config, f"config {os.fspath(config)!r}") if config is not None else {}
    extra = parse_overrides(list(overrides or []))
    classes: dict[str, str | None] = {}
    arguments: dict[str, dict[str, Any]] = {}
    saved = saved_hyper_parameters(checkpoints or [], weights_only=weights_only)
    for name, given_class, given_args, kept in (
        ("model", model, model_args, saved.get("hyper_parameters")),
        ("data", data, data_args, saved.get("datamodule_hyper_parameters")),
    ):
        class_path, init_args = _section(values, name)
        classes[name] = given_class or class_path
        given = given_args if isinstance(given_args, dict) else read_yaml(given_args, f"--{name}-args")
        base = _accepted(classes[name], kept)
        arguments[name] = _merge(_merge(_merge(base, init_args), copy.deepcopy(given)), extra[name])
    where = f"{os.fspath(config)!r}" if config is not None else "the arguments"
    if classes["model"] is None:
        raise ValueError(
            f"replay: no model class in {where}: give --model CLASS_PATH (e.g. --model "
            "lightning_cnnsee.demo.train.ShapesClassifier); a LightningCLI given the class in its script saves "
            "only the arguments."
        )
    if classes["data"] is None:
        raise ValueError(
            f"replay: no data module class in {where}: give --data CLASS_PATH (e.g. --data "
            "lightning_cnnsee.demo.train.ShapesDataModule); the fixed images are the run's validation images."
        )
    cnnsee_class, cnnsee_args = _cnnsee_in(values)
    given_cnnsee = cnnsee if isinstance(cnnsee, dict) else read_yaml(cnnsee, "--cnnsee")
    _merge(cnnsee_args, copy.deepcopy(given_cnnsee))

    modules = tuple(namespace.LightningModule for namespace in NAMESPACES.values())
    datamodules = tuple(namespace.LightningDataModule for namespace in NAMESPACES.values())
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(modules, "model", required=True)
    parser.add_subclass_arguments(datamodules, "data", required=True)
    parser.add_subclass_arguments(CNNSee, "cnnsee", required=True)
    seed = values.get("seed_everything")
    try:
        parsed = parser.parse_object(
            {
                "model": {"class_path": classes["model"], "init_args": arguments["model"]},
                "data": {"class_path": classes["data"], "init_args": arguments["data"]},
                "cnnsee": {"class_path": cnnsee_class, "init_args": cnnsee_args},
            }
        )
        if isinstance(seed, int) and not isinstance(seed, bool):  # as LightningCLI, before building the classes
            next(iter(NAMESPACES.values())).seed_everything(seed, workers=True, verbose=False)
        built = parser.instantiate_classes(parsed)
    except Exception as error:
        if type(error).__name__ != "ArgumentError":
            raise
        raise ValueError(f"replay: {error}") from error
    trainer = values.get("trainer") or {}
    sanity = trainer.get("num_sanity_val_steps", 2)
    sanity = sanity if isinstance(sanity, int) and sanity >= -1 else 2
    limit = trainer.get("limit_val_batches")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:  # the sanity check takes the fewer
        sanity = limit if sanity == -1 else min(sanity, limit)
    accelerator = trainer.get("accelerator") if isinstance(trainer.get("accelerator"), str) else "auto"
    return RunParts(built.model, built.data, built.cnnsee, accelerator, sanity)
