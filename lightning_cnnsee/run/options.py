"""CNNSee's options, checked once when they are given: a wrong value fails at construction, never in training.

Each check names the option, the value given and what is allowed. Choices come from the modules that use them
(the CAM and attribution methods from the core, the other choices from :mod:`lightning_cnnsee.vocabulary.choices`),
so there is one list of each.

Example::

    >>> from lightning_cnnsee.run.options import Options
    >>> Options(num_filters=4).num_filters
    4
    >>> Options(num_samples=2.5)
    Traceback (most recent call last):
    ...
    ValueError: CNNSee(num_samples=2.5): must be a whole number >= 1 (not a float or a bool).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from lightning_cnnsee.explain.attributions import ATTRIBUTION_METHODS
from lightning_cnnsee.explain.cam import check_cam_method
from lightning_cnnsee.vocabulary.choices import (
    ALL_TECHNIQUES,
    AUTO_CAM_METHOD,
    CAM_SCALES,
    MODEL_KIND_CHOICES,
    PARAMETERIZATIONS,
    TECHNIQUES,
)
from lightning_cnnsee.vocabulary.tags import TAG_KINDS, safe_path_part

__all__ = [
    "DEFAULT_NAME_LENGTH",
    "Options",
    "choice",
    "choices_list",
    "default_name",
    "index_list",
    "instance_name",
    "name_list",
    "number_list",
    "positive_number",
    "whole_number",
]


def _fail(name: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"CNNSee({name}={value!r}): {expected}.")


def whole_number(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    """An ``int`` (not a bool, not a float) of at least ``minimum``; ``None`` too when ``optional``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = ", or None to turn it off" if optional else ""
        raise _fail(name, value, f"must be a whole number >= {minimum} (not a float or a bool){extra}")


