"""Occlusion by incremental inference: the same maps as Captum's Occlusion and as our full forward pass, on residual
networks, plain stacks and models it must leave to the full pass; less work where it applies; the model untouched.

Tolerances: the incremental pass sums the same products as the full pass in another order (boxes instead of whole
maps, BatchNorm folded into the convolutions), so scores differ by float32 rounding, a few 1e-7 of the largest
activations; occlusion divides score drops, which are much smaller than the scores, so the maps are compared with
a relative error of 1e-4 of their largest value, the issue's bound (measured here: 1e-6 to 3e-5).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from lightning_cnnsee.explain import occlusion
from lightning_cnnsee.explain.attributions import attribute
from lightning_cnnsee.explain.occlusion import incremental_forward

captum_attr = pytest.importorskip("captum.attr")

TOLERANCE = 1e-4


def randomize_norms(model: nn.Module, seed: int) -> nn.Module:
    """BatchNorm statistics and affine parameters far from (0, 1), so that folding them is tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=generator) * 0.2)
    return model.eval()


def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return randomize_norms(torchvision.models.resnet18(weights=None, num_classes=5), 1)


def bottleneck_resnet() -> nn.Module:
    torch.manual_seed(0)
    return randomize_norms(ResNet(Bottleneck, [1, 1, 1, 1], num_classes=5, width_per_group=16), 2)


def plain_stack(inplace: bool = True) -> nn.Sequential:
    """Every layer kind the incremental pass recomputes in part, with paddings, strides, dilation and groups."""
    torch.manual_seed(0)
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1),
        bn1=nn.BatchNorm2d(8),
        relu1=nn.ReLU(inplace=inplace),
        pool1=nn.MaxPool2d(3, stride=2, padding=1),
        conv2=nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2),
        act2=nn.LeakyReLU(0.1, inplace=inplace),
        pool2=nn.AvgPool2d(2),
        conv3=nn.Conv2d(8, 12, 5, stride=2, padding=2, bias=False),
        bn3=nn.BatchNorm2d(12),
        act3=nn.SiLU(),
        drop=nn.Dropout2d(0.5),
        conv4=nn.Conv2d(12, 12, 1),
        gap=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(12, 5),
    )
    return randomize_norms(nn.Sequential(layers), 3)


