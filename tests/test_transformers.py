"""Vision transformers: token layouts, attention rollout and gradient-weighted rollout against computations written
out by hand, Grad-CAM on token layers against pytorch-grad-cam with a reshape_transform, the defaults, and the
callback on timm and torchvision ViT, DeiT, register tokens and Swin."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from tiny import NUM_CLASSES, RecordingCNNSee, count_hooks, read_images, trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_cnnsee import CNNSee
from lightning_cnnsee.explain.activations import capture_activations
from lightning_cnnsee.explain.cam import default_cam, grad_cam
from lightning_cnnsee.explain.tokens import TokenLayout, feature_map, from_feature_map, token_layout
from lightning_cnnsee.run.options import Options
from lightning_cnnsee.run.visualization import visualize

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


def timm_vit(**overrides) -> nn.Module:
    torch.manual_seed(0)
    kwargs = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=NUM_CLASSES)
    kwargs.update(overrides)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs).eval()


def timm_deit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "deit_tiny_distilled_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=NUM_CLASSES,
    ).eval()


def timm_swin(img_size: int | tuple[int, int] = 32) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=img_size,
        window_size=4,
        depths=(1, 1, 1),
        num_heads=(1, 2, 4),
        embed_dim=16,
        num_classes=NUM_CLASSES,
    ).eval()


def torchvision_vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=NUM_CLASSES
    )
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts the head at zero: no gradient at all
    return model.eval()


def torchvision_swin() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1, 1], num_heads=[1, 2, 4], window_size=[4, 4], num_classes=4
    ).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# Token layouts


@pytest.mark.parametrize(
    "make, prefix, readout",
    [
        (lambda: timm_vit(), 1, (0,)),
        (lambda: timm_vit(reg_tokens=4), 5, (0,)),
        (lambda: timm_vit(class_token=False, global_pool="avg"), 0, None),
        (timm_deit, 2, (0, 1)),
        (torchvision_vit, 1, (0,)),
    ],
)
def test_token_layout_reads_prefix_tokens_grid_and_readout_from_the_model(make, prefix, readout):
    model = make()
    layout = token_layout(model, (32, 32))
    assert (layout.prefix, layout.grid, layout.readout, layout.transformer) == (prefix, (4, 4), readout, True)
    tokens = {}
    handle = model.get_submodule("encoder.layers" if hasattr(model, "encoder") else "blocks").register_forward_hook(
        lambda m, a, o: tokens.setdefault("out", o)
    )
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32))
    handle.remove()
    out = tokens["out"]
    assert out.shape[1] == prefix + 16
    expected = out[:, prefix:].reshape(2, 4, 4, out.shape[2]).permute(0, 3, 1, 2)  # row-major patches
    assert torch.equal(feature_map(out, layout), expected)
    assert torch.equal(from_feature_map(feature_map(out, layout), out[:1], layout)[0], out[0])


def test_token_layout_follows_a_non_square_input_of_a_dynamic_size_vit():
    model = timm_vit(dynamic_img_size=True, reg_tokens=2)
    layout = token_layout(model, (32, 48))
    assert (layout.prefix, layout.grid) == (3, (4, 6))
    maps = capture_activations(model, torch.rand(2, 3, 32, 48), ["blocks.1", "patch_embed"])
    assert maps["blocks.1"].shape == (2, 32, 4, 6) and maps["patch_embed"].shape == (2, 32, 4, 6)  # NHWC embed
    wide = torch.rand(2, 3, 32, 48)
    assert grad_cam(model, wide, None)["blocks"].shape == (2, 4, 6)
    assert grad_cam(model, wide, ["blocks.0"], targets=1, method="gradcam")["blocks.0"].shape == (2, 4, 6)


@pytest.mark.parametrize(
    "make, stage", [(lambda: timm_swin(img_size=(32, 64)), "layers.1"), (torchvision_swin, "features.3")]
)
def test_swin_stages_in_nhwc_become_channels_first_and_convolutions_stay(make, stage):
    model = make()
    layout = token_layout(model, (32, 64))
    assert layout.channels_last and layout.transformer
    images = torch.rand(2, 3, 32, 64)
    seen = {}
    handle = model.get_submodule(stage).register_forward_hook(lambda m, a, o: seen.setdefault("out", o))
    with torch.no_grad():
        model(images)
    handle.remove()
    nhwc = seen["out"]
    assert nhwc.shape[1:3] == (4, 8)  # (N, H, W, C): 32x64 input, stride 8
    assert torch.equal(feature_map(nhwc, layout, model.get_submodule(stage)), nhwc.permute(0, 3, 1, 2))
    conv = "patch_embed.proj" if hasattr(model, "patch_embed") else "features.0.0"
    maps = capture_activations(model, images, [conv, stage])
    assert maps[conv].shape == (2, 16, 8, 16) and maps[stage].shape == (2, 32, 4, 8)


def test_a_token_count_that_fits_no_grid_is_refused_saying_why():
    layout = TokenLayout(prefix=1, grid=(4, 4), image_size=(32, 32), transformer=True)
    with pytest.raises(ValueError, match=r"7 tokens \(1 prefix tokens\) do not make a patch grid of the 32x32"):
        feature_map(torch.rand(1, 7, 8), layout)
    with pytest.raises(ValueError, match=r"neither \(N, C, H, W\)"):
        feature_map(torch.rand(1, 8), layout)


def test_a_cnn_has_no_token_layout_and_its_maps_are_unchanged():
    model = torchvision.models.resnet18(num_classes=3)
    assert token_layout(model, (64, 64)) == TokenLayout(image_size=(64, 64))
    with pytest.raises(ValueError, match="neither"):
        feature_map(torch.rand(1, 5, 8), token_layout(model, (64, 64)))


# Rollouts against a forward pass written out by hand


def manual_timm_vit(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and the attention probabilities of every block, computed here from the weights (no fused attention,
    no hook)."""
    x = model.norm_pre(model._pos_embed(model.patch_embed(images)))
    probabilities = []
    for block in model.blocks:
        attention = block.attn
        h = block.norm1(x)
        batch, length, channels = h.shape
        qkv = attention.qkv(h).reshape(batch, length, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = ((q * attention.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        probabilities.append(a)
        out = attention.proj((a @ v).transpose(1, 2).reshape(batch, length, channels))
        x = x + block.ls1(out)
        x = x + block.ls2(block.mlp(block.norm2(x)))
    return model.forward_head(model.norm(x)), probabilities


def manual_torchvision_vit(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = model._process_input(images)
    x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1) + model.encoder.pos_embedding
    probabilities = []
    for layer in model.encoder.layers:
        attention = layer.self_attention
        h = layer.ln_1(x)
        q, k, v = F.linear(h, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
        batch, length, channels = h.shape
        heads = attention.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, length, heads, -1).transpose(1, 2)

        a = ((split(q) / math.sqrt(channels // heads)) @ split(k).transpose(-2, -1)).softmax(dim=-1)
        probabilities.append(a)
        out = attention.out_proj((a @ split(v)).transpose(1, 2).reshape(batch, length, channels))
        x = x + out
        x = x + layer.mlp(layer.ln_2(x))
    return model.heads(model.encoder.ln(x)[:, 0]), probabilities


def rollout_by_hand(probabilities, readout, prefix, gradients=None) -> torch.Tensor:
    """Abnar and Zuidema (2020) or, with gradients, Chefer et al. (2021), one image at a time in float64."""
    maps = []
    for image in range(probabilities[0].shape[0]):
        length = probabilities[0].shape[-1]
        relevance = np.eye(length)
        for index, a in enumerate(probabilities):
            a = a[image].detach().double().numpy()
            if gradients is None:
                mixed = 0.5 * a.mean(axis=0) + 0.5 * np.eye(length)
                relevance = (mixed / mixed.sum(axis=1, keepdims=True)) @ relevance
            else:
                g = gradients[index][image].double().numpy()
                relevance = relevance + np.maximum(g * a, 0).mean(axis=0) @ relevance
        rows = list(readout) if readout else list(range(prefix, length))
        side = int(round(math.sqrt(length - prefix)))
        maps.append(relevance[rows, prefix:].mean(axis=0).reshape(side, side))
    return torch.from_numpy(np.stack(maps)).float()


@pytest.mark.parametrize(
    "make, layer",
    [
        (timm_vit, "blocks"),
        (lambda: timm_vit(reg_tokens=4), "blocks"),
        (timm_deit, "blocks"),
        (torchvision_vit, "encoder.layers"),
    ],
)
@pytest.mark.parametrize("method", ["attention_rollout", "gradient_rollout"])
def test_rollouts_equal_the_rollout_of_attention_computed_by_hand(make, layer, method, images, model_untouched):
    model = make()
    targets = torch.tensor([0, 3, 1])
    manual = manual_torchvision_vit if hasattr(model, "encoder") else manual_timm_vit
    logits, probabilities = manual(model, images)
    layout = token_layout(model, (32, 32))
    gradients = None
    if method == "gradient_rollout":
        gradients = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), probabilities)
    expected = rollout_by_hand(probabilities, layout.readout, layout.prefix, gradients)
    with model_untouched(model):
        ours = grad_cam(model, images, [layer], targets=targets, method=method)[layer]
    assert ours.shape == (3, 4, 4)
    assert float(expected.abs().max()) > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_gradient_rollout_depends_on_the_class_and_attention_rollout_does_not(images):
    model = timm_vit()
    first = grad_cam(model, images, ["blocks"], targets=0, method="gradient_rollout")["blocks"]
    second = grad_cam(model, images, ["blocks"], targets=2, method="gradient_rollout")["blocks"]
    assert not torch.allclose(first, second)
    plain = [grad_cam(model, images, ["blocks"], targets=t, method="attention_rollout")["blocks"] for t in (0, 2)]
    assert torch.equal(plain[0], plain[1])


def test_fused_attention_flags_and_hooks_are_restored_also_when_the_forward_pass_fails(images, model_untouched):
    model = timm_vit()
    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    assert flags == [True, True]  # timm's default with torch's scaled_dot_product_attention
    seen = []

    def fail(module, args, output):
        seen.append([m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")])
        raise RuntimeError("boom in the head")

    handle = model.head.register_forward_hook(fail)
    try:
        with model_untouched(model), pytest.raises(RuntimeError, match="boom"):
            grad_cam(model, images, ["blocks"], method="gradient_rollout")
    finally:
        handle.remove()
    assert seen == [[False, False]]  # off while the maps were made
    assert [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")] == flags
    assert count_hooks(model) == 0


def test_torchvision_attention_is_asked_for_its_weights_only_during_the_maps(images, model_untouched):
    model = torchvision_vit()
    calls = []
    attention = model.encoder.layers[0].self_attention
    original = attention.forward

    def spy(*args, **kwargs):
        calls.append(kwargs.get("need_weights"))
        return original(*args, **kwargs)

    attention.forward = spy
    with model_untouched(model):
        grad_cam(model, images, ["encoder.layers"], method="gradient_rollout")
        with torch.no_grad():
            model(images)
    assert calls == [True, False]


def test_rollout_maps_come_with_gradients_inside_inference_mode(images):
    model = timm_vit()
    expected = grad_cam(model, images, ["blocks"], targets=1, method="gradient_rollout")["blocks"]
    with torch.inference_mode():
        inside = grad_cam(model, images, ["blocks"], targets=1, method="gradient_rollout")["blocks"]
    assert float(expected.max()) > 0 and torch.equal(inside, expected)


def test_windowed_attention_is_refused_for_rollout_with_the_reason(images):
    with pytest.raises(ValueError, match=r"windowed or pooled attention .*use method='gradcam'"):
        grad_cam(timm_swin(), images, ["layers"], method="attention_rollout")
    with pytest.raises(ValueError, match=r"holds no self-attention module"):
        grad_cam(timm_vit(), images, ["head"], method="attention_rollout")


# Grad-CAM on token layers against pytorch-grad-cam with a reshape_transform


def library_raw_gradcam(model, layer, images, targets, reshape_transform) -> torch.Tensor:
    """pytorch-grad-cam's per-layer Grad-CAM before its scaling (``BaseCAM.forward`` up to ``np.maximum``)."""
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = copy.deepcopy(model)
    module = model.get_submodule(layer)
    extractor = pytorch_grad_cam.GradCAM(model=model, target_layers=[module], reshape_transform=reshape_transform)
    try:
        outputs = extractor.activations_and_grads(images)
        sum(ClassifierOutputTarget(t)(o) for t, o in zip(targets, outputs, strict=True)).backward()
        gradients = extractor.activations_and_grads.gradients[0].numpy()
        activations = extractor.activations_and_grads.activations[0].numpy()
        raw = extractor.get_cam_image(images, module, targets, activations, gradients, False)
    finally:
        extractor.activations_and_grads.release()
    return torch.from_numpy(np.maximum(raw, 0)).float()


def drop_prefix(prefix: int):
    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, prefix:].reshape(tokens.shape[0], 4, 4, tokens.shape[2]).permute(0, 3, 1, 2)

    return reshape


@pytest.mark.parametrize(
    "make, layer, reshape",
    [
        (timm_vit, "blocks.1.norm1", drop_prefix(1)),
        (timm_vit, "blocks.0", drop_prefix(1)),
        (lambda: timm_vit(reg_tokens=4), "blocks.0", drop_prefix(5)),
        (timm_deit, "blocks.1.norm1", drop_prefix(2)),
        (torchvision_vit, "encoder.layers.encoder_layer_0", drop_prefix(1)),
        (timm_swin, "layers.1", lambda t: t.permute(0, 3, 1, 2)),
        (torchvision_swin, "features.1", lambda t: t.permute(0, 3, 1, 2)),
    ],
)
@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_cams_on_token_layers_equal_pytorch_grad_cam_with_a_reshape_transform(make, layer, reshape, method, images):
    model = make()
    targets = [0, 3, 1]
    ours = grad_cam(model, images, [layer], targets=targets, method=method)[layer]
    if method == "gradcam":
        expected = library_raw_gradcam(model, layer, images, targets, reshape)
    else:  # HiResCAM: the sum over channels of gradient times activation, from the library's own tensors
        model_copy = copy.deepcopy(model)
        seen = {}
        handle = model_copy.get_submodule(layer).register_forward_hook(lambda m, a, o: seen.setdefault("out", o))
        scores = model_copy(images)
        handle.remove()
        gradient = torch.autograd.grad(scores.gather(1, torch.tensor(targets)[:, None]).sum(), seen["out"])[0]
        expected = (reshape(gradient) * reshape(seen["out"])).sum(dim=1).clamp(min=0).detach()
    scale = float(expected.abs().max())
    assert scale > 0, "the reference map is all zero: the test would prove nothing"
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5 * scale)


def test_ablation_cam_on_a_token_layer_ablates_channels_of_the_patch_tokens_only(images):
    model = timm_vit()
    maps = grad_cam(model, images[:1], ["blocks.0"], targets=[2], method="ablationcam")["blocks.0"]
    tokens = {}
    handle = model.blocks[0].register_forward_hook(lambda m, a, o: tokens.setdefault("out", o))
    with torch.no_grad():
        baseline = model(images[:1])[0, 2]
    handle.remove()
    out = tokens["out"]
    # by hand: the rest of the network on tokens with channel k of the 16 patch tokens set to zero
    with torch.no_grad():
        weights = []
        for channel in range(out.shape[2]):
            ablated = out.clone()
            ablated[:, 1:, channel] = 0
            x = model.blocks[1](ablated)
            weights.append(float((baseline - model.forward_head(model.norm(x))[0, 2]) / baseline))
    grid = out[0, 1:].T.reshape(out.shape[2], 4, 4)
    expected = torch.einsum("k,khw->hw", torch.tensor(weights), grid).clamp(min=0)[None]
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


# Defaults


@pytest.mark.parametrize(
    "make, layer, method",
    [
        (timm_vit, "blocks", "attention_rollout"),
        (lambda: timm_vit(reg_tokens=4), "blocks", "attention_rollout"),
        (timm_deit, "blocks", "attention_rollout"),
        (torchvision_vit, "encoder.layers", "attention_rollout"),
        (timm_swin, "norm", "gradcam"),  # 2x2 after three stages of a 32x32 input
        (torchvision_swin, "norm", "gradcam"),  # not the permute that follows it (a view)
        (lambda: torchvision.models.resnet18(num_classes=4), "layer4", "gradcam"),
    ],
)
def test_layers_none_uses_the_default_layer_and_method_on_the_token_grid(make, layer, method):
    model = make()
    images = torch.rand(2, 3, 64, 64) if layer == "layer4" else torch.rand(2, 3, 32, 32)
    assert default_cam(model, images) == ([layer], method)
    maps = grad_cam(model, images, None, targets=[1, 2])
    expected = grad_cam(model, images, [layer], targets=[1, 2], method=method)
    assert list(maps) == [layer] and torch.equal(maps[layer], expected[layer])
    assert maps[layer].shape[-2:] == ((4, 4) if "rollout" in method else (2, 2))


def test_visualize_at_defaults_on_a_vit_shows_token_grid_activations_and_block_filters(images):
    model = timm_vit(depth=3)
    options = Options(ascent_steps=2, num_filters=2, max_classes=2, faithfulness_steps=4)
    results = visualize(model, images, torch.tensor([0, 1, 2]), options)
    assert list(results.cams_predicted) == ["blocks"] and results.cams_predicted["blocks"].shape == (3, 4, 4)
    assert list(results.activations) == ["blocks.0", "blocks.1", "blocks.2"]
    assert all(maps.shape == (3, 32, 4, 4) for maps in results.activations.values())
    assert sorted(results.filters) == ["blocks.0", "blocks.1", "blocks.2"]
    assert results.filters["blocks.2"].images.shape == (2, 3, 32, 32)
    assert results.class_patterns.layer == "head" and results.class_patterns.images.shape[0] == 2
    assert set(results.faithfulness["blocks"]) >= {"deletion_auc", "insertion_auc"}


# The callback


class TransformerModule(pl.LightningModule):
    def __init__(self, make) -> None:
        super().__init__()
        self.net = make()
        self.example_input_array = torch.zeros(1, 3, 32, 32)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def loaders(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 3, 32, 32, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (32,), generator=generator)
    for cls in range(NUM_CLASSES):
        row, col = divmod(cls, 2)
        x[y == cls, :, row * 16 : row * 16 + 8, col * 16 : col * 16 + 8] += 2.0
    return DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(TensorDataset(x[:8], y[:8]), batch_size=8)


FAST = dict(num_samples=4, ascent_steps=2, num_filters=2, max_classes=2, max_overhead=None, faithfulness_steps=4)


@pytest.mark.parametrize(
    "make, layer, filters",
    [
        (timm_vit, "blocks", "blocks.1"),
        (lambda: timm_vit(reg_tokens=4), "blocks", "blocks.1"),
        (timm_deit, "blocks", "blocks.1"),
        (timm_swin, "norm", "layers.2"),
        (torchvision_vit, "encoder.layers", "encoder.layers.encoder_layer_1"),
        (torchvision_swin, "norm", "features.5"),
    ],
)
def test_callback_at_defaults_logs_maps_from_a_deep_layer_and_says_what_it_chose(
    tmp_path, caplog, make, layer, filters
):
    callback = RecordingCNNSee(**FAST)
    train, val = loaders()
    with caplog.at_level("INFO"):
        trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_epochs=1))
        trainer.fit(TransformerModule(make), train, val)
    tags = read_images(trainer.logger.log_dir)
    assert f"cnnsee/gradcam/net.{layer}" in tags, sorted(tags)
    assert f"cnnsee/filters/net.{filters}" in tags and f"cnnsee/activations/net.{filters}" in tags, sorted(tags)
    assert "cnnsee/classes" in tags
    method = "attention_rollout" if "blocks" in layer or "encoder" in layer else "gradcam"
    said = [r.getMessage() for r in caplog.records if "CNNSee layers" in r.getMessage()]
    assert len(said) == 1 and f"CAM {method} on ['net.{layer}']" in said[0], said
    assert ("benchmarks/transformers.py" if "rollout" in method else "windowed attention") in said[0]
    assert sum(count_hooks(m) for m in trainer.lightning_module.modules()) == 0
    maps = callback.last_results.cams_predicted[f"net.{layer}"]
    assert maps.shape[-2:] == ((4, 4) if "rollout" in method else (2, 2)) and float(maps.max()) > 0
    assert callback.last_results.faithfulness[f"net.{layer}"]["deletion_auc"].shape == (4,)


def test_training_a_vit_is_bitwise_identical_with_and_without_the_callback(tmp_path):
    states = []
    for folder, callbacks in (("without", []), ("with", [CNNSee(every_n_steps=1, **FAST)])):
        pl.seed_everything(0)
        module = TransformerModule(lambda: timm_vit(drop_rate=0.1, attn_drop_rate=0.1))
        train, val = loaders()
        trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path / folder, max_epochs=1, deterministic=True))
        trainer.fit(module, train, val)
        states.append(module.state_dict())
        if callbacks:
            assert "cnnsee/gradcam/net.blocks" in read_images(trainer.logger.log_dir)
        assert [m.fused_attn for m in module.modules() if hasattr(m, "fused_attn")] == [True, True]
        assert count_hooks(module) == 0
    for (name, a), (_, b) in zip(states[0].items(), states[1].items(), strict=True):
        assert torch.equal(a, b), name


def test_a_rollout_on_a_layer_without_attention_fails_at_setup_naming_the_layers_with_it(tmp_path):
    with pytest.raises(
        ValueError, match=r"cam_method='gradient_rollout'.*hold no self-attention.*\['net', 'net.blocks'"
    ):
        train, val = loaders()
        trainer = pl.Trainer(
            callbacks=[CNNSee(cam_method="gradient_rollout", gradcam_layers=["net.head"], **FAST)],
            **trainer_kwargs(tmp_path, max_epochs=1),
        )
        trainer.fit(TransformerModule(timm_vit), train, val)


class Segmenter(nn.Module):
    """A ViT backbone with a per-pixel head: tokens on their grid, a 1x1 convolution, upsampled to the input."""

    def __init__(self) -> None:
        super().__init__()
        self.vit = timm_vit(num_classes=0)
        self.head = nn.Conv2d(32, NUM_CLASSES, 1)

    def forward(self, x):
        tokens = self.vit.forward_features(x)[:, 1:]
        grid = tokens.transpose(1, 2).reshape(x.shape[0], 32, 4, 4)
        return F.interpolate(self.head(grid), size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_multilabel_and_segmentation_heads_on_a_vit_get_maps_per_image_and_class(images):
    options = Options(techniques=["gradcam"], cam_method="gradient_rollout")
    multilabel = timm_vit()
    labels = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 1, 1]])
    results = visualize(multilabel, images, labels, Options(techniques=["gradcam"], model_kind="multilabel"))
    assert results.kind == "multilabel" and list(results.pair_cams) == ["blocks"]
    assert results.pair_cams["blocks"].shape == (len(results.pairs[0]), 4, 4)
    segmenter = Segmenter().eval()
    assert default_cam(segmenter, images) == (["vit.blocks"], "attention_rollout")
    results = visualize(segmenter, images, None, options)
    assert results.kind == "segmentation" and list(results.pair_cams) == ["vit.blocks"]
    image_index, class_index = results.pairs
    expected = grad_cam(segmenter, images[image_index], ["vit.blocks"], targets=class_index, method="gradient_rollout")
    torch.testing.assert_close(results.pair_cams["vit.blocks"], expected["vit.blocks"])
    assert float(expected["vit.blocks"].max()) > 0


