"""Class-activation maps: Grad-CAM and its variants from one forward pass and one ``torch.autograd.grad``, and the
gradient-free Score-CAM, Ablation-CAM and Eigen-CAM.

Gradient methods (:data:`GRADIENT_CAM_METHODS`) share one step that records each layer's activations ``A`` (N, C, h, w)
and the gradient ``G`` of the target score with respect to them; each method is a small function that turns ``(A, G)``
into a map. The gradient comes from ``torch.autograd.grad`` on the recorded activations, never ``.backward()``: no
parameter's ``.grad`` is read or written, and autograd records nothing, and does no work, below the first CAM layer.

Gradient-free methods (:data:`GRADIENT_FREE_CAM_METHODS`) record ``A`` and the scores in one forward pass under
``torch.inference_mode()``, then each is a small function that weights the channels of ``A`` from more forward passes
(masked inputs, ablated channels) run ``batch_size`` at a time, or from ``A`` alone (Eigen-CAM).

The score a map explains is, per image, the logit of the target class, the logit of a label (multi-label) or the
sum of a class's output over its predicted pixels (segmentation): see :mod:`lightning_cnnsee.explain.targets`.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee.explain.cam import cam
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    >>> maps = cam(model, torch.rand(2, 3, 16, 16), ["1"], targets=torch.tensor([0, 3]), method="scorecam")
    >>> maps["1"].shape, bool((maps["1"] >= 0).all())
    (torch.Size([2, 16, 16]), True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_cnnsee.explain.attention import ATTENTION_CAM_METHODS, attention_cams
from lightning_cnnsee.explain.hooks import eval_mode, get_modules, gradients_enabled, graph_from, record_outputs
from lightning_cnnsee.explain.layers import OutputKey, pick_layers, select_output
from lightning_cnnsee.explain.registration import hooks_on
from lightning_cnnsee.explain.targets import Score, Targets, check_kind, model_kind, score_function
from lightning_cnnsee.explain.tokens import TokenLayout, feature_map, from_feature_map, token_layout
from lightning_cnnsee.vocabulary.checks import known, positive_int

__all__ = [
    "ALL_CAM_METHODS",
    "GRADIENT_CAM_METHODS",
    "DEFAULT_BATCH_SIZE",
    "GRADIENT_FREE_CAM_METHODS",
    "cam",
    "cams_and_logits",
    "cams_for_targets",
    "check_cam_method",
    "default_cam",
    "grad_cam",
]

_EPS = 1e-7
DEFAULT_BATCH_SIZE = 32  # masked / ablated inputs per forward pass: torchcam's and pytorch-grad-cam's default


def _gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM (Selvaraju et al., 2017): ``w_c = mean_ij G_cij``; ``cam = ReLU(sum_c w_c A_c)``."""
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)


def _gradcam_plus_plus(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM++ (Chattopadhay et al., 2018), with the exponential score of the paper's closed form.

    ``alpha_cij = G^2 / (2 G^2 + sum_ab A_cab * G^3)`` (0 where the denominator is 0);
    ``w_c = sum_ij alpha_cij ReLU(G_cij)``; ``cam = ReLU(sum_c w_c A_c)``.
    """
    g2 = gradients.pow(2)
    g3 = gradients.pow(3)
    denominator = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
    weights = (alpha * gradients.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)


def _xgradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """XGrad-CAM (Fu et al., 2020): ``w_c = sum_ij (A_cij / sum_ab A_cab) G_cij``; ``cam = ReLU(sum_c w_c A_c)``."""
    normalized = activations / (activations.sum(dim=(2, 3), keepdim=True) + _EPS)
    weights = (normalized * gradients).sum(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)


def _layercam(activations: Tensor, gradients: Tensor) -> Tensor:
    """LayerCAM (Jiang et al., 2021): ``cam_ij = ReLU(sum_c ReLU(G_cij) A_cij)``, a weight per location."""
    return (gradients.clamp(min=0) * activations).sum(dim=1)


def _hirescam(activations: Tensor, gradients: Tensor) -> Tensor:
    """HiResCAM (Draelos and Carin, 2020): ``cam_ij = ReLU(sum_c G_cij A_cij)``, faithful to the gradient's sign."""
    return (gradients * activations).sum(dim=1)


GRADIENT_CAM_METHODS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradcam": _gradcam,
    "gradcam++": _gradcam_plus_plus,
    "xgradcam": _xgradcam,
    "layercam": _layercam,
    "hirescam": _hirescam,
}


