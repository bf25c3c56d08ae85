"""Which layers a run shows: the user's choices where given, automatic picks for the rest, checked on the model.

:func:`check_layer_names` checks the names alone (at setup, no input needed); :func:`choose_layers` runs the model
once on an example input and checks everything else (each layer gives a (N, C, H, W) map, channels and classes in
range, one mean and std value per input channel), so a configuration that cannot work fails before training.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee.run.options import Options
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    >>> choice = choose_layers(model, torch.rand(1, 3, 16, 16), Options())
    >>> choice.gradcam, choice.filters, choice.activations, choice.class_layer, choice.num_classes
    (['3'], ['0', '2'], ['0', '2'], '6', 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lightning_cnnsee.explain.attention import ATTENTION_CAM_METHODS
from lightning_cnnsee.explain.hooks import eval_mode, gradients_enabled
from lightning_cnnsee.explain.layers import LayerPicks, device_and_dtype, pick_layers, resolve_layer_names
from lightning_cnnsee.run.options import Options
from lightning_cnnsee.vocabulary.choices import AUTO_CAM_METHOD

__all__ = [
    "ChosenLayers",
    "automatic_picks",
    "check_layer_names",
    "choose_from_picks",
    "choose_layers",
    "example_input",
]


@dataclass
class ChosenLayers:
    """The layers of each technique, and what the probe saw of the model."""

    gradcam: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)
    class_layer: str | None = None
    num_classes: int | None = None
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    cam_method: str = "gradcam"
    reason: str = ""
    rollout_layers: list[str] = field(default_factory=list)

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return (
            f"CAM {self.cam_method} on {self.gradcam}{why}, filters {self.filters}, activations {self.activations}, "
            f"classes {self.class_layer or 'model output'} ({self.num_classes} classes)"
        )


def check_layer_names(module: nn.Module, options: Options) -> None:
    """Every layer name in ``options`` is a layer of ``module``; raises ``ValueError`` naming the option."""
    for option in ("layers", "gradcam_layers", "filter_layers", "activation_layers", "class_layer"):
        names = getattr(options, option)
        if names is None:
            continue
        try:
            resolve_layer_names(module, [names] if isinstance(names, str) else names)
        except ValueError as error:
            raise ValueError(f"CNNSee({option}=...): {error}") from None


def choose_layers(module: nn.Module, example: Tensor, options: Options) -> ChosenLayers:
    """Pick and check the layers of every technique by running ``module`` once on ``example`` (one input is enough).

    Raises ``ValueError`` for a configuration that cannot work with this model, naming the option.
    """
    return choose_from_picks(automatic_picks(module, example, options), options, int(example.shape[1]))


def automatic_picks(module: nn.Module, example: Tensor, options: Options) -> LayerPicks:
    """The automatic picks of :func:`~lightning_cnnsee.explain.layers.pick_layers`, from one eval-mode pass without a
    graph."""
    with gradients_enabled(), eval_mode(module), torch.no_grad():
        return pick_layers(module, example[:1], output_key=options.output_key)


def choose_from_picks(picks: LayerPicks, options: Options, channels: int) -> ChosenLayers:
    """The user's layers where given, ``picks`` for the rest, checked against what the probe saw; images have
    ``channels`` channels."""
    automatic = options.layers if options.layers is not None else picks.features
    choice = ChosenLayers(
        gradcam=list(options.gradcam_layers or options.layers or picks.gradcam),
        filters=list(options.filter_layers or automatic),
        activations=list(options.activation_layers or automatic),
        class_layer=options.class_layer or picks.class_layer,
        num_classes=picks.num_classes,
        output_shapes=picks.output_shapes,
        rollout_layers=picks.rollout_layers,
    )
    user_layers = bool(options.gradcam_layers or options.layers)
    if options.cam_method != AUTO_CAM_METHOD:
        choice.cam_method, choice.reason = options.cam_method, "cam_method given"
    elif user_layers:
        choice.cam_method, choice.reason = "gradcam", "cam_method='auto' on the layers given"
    else:
        choice.cam_method, choice.reason = picks.cam_method, picks.reason
    _check(choice, options, channels)
    return choice


def _check(choice: ChosenLayers, options: Options, channels: int) -> None:
    shapes = choice.output_shapes
    maps = [name for name, shape in shapes.items() if len(shape) == 4]

    def require_maps(option: str, names: list[str]) -> None:
        for name in names:
            shape = shapes.get(name)
            if shape is None or len(shape) != 4:
                found = "did not run in the forward pass" if shape is None else f"outputs shape {shape}"
                raise ValueError(
                    f"CNNSee({option}=...): layer {name!r} {found}, but it must output a (N, C, H, W) feature map. "
                    f"Layers with such maps: {maps[-12:]}."
                )

    techniques = options.techniques
    if "gradcam" in techniques and choice.cam_method in ATTENTION_CAM_METHODS:
        bad = [name for name in choice.gradcam if name not in choice.rollout_layers]
        if bad:
            raise ValueError(
                f"CNNSee(cam_method={choice.cam_method!r}): layers {bad} hold no self-attention of a ViT (attention "
                f"spanning the patch grid); layers that do: {choice.rollout_layers[:8]}. Use a CAM method "
                "such as 'gradcam' for a CNN or a Swin."
            )
    if "gradcam" in techniques:
        require_maps("gradcam_layers", choice.gradcam)
    if "activations" in techniques:
        require_maps("activation_layers", choice.activations)
    if "filters" in techniques:
        require_maps("filter_layers", choice.filters)
        for name in choice.filters if options.filter_channels is not None else []:
            count = shapes[name][1]
            bad = [c for c in options.filter_channels if c >= count]
            if bad:
                raise ValueError(
                    f"CNNSee(filter_channels=...): channels {bad} out of range for layer {name!r} with {count} "
                    f"channels (valid: 0..{count - 1})."
                )
    if "classes" in techniques and options.classes is not None:
        if choice.num_classes is None:
            raise ValueError("CNNSee(classes=...): the model's output is not (N, num_classes) logits.")
        bad = [c for c in options.classes if c >= choice.num_classes]
        if bad:
            raise ValueError(
                f"CNNSee(classes=...): classes {bad} out of range for {choice.num_classes} classes "
                f"(valid: 0..{choice.num_classes - 1})."
            )
    for option in ("mean", "std"):
        values = getattr(options, option)
        if values is not None and len(values) != channels:
            raise ValueError(
                f"CNNSee({option}={values}): {len(values)} values for images with {channels} channels; give one "
                "value per channel."
            )


def example_input(module: nn.Module) -> Tensor | None:
    """An input to probe ``module`` with, without loading data: its ``example_input_array``, else a 64x64 input for
    its first conv layer, on the module's device and in its dtype; ``None`` when neither exists."""
    example = getattr(module, "example_input_array", None)
    if not isinstance(example, Tensor):
        first_conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
        if first_conv is None:
            return None
        example = torch.zeros(1, first_conv.in_channels, 64, 64)
    device, dtype = device_and_dtype(module)
    return example.to(device=device, dtype=dtype if example.is_floating_point() else torch.float32)
