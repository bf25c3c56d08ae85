"""CAMs beyond single-label classification: segmentation and multi-label models, and the model-kind rule.

Segmentation maps are checked against pytorch-grad-cam with ``SemanticSegmentationTarget(class, predicted mask)``
(its GradCAM and AblationCAM) and torchcam's ScoreCAM given the same target as a callable; multi-label maps against
pytorch-grad-cam with ``ClassifierOutputTarget(label)`` per (image, label) pair.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, SemanticSegmentationTarget
from tiny import assert_maps_close, count_hooks, grad_cam_library_raw, torchcam_scorecam
from torch import nn

from lightning_cnnsee.explain.cam import cam, cams_for_targets, grad_cam
from lightning_cnnsee.explain.layers import select_output
from lightning_cnnsee.explain.targets import (
    class_scores,
    model_kind,
    multilabel_targets,
    resolve_targets,
    score_function,
    segmentation_scores,
)

NUM_CLASSES = 4


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class TinySegmenter(nn.Module):
    """conv-BN-ReLU, strided conv-ReLU, a 1x1 classifier, bilinear upsampling back to the input: (N, 4, H, W).

    With ``dict_output=True`` it returns ``{"out": scores, "aux": ...}`` as torchvision's segmentation models do.
    """

    def __init__(self, dict_output: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.dict_output = dict_output
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Conv2d(8, NUM_CLASSES, 1)
        with torch.no_grad():  # strong, centred class weights: several classes are predicted in every image
            self.classifier.weight.normal_(0.0, 2.0)
            self.classifier.weight.sub_(self.classifier.weight.mean(dim=0, keepdim=True))
            self.classifier.bias.zero_()

    def forward(self, x: torch.Tensor):
        scores = F.interpolate(
            self.classifier(self.backbone(x)), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return {"out": scores, "aux": scores.detach() * 0} if self.dict_output else scores


class OutOnly(nn.Module):
    """What pytorch-grad-cam's tutorial wraps a dict-returning segmentation model in."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


@pytest.fixture
def images() -> torch.Tensor:
    return 2 * torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def semantic_targets(model: nn.Module, images: torch.Tensor, classes: list[int]) -> list[SemanticSegmentationTarget]:
    """pytorch-grad-cam's targets: per image, its class and the mask of pixels predicted as that class."""
    with torch.no_grad():
        predicted = copy.deepcopy(model).eval()(images).argmax(dim=1).numpy()
    return [SemanticSegmentationTarget(c, np.float32(p == c)) for c, p in zip(classes, predicted, strict=True)]


def target_amplification(model: nn.Module, images: torch.Tensor, targets) -> float:
    """How much Ablation-CAM's ``(y - y_k) / y`` magnifies the rounding of pytorch-grad-cam's target scores ``y``: the
    sum of the absolute terms of each score over the score, at worst."""
    with torch.no_grad():
        outputs = select_output(copy.deepcopy(model).eval()(images))
    ratios = []
    for target, output in zip(targets, outputs, strict=True):
        score = float(target(output))
        magnitude = float(target(output.abs())) if hasattr(target, "mask") else float(output.abs().max())
        ratios.append(magnitude / abs(score))
    return max(ratios)


def runner_up_classes(model: nn.Module, images: torch.Tensor) -> list[int]:
    """Per image, the class predicted on the second most pixels: a non-empty mask, and not the default target."""
    with torch.no_grad():
        predicted = select_output(copy.deepcopy(model).eval()(images)).argmax(dim=1)
    classes = []
    for p in predicted:
        counts = torch.bincount(p.flatten(), minlength=NUM_CLASSES)
        assert (counts > 0).sum() >= 2, "the test needs two predicted classes per image"
        classes.append(int(counts.argsort(descending=True)[1]))
    return classes


# Segmentation


@pytest.mark.parametrize("dict_output", [False, True])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_segmentation_cams_equal_pytorch_grad_cam_with_semantic_segmentation_targets(
    method: str, dict_output: bool, images: torch.Tensor
) -> None:
    model = TinySegmenter(dict_output).train()
    classes = runner_up_classes(model, images)
    plain = OutOnly(model) if dict_output else model
    targets = semantic_targets(plain, images, classes)
    assert all(target.mask.sum() > 0 for target in targets), "each class must be predicted somewhere"
    prefix = "model." if dict_output else ""
    cam_class = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM}[method]
    theirs = grad_cam_library_raw(cam_class, plain, prefix + "backbone.4", images, targets)
    ours = grad_cam(model, images, ["backbone.4"], targets=classes, method=method)["backbone.4"]
    assert ours.shape == (3, 8, 8)
    assert_maps_close(ours, theirs, model)