@dataclass
class _Probe:
    """What a gradient-free method needs for one layer: the model (in eval mode), the images, the layer and its
    recorded output ``A``, and per target set the score function and the unperturbed score of each image."""

    model: nn.Module
    images: Tensor
    layer: nn.Module
    activation: Tensor
    scores: list[Score]
    baselines: list[Tensor]
    batch_size: int
    output_key: OutputKey
    one_image_upstream: bool | None = None  # None: not tried yet (see forward_replacing)
    raw: Tensor | None = None  # the layer's own output when ``activation`` is its (N, C, h, w) view (tokens, NHWC)
    layout: TokenLayout | None = None

    def forward(self, inputs: Tensor) -> Tensor:
        return select_output(self.model(inputs), self.output_key)

    def forward_replacing(self, image: int, replacement: Tensor) -> Tensor:
        """Scores of the model with the layer's output replaced by ``replacement`` (B, C, h, w), all rows made from
        image ``image``.

        The layers before the CAM layer only matter through the replaced output (and, in networks with skip
        connections across it, through tensors that are the same for every row), so they run on the one image and
        broadcasting makes the B rows: as if the image were repeated B times, at 1/B of the cost. A network where this
        fails (a batch size taken from the input, a concatenation across the layer) gets the image repeated.
        """
        batch = replacement.shape[0]
        single = self.images[image : image + 1]
        if self.raw is not None and self.layout is not None:  # back to the layer's own layout (tokens, NHWC)
            replacement = from_feature_map(replacement, self.raw[image : image + 1], self.layout, self.layer)
        if self.one_image_upstream is not False:
            try:
                scores = self._replaced(single, replacement)
                if scores.shape[0] == batch:
                    self.one_image_upstream = True
                    return scores
            except RuntimeError:
                if self.one_image_upstream:
                    raise
            self.one_image_upstream = False
        return self._replaced(single.expand(batch, *single.shape[1:]), replacement)

    def _replaced(self, inputs: Tensor, replacement: Tensor) -> Tensor:
        with _replace_output(self.layer, replacement):
            return self.forward(inputs)


@contextlib.contextmanager
def _replace_output(module: nn.Module, replacement: Tensor) -> Iterator[None]:
    """Inside the block (one forward pass), the first call of ``module`` returns a copy of ``replacement``."""

    calls = 0

    def hook(module: nn.Module, args: object, output: object) -> Tensor | None:
        nonlocal calls
        calls += 1
        return replacement.clone() if calls == 1 else None  # a copy: the network may change it in place

    with hooks_on([(module, hook)]):
        yield


def _combine(weights: Tensor, activation: Tensor) -> Tensor:
    """``sum_c w_c A_c`` for weights (N, C) and activations (N, C, h, w)."""
    return torch.einsum("nc,nchw->nhw", weights.to(activation.dtype), activation)


