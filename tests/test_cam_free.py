"""Gradient-free CAMs (Score-CAM, Ablation-CAM, Eigen-CAM), each checked against its peer library.

Score-CAM against torchcam's ``ScoreCAM`` (``normalized=False``: its raw map), Ablation-CAM and Eigen-CAM against
pytorch-grad-cam's per-layer map before its min-max scaling and resizing (``BaseCAM.get_cam_image`` after the same
``np.maximum(cam, 0)``), and against its final output after the same scaling. Every peer runs on its own deep copy
of the model (pytorch-grad-cam leaves the model in eval mode).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from tiny import (
    absolute_forward,
    assert_maps_close,
    assert_within,
    count_hooks,
    float32_tolerance,
    grad_cam_library_raw,
    make_cnn,
    path_terms,
    torchcam_scorecam,
)
from torch import nn

from lightning_cnnsee import GRADIENT_CAM_METHODS
from lightning_cnnsee.explain.cam import (
    ALL_CAM_METHODS,
    GRADIENT_FREE_CAM_METHODS,
    cam,
    cams_for_targets,
    check_cam_method,
    grad_cam,
)

pytest.importorskip("torchcam")
pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam import AblationCAM, EigenCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection  # noqa: E402

FREE_METHODS = ["scorecam", "ablationcam", "eigencam"]


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def resnet18(seed: int = 0, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=num_classes)  # random weights, nothing downloaded


def grad_cam_library_output(cam_class, model: nn.Module, layer: str, images: torch.Tensor, targets, **kwargs):
    """pytorch-grad-cam's final output: min-max scaled, resized to the input, scaled again."""
    model = copy.deepcopy(model)
    extractor = cam_class(model=model, target_layers=[dict(model.named_modules())[layer]], **kwargs)
    try:
        return torch.from_numpy(extractor(input_tensor=images, targets=targets))
    finally:
        extractor.activations_and_grads.release()