def positive_number(name: str, value: Any, *, optional: bool = False, at_most: float | None = None) -> None:
    """A finite real number > 0 (and <= ``at_most``); ``None`` too when ``optional``."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        extra = ", or None to turn it off" if optional else ""
        raise _fail(name, value, f"must be a finite number > 0{extra}")
    if at_most is not None and value > at_most:
        raise _fail(name, value, f"must be at most {at_most}")


def choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """One of ``choices``."""
    if value not in choices:
        raise _fail(name, value, f"valid choices are {list(choices)}")


def choices_list(name: str, values: Any, choices: Sequence[str]) -> tuple[str, ...]:
    """A non-empty list of distinct items of ``choices`` (a bare string is refused: it is not a list)."""
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        hint = f"; write [{values!r}]" if isinstance(values, str) else ""
        raise _fail(name, values, f"must be a non-empty list of {list(choices)}{hint}")
    unknown = [value for value in values if value not in choices]
    if unknown:
        raise _fail(name, values, f"unknown {unknown}; valid choices are {list(choices)}")
    return tuple(dict.fromkeys(values))


def index_list(name: str, values: Any) -> None:
    """``None`` or a non-empty list of whole numbers >= 0."""
    if values is None:
        return
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise _fail(name, values, "must be a non-empty list of indices >= 0, or None")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise _fail(name, values, "must be a non-empty list of whole-number indices >= 0")


def name_list(name: str, values: Any) -> None:
    """``None`` or a non-empty list of layer names."""
    if values is None:
        return
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        hint = f"; write [{values!r}]" if isinstance(values, str) else ""
        raise _fail(name, values, f"must be a non-empty list of layer names from model.named_modules(), or None{hint}")
    if not all(isinstance(v, str) for v in values):
        raise _fail(name, values, "must be a list of layer names (strings)")


def number_list(name: str, values: Any, *, positive: bool = False) -> None:
    """``None`` or a non-empty list of finite numbers (> 0 when ``positive``)."""
    if values is None:
        return
    ok = not isinstance(values, (str, bytes)) and isinstance(values, Sequence) and len(values) > 0
    ok = ok and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or not positive)
        for v in values
    )
    if not ok:
        raise _fail(name, values, f"must be a non-empty list of finite numbers{' > 0' if positive else ''}, or None")


def instance_name(value: Any) -> None:
    """``None`` or a short name for tags: letters, digits, ``._-``, not a tag kind."""
    if value is None:
        return
    if not isinstance(value, str) or not value or not all(c.isalnum() or c in "._-" for c in value):
        raise _fail("name", value, "must be a non-empty string of letters, digits, '.', '_' or '-', or None")
    if value in TAG_KINDS:
        raise _fail("name", value, f"must not be one of the tag kinds {list(TAG_KINDS)}")


@dataclass(frozen=True)
class Options:
    """Every option of a CNNSee visualization, checked; see :class:`lightning_cnnsee.CNNSee` for their meaning."""

    num_samples: int = 8
    every_n_epochs: int | None = 1
    every_n_steps: int | None = None
    filters_every_n_runs: int = 1
    techniques: tuple[str, ...] = TECHNIQUES
    layers: list[str] | None = None
    gradcam_layers: list[str] | None = None
    filter_layers: list[str] | None = None
    activation_layers: list[str] | None = None
    class_layer: str | None = None
    cam_method: str = AUTO_CAM_METHOD
    cam_scale: str = "batch"
    cam_alpha: float = 0.5
    num_filters: int = 8
    filter_channels: list[int] | None = None
    classes: list[int] | None = None
    max_classes: int = 10
    class_names: list[str] | None = None
    activation_channels: int = 16
    ascent_steps: int = 32
    ascent_lr: float = 0.4
    parameterization: str = "fft"
    mean: list[float] | None = None
    std: list[float] | None = None
    image_key: int | str | None = None
    label_key: int | str | None = None
    output_key: int | str | None = None
    seed: int = 0
    strict: bool = False
    max_overhead: float | None = 0.05
    name: str | None = None
    attribution_methods: list[str] = field(default_factory=lambda: ["saliency", "integrated_gradients"])
    num_diverse: int = 1
    faithfulness_steps: int = 20
    model_kind: str = "auto"
    max_classes_per_image: int = 3
    object_key: int | str | None = None

    def __post_init__(self) -> None:
        for option in ("num_samples", "filters_every_n_runs", "num_filters", "max_classes", "activation_channels"):
            whole_number(option, getattr(self, option), 1)
        whole_number("every_n_epochs", self.every_n_epochs, 1, optional=True)
        whole_number("every_n_steps", self.every_n_steps, 1, optional=True)
        whole_number("ascent_steps", self.ascent_steps, 0)
        whole_number("seed", self.seed, 0)
        positive_number("ascent_lr", self.ascent_lr)
        positive_number("max_overhead", self.max_overhead, optional=True)
        object.__setattr__(self, "techniques", choices_list("techniques", self.techniques, ALL_TECHNIQUES))
        object.__setattr__(
            self,
            "attribution_methods",
            list(choices_list("attribution_methods", self.attribution_methods, sorted(ATTRIBUTION_METHODS))),
        )
        for option in ("num_diverse", "faithfulness_steps", "max_classes_per_image"):
            whole_number(option, getattr(self, option), 1)
        choice("model_kind", self.model_kind, MODEL_KIND_CHOICES)
        try:
            if self.cam_method != AUTO_CAM_METHOD:
                check_cam_method(self.cam_method)
        except ValueError as error:
            raise _fail("cam_method", self.cam_method, f"{str(error).rstrip('.')} or {AUTO_CAM_METHOD!r}") from None
        choice("cam_scale", self.cam_scale, CAM_SCALES)
        choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        if (
            isinstance(self.cam_alpha, bool)
            or not isinstance(self.cam_alpha, (int, float))
            or not (0.0 <= self.cam_alpha <= 1.0)
        ):
            raise _fail("cam_alpha", self.cam_alpha, "must be a number in [0, 1]")
        if not isinstance(self.strict, bool):
            raise _fail("strict", self.strict, "must be True or False")
        for option in ("layers", "gradcam_layers", "filter_layers", "activation_layers"):
            name_list(option, getattr(self, option))
        if self.class_layer is not None and not isinstance(self.class_layer, str):
            raise _fail("class_layer", self.class_layer, "must be a layer name (a string) or None")
        index_list("filter_channels", self.filter_channels)
        index_list("classes", self.classes)
        if self.class_names is not None and (
            isinstance(self.class_names, str) or not isinstance(self.class_names, Sequence)
        ):
            raise _fail("class_names", self.class_names, "must be a list of names, indexed by class, or None")
        number_list("mean", self.mean)
        number_list("std", self.std, positive=True)
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise _fail("std", self.std, f"must have as many values as mean={self.mean!r} ({len(self.mean)})")
        for option in ("image_key", "label_key", "output_key", "object_key"):
            value = getattr(self, option)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
                raise _fail(option, value, "must be an int (tuple or list position), a string (dict key), or None")
        instance_name(self.name)

    @property
    def patterns(self) -> bool:
        """Whether runs optimize filter or class patterns (the costly part)."""
        return "filters" in self.techniques or "classes" in self.techniques

    def differing(self, other: Options) -> dict[str, Any]:
        """The options whose values differ from ``other``'s (this instance's values)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)}


