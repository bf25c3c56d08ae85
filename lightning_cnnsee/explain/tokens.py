"""Token layouts: how a layer's output of a vision transformer (or a CNN) becomes an (N, C, h, w) feature map.

A layer of a vision transformer outputs tokens (N, L, C): ``prefix`` tokens first (a class token, a distillation
token, register tokens) and then the ``h * w`` patch tokens of the image, row by row. A hierarchical transformer
(Swin) outputs (N, h, w, C) maps; a CNN, ConvNeXt or MaxViT stage (N, C, h, w) maps. :func:`token_layout` reads what
the model says about itself (timm's ``num_prefix_tokens``, ``patch_embed`` and ``output_fmt``; torchvision's
``class_token``, ``patch_size`` and Swin's final ``permute``) for an input of a given height and width, and
:func:`feature_map` turns an output into (N, C, h, w), or raises a ``ValueError`` that says why it cannot.

Example::

    >>> import timm, torch
    >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1,
    ...                         num_classes=3, reg_tokens=4)
    >>> layout = token_layout(vit, (32, 48))  # a non-square input: a 4 x 6 grid of patches after 1 + 4 prefix tokens
    >>> layout.prefix, layout.grid
    (5, (4, 6))
    >>> feature_map(torch.rand(2, 5 + 24, 192), layout).shape
    torch.Size([2, 192, 4, 6])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["TokenLayout", "feature_map", "from_feature_map", "is_attention", "output_format", "token_layout"]

#: Modules whose output is (N, C, H, W) whatever the model's stage format is.
_CHANNELS_FIRST_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


@dataclass(frozen=True)
class TokenLayout:
    """What a model says about its tokens for one input size.

    Attributes:
        prefix: tokens before the patch grid (class, distillation and register tokens).
        grid: the patch grid (h, w) of the input, ``None`` when the model has no patch embedding.
        channels_last: the model's stages output (N, H, W, C) maps (timm's ``output_fmt="NHWC"``, torchvision's Swin).
        readout: the prefix tokens the classifier reads (``(0,)`` a class token, ``(0, 1)`` DeiT's class and
            distillation tokens), ``None`` when it pools the patch tokens.
        image_size: the input's (H, W).
        transformer: the model described itself as a transformer (a patch embedding or prefix tokens).
    """

    prefix: int = 0
    grid: tuple[int, int] | None = None
    channels_last: bool = False
    readout: tuple[int, ...] | None = None
    image_size: tuple[int, int] = (0, 0)
    transformer: bool = False


def is_attention(module: nn.Module) -> bool:
    """Whether ``module`` is a self-attention whose probabilities can be read: a ``nn.MultiheadAttention``, or a
    timm-style attention (``qkv``, ``num_heads``, ``attn_drop`` applied to the probabilities, a ``fused_attn``
    flag)."""
    if isinstance(module, nn.MultiheadAttention):
        return True
    return all(hasattr(module, name) for name in ("qkv", "num_heads", "attn_drop", "fused_attn"))


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, Sequence):
        return int(value[0]), int(value[1])
    return int(value), int(value)  # type: ignore[call-overload]


def _describes_itself(module: nn.Module) -> bool:
    if hasattr(module, "num_prefix_tokens") and hasattr(module, "patch_embed"):
        return True  # timm ViT, DeiT, ViTs with register tokens, EVA, ...
    if hasattr(module, "patch_embed") and getattr(module, "output_fmt", None) == "NHWC":
        return True  # timm Swin
    if isinstance(getattr(module, "class_token", None), torch.Tensor) and hasattr(module, "patch_size"):
        return True  # torchvision VisionTransformer
    return _torchvision_swin(module)


def _torchvision_swin(module: nn.Module) -> bool:
    permute = getattr(module, "permute", None)
    return isinstance(permute, nn.Module) and list(getattr(permute, "dims", [])) == [0, 3, 1, 2]


def _grid(module: nn.Module, height: int, width: int) -> tuple[int, int] | None:
    patch_embed = getattr(module, "patch_embed", None)
    if patch_embed is not None:
        if hasattr(patch_embed, "dynamic_feat_size") and getattr(patch_embed, "patch_size", None) is not None:
            return _pair(patch_embed.dynamic_feat_size((height, width)))
        if getattr(patch_embed, "grid_size", None) is not None:
            return _pair(patch_embed.grid_size)
    patch_size = getattr(module, "patch_size", None)
    if isinstance(getattr(module, "class_token", None), torch.Tensor) and patch_size is not None:
        patch = _pair(patch_size)
        return height // patch[0], width // patch[1]
    return None


def _readout(module: nn.Module, prefix: int) -> tuple[int, ...] | None:
    if isinstance(getattr(module, "class_token", None), torch.Tensor):
        return (0,)  # torchvision's ViT reads its class token
    pool = getattr(module, "global_pool", None)
    if prefix and pool == "token":
        distilled = getattr(module, "dist_token", None) is not None
        return (0, 1) if distilled and prefix > 1 else (0,)  # DeiT averages its class and distillation heads
    return None


def token_layout(model: nn.Module, image_size: Sequence[int]) -> TokenLayout:
    """The token layout of ``model`` for inputs of ``image_size`` (H, W), read from the first submodule (the model
    itself first) that describes itself; a model that does not gets an empty layout (no prefix, no grid).

    Args:
        model: any ``nn.Module``; a LightningModule holding a timm or torchvision model is searched.
        image_size: the input's (H, W) (an input's ``shape[-2:]``).

    Example::

        >>> import torchvision
        >>> vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2,
        ...                                            hidden_dim=16, mlp_dim=32, num_classes=4)
        >>> token_layout(vit, (32, 32))
        TokenLayout(prefix=1, grid=(4, 4), channels_last=False, readout=(0,), image_size=(32, 32), transformer=True)
    """
    height, width = int(image_size[-2]), int(image_size[-1])
    for module in model.modules():
        if not _describes_itself(module):
            continue
        class_token = isinstance(getattr(module, "class_token", None), torch.Tensor)
        prefix = int(getattr(module, "num_prefix_tokens", 1 if class_token else 0))
        channels_last = getattr(module, "output_fmt", None) == "NHWC" or _torchvision_swin(module)
        grid = _grid(module, height, width)
        return TokenLayout(prefix, grid, channels_last, _readout(module, prefix), (height, width), True)
    return TokenLayout(image_size=(height, width))


def _fits(height: int, width: int, layout: TokenLayout) -> bool:
    """A (height, width) map is a plausible grid of the input: no larger, and the same stride along both axes
    (within a quarter, for padded or rounded grids)."""
    image_height, image_width = layout.image_size
    if height < 1 or width < 1 or height > image_height or width > image_width:
        return False
    stride_h, stride_w = image_height / height, image_width / width
    return abs(stride_h - stride_w) <= 0.25 * max(stride_h, stride_w)


def output_format(output: Tensor, layout: TokenLayout, module: nn.Module | None = None) -> str:
    """``"NCHW"``, ``"NHWC"`` or ``"NLC"``: how ``output`` is laid out; raises ``ValueError`` for any other output.

    A module's own ``output_fmt`` (timm) decides; otherwise the shapes that fit the input's grid, and, when both
    orders fit, the model's stage format (convolutions and 2-d pooling are always channels first).

    Args:
        output: a layer's output.
        layout: the model's :func:`token_layout` for the input.
        module: the layer, when known.
    """
    if not isinstance(output, Tensor):
        raise ValueError(f"a {type(output).__name__} is not a feature map")
    if output.ndim == 3 and layout.transformer:
        return "NLC"
    if output.ndim != 4:
        raise ValueError(
            f"an output of shape {tuple(output.shape)} is neither (N, C, H, W), (N, H, W, C) nor (N, tokens, C) of "
            f"a model with a token layout"
        )
    declared = getattr(module, "output_fmt", None)
    declared = getattr(declared, "value", declared)  # timm's Format enum
    if declared in ("NCHW", "NHWC"):
        return str(declared)
    if not layout.channels_last or isinstance(module, _CHANNELS_FIRST_MODULES):
        return "NCHW"
    first, last = _fits(output.shape[2], output.shape[3], layout), _fits(output.shape[1], output.shape[2], layout)
    return "NCHW" if first and not last else "NHWC"


def _tokens_grid(tokens: int, layout: TokenLayout) -> tuple[int, int]:
    patches = tokens - layout.prefix
    if layout.grid is not None and layout.grid[0] * layout.grid[1] == patches:
        return layout.grid
    if layout.grid is not None and layout.grid[0] * layout.grid[1] == tokens:
        return layout.grid  # prefix tokens already dropped
    height, width = layout.image_size
    # a grid the model did not describe (a pooled stage): the factorization closest to the input's aspect ratio
    shapes = [(h, patches // h) for h in range(1, patches + 1) if patches % h == 0]
    fitting = [shape for shape in shapes if _fits(shape[0], shape[1], layout)]
    if patches < 1 or not fitting:
        raise ValueError(
            f"{tokens} tokens ({layout.prefix} prefix tokens) do not make a patch grid of the {height}x{width} "
            f"input (expected {layout.grid})"
        )
    return min(fitting, key=lambda shape: abs(shape[0] * width - shape[1] * height))


def feature_map(output: Tensor, layout: TokenLayout, module: nn.Module | None = None) -> Tensor:
    """``output`` as an (N, C, h, w) map (a view where possible): tokens without their prefix on the patch grid,
    (N, H, W, C) permuted, (N, C, H, W) as it is.

    Args:
        output: a layer's output.
        layout: the model's :func:`token_layout` for the input.
        module: the layer, when known (its ``output_fmt`` decides).

    Raises:
        ValueError: when the output is not one of these layouts, saying why.

    Example::

        >>> layout = TokenLayout(channels_last=True, image_size=(32, 32), transformer=True)
        >>> feature_map(torch.rand(2, 4, 4, 96), layout).shape  # a Swin stage
        torch.Size([2, 96, 4, 4])
    """
    how = output_format(output, layout, module)
    if how == "NCHW":
        return output
    if how == "NHWC":
        return output.permute(0, 3, 1, 2)
    height, width = _tokens_grid(output.shape[1], layout)
    patches = output[:, output.shape[1] - height * width :]
    return patches.transpose(1, 2).reshape(output.shape[0], output.shape[2], height, width)


def from_feature_map(maps: Tensor, like: Tensor, layout: TokenLayout, module: nn.Module | None = None) -> Tensor:
    """The inverse of :func:`feature_map`: ``maps`` (B, C, h, w) in the layout of ``like`` (one image's output,
    (1, ...)), whose prefix tokens are kept.

    Example::

        >>> layout = TokenLayout(prefix=1, grid=(2, 2), image_size=(8, 8), transformer=True)
        >>> tokens = torch.rand(1, 5, 3)
        >>> torch.equal(from_feature_map(feature_map(tokens, layout), tokens, layout), tokens)
        True
    """
    how = output_format(like, layout, module)
    if how == "NCHW":
        return maps
    if how == "NHWC":
        return maps.permute(0, 2, 3, 1)
    tokens = like.expand(maps.shape[0], *like.shape[1:]).clone()
    tokens[:, like.shape[1] - maps.shape[2] * maps.shape[3] :] = maps.flatten(2).transpose(1, 2)
    return tokens