def scale_like_grad_cam_library(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``scale_cam_image`` twice, as ``BaseCAM`` does for one layer: min-max, bilinear resize (cv2), min-max."""

    def minmax(x: torch.Tensor) -> torch.Tensor:
        x = x - x.flatten(1).amin(dim=1)[:, None, None]
        return x / (1e-7 + x.flatten(1).amax(dim=1)[:, None, None])

    resized = F.interpolate(minmax(maps)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return minmax(resized)


def activations_of(model: nn.Module, images: torch.Tensor, layer: str) -> np.ndarray:
    model = copy.deepcopy(model).eval()
    seen = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, o: seen.append(o.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    return seen[0].numpy()


def score_amplification(model: nn.Module, images: torch.Tensor, targets) -> float:
    """How much Ablation-CAM's weights ``(y - y_k) / y`` magnify the rounding of a score: the largest logit over the
    smallest target score."""
    with torch.no_grad():
        logits = copy.deepcopy(model).eval()(images)
    chosen = logits[torch.arange(len(images)), torch.as_tensor(targets)]
    return float(logits.abs().max() / chosen.abs().min())


def gap_amplification(activations: np.ndarray) -> float:
    """How much Eigen-CAM's first singular vector magnifies rounding: ``sigma_1 / (sigma_1 - sigma_2)`` at worst over
    the images (Davis-Kahan: the vector moves by the perturbation over the gap)."""
    batch, channels = activations.shape[:2]
    centred = torch.from_numpy(activations).double().flatten(2).transpose(1, 2)
    sigma = torch.linalg.svdvals(centred - centred.mean(dim=1, keepdim=True))
    return float((sigma[:, 0] / (sigma[:, 0] - sigma[:, 1])).max())


# Score-CAM


@pytest.mark.parametrize("layer", ["relu2", "relu3"])
def test_scorecam_equals_torchcam_on_a_small_cnn(layer: str, images: torch.Tensor) -> None:
    model = make_cnn().train()
    targets = [0, 3, 1]
    ours = grad_cam(model, images, [layer], targets=targets, method="scorecam")[layer]
    assert_maps_close(ours, torchcam_scorecam(model, images, layer, targets), model)


def test_scorecam_equals_torchcam_on_resnet18() -> None:
    model = resnet18()
    images = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    ours = cam(model, images, ["layer4"], targets=[7], method="scorecam")["layer4"]
    assert ours.shape == (1, 2, 2)
    assert_maps_close(ours, torchcam_scorecam(model, images, "layer4", [7]), model)


def test_scorecam_scores_equal_and_blank_masks_once_and_still_equals_torchcam(images: torch.Tensor) -> None:
    # conv3's channel 1 copies channel 0 (equal masks), channels 2 and 3 are dead after the ReLU (blank masks).
    model = make_cnn()
    with torch.no_grad():
        model.conv3.weight[1] = model.conv3.weight[0]
        model.conv3.bias[1] = model.conv3.bias[0]
        model.conv3.weight[2:4] = 0
        model.conv3.bias[2:4] = -1
    rows = []
    handle = model.conv1.register_forward_hook(lambda m, a, o: rows.append(o.shape[0]))
    ours = grad_cam(model, images, ["relu3"], targets=[2, 0, 4], method="scorecam", batch_size=1000)["relu3"]
    handle.remove()
    # One recording forward of 3 images, at most 3 x 5 distinct non-blank masks, and one black image.
    assert rows[0] == 3 and rows[-1] == 1 and sum(rows[1:-1]) <= 3 * 5
    assert_maps_close(ours, torchcam_scorecam(model, images, "relu3", [2, 0, 4]), model)


# Ablation-CAM


@pytest.mark.parametrize("layer", ["relu2", "relu3"])
def test_ablationcam_equals_pytorch_grad_cam_on_a_small_cnn(layer: str, images: torch.Tensor) -> None:
    model = make_cnn().train()
    targets = [0, 3, 1]
    ours = grad_cam(model, images, [layer], targets=targets, method="ablationcam")[layer]
    theirs = grad_cam_library_raw(AblationCAM, model, layer, images, [ClassifierOutputTarget(t) for t in targets])
    assert_maps_close(ours, theirs, model, score_amplification(model, images, targets))


def test_ablationcam_equals_pytorch_grad_cam_on_resnet18_also_after_its_scaling() -> None:
    model = resnet18()
    images = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    targets = [ClassifierOutputTarget(7)]
    ours = cam(model, images, ["layer4"], targets=[7], method="ablationcam")["layer4"]
    amplification = score_amplification(model, images, [7])
    assert_maps_close(ours, grad_cam_library_raw(AblationCAM, model, "layer4", images, targets), model, amplification)
    final = grad_cam_library_output(AblationCAM, model, "layer4", images, targets)
    # min-max scaling divides by the map's range (>= its top here): the same bound relative to 1; cv2's bilinear
    # resize adds a rounding of its own (4 terms).
    scaled = scale_like_grad_cam_library(ours, (48, 48))
    top = float(ours.max())
    bound = float32_tolerance(path_terms(model) + 4 + 4 + 512, 2 * amplification) * max(1.0, 1 / top) + 1e-7 / top
    assert_within(scaled, final, bound)


def test_ablationcam_zeroes_each_channel_also_where_the_layer_has_negative_values(images: torch.Tensor) -> None:
    # bn2 has negative outputs, where pytorch-grad-cam would ablate to min - 1e7: the reference is written out here.
    # Ablation-CAM (Desai and Ramaswamy 2020, eq. 2): w_k = (y_c - y_c^k) / y_c, y_c^k with A_k = 0.
    model = make_cnn().eval()
    targets = torch.tensor([1, 4, 2])
    with torch.no_grad():
        front = nn.Sequential(model.conv1, model.bn1, model.relu1, model.conv2, model.bn2)
        back = nn.Sequential(model.relu2, model.conv3, model.relu3, model.pool, model.flatten, model.fc)
        A = front(images)
        assert (A < 0).any()
        y = back(A).gather(1, targets[:, None])
        weights = torch.zeros(3, A.shape[1])
        for k in range(A.shape[1]):
            ablated = A.clone()
            ablated[:, k] = 0
            weights[:, k] = ((y - back(ablated).gather(1, targets[:, None])) / y)[:, 0]
        expected = torch.relu(torch.einsum("nk,nkij->nij", weights, A))
    ours = grad_cam(model, images, ["bn2"], targets=targets, method="ablationcam", batch_size=3)["bn2"]
    assert_maps_close(ours, expected, model, score_amplification(model, images, targets))


class Residual(nn.Module):
    """stem -> [conv, relu] -> conv, plus the stem's output added back (skip across the CAM layer ``relu``), or
    concatenated to it with ``concatenate=True``."""

    def __init__(self, concatenate: bool = False) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.concatenate = concatenate
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(12 if concatenate else 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.stem(x)
        y = self.conv2(self.relu(self.conv(x0)))
        joined = torch.cat([y, x0], dim=1) if self.concatenate else y + x0
        return self.fc(joined.mean(dim=(2, 3)))


def test_ablated_passes_run_the_layers_before_the_cam_layer_on_one_image(images: torch.Tensor) -> None:
    model = make_cnn()
    before, after = [], []
    handles = [
        model.conv1.register_forward_hook(lambda m, a, o: before.append(o.shape[0])),
        model.fc.register_forward_hook(lambda m, a, o: after.append(o.shape[0])),
    ]
    grad_cam(model, images, ["relu3"], targets=[0, 1, 2], method="ablationcam", batch_size=3)
    for handle in handles:
        handle.remove()
    assert before[0] == after[0] == 3  # the recording forward
    assert set(before[1:]) == {1} and set(after[1:]) <= {1, 2, 3} and sum(after[1:]) <= 3 * 8
    assert len(before) == len(after)


@pytest.mark.parametrize("concatenate", [False, True])
def test_ablationcam_with_a_skip_across_the_layer_equals_pytorch_grad_cam(concatenate: bool, images) -> None:
    # An addition broadcasts the one image's skip over the ablated copies; a concatenation cannot, and the image is
    # repeated instead. Both give pytorch-grad-cam's maps, which always repeats the image.
    model = Residual(concatenate)
    targets = [2, 0, 4]
    ours = grad_cam(model, images, ["relu"], targets=targets, method="ablationcam", batch_size=4)["relu"]
    theirs = grad_cam_library_raw(AblationCAM, model, "relu", images, [ClassifierOutputTarget(t) for t in targets])
    assert_maps_close(ours, theirs, model, score_amplification(model, images, targets))


# Eigen-CAM


def oriented_projection(activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-grad-cam's ``get_2d_projection`` written out in numpy, with the first right singular vector oriented
    so that its loadings sum to >= 0; also whether numpy's SVD already returned that orientation, per image."""
    projections, numpy_sign_kept = [], []
    for activation in activations:
        centred = activation.reshape(activation.shape[0], -1).T
        centred = centred - centred.mean(axis=0)
        first = np.linalg.svd(centred, full_matrices=True)[2][0]
        numpy_sign_kept.append(first.sum() >= 0)
        projections.append((centred @ (first if first.sum() >= 0 else -first)).reshape(activation.shape[1:]))
    return np.float32(projections), np.array(numpy_sign_kept)


@pytest.mark.parametrize(
    ("model_name", "layer"), [("cnn", "relu2"), ("cnn", "relu3"), ("resnet", "layer3"), ("resnet", "layer4")]
)
def test_eigencam_is_pytorch_grad_cams_projection_with_the_documented_sign(model_name: str, layer: str) -> None:
    if model_name == "cnn":
        model, images = make_cnn(), torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    else:
        model, images = resnet18(), torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    ours = cam(model, images, [layer], method="eigencam")[layer]
    activations = activations_of(model, images, layer)
    projection, _ = oriented_projection(activations)
    amplification = gap_amplification(activations)
    assert_maps_close(ours, torch.relu(torch.from_numpy(projection)), model, amplification)
    # pytorch-grad-cam's own projection is the same up to its sign, which numpy's SVD picks.
    plain = torch.from_numpy(get_2d_projection(activations))
    for expected, theirs in zip(torch.from_numpy(projection), plain, strict=True):
        scale = float(expected.abs().max())
        bound = float32_tolerance(path_terms(model), 2 * scale * amplification)
        assert any(bool(((theirs - sign * expected).abs() <= bound).all()) for sign in (1, -1))


def test_eigencam_equals_pytorch_grad_cams_eigencam_wherever_numpy_picked_the_same_sign() -> None:
    model = resnet18()
    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    ours = scale_like_grad_cam_library(cam(model, images, ["layer3"], method="eigencam")["layer3"], (64, 64))
    theirs = grad_cam_library_output(EigenCAM, model, "layer3", images, None)
    activations = activations_of(model, images, "layer3")
    _, numpy_sign_kept = oriented_projection(activations)
    assert numpy_sign_kept.mean() >= 0.5  # "the sign numpy returned for most maps measured"
    # Scaled to [0, 1] by both: the SVD's bound relative to 1 (over the map's range), plus cv2's 4-term resize.
    bound = float32_tolerance(path_terms(model) + 4, 2 * gap_amplification(activations))
    for index in np.flatnonzero(numpy_sign_kept):
        top = float(ours[index].max() - ours[index].min())
        assert_within(ours[index], theirs[index], bound / min(top, 1.0))


def test_eigencam_is_the_same_for_every_target(images: torch.Tensor) -> None:
    (first, second), _ = cams_for_targets(make_cnn(), images, ["relu2"], [None, [4, 4, 4]], "eigencam")
    assert torch.equal(first["relu2"], second["relu2"])


# Shared behaviour


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_batch_size_does_not_change_the_maps(method: str, images: torch.Tensor) -> None:
    model = make_cnn()
    maps = [
        grad_cam(model, images, ["relu2"], targets=[1, 2, 3], method=method, batch_size=size)["relu2"]
        for size in (1, 5, 1000)
    ]
    # Each score y (conv3, then fc: 72 + 72 products) moves by float32_tolerance(144, |terms|) with the batch's
    # kernels; a weight divides it by |y| (Ablation-CAM, y_k - y) or is a softmax of it (Score-CAM, factor <= 1);
    # the map sums |w_k| |A_k| over the channels.
    tail = nn.Sequential(*list(model.children())[6:]).eval()  # conv3 .. fc
    activation = nn.Sequential(*list(model.children())[:6]).eval()(images).detach()
    logits = model.eval()(images).detach()[torch.arange(3), [1, 2, 3]]
    magnitude = absolute_forward(tail, activation).amax(dim=1)
    amplified = magnitude / logits.abs() if method == "ablationcam" else magnitude
    bound = float32_tolerance(144) * amplified[:, None, None] * activation.abs().sum(dim=1)
    assert float(bound.max()) < 0.25 * float(maps[0].max())  # loose (worst case), yet a wrong weight exceeds it
    for other in maps[1:]:
        assert bool(((other - maps[0]).abs() <= bound).all()), float(((other - maps[0]).abs() - bound).max())


@pytest.mark.parametrize("method", FREE_METHODS)
def test_target_sets_share_the_masked_forward_passes_and_equal_separate_calls(method: str, images) -> None:
    model = make_cnn()
    labels = torch.tensor([2, 0, 3])
    calls = []
    handle = model.register_forward_hook(lambda m, a, o: calls.append(1))
    (predicted, true), logits = cams_for_targets(model, images, ["relu2", "relu3"], [None, labels], method)
    together = len(calls)
    alone_predicted = grad_cam(model, images, ["relu2", "relu3"], targets=None, method=method)
    alone_true = grad_cam(model, images, ["relu2", "relu3"], targets=labels, method=method)
    handle.remove()
    assert together * 3 == len(calls)  # the two separate calls took twice the forward passes of the joint one
    torch.testing.assert_close(logits, make_cnn().eval()(images).detach())
    for layer in ["relu2", "relu3"]:
        torch.testing.assert_close(predicted[layer], alone_predicted[layer])
        torch.testing.assert_close(true[layer], alone_true[layer])
        assert predicted[layer].shape == (3, 6, 6)
    if method != "eigencam":
        assert not torch.allclose(predicted["relu2"], true["relu2"])


@pytest.mark.parametrize("method", FREE_METHODS)
def test_maps_are_non_negative_float32_ordinary_tensors(method: str, images: torch.Tensor) -> None:
    with torch.inference_mode():
        batch = images.clone()
        maps = grad_cam(make_cnn(), batch, ["relu1", "relu2"], method=method)
        assert torch.is_inference_mode_enabled()
    for layer, shape in [("relu1", (3, 12, 12)), ("relu2", (3, 6, 6))]:
        assert maps[layer].shape == shape and maps[layer].dtype == torch.float32
        assert (maps[layer] >= 0).all() and maps[layer].max() > 0
        assert not maps[layer].is_inference() and not maps[layer].requires_grad
        maps[layer].add_(1)  # usable in place outside inference mode
    with torch.no_grad():
        grad_cam(make_cnn(), images, ["relu2"], method=method)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("method", FREE_METHODS)
def test_an_in_place_relu_after_the_layer_does_not_change_the_maps(method: str, images: torch.Tensor) -> None:
    expected = grad_cam(make_cnn(), images, ["bn2", "conv3"], targets=[0, 3, 1], method=method)
    actual = grad_cam(make_cnn(inplace=True), images, ["bn2", "conv3"], targets=[0, 3, 1], method=method)
    for layer in ["bn2", "conv3"]:
        torch.testing.assert_close(actual[layer], expected[layer])


class FailsOnLargeBatches(nn.Module):
    """Identity for the recording forward (3 images); raises in the masked or ablated passes (more rows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 3:
            raise RuntimeError("boom in a masked forward pass")
        return x


@pytest.mark.parametrize("method", FREE_METHODS)
def test_the_model_is_untouched_after_success_and_after_errors(method: str, images, model_untouched) -> None:
    model = make_cnn(dropout=True).train()
    model.bn1.eval()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    with model_untouched(model):
        grad_cam(model, images, ["relu2", "relu3"], method=method)
    for bad, match in [
        (dict(targets=99), "out of range"),
        (dict(targets=[0, 1]), "3 images"),
        (dict(layers=["relu2", "flatten"]), "'flatten'"),
        (dict(layers=["relu9"]), "'relu9'"),
        (dict(batch_size=0), "batch_size must be a positive int, got 0"),
    ]:
        arguments = dict(layers=["relu2"], method=method) | bad
        with model_untouched(model):
            with pytest.raises(ValueError, match=match):
                grad_cam(model, images, **arguments)
    if method != "eigencam":  # Eigen-CAM runs no further forward pass
        model.relu3 = nn.Sequential(nn.ReLU(), FailsOnLargeBatches())
        with model_untouched(model):
            with pytest.raises(RuntimeError, match="boom"):
                grad_cam(model, images, ["relu2"], method=method, batch_size=4)
    assert count_hooks(model) == 0


def test_parameter_grads_and_batchnorm_statistics_are_left_as_they_were(images: torch.Tensor) -> None:
    model = make_cnn().train()
    model.conv1.weight.grad = torch.randn_like(model.conv1.weight)
    grad = model.conv1.weight.grad
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    for method in FREE_METHODS:
        grad_cam(model, images, ["relu2"], method=method)
    assert model.conv1.weight.grad is grad and model.conv2.weight.grad is None
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_check_cam_method_accepts_every_method_and_names_them_all_otherwise(images: torch.Tensor) -> None:
    assert sorted(GRADIENT_CAM_METHODS) == sorted(["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"])
    assert sorted(GRADIENT_FREE_CAM_METHODS) == sorted(FREE_METHODS)
    attention = {"gradient_rollout", "attention_rollout"}
    assert set(ALL_CAM_METHODS) == set(GRADIENT_CAM_METHODS) | set(FREE_METHODS) | attention
    for method in ALL_CAM_METHODS:
        assert check_cam_method(method) == method
    with pytest.raises(ValueError) as error:
        grad_cam(make_cnn(), images, ["relu2"], method="score-cam")
    assert "'score-cam'" in str(error.value)
    for method in ALL_CAM_METHODS:
        assert repr(method) in str(error.value)
