"""Filter and class ascent: the input pattern a conv channel, or a class logit, responds to most.

Gradient ascent in input space (Erhan et al., 2009; Olah et al., 2017, "Feature Visualization"). All K channels
are optimized together as one batch: image ``k`` only ever feeds channel ``k``'s objective, the model runs in eval
mode (so BatchNorm treats each image alone), Adam updates each pixel on its own, and every random draw for image
``k`` (its start and its transformations) comes from a generator seeded from ``(seed, channel)`` (and the image's
number among the channel's ``num_diverse``). So a channel's images do not depend on which other channels ran with
them.

What an image maximizes is an :class:`~lightning_cnnsee.explain.objectives.Objective`: by default ``channel(layer, c)``,
the channel's mean; any composition of ``channel``, ``neuron`` and ``diversity`` through ``objective=``. The layers
it needs are hooked once for the whole ascent (and unhooked at its end, also on an error), and every forward pass
stops after the deepest of them. With ``num_diverse=k`` each channel gets k images, optimized together with
Lucid's diversity term so that they differ (the only objective that couples images: those of one channel).

The image is parameterized in a decorrelated-colour Fourier basis (``"fft"``, as in lucent) or directly as pixels
(``"pixel"``); both map through a sigmoid to [0, 1]. Small random shifts, scalings and rotations at every step
(transformation robustness) keep the result from being high-frequency noise.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee import filter_ascent
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    >>> result = filter_ascent(model, "2", [0, 5], (3, 32, 32), steps=8)
    >>> result.images.shape, result.activations.shape
    (torch.Size([2, 3, 32, 32]), torch.Size([2]))
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_cnnsee.explain.hooks import eval_mode, gradients_enabled
from lightning_cnnsee.explain.layers import OutputKey, device_and_dtype
from lightning_cnnsee.explain.objectives import Objective, _ObjectiveBatch, channel, diversity, forward_to
from lightning_cnnsee.vocabulary.checks import known, positive_int
from lightning_cnnsee.vocabulary.choices import PARAMETERIZATIONS

__all__ = [
    "AscentResult",
    "DIVERSITY_WEIGHT",
    "channel_generator",
    "filter_ascent",
    "make_parameterization",
    "random_transform",
]

# The weight of the diversity term with num_diverse > 1: chosen with `benchmarks/ascent.py --parts diversity` (the
# figures are in benchmarks/README.md): images of one channel differ clearly and keep nearly all of its activation.
DIVERSITY_WEIGHT = 3.0

# Square root of the colour correlation of natural images (ImageNet), as used by lucent and Lucid.
_COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
_COLOR_CORRELATION = _COLOR_CORRELATION_SVD_SQRT / _COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


@dataclass
class AscentResult:
    """What :func:`filter_ascent` found.

    Attributes:
        layer: the layer optimized (``None`` for the model's logits).
        channels: the channel (or class) index of each image: the K channels asked for, each repeated
            ``num_diverse`` times in a row (channel-major).
        images: (K * num_diverse, C, H, W) float32 in [0, 1], on the model's device.
        activations: (K * num_diverse,) each image's score under its channel's objective (by default the mean
            activation of the target channel) on the final image, without the diversity term.
    """

    layer: str | None
    channels: list[int]
    images: Tensor
    activations: Tensor


def channel_generator(seed: int, channel: int, index: int = 0) -> torch.Generator:
    """A CPU generator whose stream depends only on ``(seed, channel, index)``; ``index`` numbers a channel's images.

    Args:
        seed: the ascent's base seed.
        channel: the channel (or class) index.
        index: which of the channel's ``num_diverse`` images; image 0 draws what a single image of the channel
            draws.

    Example::

        >>> from lightning_cnnsee.explain.ascent import channel_generator
        >>> a, b = channel_generator(0, 3).initial_seed(), channel_generator(0, 3, index=1).initial_seed()
        >>> a == channel_generator(0, 3).initial_seed(), a == b
        (True, False)
    """
    if index == 0:
        mixed = int(seed) * 1_000_003 + int(channel) * 7_919 + 1
    else:
        digest = hashlib.blake2b(f"{int(seed)}:{int(channel)}:{int(index)}".encode(), digest_size=8).digest()
        mixed = int.from_bytes(digest, "little")
    generator = torch.Generator()
    generator.manual_seed(mixed % (2**63 - 1))
    return generator


def _fft_scale(height: int, width: int, decay_power: float) -> Tensor:
    freq_y = torch.fft.fftfreq(height)[:, None]
    freq_x = torch.fft.rfftfreq(width)[None, :]
    frequencies = torch.sqrt(freq_x**2 + freq_y**2)
    return 1.0 / frequencies.clamp(min=1.0 / max(height, width)) ** decay_power


def make_parameterization(
    kind: str, generators: Sequence[torch.Generator], shape: tuple[int, int, int], *, decay_power: float = 1.0
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Create the optimized tensor for K images and the function mapping it to images (K, C, H, W) in [0, 1]."""
    channels, height, width = shape
    if kind == "fft":
        spectrum_shape = (channels, height, width // 2 + 1, 2)
        start = torch.stack([torch.randn(spectrum_shape, generator=g) * 0.01 for g in generators])
        scale = _fft_scale(height, width, decay_power)[None, None, :, :]

        def to_linear(param: Tensor) -> Tensor:
            spectrum = torch.view_as_complex(param) * scale.to(param.device)
            return torch.fft.irfft2(spectrum, s=(height, width), norm="ortho") / 4.0

    elif kind == "pixel":
        start = torch.stack([torch.randn(shape, generator=g) * 0.01 for g in generators])

        def to_linear(param: Tensor) -> Tensor:
            return param

    else:
        raise ValueError(f"Unknown parameterization {kind!r}; valid choices: {list(PARAMETERIZATIONS)}.")

    def to_image(param: Tensor) -> Tensor:
        linear = to_linear(param)
        if channels == 3:
            # (3, 3) @ (K, 3, H*W): a batched matmul, much faster than the same einsum on the CPU
            linear = (_COLOR_CORRELATION.to(linear.device) @ linear.flatten(2)).view_as(linear)
        return torch.sigmoid(linear)

    return start, to_image


def random_transform(
    images: Tensor, generators: Sequence[torch.Generator], *, jitter: float, scale: float, degrees: float
) -> Tensor:
    """Shift, scale and rotate each image by its own random amount, filling the border with grey.

    ``jitter`` is a fraction of the image size, ``scale`` the largest relative zoom, ``degrees`` the largest
    rotation. Each image's draw comes from its own generator.
    """
    draws = torch.stack([torch.rand(4, generator=g) * 2 - 1 for g in generators]).to(images.device)
    shift_x, shift_y = draws[:, 0] * jitter * 2, draws[:, 1] * jitter * 2
    zoom = 1.0 + draws[:, 2] * scale
    angle = draws[:, 3] * math.radians(degrees)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1).to(
        images.dtype
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def _as_channel_tensor(values: Sequence[float] | None, channels: int, name: str, default: float) -> Tensor:
    if values is None:
        return torch.full((channels,), default)
    tensor = torch.as_tensor(list(values), dtype=torch.float32).reshape(-1)
    if tensor.numel() != channels:
        raise ValueError(f"{name} has {tensor.numel()} values {tensor.tolist()} for images with {channels} channels.")
    return tensor


def filter_ascent(
    model: nn.Module,
    layer: str | None,
    channels: Sequence[int],
    input_shape: Sequence[int],
    *,
    steps: int = 48,
    lr: float = 0.4,
    seed: int = 0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    parameterization: str = "fft",
    transforms: bool = True,
    output_key: OutputKey = None,
    objective: Callable[[int], Objective] | None = None,
    num_diverse: int = 1,
    diversity_weight: float = DIVERSITY_WEIGHT,
) -> AscentResult:
    """Find, for each channel of ``layer``, an input image that drives that channel's mean activation up.

    Args:
        model: any ``nn.Module``; its train/eval flags are restored and its parameters are never changed.
        layer: a layer name from ``model.named_modules()``: a conv layer (maximize a channel's mean activation) or
            the final ``nn.Linear`` (maximize a class logit). ``None`` maximizes the model's own output logits.
            With ``objective``, the layer whose Gram matrices the diversity term compares (and ``result.layer``).
        channels: K channel (or class) indices, optimized together as one batch.
        input_shape: (C, H, W) of one input image.
        steps: Adam steps. The defaults (48 steps at lr 0.4) come from the curve of activation reached against steps
            and learning rate in ``benchmarks/ascent.py`` (figures in ``benchmarks/README.md``).
        lr: Adam learning rate.
        seed: base seed; image ``i`` of channel ``c`` draws from its own generator seeded from ``(seed, c, i)``.
        mean, std: per-channel input normalization; the [0, 1] image ``x`` is fed as ``(x - mean) / std``.
        parameterization: ``"fft"`` (decorrelated colour, Fourier basis) or ``"pixel"``.
        transforms: random shift, scale and rotation at every step (transformation robustness).
        output_key: where the logits are when ``layer`` is ``None`` and the model returns a tuple or dict.
        objective: a function of a channel index that returns the
        :class:`~lightning_cnnsee.explain.objectives.Objective`
            that channel's images maximize, for example ``lambda c: neuron("conv2", c)`` or
            ``lambda c: channel("conv2", c) - 0.5 * channel("fc", 0)``. The default is
            ``lambda c: channel(layer, c)``. ``channels`` then gives the arguments, the seeds and the labels.
        num_diverse: images per channel. Above 1, each channel's images start from different random images and
            are optimized together under ``objective(c) + diversity_weight * diversity(layer)``, so that they show
            different things the channel responds to (Lucid's diversity).
        diversity_weight: the weight of the diversity term when ``num_diverse > 1``. The default keeps the
            activation that one image per channel reaches, on channels whose activations are from about 1 to 80;
            much smaller activations need a smaller weight (the term would win over the channel), and a larger
            weight makes the images less alike at some cost in activation (``benchmarks/ascent.py``).

    Returns:
        An :class:`AscentResult` with ``.images`` (K * num_diverse, C, H, W) in [0, 1], channel-major (the
        ``num_diverse`` images of ``channels[0]`` first), ``.channels`` repeated to match, and ``.activations`` (K *
        num_diverse,): each image's score under ``objective(c)`` (without the diversity term).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from lightning_cnnsee import filter_ascent
        >>> from lightning_cnnsee.explain.objectives import neuron
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        >>> result = filter_ascent(model, "2", [0, 5], (3, 16, 16), steps=4, num_diverse=3,
        ...                        objective=lambda c: neuron("2", c))
        >>> result.images.shape, result.channels
        (torch.Size([6, 3, 16, 16]), [0, 0, 0, 5, 5, 5])
    """
    known("parameterization", parameterization, PARAMETERIZATIONS)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}.")
    channel_list = [int(c) for c in channels]
    if not channel_list:
        raise ValueError("channels is empty; give at least one channel index.")
    if min(channel_list) < 0:
        raise ValueError(f"channel indices must be >= 0, got {channel_list}.")
    positive_int("num_diverse", num_diverse)
    reported = _objectives_per_channel(layer, channel_list, objective)
    optimized = reported
    if num_diverse > 1:
        optimized = [o + diversity_weight * diversity(layer) for o in reported]
    image_channels = [c for c in channel_list for _ in range(num_diverse)]  # channel-major
    with gradients_enabled(), eval_mode(model):  # everything made here must be usable by autograd
        device, dtype = device_and_dtype(model)
        mean_t = _as_channel_tensor(mean, shape[0], "mean", 0.0).to(device)[None, :, None, None]
        std_t = _as_channel_tensor(std, shape[0], "std", 1.0).to(device)[None, :, None, None]
        generators = [channel_generator(seed, c, i % num_diverse) for i, c in enumerate(image_channels)]
        start, to_image = make_parameterization(parameterization, generators, shape)
        param = start.to(device).requires_grad_(True)
        to_maximize = _ObjectiveBatch(optimized, num_diverse)
        to_report = _ObjectiveBatch(reported, num_diverse)

        def to_input(image: Tensor) -> Tensor:
            return ((image - mean_t) / std_t).to(dtype)

        optimizer = torch.optim.Adam([param], lr=lr)
        # hooked once for the whole loop, removed on the way out also when a step raises
        with forward_to(model, [*to_maximize.layers, *to_report.layers], output_key=output_key) as forward:
            for _ in range(steps):
                image = to_image(param)
                if transforms:
                    image = random_transform(image, generators, jitter=0.06, scale=0.1, degrees=10.0)
                loss = -to_maximize(forward(to_input(image))).sum()
                (param.grad,) = torch.autograd.grad(loss, [param])
                optimizer.step()
            with torch.no_grad():
                images = to_image(param).detach()
                activations = to_report(forward(to_input(images))).detach()
    return AscentResult(layer=layer, channels=image_channels, images=images.float(), activations=activations.float())


def _objectives_per_channel(
    layer: str | None, channels: list[int], objective: Callable[[int], Objective] | None
) -> list[Objective]:
    if objective is None:
        return [channel(layer, c) for c in channels]
    if isinstance(objective, Objective) or not callable(objective):
        raise TypeError(
            f"objective must be a function of a channel index that returns an Objective, for example "
            f"objective=lambda c: neuron('conv2', c); got {objective!r}."
        )
    made = [objective(c) for c in channels]
    for c, value in zip(channels, made, strict=True):
        if not isinstance(value, Objective):
            raise TypeError(f"objective({c}) returned {value!r} ({type(value).__name__}), not an Objective.")
        if not value.terms:
            raise ValueError(f"objective({c}) is {value!r}: it reads no layer, so there is nothing to maximize.")
    return made
