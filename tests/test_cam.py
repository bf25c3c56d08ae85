"""Grad-CAM and its variants, each checked against the published formula computed independently in the test.

The reference splits the model by hand at the hooked layer, makes that layer's activation ``A`` a leaf, runs the
rest of the network on one image at a time and calls ``.backward()`` on the target logit, so that ``A.grad`` is the
gradient of the paper. None of it goes through the package's hooks.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torchvision
from tiny import assert_within, count_hooks, float32_tolerance, make_cnn
from torch import nn

from lightning_cnnsee import GRADIENT_CAM_METHODS, grad_cam

METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"]


def split_at(model: nn.Sequential, layer: str) -> tuple[nn.Sequential, nn.Sequential]:
    """The layers up to and including ``layer``, and the layers after it."""
    names = [name for name, _ in model.named_children()]
    cut = names.index(layer) + 1
    children = list(model.named_children())
    return nn.Sequential(OrderedDict(children[:cut])), nn.Sequential(OrderedDict(children[cut:]))


def reference_activation_and_gradient(
    model: nn.Sequential, images: torch.Tensor, layer: str, targets: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``A`` (N, C, h, w) at ``layer`` and ``dy^c/dA`` for each image's own target class, one image at a time."""
    model = copy.deepcopy(model).eval()
    front, back = split_at(model, layer)
    activations, gradients = [], []
    for image, target in zip(images, targets, strict=True):
        with torch.no_grad():
            activation = front(image[None])
        activation = activation.clone().requires_grad_(True)
        # back() gets a copy: a leaf that requires grad may not go through an in-place ReLU.
        score = back(activation.clone())[0, target]
        score.backward()
        activations.append(activation.detach()[0])
        gradients.append(activation.grad[0])
    return torch.stack(activations).double(), torch.stack(gradients).double()