def test_segmentation_ablationcam_equals_pytorch_grad_cam(images: torch.Tensor) -> None:
    model = TinySegmenter()
    classes = runner_up_classes(model, images)
    targets = semantic_targets(model, images, classes)
    theirs = grad_cam_library_raw(AblationCAM, model, "backbone.2", images, targets)
    ours = cam(model, images, ["backbone.2"], targets=classes, method="ablationcam", kind="segmentation")
    assert_maps_close(ours["backbone.2"], theirs, model, target_amplification(model, images, targets))


def test_segmentation_scorecam_equals_torchcam_with_the_same_target(images: torch.Tensor) -> None:
    model = TinySegmenter(dict_output=True)
    classes = runner_up_classes(model, images)
    targets = semantic_targets(OutOnly(model), images, classes)
    theirs = torchcam_scorecam(OutOnly(model), images, "model.backbone.4", targets)
    ours = cam(model, images, ["backbone.4"], targets=classes, method="scorecam")["backbone.4"]
    assert_maps_close(ours, theirs, model)


def test_segmentation_score_is_the_class_output_summed_over_its_predicted_pixels() -> None:
    scores = torch.randn(3, NUM_CLASSES, 5, 6, generator=torch.Generator().manual_seed(3))
    classes = torch.tensor([0, 3, 1])
    predicted = scores.argmax(dim=1)
    expected = [
        sum(float(scores[n, c, i, j]) for i in range(5) for j in range(6) if predicted[n, i, j] == c)
        for n, c in enumerate(classes.tolist())
    ]
    torch.testing.assert_close(segmentation_scores(scores, classes), torch.tensor(expected))
    pytorch_grad_cam = [
        float(t(s))
        for t, s in zip(
            [
                SemanticSegmentationTarget(c, np.float32(p == c).copy())
                for c, p in zip(classes.tolist(), predicted.numpy(), strict=True)
            ],
            scores,
            strict=False,
        )
    ]
    torch.testing.assert_close(segmentation_scores(scores, classes), torch.tensor(pytorch_grad_cam))
    # The mask stays the one of the unperturbed output when the score is read from another forward pass.
    score = score_function(scores, classes, "segmentation")
    other = torch.randn(3, NUM_CLASSES, 5, 6, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(score(other), (other[torch.arange(3), classes] * score.masks).sum(dim=(1, 2)))


def test_segmentation_without_targets_explains_the_class_predicted_on_the_most_pixels(images) -> None:
    model = TinySegmenter()
    with torch.no_grad():
        predicted = model.eval()(images).argmax(dim=1)
    most = torch.tensor([int(torch.bincount(p.flatten(), minlength=NUM_CLASSES).argmax()) for p in predicted])
    automatic = grad_cam(model, images, ["backbone.4"])["backbone.4"]
    explicit = grad_cam(model, images, ["backbone.4"], targets=most)["backbone.4"]
    assert torch.equal(automatic, explicit)


def test_segmentation_targets_are_checked_against_the_number_of_classes_not_the_width(images) -> None:
    model = TinySegmenter()
    with pytest.raises(ValueError, match="out of range: the model has 4 classes"):
        grad_cam(model, images, ["backbone.4"], targets=5)  # 5 < width 16, but there are 4 classes
    assert count_hooks(model) == 0


def test_a_kind_that_does_not_fit_the_scores_says_which_would(images: torch.Tensor, model_untouched) -> None:
    model = TinySegmenter()
    with model_untouched(model):
        with pytest.raises(ValueError, match=r"kind='classification' expects .*\(3, 4, 16, 16\).*'segmentation'"):
            grad_cam(model, images, ["backbone.4"], targets=1, kind="classification")
    with model_untouched(model):
        with pytest.raises(
            ValueError,
            match=r"Unknown model kind 'semantic'.*'classification', 'multilabel', "
            r"'segmentation'",
        ):
            grad_cam(model, images, ["backbone.4"], kind="semantic", method="scorecam")


# Multi-label


def make_multilabel(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


@pytest.mark.parametrize("method", ["gradcam", "ablationcam"])
def test_multilabel_maps_per_predicted_or_true_label_equal_pytorch_grad_cam(method: str, images) -> None:
    model = make_multilabel()
    with torch.no_grad():
        logits = model(images)
    labels = torch.tensor([[1, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 1, 1, 0, 0]])
    assert model_kind(logits, labels) == "multilabel"
    image_index, label_index = multilabel_targets(logits, labels)
    expected_pairs = sorted(
        {(n, k) for n in range(3) for k in range(5) if torch.sigmoid(logits[n, k]) > 0.5 or labels[n, k] == 1}
    )
    assert list(zip(image_index.tolist(), label_index.tolist(), strict=True)) == expected_pairs
    assert len(expected_pairs) > 3
    ours = cam(model, images[image_index], ["3"], targets=label_index, method=method, kind="multilabel")["3"]
    cam_class = {"gradcam": GradCAM, "ablationcam": AblationCAM}[method]
    theirs = grad_cam_library_raw(
        cam_class, model, "3", images[image_index], [ClassifierOutputTarget(int(k)) for k in label_index]
    )
    targets = [ClassifierOutputTarget(int(k)) for k in label_index]
    amplification = target_amplification(model, images[image_index], targets) if method == "ablationcam" else 1
    assert_maps_close(ours, theirs, model, amplification)


def test_multi_hot_targets_are_refused_with_a_pointer_to_multilabel_targets(images, model_untouched) -> None:
    model = make_multilabel()
    with model_untouched(model):
        with pytest.raises(ValueError, match=r"shape \(3, 5\).*multilabel_targets"):
            grad_cam(model, images, ["3"], targets=torch.ones(3, 5, dtype=torch.long), kind="multilabel")


def test_cams_for_targets_on_a_segmentation_model_returns_its_scores(images: torch.Tensor) -> None:
    model = TinySegmenter(dict_output=True)
    (predicted, chosen), scores = cams_for_targets(model, images, ["backbone.4"], [None, [1, 1, 1]], "scorecam")
    assert scores.shape == (3, NUM_CLASSES, 16, 16)
    torch.testing.assert_close(scores, model.eval()(images)["out"].detach())
    assert predicted["backbone.4"].shape == chosen["backbone.4"].shape == (3, 8, 8)


# The model-kind rule


def test_model_kind_follows_the_documented_rule() -> None:
    logits = torch.randn(4, 3)
    assert model_kind(logits) == "classification"
    assert model_kind(logits, torch.tensor([0, 2, 1, 1])) == "classification"
    assert model_kind((logits, None), torch.tensor([0, 2, 1, 1])) == "classification"
    for multi_hot in (
        torch.tensor([[0, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 1]]),
        torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
        torch.rand(4, 3) > 0.5,
    ):
        assert model_kind(logits, multi_hot) == "multilabel"
    assert model_kind(torch.randn(4, 3, 8, 8)) == "segmentation"
    assert model_kind({"out": torch.randn(4, 3, 8, 8), "aux": torch.randn(4, 3, 8, 8)}) == "segmentation"
    assert model_kind(torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4, 8, 8))) == "segmentation"