def _scorecam(probe: _Probe) -> list[Tensor]:
    """Score-CAM (Wang et al., 2020), as torchcam's ``ScoreCAM``: the weight of a channel is the score of the image
    masked by that channel.

    ``M_k = U((A_k - min A_k) / (max (A_k - min A_k) + 1e-8))`` (per channel min-max, ``U`` bilinear upsampling to the
    input); ``w_k = softmax_k(y(M_k * X) - y(X))``; ``cam = ReLU(sum_k w_k A_k)``. Equal masks of one image give
    equal masked images, so each distinct mask is scored once; masks that are zero everywhere (constant channels)
    all give a black image, scored once for the whole batch.
    """
    activation, images = probe.activation, probe.images
    batch, channels, height, width = activation.shape
    shifted = activation - activation.amin(dim=(2, 3), keepdim=True)
    masks = (shifted / (shifted.amax(dim=(2, 3), keepdim=True) + 1e-8)).flatten(2)
    job_of = torch.full((batch, channels), -1, dtype=torch.long, device=activation.device)  # -1: a blank mask
    job_masks, job_images, jobs = [], [], 0
    for image in range(batch):
        distinct, inverse = torch.unique(masks[image], dim=0, return_inverse=True)
        kept = distinct.amax(dim=1) > 0
        numbered = torch.full((len(distinct),), -1, dtype=torch.long, device=activation.device)
        numbered[kept] = torch.arange(jobs, jobs + int(kept.sum()), device=activation.device)
        job_of[image] = numbered[inverse]
        job_masks.append(distinct[kept])
        job_images.append(torch.full((int(kept.sum()),), image, dtype=torch.long, device=activation.device))
        jobs += int(kept.sum())
    job_masks = torch.cat(job_masks).view(jobs, 1, height, width).to(images.dtype)
    job_images = torch.cat(job_images).to(images.device)
    job_scores = [activation.new_empty(jobs, dtype=torch.float32) for _ in probe.scores]
    buffer = images.new_empty((min(probe.batch_size, jobs), *images.shape[1:]))
    for chunk in torch.arange(jobs, device=images.device).split(probe.batch_size):
        rows = job_images[chunk]
        upsampled = F.interpolate(job_masks[chunk], size=images.shape[2:], mode="bilinear", align_corners=False)
        scores = probe.forward(torch.mul(upsampled, images[rows], out=buffer[: len(chunk)]))
        for out, score in zip(job_scores, probe.scores, strict=True):
            out[chunk] = score(scores, rows).float()
    blank_scores = [activation.new_zeros(batch, dtype=torch.float32) for _ in probe.scores]
    if bool((job_of < 0).any()):
        black = probe.forward(torch.zeros_like(images[:1]))
        rows = torch.arange(batch, device=images.device)
        for out, score in zip(blank_scores, probe.scores, strict=True):
            out[:] = score(black.expand(batch, *black.shape[1:]), rows).float()
    maps = []
    for job_score, blank_score, baseline in zip(job_scores, blank_scores, probe.baselines, strict=True):
        masked = torch.where(job_of >= 0, job_score[job_of.clamp(min=0)], blank_score[:, None])
        weights = torch.softmax(masked - baseline.float()[:, None], dim=1)
        maps.append(_combine(weights, activation.float()))
    return maps


def _ablationcam(probe: _Probe) -> list[Tensor]:
    """Ablation-CAM (Desai and Ramaswamy, 2020), as pytorch-grad-cam's ``AblationCAM``: the weight of a channel is the
    relative drop of the score when the channel is set to zero at the layer.

    ``w_k = (y - y_k) / y`` with ``y_k`` the score with ``A_k = 0`` (``w_k = 0`` where ``y = 0``);
    ``cam = ReLU(sum_k w_k A_k)``. The layer's output is recorded once; each ablated forward pass replaces it by
    ``batch_size`` copies, each with one channel zeroed. A channel that is zero already is not run (its weight is 0,
    and so is its contribution). (pytorch-grad-cam ablates to ``min(A) - 1e7`` instead of 0
    when the layer's output has no zero, which the paper does not do.)
    """
    activation = probe.activation
    batch, channels = activation.shape[:2]
    ablated_scores = [baseline.float()[:, None].repeat(1, channels) for baseline in probe.baselines]
    for image in range(batch):
        # Zeroing a channel that is zero already changes nothing (weight 0): such channels are not run.
        active = activation[image].flatten(1).ne(0).any(dim=1).nonzero()[:, 0]
        for chunk in active.split(probe.batch_size):
            copies = activation[image].expand(len(chunk), *activation.shape[1:]).clone()
            copies[torch.arange(len(chunk), device=activation.device), chunk] = 0
            scores = probe.forward_replacing(image, copies)
            rows = torch.full((len(chunk),), image, dtype=torch.long, device=activation.device)
            for out, score in zip(ablated_scores, probe.scores, strict=True):
                out[image, chunk] = score(scores, rows).float()
    maps = []
    for out, baseline in zip(ablated_scores, probe.baselines, strict=True):
        baseline = baseline.float()[:, None]
        weights = torch.where(baseline != 0, (baseline - out) / torch.where(baseline != 0, baseline, 1.0), 0.0)
        maps.append(_combine(weights, activation.float()))
    return maps


def _eigencam(probe: _Probe) -> list[Tensor]:
    """Eigen-CAM (Muhammad and Yeasin, 2020), as pytorch-grad-cam's ``EigenCAM``: the activations projected on their
    first principal component, whatever the target.

    With ``M`` the (h w, C) matrix of ``A`` centred per channel over positions and ``v_1`` its first right singular
    vector, ``cam = ReLU(M v_1)`` reshaped to (h, w). A principal component has no sign of its own: pytorch-grad-cam
    keeps the one numpy's SVD returns, which torch's SVD does not reproduce. Here ``v_1`` is oriented so that its
    loadings sum to ``>= 0``: the map rises where the channels, taken together, are more active than on average
    (the sign numpy returned for most maps measured, see ``tests/test_cam_free.py``).
    """
    activation = torch.nan_to_num(probe.activation.float())
    batch, channels, height, width = activation.shape
    centred = activation.flatten(2).transpose(1, 2)
    centred = centred - centred.mean(dim=1, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)
    first = right[:, 0, :]
    first = torch.where(first.sum(dim=1, keepdim=True) < 0, -first, first)
    projection = (centred @ first[:, :, None]).view(batch, height, width)
    return [projection] * len(probe.scores)


