"""Class-activation maps (Grad-CAM and its variants) from one forward pass and one ``torch.autograd.grad``.

All methods share one step that records each layer's activations ``A`` (N, C, h, w) and the gradient ``G`` of the
target class score with respect to them; each method is a small function that turns ``(A, G)`` into a map. The
gradient comes from ``torch.autograd.grad`` on the recorded activations, never ``.backward()``: no parameter's
``.grad`` is read or written, and autograd records nothing, and does no work, below the first CAM layer.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee import grad_cam
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
    ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    >>> cams = grad_cam(model, torch.rand(2, 3, 16, 16), ["1"], targets=torch.tensor([0, 3]))
    >>> cams["1"].shape, bool((cams["1"] >= 0).all())
    (torch.Size([2, 16, 16]), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lightning_cnnsee.hooks import eval_mode, gradients_enabled, graph_from, record_outputs
from lightning_cnnsee.layers import OutputKey, select_output

Targets = int | Tensor | Sequence[int] | None

_EPS = 1e-7


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


CAM_METHODS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradcam": _gradcam,
    "gradcam++": _gradcam_plus_plus,
    "xgradcam": _xgradcam,
    "layercam": _layercam,
    "hirescam": _hirescam,
}


def check_cam_method(method: str) -> str:
    """Return ``method`` if it is known; raise ``ValueError`` naming the valid choices otherwise."""
    if method not in CAM_METHODS:
        raise ValueError(f"Unknown CAM method {method!r}; valid choices: {sorted(CAM_METHODS)}.")
    return method


def resolve_targets(targets: Targets, logits: Tensor) -> Tensor:
    """Turn ``targets`` (None, an int, or N class indices) into a LongTensor (N,) on the logits' device."""
    batch, num_classes = logits.shape[0], logits.shape[-1]
    if targets is None:
        resolved = logits.detach().argmax(dim=-1)
    elif isinstance(targets, int) and not isinstance(targets, bool):
        resolved = torch.full((batch,), targets, dtype=torch.long, device=logits.device)
    else:
        resolved = torch.as_tensor(targets, device=logits.device).long().reshape(-1)
        if resolved.numel() != batch:
            raise ValueError(f"targets has {resolved.numel()} entries for a batch of {batch} images.")
    if resolved.numel() and (resolved.min() < 0 or resolved.max() >= num_classes):
        raise ValueError(f"target class {resolved.tolist()} out of range: the model has {num_classes} classes.")
    return resolved


def cams_for_targets(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str],
    target_sets: Sequence[Targets],
    method: str = "gradcam",
    *,
    output_key: OutputKey = None,
) -> tuple[list[dict[str, Tensor]], Tensor]:
    """CAMs for several sets of targets (for example the predicted and the true classes) from ONE forward pass and
    one ``torch.autograd.grad`` per set; also returns the logits (N, num_classes), detached."""
    combine = CAM_METHODS[check_cam_method(method)]
    layers = list(layers)
    with gradients_enabled(), eval_mode(model), record_outputs(model, layers) as recorded:
        inputs = images.clone() if images.is_inference() else images.detach()
        with graph_from(model, layers):  # nothing below the first CAM layer is differentiated
            logits = select_output(model(inputs), output_key)
        if logits.ndim != 2:
            raise ValueError(f"Expected logits of shape (N, num_classes), got {tuple(logits.shape)}.")
        for name in layers:
            activation = recorded.get(name)
            if not isinstance(activation, Tensor) or activation.ndim != 4:
                shape = tuple(activation.shape) if isinstance(activation, Tensor) else type(activation).__name__
                raise ValueError(
                    f"Grad-CAM layer {name!r} must output a (N, C, H, W) feature map, but it gave {shape}; "
                    "choose a convolutional layer or block."
                )
        activations = [recorded[name] for name in layers]
        gradient_sets = []
        for index, targets in enumerate(target_sets):
            score = logits.gather(1, resolve_targets(targets, logits)[:, None]).sum()
            last = index == len(target_sets) - 1
            gradient_sets.append(torch.autograd.grad(score, activations, allow_unused=True, retain_graph=not last))
    results = []
    for gradients in gradient_sets:
        cams = {}
        for name, activation, gradient in zip(layers, activations, gradients):
            activation = activation.detach().float()
            gradient = torch.zeros_like(activation) if gradient is None else gradient.float()
            cams[name] = combine(activation, gradient).clamp(min=0)
        results.append(cams)
    return results, logits.detach()


def cams_and_logits(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str],
    targets: Targets = None,
    method: str = "gradcam",
    *,
    output_key: OutputKey = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Like :func:`grad_cam`, also returning the model's logits (N, num_classes), detached."""
    (cams,), logits = cams_for_targets(model, images, layers, [targets], method, output_key=output_key)
    return cams, logits


def grad_cam(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str],
    targets: Targets = None,
    method: str = "gradcam",
    *,
    output_key: OutputKey = None,
) -> dict[str, Tensor]:
    """Class-activation maps of ``images`` at each of ``layers``, all from one forward and one backward pass.

    Args:
        model: any ``nn.Module`` returning logits (N, num_classes); its train/eval flags are restored afterwards.
        images: input batch (N, C, H, W), already normalized as the model expects.
        layers: names from ``model.named_modules()`` whose outputs are (N, C, h, w) maps.
        targets: ``None`` for each image's predicted class, an int for one class for every image, or N class
            indices (a LongTensor or list) for one class per image.
        method: one of ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"layercam"``, ``"hirescam"``.
        output_key: where the logits are when the model returns a tuple or dict (see :func:`select_output`).

    Returns:
        ``{layer: cam}`` with each ``cam`` a float32 tensor (N, h, w) at the layer's own resolution, non-negative
        and not normalized.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10)
        >>> cams = grad_cam(model, torch.rand(2, 3, 64, 64), ["layer3", "layer4"], targets=3)
        >>> cams["layer3"].shape, cams["layer4"].shape
        (torch.Size([2, 4, 4]), torch.Size([2, 2, 2]))
    """
    cams, _ = cams_and_logits(model, images, layers, targets, method, output_key=output_key)
    return cams
