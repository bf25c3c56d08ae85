"""Maps of vision transformers from their attention: attention rollout and gradient-weighted attention rollout.

Both read the attention probabilities ``A`` (N, heads, L, L) of every self-attention module inside a layer (a timm
``Attention``, as in ViT, DeiT and ViTs with register tokens, or a ``nn.MultiheadAttention``, as in torchvision's
``VisionTransformer``), in the order they run, and roll them out into one relevance ``R`` (N, L, L) of every token
for every token; the map is the row of the tokens the classifier reads (the class token, DeiT's class and
distillation tokens, or the mean of the patch tokens for a pooling head) over the patch tokens, on the patch grid.

- ``"gradient_rollout"`` (Chefer, Gur and Wolf, 2021, "Generic Attention-model Explainability for Interpreting
  Bi-Modal and Encoder-Decoder Transformers", eq. 5-6): ``Ā = mean_heads ReLU(∂y/∂A ⊙ A)``, ``R ← R + Ā R``
  from ``R = I``: class-specific.
- ``"attention_rollout"`` (Abnar and Zuidema, 2020, "Quantifying Attention Flow in Transformers"):
  ``Â = 0.5 mean_heads A + 0.5 I`` with rows renormalized, ``R ← Â R`` from ``R = I``: the same map for every class.

timm's fused attention (``F.scaled_dot_product_attention``) never forms ``A``: each timm ``Attention`` runs its
explicit path (``fused_attn = False``) for the pass, and gets its flag back afterwards, also on an error. A
``nn.MultiheadAttention`` is asked for its per-head weights (``need_weights=True, average_attn_weights=False``)
for the pass; the gradient with respect to them is ``∂y/∂A_h = (∂y/∂O W_out)_h V_h^T``, from the gradient with
respect to its output ``O`` and its values ``V`` (dropout is off: the model runs in eval mode). Windowed attention
(Swin) has no (L, L) matrix over the image: a layer holding it is refused with a message that says so.

Example::

    >>> import timm, torch
    >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
    ...                         embed_dim=32, num_heads=2, num_classes=3)
    >>> (maps,), scores = attention_cams(vit, torch.rand(2, 3, 32, 32), ["blocks"], [None], "gradient_rollout")
    >>> maps["blocks"].shape, [m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn")]  # flags as found
    (torch.Size([2, 4, 4]), [True, True])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_cnnsee.explain.hooks import eval_mode, get_modules, gradients_enabled, graph_from
from lightning_cnnsee.explain.layers import OutputKey, select_output
from lightning_cnnsee.explain.targets import Targets, check_kind, model_kind, score_function
from lightning_cnnsee.explain.tokens import TokenLayout, is_attention, token_layout

__all__ = ["ATTENTION_CAM_METHODS", "attention_cams", "attention_modules", "is_attention", "record_attention"]


def attention_modules(model: nn.Module, layer: str) -> dict[str, nn.Module]:
    """``{name: module}`` of the attention modules inside ``layer`` (itself included), in the model's order.

    Raises:
        ValueError: when ``layer`` holds none.
    """
    root = get_modules(model, [layer])[layer]
    found = {
        f"{layer}.{name}" if name else layer: module for name, module in root.named_modules() if is_attention(module)
    }
    if not found:
        raise ValueError(
            f"Layer {layer!r} ({type(root).__name__}) holds no self-attention module (a timm Attention or a "
            "nn.MultiheadAttention) to roll out; give the layer of a transformer's blocks (timm: 'blocks', "
            "torchvision: 'encoder.layers'), or use a CAM method on a token layer."
        )
    return found


@dataclass
class _Record:
    """One attention module's pass: its probabilities, and what their gradient is taken from."""

    probabilities: Tensor  # (N, heads, L, L)
    against: Tensor  # the tensor the gradient is taken with respect to
    to_attention_gradient: Callable[[Tensor], Tensor]


@contextlib.contextmanager
def _unfused(modules: Sequence[nn.Module]) -> Iterator[None]:
    flags = [(module, module.fused_attn) for module in modules if hasattr(module, "fused_attn")]
    try:
        for module, _ in flags:
            module.fused_attn = False
        yield
    finally:
        for module, flag in flags:
            module.fused_attn = flag


def _timm_hooks(module: nn.Module, records: list[_Record | None], index: int) -> list:
    def hook(dropout: nn.Module, args: object, output: Tensor) -> None:
        if records[index] is None:
            records[index] = _Record(output, output, lambda gradient: gradient)

    return [module.attn_drop.register_forward_hook(hook)]