GRADIENT_FREE_CAM_METHODS: dict[str, Callable[[_Probe], list[Tensor]]] = {
    "scorecam": _scorecam,
    "ablationcam": _ablationcam,
    "eigencam": _eigencam,
}

ALL_CAM_METHODS: tuple[str, ...] = (*GRADIENT_CAM_METHODS, *GRADIENT_FREE_CAM_METHODS, *ATTENTION_CAM_METHODS)


def check_cam_method(method: str) -> str:
    """Return ``method`` if it is known; raise ``ValueError`` naming the valid choices otherwise.

    Args:
        method: a gradient method of :data:`GRADIENT_CAM_METHODS`, a gradient-free one of
            :data:`GRADIENT_FREE_CAM_METHODS`,
            or an attention method of :data:`~lightning_cnnsee.explain.attention.ATTENTION_CAM_METHODS`.

    Example::

        >>> check_cam_method("scorecam")
        'scorecam'
    """
    return known("CAM method", method, ALL_CAM_METHODS, sort=True)  # type: ignore[return-value]


def default_cam(model: nn.Module, images: Tensor, *, output_key: OutputKey = None) -> tuple[list[str], str]:
    """The layers and method that ``layers=None`` means, the same as CNNSee's at defaults: one eval-mode pass on the
    first image with :func:`~lightning_cnnsee.explain.layers.pick_layers`.

    Example::

        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        >>> default_cam(model, torch.rand(2, 3, 8, 8))
        (['1'], 'gradcam')
    """
    with eval_mode(model), torch.no_grad():
        picks = pick_layers(model, images[:1], output_key=output_key)
    if not picks.gradcam:
        raise ValueError(
            f"No layer of {type(model).__name__} gives a feature map larger than 1x1 for a "
            f"{tuple(images.shape[-2:])} input; pass layers=[...] (names of model.named_modules())."
        )
    return picks.gradcam, picks.cam_method


def _feature_maps(
    recorded: dict[str, object], layers: list[str], layout: TokenLayout, modules: dict[str, nn.Module]
) -> list[Tensor]:
    """Each layer's output as (N, C, h, w): a feature map as it is, a transformer's tokens on their patch grid, a
    Swin stage's (N, H, W, C) permuted (see :func:`~lightning_cnnsee.explain.tokens.feature_map`)."""
    maps = []
    for name in layers:
        activation = recorded.get(name)
        try:
            maps.append(feature_map(activation, layout, modules[name]))  # type: ignore[arg-type]
        except ValueError as error:
            raise ValueError(
                f"CAM layer {name!r} must output a (N, C, H, W) feature map, (N, H, W, C) stage or (N, tokens, C) "
                f"of a transformer, but {error}; choose a convolutional layer, a block or a stage."
            ) from None
    return maps


def _as_maps(
    gradients: Sequence[Tensor | None],
    layers: list[str],
    layout: TokenLayout,
    modules: dict[str, nn.Module],
) -> list[Tensor | None]:
    """The gradients laid out as :func:`_feature_maps` lays out the activations (the same reshape)."""
    return [
        None if gradient is None else feature_map(gradient, layout, modules[name])
        for name, gradient in zip(layers, gradients, strict=True)
    ]


def _kind_of(scores: Tensor, kind: str | None) -> str:
    return model_kind(scores) if kind is None else check_kind(kind)


