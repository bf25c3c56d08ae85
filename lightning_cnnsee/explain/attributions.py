"""Pixel attributions: how much each input pixel counts for a class score, by seven methods, in pure PyTorch.

``attribute(model, images, method, targets)`` returns one map per image at the input's resolution (N, C, H, W). The
gradient methods share one step, :func:`_input_gradients`: the gradient of each input's target-class score with
respect to that input, by one forward pass and one ``torch.autograd.grad`` per batch of inputs, never ``.backward()``,
so no parameter's ``.grad`` is read or written. Integrated Gradients' path points and SmoothGrad's noisy copies go
through it in large batches; Occlusion's perturbed copies go through the model in large batches under
``torch.inference_mode()``. The model runs in eval mode and gets each module's ``training`` flag back; guided
backprop adds forward hooks to its ``nn.ReLU`` modules for the duration of the call only.

Options carry Captum's names and defaults (``captum.attr.Saliency``, ``IntegratedGradients``, ``NoiseTunnel``,
``Occlusion``, ``GuidedBackprop``, ``GuidedGradCam``), and the results equal Captum's at the same options
(``tests/test_attributions.py``), so switching between the two is a matter of renaming. The batching options
differ in their default only: None means about :data:`ROWS_PER_PASS` images per forward pass.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee.explain.attributions import ATTRIBUTION_METHODS, attribute
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    >>> images = torch.rand(2, 3, 16, 16)
    >>> sorted(ATTRIBUTION_METHODS)  # doctest: +NORMALIZE_WHITESPACE
    ['guided_backprop', 'guided_gradcam', 'input_x_gradient', 'integrated_gradients', 'occlusion', 'saliency',
     'smoothgrad']
    >>> maps = attribute(model, images, "integrated_gradients", targets=[0, 3], n_steps=16)
    >>> maps.shape
    torch.Size([2, 3, 16, 16])
    >>> occluded = attribute(model, images, "occlusion", sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2))
    >>> occluded.shape, bool(attribute(model, images, "saliency").min() >= 0)
    (torch.Size([2, 3, 16, 16]), True)
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_cnnsee.explain.cam import grad_cam
from lightning_cnnsee.explain.checks import broadcast_baseline, image_batch
from lightning_cnnsee.explain.hooks import eval_mode, gradients_enabled
from lightning_cnnsee.explain.layers import OutputKey, logits_of, select_output
from lightning_cnnsee.explain.occlusion import incremental_forward
from lightning_cnnsee.explain.registration import hooks_on
from lightning_cnnsee.explain.targets import Targets, class_scores, resolve_targets
from lightning_cnnsee.vocabulary.checks import known, positive_int

__all__ = [
    "ATTRIBUTION_METHODS",
    "INTEGRATION_METHODS",
    "NOISE_TUNNEL_TYPES",
    "ROWS_PER_PASS",
    "attribute",
    "attribution_map",
    "method_options",
]

ROWS_PER_PASS = 64
"""Images per forward pass when an option leaves the batching to us (``internal_batch_size=None`` and alike)."""

NOISE_TUNNEL_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
INTEGRATION_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


# ----------------------------------------------------------------------------------------------- shared steps


def _selected_logits(output: object, output_key: OutputKey) -> Tensor:
    logits = select_output(output, output_key)
    if logits.ndim != 2:
        raise ValueError(f"Expected logits of shape (N, num_classes), got {tuple(logits.shape)}.")
    return logits


def _logits_in_any_layout(model: nn.Module, inputs: Tensor, output_key: OutputKey, channels_last: list[bool]) -> Tensor:
    """:func:`~lightning_cnnsee.explain.layers.logits_of` ``inputs`` in the channels-last memory layout while
    ``channels_last[0]`` holds: the same numbers to float rounding, and convolutions on the CPU take a quarter less
    time on it. A model that cannot take it (a ``.view()`` of a feature map) gets the usual layout from then on."""
    if channels_last[0]:
        try:
            return logits_of(model, inputs.contiguous(memory_format=torch.channels_last), output_key)
        except RuntimeError:
            channels_last[0] = False
    return logits_of(model, inputs, output_key)


def _image_targets(model: nn.Module, images: Tensor, targets: Targets, output_key: OutputKey) -> Targets:
    """The targets to explain in copies of the images (noisy copies, path points): for None each image's predicted
    class, from one forward pass of the images without autograd; otherwise ``targets`` as they are."""
    if targets is not None:
        return targets
    with torch.inference_mode():
        logits = logits_of(model, images, output_key)
    return resolve_targets(None, logits.clone())


def _input_gradients(model: nn.Module, copies: Tensor, targets: Targets, output_key: OutputKey) -> Tensor:
    """``d logits[k, n, target_n] / d copies[k, n]`` for K copies of N images (K, N, C, H, W): one forward pass of
    the K * N rows and one ``torch.autograd.grad``. Each method cuts its work into such batches of copies.

    ``targets``: None (each row's predicted class), an int, or one class per image, resolved and checked by
    :func:`resolve_targets` on the logits of the first copy.
    """
    count, batch = copies.shape[:2]
    rows = copies.flatten(0, 1).detach().requires_grad_(True)
    logits = logits_of(model, rows, output_key)
    if targets is None:
        classes = resolve_targets(None, logits)
    else:
        classes = resolve_targets(targets, logits[:batch]).repeat(count)
    score = class_scores(logits, classes).sum()
    (gradient,) = torch.autograd.grad(score, rows)
    return gradient.view(copies.shape)


def _batches(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def _per_pass(option: int | None, images_per_item: int, name: str) -> int:
    """Items (steps, samples, perturbations: each ``images_per_item`` rows) per forward pass: ``option``, or as many
    as make about :data:`ROWS_PER_PASS` rows when it is None; at least one."""
    if option is None:
        return max(1, ROWS_PER_PASS // images_per_item)
    return positive_int(name, option, or_none=True)  # type: ignore[return-value]


@contextlib.contextmanager
def _guided_relus(model: nn.Module) -> Iterator[None]:
    """Inside the block, the gradient through each ``nn.ReLU`` module of ``model`` is guided: only its positive part
    goes back (guided backprop). Forward hooks pass each ReLU's output through :class:`_GuidedGradient`; no module is
    replaced or changed, and the hooks are removed in ``finally``, also when the forward pass raises."""

    def guide(module: nn.Module, args: object, output: object) -> Tensor | None:
        if isinstance(output, Tensor) and output.requires_grad:
            return _GuidedGradient.apply(output)
        return None

    with hooks_on((module, guide) for module in model.modules() if isinstance(module, nn.ReLU)):
        yield


class _GuidedGradient(torch.autograd.Function):
    """Identity forward (a copy, so that later in-place operations stay legal); backward ``ReLU(grad)``.

    After a ReLU, whose own backward multiplies by ``input > 0``, the gradient that reaches the ReLU's input is
    ``ReLU(grad_output) * (input > 0)``, which is Captum's ``ReLU(grad_input)``."""

    @staticmethod
    def forward(ctx, output: Tensor) -> Tensor:  # type: ignore[override]
        return output.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.clamp(min=0)


def _path(method: str, n_steps: int) -> tuple[Tensor, Tensor]:
    """Points ``alpha`` in [0, 1] and their weights for the path integral, as Captum's ``approximation_methods``."""
    known("integration method", method, INTEGRATION_METHODS)
    fewest = 1 if method == "gausslegendre" else 2
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < fewest:
        raise ValueError(f"n_steps must be an int >= {fewest} for method={method!r}, got {n_steps!r}.")
    if method == "gausslegendre":
        # Golub-Welsch: the nodes on [-1, 1] are the eigenvalues of the Jacobi matrix of the Legendre polynomials,
        # the weights twice the squared first components of its eigenvectors (numpy's leggauss to 1e-15); mapped
        # to [0, 1], the weights halve.
        k = torch.arange(1, n_steps, dtype=torch.float64)
        off_diagonal = k / torch.sqrt(4 * k * k - 1)
        nodes, vectors = torch.linalg.eigh(torch.diag(off_diagonal, 1) + torch.diag(off_diagonal, -1))
        return 0.5 * (1 + nodes), vectors[0] ** 2
    weights = torch.full((n_steps,), 1 / n_steps, dtype=torch.float64)  # Captum's, also for the trapezoid rule
    rule = method.split("_")[1]
    if rule == "trapezoid":
        weights[[0, -1]] /= 2
        return torch.linspace(0, 1, n_steps).double(), weights  # float32 points, as Captum
    first, last = {
        "left": (0, 1 - 1 / n_steps),
        "right": (1 / n_steps, 1),
        "middle": (1 / (2 * n_steps), 1 - 1 / (2 * n_steps)),
    }[rule]
    return torch.linspace(first, last, n_steps).double(), weights


def _window_and_strides(
    sliding_window_shapes: tuple[int, ...], strides: int | tuple[int, ...] | None, shape: torch.Size
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Captum's Occlusion window (C, h, w) and strides (None: 1), checked against the image shape (C, H, W). A window
    (h, w) covers all channels."""
    window = tuple(sliding_window_shapes) if isinstance(sliding_window_shapes, (tuple, list)) else ()
    if len(window) == 2:
        window = (shape[0], *window)
    if len(window) != 3 or not all(isinstance(size, int) and size >= 1 for size in window):
        raise ValueError(
            f"sliding_window_shapes must be (channels, height, width) or (height, width) of positive "
            f"ints, got {sliding_window_shapes!r}."
        )
    steps = (1, 1, 1) if strides is None else (strides,) * 3 if isinstance(strides, int) else tuple(strides)
    if len(steps) == 2:
        steps = (window[0], *steps)
    if len(steps) != 3 or not all(isinstance(step, int) and step >= 1 for step in steps):
        raise ValueError(f"strides must be an int or a tuple like sliding_window_shapes, got {strides!r}.")
    for size, extent, step in zip(shape, window, steps, strict=True):
        if extent > size:
            raise ValueError(f"sliding_window_shapes {window} is larger than the images {tuple(shape)}.")
        if step > extent and extent < size:
            raise ValueError(
                f"strides {steps} must not exceed sliding_window_shapes {window}: pixels would be skipped."
            )
    return window, steps


def _window_masks(shape: torch.Size, window: tuple[int, ...], strides: tuple[int, ...], device) -> list[Tensor]:
    """One 0/1 row per window position along each of the three dimensions (positions, size); as in Captum, the
    last position may overhang the edge and is cut there."""
    masks = []
    for size, extent, step in zip(shape, window, strides, strict=True):
        starts = torch.arange(math.ceil((size - extent) / step) + 1, device=device)[:, None] * step
        index = torch.arange(size, device=device)[None, :]
        masks.append(((index >= starts) & (index < starts + extent)).float())
    return masks


# --------------------------------------------------------------------------------------------- the methods
# Each takes (model, images, targets, output_key) and its options as keyword arguments, whose names and defaults
# are Captum's (or say where they differ); ``attribute`` checks the options against these signatures.


def _saliency(model: nn.Module, images: Tensor, targets: Targets, output_key: OutputKey, *, abs: bool = True) -> Tensor:
    """Saliency (Simonyan et al., 2014): ``|d y_c / d x|`` (the signed gradient with ``abs=False``)."""
    gradient = _input_gradients(model, images[None], targets, output_key)[0]
    return gradient.abs() if abs else gradient


def _input_x_gradient(model: nn.Module, images: Tensor, targets: Targets, output_key: OutputKey) -> Tensor:
    """Input x gradient (Shrikumar et al., 2016): ``x * d y_c / d x``."""
    return images * _input_gradients(model, images[None], targets, output_key)[0]


def _smoothgrad(
    model: nn.Module,
    images: Tensor,
    targets: Targets,
    output_key: OutputKey,
    *,
    nt_type: str = "smoothgrad",
    nt_samples: int = 5,
    nt_samples_batch_size: int | None = None,
    stdevs: float = 1.0,
    abs: bool = True,
) -> Tensor:
    """SmoothGrad (Smilkov et al., 2017), as Captum's ``NoiseTunnel(Saliency)``: the saliency (``abs`` as there) of
    ``nt_samples`` copies of each image plus Gaussian noise of standard deviation ``stdevs``, averaged
    (``"smoothgrad"``), its square averaged (``"smoothgrad_sq"``) or its variance (``"vargrad"``)."""
    known("nt_type", nt_type, NOISE_TUNNEL_TYPES)
    positive_int("nt_samples", nt_samples)
    if isinstance(stdevs, bool) or not isinstance(stdevs, (int, float)) or stdevs < 0:
        raise ValueError(f"stdevs must be a non-negative number, got {stdevs!r}.")
    batch = len(images)
    per_pass = min(nt_samples, _per_pass(nt_samples_batch_size, batch, "nt_samples_batch_size"))
    classes = _image_targets(model, images, targets, output_key)
    total = torch.zeros_like(images)
    total_of_squares = torch.zeros_like(images)
    # The noise is drawn as Captum draws it (per batch of samples, image-major, in the default dtype), so the same
    # seed and the same nt_samples_batch_size give the same noise.
    for samples in [per_pass] * (nt_samples // per_pass) + [nt_samples % per_pass] * bool(nt_samples % per_pass):
        noise = torch.randn((batch, samples, *images.shape[1:]), device=images.device) * float(stdevs)
        saliency = _input_gradients(model, images + noise.transpose(0, 1), classes, output_key)
        saliency = saliency.abs() if abs else saliency
        total += saliency.sum(dim=0)
        total_of_squares += saliency.pow(2).sum(dim=0)
    mean, mean_of_squares = total / nt_samples, total_of_squares / nt_samples
    return {"smoothgrad": mean, "smoothgrad_sq": mean_of_squares, "vargrad": mean_of_squares - mean * mean}[nt_type]


def _integrated_gradients(
    model: nn.Module,
    images: Tensor,
    targets: Targets,
    output_key: OutputKey,
    *,
    baselines: float | Tensor | None = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
) -> Tensor:
    """Integrated Gradients (Sundararajan et al., 2017): ``(x - x') * integral_0^1 d y_c(x' + a (x - x')) / d x da``
    from the baseline ``x'``, by the quadrature ``method`` with ``n_steps`` points; ``internal_batch_size`` rows per
    pass, whole steps (None: about :data:`ROWS_PER_PASS`; Captum's None is all ``N * n_steps`` at once)."""
    alphas, weights = _path(method, n_steps)
    batch = len(images)
    steps_per_pass = max(1, _per_pass(internal_batch_size, 1, "internal_batch_size") // batch)  # as Captum
    baselines = broadcast_baseline(baselines, images, "baselines")
    difference = images - baselines
    classes = _image_targets(model, images, targets, output_key)
    alphas = alphas.to(images.device, images.dtype).view(-1, 1, 1, 1, 1)
    weights = weights.to(images.device, torch.float32).to(images.dtype).view(-1, 1, 1, 1, 1)  # float32 as Captum
    total = torch.zeros_like(images)
    for steps in _batches(n_steps, steps_per_pass):
        gradients = _input_gradients(model, baselines + alphas[steps] * difference, classes, output_key)
        total += (gradients * weights[steps]).sum(dim=0)
    return total * difference


def _occlusion(
    model: nn.Module,
    images: Tensor,
    targets: Targets,
    output_key: OutputKey,
    *,
    sliding_window_shapes: tuple[int, ...],
    strides: int | tuple[int, ...] | None = None,
    baselines: float | Tensor | None = None,
    perturbations_per_eval: int | None = None,
    incremental: bool = True,
) -> Tensor:
    """Occlusion (Zeiler and Fergus, 2014): at each pixel, the mean drop of ``y_c`` over the window positions that
    cover it when the window is replaced by ``baselines``. ``perturbations_per_eval`` window positions per pass
    (None: about :data:`ROWS_PER_PASS` images; Captum's default is 1), all under ``torch.inference_mode()``.
    ``incremental`` (not in Captum): recompute only what each window reaches where the model allows it
    (:mod:`lightning_cnnsee.explain.occlusion`; the same values to float rounding); False: the full forward pass
    for every copy, as Captum."""
    if not isinstance(incremental, bool):
        raise ValueError(f"incremental must be True or False, got {incremental!r}.")
    shape = images.shape[1:]
    window, steps = _window_and_strides(sliding_window_shapes, strides, shape)
    batch = len(images)
    per_pass = _per_pass(perturbations_per_eval, batch, "perturbations_per_eval")
    baselines = broadcast_baseline(baselines, images, "baselines")
    channel_masks, row_masks, column_masks = _window_masks(shape, window, steps, images.device)
    positions = torch.cartesian_prod(
        *(torch.arange(len(m), device=images.device) for m in (channel_masks, row_masks, column_masks))
    ).view(-1, 3)
    with torch.inference_mode():
        engine = incremental_forward(model, images) if incremental else None
        logits = logits_of(model, images, output_key) if engine is None else _selected_logits(engine.output, output_key)
    classes = resolve_targets(targets, logits.clone())
    original = class_scores(logits, classes).clone()
    # the box each window position changes, inside the image (the last position's window may overhang the edge)
    tops = (positions[:, 1].cpu() * steps[1]).clamp(max=shape[1] - window[1])
    lefts = (positions[:, 2].cpu() * steps[2]).clamp(max=shape[2] - window[2])
    total = torch.zeros_like(images)
    coverage = torch.zeros(shape, dtype=images.dtype, device=images.device)
    channels_last = [images.ndim == 4]  # until the model refuses it (a .view() of a feature map, say)
    for chunk in _batches(len(positions), per_pass):
        channel, row, column = positions[chunk].unbind(dim=1)
        masks = (
            channel_masks[channel][:, :, None, None]
            * row_masks[row][:, None, :, None]
            * column_masks[column][:, None, None, :]
        ).to(images.dtype)  # (P, C, H, W)
        with torch.inference_mode():
            rows = (images * (1 - masks[:, None]) + baselines * masks[:, None]).flatten(0, 1)  # (P * N, C, H, W)
            if engine is None:
                logits = _logits_in_any_layout(model, rows, output_key, channels_last)
            else:
                logits = _selected_logits(engine(rows, tops[chunk], lefts[chunk], window[1:]), output_key)
            scores = class_scores(logits, classes.repeat(len(masks)))
        drops = original - scores.view(len(masks), batch)  # (P, N)
        total += torch.einsum("pn,pchw->nchw", drops, masks)
        coverage += masks.sum(dim=0)
    return total / coverage


def _guided_backprop(model: nn.Module, images: Tensor, targets: Targets, output_key: OutputKey) -> Tensor:
    """Guided backpropagation (Springenberg et al., 2015): ``d y_c / d x`` with every ``nn.ReLU`` module passing back
    only the positive part of its gradient. ReLUs called as functions (``F.relu``) are not guided, as in Captum."""
    with _guided_relus(model):
        return _input_gradients(model, images[None], targets, output_key)[0]


def _guided_gradcam(
    model: nn.Module,
    images: Tensor,
    targets: Targets,
    output_key: OutputKey,
    *,
    layer: str,
    interpolate_mode: str = "nearest",
) -> Tensor:
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backprop times the Grad-CAM map of ``layer`` (a name from
    ``model.named_modules()``; Captum takes the module), upsampled to the input with ``interpolate_mode``."""
    if not isinstance(layer, str):
        raise ValueError(f"layer must be a name from model.named_modules(), got {type(layer).__name__} {layer!r}.")
    cam = grad_cam(model, images, [layer], targets, output_key=output_key)[layer]
    upsampled = F.interpolate(cam[:, None], size=images.shape[2:], mode=interpolate_mode).to(images.dtype)
    return _guided_backprop(model, images, targets, output_key) * upsampled


ATTRIBUTION_METHODS: dict[str, Callable[..., Tensor]] = {
    "saliency": _saliency,
    "input_x_gradient": _input_x_gradient,
    "smoothgrad": _smoothgrad,
    "integrated_gradients": _integrated_gradients,
    "occlusion": _occlusion,
    "guided_backprop": _guided_backprop,
    "guided_gradcam": _guided_gradcam,
}


def attribution_map(attributions: Tensor) -> Tensor:
    """Attributions (N, C, H, W) as one map per image (N, H, W): summed over the channels, the sign kept (maps
    already (N, H, W), a CAM's, come back as they are), in float32.

    Example::

        >>> attribution_map(torch.ones(2, 3, 4, 5)).shape
        torch.Size([2, 4, 5])
    """
    return attributions.float().sum(dim=1) if attributions.ndim == 4 else attributions.float()


def method_options(method: str) -> dict[str, object]:
    """The options of an attribution method with their defaults, read from its function's signature.

    Args:
        method: a key of :data:`ATTRIBUTION_METHODS`; another name raises ``ValueError`` listing them.

    Returns:
        ``{option: default}``, with ``inspect.Parameter.empty`` for a required option.

    Example::

        >>> method_options("integrated_gradients")
        {'baselines': None, 'n_steps': 50, 'method': 'gausslegendre', 'internal_batch_size': None}
    """
    if method not in ATTRIBUTION_METHODS:
        raise ValueError(f"Unknown attribution method {method!r}; valid choices: {sorted(ATTRIBUTION_METHODS)}.")
    parameters = inspect.signature(ATTRIBUTION_METHODS[method]).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_options(method: str, options: dict[str, object]) -> None:
    known = method_options(method)
    valid = (
        ", ".join(
            f"{name}={'<required>' if default is inspect.Parameter.empty else repr(default)}"
            for name, default in known.items()
        )
        or "none"
    )
    for name in options:
        if name not in known:
            raise ValueError(f"Unknown option {name!r} for method {method!r}; its options: {valid}.")
    for name, default in known.items():
        if default is inspect.Parameter.empty and name not in options:
            raise ValueError(f"Method {method!r} needs the option {name!r}; its options: {valid}.")


def attribute(
    model: nn.Module,
    images: Tensor,
    method: str,
    /,
    targets: Targets = None,
    *,
    output_key: OutputKey = None,
    **options: object,
) -> Tensor:
    """How much each pixel of ``images`` counts for the target class score, by one of seven attribution methods.

    Args:
        model: any ``nn.Module`` returning logits (N, num_classes); it runs in eval mode and gets each module's
            ``training`` flag back; no parameter, buffer or ``.grad`` changes.
        images: input batch (N, C, H, W), already normalized as the model expects (an inference tensor is fine).
        method: one of the keys of :data:`ATTRIBUTION_METHODS`; ``model``, ``images`` and ``method`` are
            positional-only, so that Integrated Gradients' own ``method=`` option can be passed.
        targets: ``None`` for each image's predicted class, an int for one class for every image, or N class
            indices (a LongTensor or list) for one class per image.
        output_key: where the logits are when the model returns a tuple or dict (see :func:`select_output`).
        **options: the method's options, with Captum's names and defaults:

            - ``"saliency"`` (Simonyan et al., 2014, ``|dy_c/dx|``): ``abs=True`` (False: the signed gradient).
            - ``"input_x_gradient"`` (Shrikumar et al., 2016, ``x * dy_c/dx``): none.
            - ``"smoothgrad"`` (Smilkov et al., 2017; Captum's ``NoiseTunnel(Saliency(model))``): ``nt_type=
              "smoothgrad"`` (or ``"smoothgrad_sq"``, ``"vargrad"``), ``nt_samples=5`` noisy copies per image,
              ``stdevs=1.0`` (the noise's standard deviation, in the images' units), ``abs=True`` (Saliency's),
              ``nt_samples_batch_size=None`` copies per pass (None: about 64 images per pass; Captum's: all). The
              noise comes from torch's global generator, drawn as Captum draws it: seed it to repeat a result.
            - ``"integrated_gradients"`` (Sundararajan et al., 2017): ``baselines=None`` (0; a number or a tensor
              that broadcasts to the images), ``n_steps=50``, ``method="gausslegendre"`` (or ``"riemann_left"``,
              ``"riemann_right"``, ``"riemann_middle"``, ``"riemann_trapezoid"``), ``internal_batch_size=None``
              images per pass, whole steps (None: about 64; Captum's: all ``N * n_steps``).
            - ``"occlusion"`` (Zeiler and Fergus, 2014): ``sliding_window_shapes`` (required: (C, h, w) as in
              Captum, or (h, w) for all channels), ``strides=None`` (1), ``baselines=None`` (0),
              ``perturbations_per_eval=None`` window positions per pass (None: about 64 images; Captum's: 1);
              ``incremental=True`` (ours: recompute only what each window reaches, see
              :mod:`lightning_cnnsee.explain.occlusion`; False: the full forward pass for every copy).
            - ``"guided_backprop"`` (Springenberg et al., 2015): none. Only ``nn.ReLU`` modules are guided, through
              temporary hooks; ReLUs called as functions (``F.relu``, ``torch.relu``) are not, as in Captum.
            - ``"guided_gradcam"`` (Selvaraju et al., 2017): ``layer`` (required: a name from
              ``model.named_modules()``), ``interpolate_mode="nearest"`` (how the map is upsampled).

    Returns:
        The attributions (N, C, H, W), in the images' dtype and device, detached.

    Raises:
        ValueError: an unknown method (naming the valid ones), an unknown or missing option (naming the method's
            options with their defaults), a bad option value, or targets out of range.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
        >>> images = torch.rand(2, 3, 8, 8)
        >>> attribute(model, images, "saliency", targets=[2, 0]).shape
        torch.Size([2, 3, 8, 8])
        >>> attribute(model, images, "smoothgrad", nt_samples=4, stdevs=0.1).shape
        torch.Size([2, 3, 8, 8])
    """
    function = ATTRIBUTION_METHODS.get(method) if isinstance(method, str) else None
    if function is None:
        raise ValueError(f"Unknown attribution method {method!r}; valid choices: {sorted(ATTRIBUTION_METHODS)}.")
    _check_options(method, options)
    image_batch(images)
    with gradients_enabled(), eval_mode(model):
        inputs = images.clone() if images.is_inference() else images.detach()
        if targets is not None and not isinstance(targets, int):
            targets = torch.as_tensor(targets).clone()  # made here, not in the caller's inference mode
        attributions = function(model, inputs, targets, output_key, **options)
    return attributions.detach()