def _multihead_hooks(module: nn.MultiheadAttention, records: list[_Record | None], index: int) -> list:
    def ask_weights(attention: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    def hook(attention: nn.MultiheadAttention, args: tuple, kwargs: dict, output: tuple) -> None:
        if records[index] is not None:
            return
        value = args[2] if len(args) > 2 else kwargs["value"]
        out, weights = output[0], output[1]
        if not attention.batch_first:
            value = value.transpose(0, 1)
        heads, embed = attention.num_heads, attention.embed_dim
        head_dim = embed // heads
        if attention._qkv_same_embed_dim:
            value_weight = attention.in_proj_weight[2 * embed :]
        else:
            value_weight = attention.v_proj_weight
        bias = None if attention.in_proj_bias is None else attention.in_proj_bias[2 * embed :]
        values = torch.nn.functional.linear(
            value.detach(), value_weight.detach(), None if bias is None else bias.detach()
        )
        batch, length = values.shape[:2]
        values = values.view(batch, length, heads, head_dim).transpose(1, 2)  # (N, heads, L, d)
        out_weight = attention.out_proj.weight.detach()
        batch_first = attention.batch_first

        def to_attention_gradient(gradient: Tensor) -> Tensor:
            gradient = gradient if batch_first else gradient.transpose(0, 1)
            per_head = (gradient @ out_weight).view(batch, length, heads, head_dim).transpose(1, 2)
            return per_head @ values.transpose(-1, -2)  # O_h = A_h V_h: dy/dA_h = dy/dO_h V_h^T

        records[index] = _Record(weights.detach(), out, to_attention_gradient)

    return [
        module.register_forward_pre_hook(ask_weights, with_kwargs=True),
        module.register_forward_hook(hook, with_kwargs=True),
    ]


@contextlib.contextmanager
def record_attention(modules: Sequence[nn.Module]) -> Iterator[list[_Record | None]]:
    """Inside the block, each forward pass records the attention probabilities of ``modules`` (the first pass of
    each), in the order given; timm's fused attention is off, every flag and hook restored on the way out.

    Example::

        >>> mha = nn.MultiheadAttention(8, 2, batch_first=True)
        >>> x = torch.rand(1, 5, 8)
        >>> with record_attention([mha]) as records:
        ...     _ = mha(x, x, x, need_weights=False)
        >>> records[0].probabilities.shape, len(mha._forward_hooks), len(mha._forward_pre_hooks)
        (torch.Size([1, 2, 5, 5]), 0, 0)
    """
    records: list[_Record | None] = [None] * len(modules)
    handles = []
    try:
        with _unfused(modules):
            for index, module in enumerate(modules):
                if isinstance(module, nn.MultiheadAttention):
                    handles += _multihead_hooks(module, records, index)
                else:
                    handles += _timm_hooks(module, records, index)
            yield records
    finally:
        for handle in handles:
            handle.remove()


def _readout_rows(relevance: Tensor, layout: TokenLayout) -> Tensor:
    """The relevance of the patch tokens for the tokens the classifier reads, (N, h, w)."""
    rows = list(layout.readout) if layout.readout else list(range(layout.prefix, relevance.shape[1]))
    patches = relevance[:, rows, layout.prefix :].mean(dim=1)
    height, width = layout.grid  # type: ignore[misc]
    return patches.reshape(relevance.shape[0], height, width)


def _rollout(probabilities: list[Tensor]) -> Tensor:
    """Abnar and Zuidema (2020): ``R = Â_L ... Â_1`` with ``Â = normalize(0.5 mean_heads A + 0.5 I)``."""
    identity = torch.eye(probabilities[0].shape[-1], device=probabilities[0].device)
    relevance = identity.expand_as(probabilities[0][:, 0]).clone()
    for attention in probabilities:
        mixed = 0.5 * attention.float().mean(dim=1) + 0.5 * identity
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        relevance = mixed @ relevance
    return relevance


def _gradient_rollout(probabilities: list[Tensor], gradients: list[Tensor]) -> Tensor:
    """Chefer et al. (2021), eq. 5-6: ``R ← R + Ā R`` from ``R = I`` with ``Ā = mean_heads ReLU(∂y/∂A ⊙ A)``."""
    identity = torch.eye(probabilities[0].shape[-1], device=probabilities[0].device)
    relevance = identity.expand_as(probabilities[0][:, 0]).clone()
    for attention, gradient in zip(probabilities, gradients, strict=True):
        weighted = (gradient.float() * attention.float()).clamp(min=0).mean(dim=1)
        relevance = relevance + weighted @ relevance
    return relevance


#: The attention methods of :func:`lightning_cnnsee.explain.cam.cam`, and whether each needs gradients.
ATTENTION_CAM_METHODS: dict[str, bool] = {"gradient_rollout": True, "attention_rollout": False}


def _check_global(records: list[_Record | None], names: list[str], layout: TokenLayout, batch: int) -> None:
    for name, record in zip(names, records, strict=True):
        if record is None:
            raise ValueError(f"Attention module {name!r} did not run in the forward pass.")
        shape = tuple(record.probabilities.shape)
        patches = None if layout.grid is None else layout.grid[0] * layout.grid[1]
        if len(shape) != 4 or shape[0] != batch or patches is None or shape[-1] != layout.prefix + patches:
            raise ValueError(
                f"Attention module {name!r} gave probabilities of shape {shape}, not (N={batch}, heads, L, L) over "
                f"{layout.prefix} prefix tokens and the {layout.grid} patch grid: windowed or pooled attention "
                "(Swin, MViT) cannot be rolled out over the image; use method='gradcam' on a stage's output."
            )


def attention_cams(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str],
    target_sets: Sequence[Targets],
    method: str = "gradient_rollout",
    *,
    kind: str | None = None,
    output_key: OutputKey = None,
) -> tuple[list[dict[str, Tensor]], Tensor]:
    """Attention maps of ``images`` rolled out over the attention modules inside each of ``layers``, for each set of
    targets, from one forward pass (and one ``torch.autograd.grad`` per set for ``"gradient_rollout"``).

    The model is left as found: train/eval flags, timm's ``fused_attn`` flags, no hook, no parameter's ``.grad``
    touched, also on an error.

    Args:
        model: a vision transformer (timm or torchvision ViT, DeiT, ViT with register tokens).
        images: (N, C, H, W) inputs.
        layers: layers holding attention modules (timm ``"blocks"``, torchvision ``"encoder.layers"``, or a block).
        target_sets: a list of what :func:`~lightning_cnnsee.explain.cam.cam` takes as ``targets``.
        method: ``"gradient_rollout"`` or ``"attention_rollout"``.
        kind, output_key: as in :func:`~lightning_cnnsee.explain.cam.cam`.

    Returns:
        ``([{layer: (N, h, w) map on the patch grid} per target set], scores)``.
    """
    needs_gradient = ATTENTION_CAM_METHODS[method]
    layers = list(layers)
    layout = token_layout(model, images.shape[-2:])
    per_layer = {layer: attention_modules(model, layer) for layer in layers}
    every = {name: module for found in per_layer.values() for name, module in found.items()}
    names, modules = list(every), list(every.values())
    context = gradients_enabled() if needs_gradient else torch.no_grad()
    with context, eval_mode(model), record_attention(modules) as records:
        inputs = images.clone() if images.is_inference() else images.detach()
        with graph_from(model, layers) if needs_gradient else contextlib.nullcontext():
            scores = select_output(model(inputs), output_key)
        kind = model_kind(scores) if kind is None else check_kind(kind)
        _check_global(records, names, layout, images.shape[0])
        found: list[_Record] = records  # type: ignore[assignment]
        gradient_sets: list[list[Tensor]] = []
        if needs_gradient:
            scorers = [score_function(scores, targets, kind) for targets in target_sets]
            for index, score in enumerate(scorers):
                last = index == len(scorers) - 1
                raw = torch.autograd.grad(
                    score(scores).sum(), [r.against for r in found], allow_unused=True, retain_graph=not last
                )
                gradient_sets.append(
                    [
                        torch.zeros_like(r.probabilities) if g is None else r.to_attention_gradient(g.detach())
                        for r, g in zip(found, raw, strict=True)
                    ]
                )
        probabilities = {name: record.probabilities.detach() for name, record in zip(names, found, strict=True)}
    results = []
    for index in range(len(target_sets)):
        maps = {}
        gradients = dict(zip(names, gradient_sets[index], strict=True)) if needs_gradient else {}
        for layer, inside in per_layer.items():
            attention = [probabilities[name] for name in inside]
            if needs_gradient:
                relevance = _gradient_rollout(attention, [gradients[name] for name in inside])
            else:
                relevance = _rollout(attention)
            maps[layer] = _readout_rows(relevance, layout).float().clamp(min=0)
        results.append(maps)
    return results, scores.detach()