def _gradient_cams(
    model: nn.Module,
    images: Tensor,
    layers: list[str],
    target_sets: Sequence[Targets],
    method: str,
    kind: str | None,
    output_key: OutputKey,
) -> tuple[list[dict[str, Tensor]], Tensor]:
    combine = GRADIENT_CAM_METHODS[method]
    layout = token_layout(model, images.shape[-2:])
    modules = get_modules(model, layers)
    with gradients_enabled(), eval_mode(model), record_outputs(model, layers) as recorded:
        inputs = images.clone() if images.is_inference() else images.detach()
        with graph_from(model, layers):  # nothing below the first CAM layer is differentiated
            scores = select_output(model(inputs), output_key)
        kind = _kind_of(scores, kind)
        activations = _feature_maps(recorded, layers, layout, modules)
        raw = [recorded[name] for name in layers]
        score_functions = [score_function(scores, targets, kind) for targets in target_sets]
        gradient_sets = []
        for index, score in enumerate(score_functions):
            last = index == len(score_functions) - 1
            found = torch.autograd.grad(score(scores).sum(), raw, allow_unused=True, retain_graph=not last)
            gradient_sets.append(_as_maps(found, layers, layout, modules))
    results = []
    for gradients in gradient_sets:
        cams = {}
        for name, activation, gradient in zip(layers, activations, gradients, strict=True):
            activation = activation.detach().float()
            gradient = torch.zeros_like(activation) if gradient is None else gradient.float()
            cams[name] = combine(activation, gradient).clamp(min=0)
        results.append(cams)
    return results, scores.detach()


def _gradient_free_cams(
    model: nn.Module,
    images: Tensor,
    layers: list[str],
    target_sets: Sequence[Targets],
    method: str,
    kind: str | None,
    output_key: OutputKey,
    batch_size: int,
) -> tuple[list[dict[str, Tensor]], Tensor]:
    weigh = GRADIENT_FREE_CAM_METHODS[method]
    modules = get_modules(model, layers)
    layout = token_layout(model, images.shape[-2:])
    per_layer = []
    with eval_mode(model), torch.inference_mode():
        with record_outputs(model, layers, detach=True) as recorded:
            scores = select_output(model(images), output_key)
        kind = _kind_of(scores, kind)
        activations = _feature_maps(recorded, layers, layout, modules)
        score_functions = [score_function(scores, targets, kind) for targets in target_sets]
        baselines = [score(scores) for score in score_functions]
        for name, activation in zip(layers, activations, strict=True):
            probe = _Probe(model, images, modules[name], activation, score_functions, baselines, batch_size, output_key)
            if recorded[name] is not activation:
                probe.raw, probe.layout = recorded[name], layout  # type: ignore[assignment]
            per_layer.append(weigh(probe))
    with torch.inference_mode(False), torch.no_grad():  # cloned outside inference mode: ordinary tensors
        results = [
            {name: maps[index].float().clamp(min=0).clone() for name, maps in zip(layers, per_layer, strict=True)}
            for index in range(len(target_sets))
        ]
        return results, scores.clone()


def cams_for_targets(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str] | None,
    target_sets: Sequence[Targets],
    method: str | None = None,
    *,
    kind: str | None = None,
    output_key: OutputKey = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[list[dict[str, Tensor]], Tensor]:
    """CAMs for several sets of targets (for example the predicted and the true classes), sharing the forward passes.

    Gradient methods take ONE forward pass and one ``torch.autograd.grad`` per set; gradient-free methods score
    every set on the same masked or ablated forward passes.

    Args:
        model, images, layers, method, kind, output_key, batch_size: as in :func:`cam`.
        target_sets: a list of what :func:`cam` takes as ``targets``, for example ``[None, labels]``.

    Returns:
        ``([{layer: cam} per target set], scores)``, with the scores, detached, (N, C) or (N, C, H, W).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        >>> (predicted, true), logits = cams_for_targets(model, torch.rand(2, 3, 8, 8), ["1"], [None, [2, 0]],
        ...                                              "ablationcam")
        >>> predicted["1"].shape, logits.shape
        (torch.Size([2, 6, 6]), torch.Size([2, 3]))
    """
    if layers is None:
        layers, chosen = default_cam(model, images, output_key=output_key)
        method = chosen if method is None else method
    method = check_cam_method("gradcam" if method is None else method)
    layers = list(layers)
    if method in ATTENTION_CAM_METHODS:
        return attention_cams(model, images, layers, target_sets, method, kind=kind, output_key=output_key)
    if method in GRADIENT_CAM_METHODS:
        return _gradient_cams(model, images, layers, target_sets, method, kind, output_key)
    batch_size = positive_int("batch_size", batch_size)
    return _gradient_free_cams(model, images, layers, target_sets, method, kind, output_key, batch_size)