def test_a_compiled_vit_shows_its_maps_and_is_left_as_found(tmp_path):
    # dynamo with the eager backend: the compiled module's own path (set_stance, _orig_mod names) in seconds; inductor
    # compiles the same graph in minutes on a CPU
    module = TransformerModule(lambda: timm_vit(depth=1))
    module.net = torch.compile(module.net, backend="eager")
    train, val = loaders()
    callback = RecordingCNNSee(strict=True, techniques=["gradcam", "activations"], **FAST)
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=2))
    trainer.fit(module, train, val)
    tags = read_images(trainer.logger.log_dir)
    assert "cnnsee/gradcam/net.blocks" in tags and "cnnsee/activations/net.blocks.0" in tags, sorted(tags)
    assert float(callback.last_results.cams_predicted["net.blocks"].max()) > 0
    assert [m.fused_attn for m in module.modules() if hasattr(m, "fused_attn")] == [True]


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_ddp_on_a_vit_logs_rollout_maps_once_and_trains_identically(tmp_path):
    from test_distributed import run_ddp

    plain, _ = run_ddp(tmp_path / "none", "ddp", "none", model="vit")
    seen, output = run_ddp(tmp_path / "cnnsee", "ddp", "cnnsee", model="vit")
    assert seen["world_size"] == 2 and seen["wrapper_calls_during_runs"] == []
    for name, weight in plain["weights"].items():
        assert torch.equal(weight, seen["weights"][name]), name
    tags = read_images(str(tmp_path / "cnnsee" / "logs" / "version_0"))
    assert "cnnsee/gradcam/net.blocks" in tags and len(tags["cnnsee/gradcam/net.blocks"]) == len(
        set(tags["cnnsee/gradcam/net.blocks"])
    )
    assert output.count("CNNSee layers: CAM attention_rollout on ['net.blocks']") == 1


def test_a_vit_without_an_example_input_is_probed_on_its_first_validation_images(tmp_path, caplog):
    module = TransformerModule(timm_vit)  # img_size=32: the 64x64 setup probe cannot run it
    module.example_input_array = None
    train, val = loaders()
    with caplog.at_level("INFO"):
        trainer = pl.Trainer(callbacks=[CNNSee(**FAST)], **trainer_kwargs(tmp_path, max_epochs=1))
        trainer.fit(module, train, val)
    assert "cnnsee/gradcam/net.blocks" in read_images(trainer.logger.log_dir)
    said = [r.getMessage() for r in caplog.records if "CNNSee layers" in r.getMessage()]
    assert len(said) == 1 and "attention_rollout on ['net.blocks']" in said[0]