def test_model_kind_errors_name_the_shapes_and_values() -> None:
    logits = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"multi-hot \(only 0 and 1\).*\[0, 1, 2\]"):
        model_kind(logits, torch.tensor([[0, 1, 2], [1, 0, 0], [0, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match=r"labels of shape \(4, 2\) do not fit scores of shape \(4, 3\)"):
        model_kind(logits, torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"scores of shape \(4, 3, 8\)"):
        model_kind(torch.randn(4, 3, 8))


def test_select_output_finds_out_in_a_dict_and_the_key_it_is_given() -> None:
    out, logits = torch.randn(2, 3, 4, 4), torch.randn(2, 3)
    assert select_output({"out": out, "aux": out + 1}) is out
    assert select_output({"logits": logits, "out": out}) is logits
    assert select_output({"aux": out, "scores": logits}, "scores") is logits
    with pytest.raises(TypeError, match="Cannot find the logits"):
        select_output({"aux": out})


def test_class_scores_and_resolve_targets_for_each_kind() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, -1.0, 5.0]])
    assert class_scores(logits, torch.tensor([2, 0])).tolist() == [1.0, 2.0]
    assert resolve_targets(None, logits, "multilabel").tolist() == [1, 2]
    assert resolve_targets([0, 1], logits, "classification").tolist() == [0, 1]
    with pytest.raises(ValueError, match="2 entries for a batch of 3 images"):
        resolve_targets([0, 1], torch.zeros(3, 3, 2, 2), "segmentation")