class Branches(nn.Module):
    """A model of the user's own class, with data-dependent control flow: neither traced nor traceable."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        return self.fc(features if features.sum() > 0 else -features)


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    scale = float(theirs.abs().max())
    assert scale > 0, "all-zero attributions would prove nothing"
    return float((ours - theirs).abs().max()) / scale


def captum_occlusion(model: nn.Module, images: torch.Tensor, targets, **options) -> torch.Tensor:
    return captum_attr.Occlusion(copy.deepcopy(model).eval()).attribute(images.clone(), target=targets, **options)


@pytest.mark.parametrize(
    "make, size, window, strides",
    [
        (resnet18, 32, (3, 6, 6), (3, 4, 4)),
        (bottleneck_resnet, 32, (3, 8, 8), (3, 3, 3)),  # the last window overhangs the edge
        (plain_stack, 24, (3, 5, 5), (3, 2, 2)),
        (plain_stack, 24, (2, 4, 6), (1, 4, 3)),  # a window over two channels
    ],
    ids=["resnet18", "bottleneck-resnet", "plain-stack", "plain-stack-channels-apart"],
)
def test_incremental_occlusion_equals_captum_and_the_full_forward_pass(make, size, window, strides) -> None:
    model = make()
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(4))
    targets = [1, 4]
    assert incremental_forward(model, images) is not None
    options = {"sliding_window_shapes": window, "strides": strides}
    ours = attribute(model, images, "occlusion", targets, **options)
    full = attribute(model, images, "occlusion", targets, incremental=False, **options)
    theirs = captum_occlusion(model, images, targets, **options)
    assert relative_error(ours, theirs) <= TOLERANCE
    assert relative_error(ours, full) <= TOLERANCE
    assert relative_error(full, theirs) <= TOLERANCE


@pytest.mark.parametrize("make", [resnet18, plain_stack], ids=["resnet18", "plain-stack"])
def test_the_incremental_forward_equals_the_model_on_occluded_copies(make) -> None:
    model = make()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    top, left, window = torch.tensor([0, 13, 26, 5]), torch.tensor([26, 0, 13, 9]), (6, 6)
    copies = images.repeat(len(top), 1, 1, 1)
    for position, (row, column) in enumerate(zip(top.tolist(), left.tolist(), strict=True)):
        copies[position * 3 : position * 3 + 3, :, row : row + 6, column : column + 6] = -1.5
    with torch.inference_mode():
        engine = incremental_forward(model, images)
        fast, full, clean = engine(copies, top, left, window), model(copies), model(images)
    scale = float(full.abs().max())
    assert float((engine.output - clean).abs().max()) <= 1e-5 * scale
    assert float((fast - full).abs().max()) <= 1e-5 * scale
    assert float((full - clean.repeat(len(top), 1)).abs().max()) > 1e-3 * scale  # the occlusion changed the scores


def test_only_the_box_a_window_reaches_is_recomputed(monkeypatch) -> None:
    model = plain_stack()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    shapes = []
    convolve = torch.nn.functional.conv2d

    def record(maps, *args, **kwargs):
        shapes.append(tuple(maps.shape))
        return convolve(maps, *args, **kwargs)

    with torch.inference_mode():
        engine = incremental_forward(model, images)
        monkeypatch.setattr(occlusion.F, "conv2d", record)
        engine(images.repeat(4, 1, 1, 1), torch.tensor([0, 4, 8, 28]), torch.tensor([0, 12, 4, 28]), (4, 4))
    # conv1 (3x3, padding 1) of a 4x4 box: the 6x6 it reaches, read from an 8x8 slab; 4 positions x 2 images
    assert shapes[0] == (8, 3, 8, 8)
    assert all(shape[-1] * shape[-2] < 32 * 32 for shape in shapes)


def test_a_model_it_cannot_trace_gets_the_full_forward_pass_and_captums_maps() -> None:
    model = Branches().eval()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    assert incremental_forward(model, images) is None
    options = {"sliding_window_shapes": (3, 4, 4), "strides": (3, 2, 2)}
    ours = attribute(model, images, "occlusion", [0, 3], **options)
    assert relative_error(ours, captum_occlusion(model, images, [0, 3], **options)) <= TOLERANCE
    assert torch.equal(ours, attribute(model, images, "occlusion", [0, 3], incremental=False, **options))


def test_a_sequential_with_a_module_of_the_users_runs_that_module_on_whole_maps() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), Branches()).eval()  # Branches: called as it is
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    assert incremental_forward(model, images) is not None
    options = {"sliding_window_shapes": (3, 4, 4), "strides": (3, 4, 4)}
    ours = attribute(model, images, "occlusion", [0, 2], **options)
    assert relative_error(ours, captum_occlusion(model, images, [0, 2], **options)) <= TOLERANCE


def test_forward_hooks_send_occlusion_to_the_full_forward_pass() -> None:
    model = plain_stack()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    seen = []
    handle = model.conv3.register_forward_hook(lambda module, args, output: seen.append(output.shape[0]))
    try:
        assert incremental_forward(model, images) is None
        attribute(model, images, "occlusion", [0, 1], sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8))
    finally:
        handle.remove()
    assert seen == [2, 8]  # the images, then 4 positions x 2 images: the hook saw every copy, whole
    global_handle = nn.modules.module.register_module_forward_pre_hook(lambda module, args: None)
    try:
        assert incremental_forward(model, images) is None
    finally:
        global_handle.remove()
    assert incremental_forward(model, images) is not None


def test_incremental_occlusion_leaves_the_model_as_found(model_untouched) -> None:
    model = resnet18().train()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    with model_untouched(model):
        attribute(model, images, "occlusion", [0, 1], sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8))
    with pytest.raises(ValueError, match="incremental must be True or False, got 'yes'"):
        attribute(model, images, "occlusion", sliding_window_shapes=(3, 8, 8), incremental="yes")


def test_basic_blocks_of_a_subclass_with_its_own_forward_are_not_traced_through() -> None:
    class Doubled(BasicBlock):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    torch.manual_seed(0)
    model = randomize_norms(ResNet(Doubled, [1, 1, 1, 1], num_classes=3), 11)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    options = {"sliding_window_shapes": (3, 8, 8), "strides": (3, 8, 8)}
    assert incremental_forward(model, images) is not None  # the stem is recomputed in part, the blocks whole
    ours = attribute(model, images, "occlusion", [0, 2], **options)
    assert relative_error(ours, captum_occlusion(model, images, [0, 2], **options)) <= TOLERANCE