#: The longest default name, cut at a part boundary: short enough to read in a tag list.
DEFAULT_NAME_LENGTH = 40


def default_name(options: Options, every: list[Options]) -> str | None:
    """The tag name of a CNNSee with ``options`` among the options of ``every`` CNNSee of a Trainer (itself included):
    none for the only unnamed one; with several unnamed, what this one was set to where the others differ, value
    first (``layercam``, ``gradcam_only``, ``num_samples_16``, joined by ``-``, at most ``DEFAULT_NAME_LENGTH``
    characters); ``default`` for the one that keeps the defaults where the others differ; its position
    (``cnnsee1``) when another has the same options or the same name.

    Example::

        >>> default_name(Options(), [Options()]) is None
        True
        >>> everyone = [Options(), Options(techniques=["gradcam"], cam_method="layercam")]
        >>> [default_name(options, everyone) for options in everyone]
        ['default', 'gradcam_only-layercam']
    """
    unnamed = [other for other in every if other.name is None]
    if len(unnamed) < 2:
        return None
    position = next(i for i, other in enumerate(unnamed) if other is options)
    name = _describe(options, unnamed)
    if name is None or [_describe(other, unnamed) for other in unnamed].count(name) > 1:
        return f"cnnsee{position}"
    return name


def _describe(options: Options, unnamed: list[Options]) -> str | None:
    """The options set apart from the other unnamed CNNSee, as a name; ``None`` when another has the same options."""
    differing: dict[str, Any] = {}
    for other in unnamed:
        if other is not options:
            found = options.differing(other)
            if not found:
                return None
            differing.update(found)
    defaults = Options()
    parts = [_name_part(option, value) for option, value in differing.items() if value != getattr(defaults, option)]
    name = ""
    for part in parts or ["default"]:
        longer = f"{name}-{part}" if name else part
        if name and len(longer) > DEFAULT_NAME_LENGTH:
            break
        name = longer
    return safe_path_part(name[:DEFAULT_NAME_LENGTH])


def _name_part(option: str, value: Any) -> str:
    """One option's value as a part of a name: choices by themselves (``layercam``, ``gradcam_activations``,
    one technique as ``gradcam_only``), the rest after their option (``num_samples_16``, ``no_every_n_epochs``,
    ``mean_3`` for 3 numbers)."""
    if option == "techniques" and len(value) == 1:
        return f"{value[0]}_only"
    if isinstance(value, (list, tuple)):
        return "_".join(map(str, value)) if all(isinstance(v, str) for v in value) else f"{option}_{len(value)}"
    if isinstance(value, bool):
        return option if value else f"no_{option}"
    if value is None:
        return f"no_{option}"
    if isinstance(value, str) and option.endswith(("_method", "_kind", "_scale", "parameterization")):
        return value
    return f"{option}_{value}"