def cams_and_logits(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str] | None,
    targets: Targets = None,
    method: str | None = None,
    *,
    kind: str | None = None,
    output_key: OutputKey = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[dict[str, Tensor], Tensor]:
    """Like :func:`cam`, also returning the model's scores (N, C) or (N, C, H, W), detached.

    Args:
        model, images, layers, targets, method, kind, output_key, batch_size: as in :func:`cam`.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        >>> maps, logits = cams_and_logits(model, torch.rand(2, 3, 8, 8), ["1"], method="eigencam")
        >>> maps["1"].shape, logits.shape
        (torch.Size([2, 6, 6]), torch.Size([2, 3]))
    """
    (cams,), logits = cams_for_targets(
        model, images, layers, [targets], method, kind=kind, output_key=output_key, batch_size=batch_size
    )
    return cams, logits


def cam(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str] | None,
    targets: Targets = None,
    method: str | None = None,
    *,
    kind: str | None = None,
    output_key: OutputKey = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Tensor]:
    """Class-activation maps of ``images`` at each of ``layers``, by any method of :data:`ALL_CAM_METHODS`.

    The model is left as found: train/eval flags restored, no hook left, no parameter's ``.grad`` touched, also when
    an error is raised.

    Args:
        model: any ``nn.Module`` returning scores: logits (N, C) of a classifier or multi-label model, or (N, C, H, W)
            of a segmentation model (a tensor, or inside a tuple or dict, see ``output_key``).
        images: input batch (N, C, H, W), already normalized as the model expects.
        layers: names from ``model.named_modules()`` whose outputs are (N, C, h, w) maps, a Swin stage's
            (N, h, w, C) or a transformer's (N, tokens, C) (on the patch grid, without the class, distillation and
            register tokens: see :mod:`~lightning_cnnsee.explain.tokens`); for the attention methods, layers holding
            the attention modules to roll out (timm ``"blocks"``, torchvision ``"encoder.layers"``). ``None``: the
            layer and method CNNSee chooses (:func:`~lightning_cnnsee.explain.layers.default_cam`): the last
            convolutional block with Grad-CAM for a CNN and a Swin's last stage larger than 1x1, the blocks with
            ``"attention_rollout"`` for a ViT (measured in ``benchmarks/transformers.py``).
        targets: ``None`` for each image's prediction (top class; top label; class predicted on the most pixels), an
            int for one class for every image, or N class indices (a LongTensor or list). For several labels of one
            multi-label image, repeat the image: :func:`lightning_cnnsee.explain.targets.multilabel_targets` lists
            the pairs.
        method: gradient methods ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"layercam"``, ``"hirescam"``;
            gradient-free ``"scorecam"``, ``"ablationcam"``, ``"eigencam"``; attention methods of vision
            transformers ``"gradient_rollout"`` (Chefer et al., 2021) and ``"attention_rollout"`` (Abnar and
            Zuidema, 2020), see :mod:`~lightning_cnnsee.explain.attention`. ``None``: ``"gradcam"`` on given
            layers, the chosen method with ``layers=None``.
        kind: ``"classification"``, ``"multilabel"``, ``"segmentation"`` or ``"binary"`` (one logit: ``s`` for
            class 1, ``-s`` for class 0), which decides the score explained (see
            :mod:`lightning_cnnsee.explain.targets`); ``None`` infers it from the scores' shape
            (:func:`~lightning_cnnsee.explain.targets.model_kind`).
        output_key: where the scores are when the model returns a tuple or dict (see
            :func:`~lightning_cnnsee.explain.layers.select_output`; a dict's ``"out"`` is found without it).
        batch_size: masked or ablated inputs per forward pass (gradient-free methods only).

    Returns:
        ``{layer: cam}`` with each ``cam`` a float32 tensor (N, h, w) at the layer's own resolution, non-negative and
        not normalized.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> segmenter = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
        >>> maps = cam(segmenter, torch.rand(2, 3, 16, 16), ["1"], targets=2)  # Grad-CAM of class 2's pixels
        >>> maps["1"].shape
        torch.Size([2, 16, 16])
        >>> import torchvision
        >>> model = torchvision.models.resnet18(num_classes=10)
        >>> cams = grad_cam(model, torch.rand(2, 3, 64, 64), ["layer3", "layer4"], targets=3)
        >>> cams["layer3"].shape, cams["layer4"].shape
        (torch.Size([2, 4, 4]), torch.Size([2, 2, 2]))
    """
    maps, _ = cams_and_logits(
        model, images, layers, targets, method, kind=kind, output_key=output_key, batch_size=batch_size
    )
    return maps


#: :func:`cam` under its first name, the one ``lightning_cnnsee`` exports (``lightning_cnnsee.explain.cam`` is this
#: module).
grad_cam = cam