def reference_cam(method: str, A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """The map of each paper, written out, from A and G (N, C, h, w) in float64."""
    relu = torch.relu
    if method == "gradcam":
        # Selvaraju et al. 2017, eq. 1-2: alpha_k = 1/Z sum_ij dy/dA^k_ij; L = ReLU(sum_k alpha_k A^k).
        weights = G.sum(dim=(2, 3)) / (G.shape[2] * G.shape[3])
        return relu(torch.einsum("nk,nkij->nij", weights, A))
    if method == "gradcam++":
        # Chattopadhay et al. 2018, eq. 19 (exponential score): alpha^kc_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3),
        # 0 where the denominator is 0; w_k = sum_ij alpha^kc_ij ReLU(g_ij); L = ReLU(sum_k w_k A^k).
        total = A.sum(dim=(2, 3))[:, :, None, None]
        numerator = G**2
        denominator = 2 * G**2 + total * G**3
        alpha = torch.zeros_like(G)
        nonzero = denominator != 0
        alpha[nonzero] = numerator[nonzero] / denominator[nonzero]
        weights = (alpha * relu(G)).sum(dim=(2, 3))
        return relu(torch.einsum("nk,nkij->nij", weights, A))
    if method == "xgradcam":
        # Fu et al. 2020, eq. 9: w_k = sum_ij (A^k_ij / sum_ab A^k_ab) dy/dA^k_ij; L = ReLU(sum_k w_k A^k).
        total = A.sum(dim=(2, 3))[:, :, None, None]
        share = torch.where(total != 0, A / torch.where(total != 0, total, torch.ones_like(total)), 0.0)
        weights = (share * G).sum(dim=(2, 3))
        return relu(torch.einsum("nk,nkij->nij", weights, A))
    if method == "layercam":
        # Jiang et al. 2021, eq. 6-7: w^k_ij = ReLU(g^k_ij); L = ReLU(sum_k w^k_ij A^k_ij).
        return relu((relu(G) * A).sum(dim=1))
    if method == "hirescam":
        # Draelos & Carin 2020: L_ij = ReLU(sum_k g^k_ij A^k_ij).
        return relu((G * A).sum(dim=1))
    raise AssertionError(method)


# Terms summed on the way to a map of make_cnn: the forward pass's fan-ins (conv1 27, conv2 54, conv3 72, fc 72),
# the backward pass's as many again, then a mean over at most 6 x 6 positions and a sum over at most 8 channels.
CNN_MAP_TERMS = 2 * (27 + 54 + 72 + 72) + 36 + 8


def assert_cam_close(actual: torch.Tensor, method: str, A: torch.Tensor, G: torch.Tensor) -> None:
    """``actual`` (float32, batched) is ``reference_cam(method, A, G)`` (float64, one image at a time) up to float32's
    rounding of every sum on the way: ``float32_tolerance(CNN_MAP_TERMS, magnitude)``, with ``magnitude`` the map made
    of ``|A|`` and ``|G|`` (the sum of the absolute terms of the last step) or, where larger, the map's own top value
    (Grad-CAM++'s weights are ratios: the absolute map does not bound them)."""
    expected = reference_cam(method, A, G)
    assert actual.dtype == torch.float32
    assert actual.shape == expected.shape
    scale = float(expected.abs().max())
    assert scale > 0, "the reference map is all zero: the test would prove nothing"
    magnitude = reference_cam(method, A.abs(), G.abs()).clamp(min=scale)
    assert_within(actual, expected, float32_tolerance(CNN_MAP_TERMS) * magnitude)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("layer", ["relu2", "relu3"])
@pytest.mark.parametrize("method", METHODS)
def test_each_method_matches_its_published_formula(method: str, layer: str, images: torch.Tensor) -> None:
    model = make_cnn().train()
    targets = [0, 3, 1]
    A, G = reference_activation_and_gradient(model, images, layer, targets)
    cams = grad_cam(model, images, [layer], targets=torch.tensor(targets), method=method)
    assert list(cams) == [layer]
    assert_cam_close(cams[layer], method, A, G)


def test_the_five_reference_maps_differ_so_each_method_is_checked_on_its_own(images: torch.Tensor) -> None:
    A, G = reference_activation_and_gradient(make_cnn(), images, "relu2", [0, 3, 1])
    maps = {method: reference_cam(method, A, G) for method in METHODS}
    for i, first in enumerate(METHODS):
        for second in METHODS[i + 1 :]:
            assert not torch.allclose(maps[first], maps[second], rtol=1e-3, atol=1e-4), (first, second)


def test_gradcam_plus_plus_gives_zero_alpha_where_the_gradient_is_zero(images: torch.Tensor) -> None:
    # Behind the max-pool most gradients at relu3 are exactly 0, so the 0/0 case of alpha is exercised.
    A, G = reference_activation_and_gradient(make_cnn(), images, "relu3", [2, 2, 2])
    assert (G == 0).float().mean() > 0.5
    cams = grad_cam(make_cnn(), images, ["relu3"], targets=2, method="gradcam++")
    assert torch.isfinite(cams["relu3"]).all()
    assert_cam_close(cams["relu3"], "gradcam++", A, G)


def test_cams_are_non_negative_float32_maps_at_the_layer_resolution(images: torch.Tensor) -> None:
    model = make_cnn()
    for method in METHODS:
        cams = grad_cam(model, images, ["relu1", "relu2"], method=method)
        assert cams["relu1"].shape == (3, 12, 12) and cams["relu2"].shape == (3, 6, 6)
        for cam in cams.values():
            assert cam.dtype == torch.float32
            assert (cam >= 0).all()
            assert not cam.requires_grad


def test_int_target_equals_a_tensor_and_a_list_of_that_class(images: torch.Tensor) -> None:
    model = make_cnn()
    as_int = grad_cam(model, images, ["relu2"], targets=4)["relu2"]
    as_tensor = grad_cam(model, images, ["relu2"], targets=torch.tensor([4, 4, 4]))["relu2"]
    as_list = grad_cam(model, images, ["relu2"], targets=[4, 4, 4])["relu2"]
    assert torch.equal(as_int, as_tensor)
    assert torch.equal(as_int, as_list)
    A, G = reference_activation_and_gradient(model, images, "relu2", [4, 4, 4])
    assert_cam_close(as_int, "gradcam", A, G)


def test_no_target_means_each_images_predicted_class() -> None:
    model = make_cnn().train()
    candidates = 2 * torch.randn(32, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        classes = copy.deepcopy(model).eval()(candidates).argmax(dim=1).tolist()
    # One image per predicted class, so that "the predicted class" differs from image to image.
    images = candidates[[classes.index(c) for c in sorted(set(classes))]]
    with torch.no_grad():
        predicted = copy.deepcopy(model).eval()(images).argmax(dim=1)
    assert len(set(predicted.tolist())) == len(images) > 1
    automatic = grad_cam(model, images, ["relu2"], targets=None)["relu2"]
    explicit = grad_cam(model, images, ["relu2"], targets=predicted)["relu2"]
    assert torch.equal(automatic, explicit)
    A, G = reference_activation_and_gradient(model, images, "relu2", predicted.tolist())
    assert_cam_close(automatic, "gradcam", A, G)


def test_per_image_targets_differ_from_one_shared_target(images: torch.Tensor) -> None:
    model = make_cnn()
    shared = grad_cam(model, images, ["relu2"], targets=0, method="hirescam")["relu2"]
    per_image = grad_cam(model, images, ["relu2"], targets=[0, 1, 2], method="hirescam")["relu2"]
    assert torch.equal(per_image[0], shared[0])
    assert not torch.allclose(per_image[1], shared[1])
    assert not torch.allclose(per_image[2], shared[2])
    A, G = reference_activation_and_gradient(model, images, "relu2", [0, 1, 2])
    assert_cam_close(per_image, "hirescam", A, G)


@pytest.mark.parametrize("method", METHODS)
def test_two_layers_at_once_equal_each_layer_alone(method: str, images: torch.Tensor) -> None:
    model = make_cnn()
    together = grad_cam(model, images, ["relu1", "relu3"], targets=[1, 2, 3], method=method)
    alone_1 = grad_cam(model, images, ["relu1"], targets=[1, 2, 3], method=method)["relu1"]
    alone_3 = grad_cam(model, images, ["relu3"], targets=[1, 2, 3], method=method)["relu3"]
    assert list(together) == ["relu1", "relu3"]
    # Same passes, another set of hooks: at most float32's rounding of the map's sums (magnitude: twice its top).
    assert_within(together["relu1"], alone_1, float32_tolerance(CNN_MAP_TERMS, 2 * float(alone_1.max())))
    assert_within(together["relu3"], alone_3, float32_tolerance(CNN_MAP_TERMS, 2 * float(alone_3.max())))


def test_cam_runs_in_eval_mode_so_batchnorm_uses_running_stats_and_dropout_is_off(images: torch.Tensor) -> None:
    model = make_cnn(dropout=True).train()
    first = grad_cam(model, images, ["relu2"], targets=[0, 1, 2])["relu2"]
    second = grad_cam(model, images, ["relu2"], targets=[0, 1, 2])["relu2"]
    assert torch.equal(first, second)
    # The eval-mode reference: BatchNorm normalizes with its (random, far from 0/1) running statistics.
    A, G = reference_activation_and_gradient(model, images, "relu2", [0, 1, 2])
    assert_cam_close(first, "gradcam", A, G)
    # And a train-mode activation would be different, so the comparison above can tell the modes apart.
    front, _ = split_at(copy.deepcopy(model).train(), "relu2")
    with torch.no_grad():
        assert not torch.allclose(front(images).double(), A, atol=1e-3)


def test_mixed_training_flags_are_restored_exactly(images: torch.Tensor) -> None:
    model = make_cnn(dropout=True).train()
    model.bn2.eval()
    model.conv3.eval()
    model.drop.eval()
    before = {name: module.training for name, module in model.named_modules()}
    grad_cam(model, images, ["relu2", "relu3"], method="layercam")
    assert {name: module.training for name, module in model.named_modules()} == before
    model.eval()
    model.bn1.train()
    before = {name: module.training for name, module in model.named_modules()}
    grad_cam(model, images, ["relu2"])
    assert {name: module.training for name, module in model.named_modules()} == before


def test_parameter_grads_are_left_exactly_as_they_were(images: torch.Tensor) -> None:
    model = make_cnn().train()
    generator = torch.Generator().manual_seed(5)
    parameters = list(model.named_parameters())
    for index, (_, parameter) in enumerate(parameters):
        if index % 2 == 0:
            parameter.grad = torch.randn(parameter.shape, generator=generator)
    before = {name: None if p.grad is None else p.grad.clone() for name, p in parameters}
    assert any(g is None for g in before.values()) and any(g is not None for g in before.values())
    for method in METHODS:
        grad_cam(model, images, ["relu1", "relu2"], targets=[0, 1, 2], method=method)
    for name, parameter in model.named_parameters():
        if before[name] is None:
            assert parameter.grad is None, name
        else:
            assert torch.equal(parameter.grad, before[name]), name


def test_batchnorm_running_statistics_are_not_updated(images: torch.Tensor) -> None:
    model = make_cnn().train()
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    assert {"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"} <= set(before)
    grad_cam(model, images, ["relu2"], method="gradcam++")
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_the_model_is_untouched_by_a_successful_call(images: torch.Tensor, model_untouched) -> None:
    model = make_cnn(dropout=True).train()
    model.bn1.eval()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    with model_untouched(model):
        grad_cam(model, images, ["relu2", "relu3"], method="xgradcam")


def test_no_hooks_remain_after_success_and_after_errors(images: torch.Tensor, model_untouched) -> None:
    model = make_cnn(dropout=True).train()
    model.conv2.eval()
    hooks_before = count_hooks(model)
    grad_cam(model, images, ["relu1", "relu2"])
    assert count_hooks(model) == hooks_before
    with model_untouched(model):
        with pytest.raises(ValueError, match="out of range"):
            grad_cam(model, images, ["relu1", "relu2"], targets=99)
    with model_untouched(model):
        with pytest.raises(ValueError, match="out of range"):
            grad_cam(model, images, ["relu2"], targets=[0, -1, 2])
    with model_untouched(model):
        with pytest.raises(ValueError, match="3 images"):
            grad_cam(model, images, ["relu2"], targets=[0, 1])
    with model_untouched(model):
        with pytest.raises(ValueError, match="'flatten'"):
            grad_cam(model, images, ["relu2", "flatten"])
    with model_untouched(model):
        with pytest.raises(ValueError, match="'relu9'"):
            grad_cam(model, images, ["relu2", "relu9"])
    assert count_hooks(model) == hooks_before


def test_output_key_finds_the_logits_in_a_dict_output(images: torch.Tensor) -> None:
    class DictOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_cnn()

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            logits = self.net(x)
            return {"probabilities": logits.softmax(dim=1), "scores": logits}

    model = DictOutput()
    keyed = grad_cam(model, images, ["net.relu2"], targets=[0, 3, 1], output_key="scores")["net.relu2"]
    A, G = reference_activation_and_gradient(model.net, images, "relu2", [0, 3, 1])
    assert_cam_close(keyed, "gradcam", A, G)
    with pytest.raises(TypeError, match="'probabilities', 'scores'"):
        grad_cam(model, images, ["net.relu2"], output_key="logits")
    assert count_hooks(model) == 0


def test_a_layer_whose_output_is_not_4d_is_named_in_the_error(images: torch.Tensor) -> None:
    with pytest.raises(ValueError) as error:
        grad_cam(make_cnn(), images, ["fc"])
    assert "'fc'" in str(error.value)
    assert "(3, 5)" in str(error.value)


def test_unknown_method_lists_the_valid_choices(images: torch.Tensor) -> None:
    model = make_cnn()
    with pytest.raises(ValueError) as error:
        grad_cam(model, images, ["relu2"], method="gradcam+")
    message = str(error.value)
    assert "'gradcam+'" in message
    for method in METHODS:
        assert repr(method) in message
    assert sorted(GRADIENT_CAM_METHODS) == sorted(METHODS)
    assert count_hooks(model) == 0


def test_works_inside_no_grad_and_leaves_it_on(images: torch.Tensor) -> None:
    model = make_cnn()
    expected = grad_cam(model, images, ["relu2"], targets=[0, 1, 2], method="gradcam++")["relu2"]
    with torch.no_grad():
        inside = grad_cam(model, images, ["relu2"], targets=[0, 1, 2], method="gradcam++")["relu2"]
        assert not torch.is_grad_enabled()
    assert torch.equal(inside, expected)


def test_works_inside_inference_mode_with_images_made_outside_it(images: torch.Tensor) -> None:
    model = make_cnn()
    expected = grad_cam(model, images, ["relu2"], targets=[0, 1, 2], method="layercam")["relu2"]
    with torch.inference_mode():
        inside = grad_cam(model, images, ["relu2"], targets=[0, 1, 2], method="layercam")["relu2"]
        assert torch.is_inference_mode_enabled()
    assert torch.equal(inside, expected)


def test_works_inside_inference_mode_with_images_made_inside_it(images: torch.Tensor) -> None:
    model = make_cnn()
    expected = grad_cam(model, images, ["relu2"], targets=[0, 1, 2])["relu2"]
    with torch.inference_mode():
        batch = images.clone()  # an inference tensor, like a Lightning validation batch moved to the device
        assert batch.is_inference()
        inside = grad_cam(model, batch, ["relu2"], targets=[0, 1, 2])["relu2"]
    assert torch.equal(inside.clone(), expected)


@pytest.mark.parametrize("method", METHODS)
def test_an_in_place_relu_after_the_hooked_layer_does_not_corrupt_the_map(method: str, images: torch.Tensor) -> None:
    # Every ReLU is in place, so each conv / BatchNorm output is overwritten right after it is hooked.
    model = make_cnn(inplace=True)
    for layer in ["bn2", "conv3"]:
        A, G = reference_activation_and_gradient(model, images, layer, [0, 3, 1])
        assert (A < 0).any(), "the hooked output must have negative values that the in-place ReLU would erase"
        cams = grad_cam(model, images, [layer], targets=[0, 3, 1], method=method)
        assert_cam_close(cams[layer], method, A, G)


def test_resnet18_gives_maps_at_layer3_and_layer4_resolution() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)  # random weights, nothing downloaded
    images = torch.rand(2, 3, 64, 64)
    cams = grad_cam(model, images, ["layer3", "layer4"], targets=[3, 7])
    assert cams["layer3"].shape == (2, 4, 4)
    assert cams["layer4"].shape == (2, 2, 2)
    assert all(cam.dtype == torch.float32 and (cam >= 0).all() for cam in cams.values())
    # After layer4 comes only global average pooling and fc, so dy^c/dA^k_ij = fc.weight[c, k] / (h w) and
    # Grad-CAM at layer4 is ReLU(sum_k fc.weight[c, k] / (h w) * A^k): checkable by hand.
    model.eval()
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        A = model.layer4(model.layer3(model.layer2(model.layer1(x))))
        weights = model.fc.weight[[3, 7]] / 4
        expected = torch.relu(torch.einsum("nk,nkij->nij", weights, A))
        # the same forward pass; then a mean of 4 gradients and a sum over 512 channels, of |w| |A| at most
        magnitude = torch.einsum("nk,nkij->nij", weights.abs(), A.abs())
    assert_within(cams["layer4"], expected, float32_tolerance(512 + 4) * magnitude)


def test_several_target_sets_share_one_forward_pass_and_equal_separate_calls():
    from lightning_cnnsee.explain.cam import cams_for_targets

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)
    )
    images = torch.rand(3, 3, 10, 10)
    labels = torch.tensor([2, 0, 3])
    forwards = []
    handle = model.register_forward_hook(lambda module, args, output: forwards.append(1))
    (predicted, true), logits = cams_for_targets(model, images, ["1"], [None, labels])
    handle.remove()
    assert len(forwards) == 1
    assert torch.equal(logits, model(images).detach())
    torch.testing.assert_close(predicted["1"], grad_cam(model, images, ["1"], targets=None)["1"])
    torch.testing.assert_close(true["1"], grad_cam(model, images, ["1"], targets=labels)["1"])
    assert not torch.allclose(predicted["1"], true["1"])


def test_layers_before_the_first_cam_layer_record_no_autograd_graph(images: torch.Tensor) -> None:
    model = make_cnn()
    seen = {}

    def note(name):
        def hook(module, args, output):
            seen[name] = (torch.is_grad_enabled(), output.grad_fn is not None)

        return hook

    handles = [getattr(model, name).register_forward_hook(note(name)) for name in ("conv1", "conv2", "conv3")]
    try:
        grad_cam(model, images, ["relu2"])
    finally:
        for handle in handles:
            handle.remove()
    # conv1 and conv2 come before relu2: as under no_grad. conv3, after it, builds the graph the CAM needs.
    assert seen == {"conv1": (False, False), "conv2": (False, False), "conv3": (True, True)}
    assert torch.is_grad_enabled()
