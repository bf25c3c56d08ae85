"""Faithfulness metrics, checked against torchcam's ``ClassificationMetric`` and ``DeletionInsertionMetric``.

torchcam computes the same four numbers averaged over a batch, from a CAM extractor it calls itself. The tests hand
it either a real torchcam ``GradCAM`` (and give ours the very maps that extractor makes) or a stand-in extractor that
returns fixed maps, so that any map (ties, NaN, attributions) can be compared. The mean of our per-image values must
equal torchcam's summary.

``trained_patch_model()`` is also the trained model of ``test_drift.py``: a tiny CNN trained for about two seconds on
images whose class is a bright patch at a class-dependent place.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch
from tiny import CAM_LAYER, PATCH_SIZE, TinyClassifier, float32_tolerance, make_loaders, path_terms, trained_patch_model
from torch import nn
from torchcam.methods import GradCAM
from torchcam.methods.core import _CAM
from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

from lightning_cnnsee import grad_cam
from lightning_cnnsee.explain.attributions import attribute
from lightning_cnnsee.explain.metrics import METRICS, faithfulness, normalize_maps, random_faithfulness, random_maps
from lightning_cnnsee.run.options import Options
from lightning_cnnsee.run.visualization import visualize

SOFTMAX = functools.partial(torch.softmax, dim=-1)


def make_cnn(seed: int = 0) -> nn.Sequential:
    """conv-BN-ReLU, strided conv-ReLU, flatten, linear: 16x16 RGB images, 5 classes; BN statistics off (0, 1)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 5),
    )  # fmt: skip
    with torch.no_grad():
        model[1].running_mean.normal_(0.0, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


class FixedMaps:
    """A stand-in for a torchcam CAM extractor that returns given maps (normalized as torchcam normalizes CAMs)."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs) -> list[torch.Tensor]:
        return [_CAM._normalize(self.maps.clone()) if normalized else self.maps.clone()]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    def _hooks_off(self):
        return contextlib.nullcontext()


def torchcam_summary(extractor, images, class_idx=None, **options) -> dict[str, float]:
    """torchcam's four numbers for ``images``: ClassificationMetric and DeletionInsertionMetric, softmax scores."""
    classification = ClassificationMetric(extractor, SOFTMAX)
    classification.update(images, class_idx)
    deletion = DeletionInsertionMetric(extractor, SOFTMAX, **options)
    deletion.update(images, class_idx)
    return {**classification.summary(), **deletion.summary()}


def faithfulness_tolerance(model: nn.Module, steps: int) -> float:
    """Float32 rounding of a faithfulness number: a forward pass (``path_terms``), a softmax (its derivative, at most
    1/4, shrinks the logits' error; their absolute terms are taken as at most 4: magnitude 1), the curve's ``steps``
    and the mean over at most 64 images, of probabilities at most 1."""
    return float32_tolerance(path_terms(model) + steps + 64)


def assert_means_equal(ours: dict[str, torch.Tensor], theirs: dict[str, float], tolerance: float) -> None:
    assert sorted(ours) == sorted(METRICS)
    for name in METRICS:
        assert ours[name].nanmean().item() == pytest.approx(theirs[name], abs=tolerance), name


@pytest.mark.parametrize(
    "class_idx, steps, baseline",
    [(None, 20, None), ([4, 0, 1, 2, 3, 4], 7, None), (2, 300, None), (None, 1, None), (None, 9, "blur")],
    ids=["predicted", "per-image-classes", "one-class-every-position", "one-step", "blurred-baseline"],
)
def test_gradcam_maps_score_as_in_torchcams_metrics(class_idx, steps, baseline) -> None:
    model = make_cnn()
    images = torch.randn(6, 3, 16, 16)
    options = {"steps": steps}
    if baseline == "blur":
        options["baseline"] = nn.functional.avg_pool2d(images, 5, stride=1, padding=2)
    with GradCAM(model, "4") as extractor:
        theirs = torchcam_summary(extractor, images, class_idx, batch_size=5, **options)
        # the very maps torchcam's metrics use (Grad-CAM of the softmax score), before its normalization
        scores = SOFTMAX(model.eval()(images))
        classes = scores.argmax(dim=1).tolist() if class_idx is None else class_idx
        maps = extractor(classes, scores, normalized=False)[0]
    ours = faithfulness(model, images, maps, class_idx, batch_size=7, **options)
    assert all(value.shape == (6,) for value in ours.values())
    assert_means_equal(ours, theirs, faithfulness_tolerance(model, 20))  # the default steps


@pytest.mark.parametrize("kind", ["ties", "input-size", "constant", "nan"])
def test_any_maps_score_as_in_torchcams_metrics(kind) -> None:
    model = make_cnn(seed=1)
    images = torch.randn(5, 3, 16, 16)
    generator = torch.Generator().manual_seed(3)
    if kind == "ties":  # three levels at 4x4: large flat regions after resizing, ranked in raster order
        maps = torch.randint(0, 3, (5, 4, 4), generator=generator).float()
    elif kind == "input-size":
        maps = torch.randn(5, 16, 16, generator=generator)
    elif kind == "constant":
        maps = torch.rand(5, 8, 8, generator=generator)
        maps[1:3] = 0.25
    else:
        maps = torch.rand(5, 8, 8, generator=generator)
        maps[2, 3, 3] = float("nan")
    theirs = torchcam_summary(FixedMaps(model, maps), images, steps=11, batch_size=32)
    ours = faithfulness(model, images, maps, steps=11)
    assert_means_equal(ours, theirs, faithfulness_tolerance(model, 11))
    if kind == "nan":
        assert all(ours[name][2].isnan() and not ours[name][[0, 1, 3, 4]].isnan().any() for name in METRICS)


def test_attributions_are_reduced_by_the_signed_sum_over_channels() -> None:
    model = make_cnn(seed=2)
    images = torch.randn(4, 3, 16, 16)
    attributions = torch.randn(4, 3, 16, 16)
    reduced = attributions.sum(dim=1)
    theirs = torchcam_summary(FixedMaps(model, reduced), images, steps=10)
    ours = faithfulness(model, images, attributions, steps=10)
    assert_means_equal(ours, theirs, faithfulness_tolerance(model, 10))
    assert torch.equal(normalize_maps(attributions, images), normalize_maps(reduced, images))
    assert not torch.equal(normalize_maps(attributions, images), normalize_maps(attributions.abs().sum(dim=1), images))


@pytest.mark.parametrize("method", ["integrated_gradients", "input_x_gradient"])
def test_the_run_gives_the_faithfulness_the_function_gives_for_the_same_attributions(method: str) -> None:
    # One definition: the run (what CNNSee logs) and faithfulness() on the attributions of attribute() agree.
    torch.manual_seed(0)
    model = TinyClassifier()
    images, labels = next(iter(make_loaders(count=16)[1]))
    options = Options(techniques=["attributions", "faithfulness"], attribution_methods=[method], faithfulness_steps=5)
    results = visualize(model, images, labels, options)
    predicted = results.logits.argmax(dim=1)
    attributions = attribute(model, images, method, predicted)
    torch.testing.assert_close(results.attributions_predicted[method], attributions)
    expected = faithfulness(model, images, attributions, predicted, steps=5)
    assert (
        expected["avg_drop"].ne(faithfulness(model, images, attributions.abs(), predicted, steps=5)["avg_drop"]).any()
    )
    for metric, values in expected.items():
        torch.testing.assert_close(results.faithfulness[method][metric], values, rtol=0, atol=0)


def test_results_do_not_depend_on_the_batch_size() -> None:
    model = make_cnn(seed=3)
    images, maps = torch.randn(3, 3, 16, 16), torch.rand(3, 4, 4)
    one = faithfulness(model, images, maps, steps=6, batch_size=1)
    all_at_once = faithfulness(model, images, maps, steps=6, batch_size=1000)
    for name in METRICS:
        torch.testing.assert_close(one[name], all_at_once[name], rtol=0, atol=faithfulness_tolerance(model, 6))


def test_gradcam_beats_random_maps_on_a_trained_model() -> None:
    _, model, images, labels = trained_patch_model()
    cams = grad_cam(model, images, [CAM_LAYER], targets=labels)[CAM_LAYER]
    ours = faithfulness(model, images, cams, labels)
    for size in [tuple(cams.shape[1:]), (PATCH_SIZE, PATCH_SIZE)]:  # random blobs at the CAM's size, random pixels
        reference = random_faithfulness(model, images, labels, map_size=size, seed=0)
        assert ours["deletion_auc"].mean() < reference["deletion_auc"].mean() - 0.1, size
        assert ours["insertion_auc"].mean() > reference["insertion_auc"].mean() + 0.02, size


def test_random_faithfulness_is_faithfulness_of_seeded_random_maps() -> None:
    model = make_cnn(seed=4)
    images = torch.randn(3, 3, 16, 16)
    reference = random_faithfulness(model, images, map_size=(4, 4), seed=5, steps=5)
    again = faithfulness(model, images, random_maps(3, (4, 4), seed=5), steps=5)
    other_seed = random_faithfulness(model, images, map_size=(4, 4), seed=6, steps=5)
    for name in METRICS:
        assert torch.equal(reference[name], again[name])
    assert not torch.equal(reference["deletion_auc"], other_seed["deletion_auc"])
    assert random_maps(3, (4, 4), seed=5).shape == (3, 4, 4)
    assert random_faithfulness(model, images, steps=5)["avg_drop"].shape == (3,)  # maps at the input's size


def test_the_model_is_left_exactly_as_it_was(model_untouched) -> None:
    model = nn.Sequential(make_cnn(seed=5), nn.Dropout(0.5))
    model.train()
    model[0][1].eval()  # a mix of flags, each to be given back
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # .grad set: it must stay the same object's values
    images, maps = torch.randn(3, 3, 16, 16), torch.rand(3, 8, 8)
    with model_untouched(model):
        faithfulness(model, images, maps, steps=4)
        random_faithfulness(model, images, steps=4)
    with model_untouched(model), pytest.raises(ValueError, match="out of range"):
        faithfulness(model, images, maps, targets=9, steps=4)


def test_eval_mode_is_used_inside() -> None:
    model = nn.Sequential(make_cnn(seed=6), nn.Dropout(0.9)).train()
    images, maps = torch.randn(3, 3, 16, 16), torch.rand(3, 8, 8)
    first = faithfulness(model, images, maps, steps=4)
    second = faithfulness(model, images, maps, steps=4)
    for name in METRICS:  # Dropout(0.9) in train mode would make every call differ
        assert torch.equal(first[name], second[name])
    assert model.training and model[1].training


def test_works_inside_inference_mode() -> None:
    model = make_cnn(seed=7)
    with torch.inference_mode():
        images, maps = torch.randn(3, 3, 16, 16), torch.rand(3, 8, 8)
        inside = faithfulness(model, images, maps, steps=4)
    outside = faithfulness(model, images.clone(), maps.clone(), steps=4)
    for name in METRICS:
        assert torch.equal(inside[name], outside[name])


def test_images_that_require_grad_and_tuple_outputs() -> None:
    model = make_cnn(seed=8)

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x):
            return {"features": x.mean(), "scores": self.net(x)}

    images = torch.randn(2, 3, 16, 16, requires_grad=True)
    maps = torch.rand(2, 4, 4, requires_grad=True)
    plain = faithfulness(model, images, maps, steps=4)
    keyed = faithfulness(Pair(), images, maps, steps=4, output_key="scores")
    for name in METRICS:
        assert torch.equal(plain[name], keyed[name]) and not keyed[name].requires_grad


@pytest.mark.parametrize(
    "change, match",
    [
        ({"steps": 0}, r"steps must be a positive int, got 0"),
        ({"steps": True}, r"steps must be a positive int, got True"),
        ({"batch_size": -2}, r"batch_size must be a positive int, got -2"),
        ({"maps": torch.rand(2, 4, 4)}, r"maps has 2 entries \(shape \(2, 4, 4\)\) for 3 images"),
        ({"maps": torch.rand(3, 16)}, r"maps must be \(N, h, w\) maps or \(N, C, h, w\) attributions, got \(3, 16\)"),
        ({"images": torch.rand(3, 16, 16)}, r"images must be a floating-point \(N, C, H, W\) batch, got \(3, 16, 16\)"),
        ({"images": torch.rand(0, 3, 16, 16)}, r"images is an empty batch, of shape \(0, 3, 16, 16\)"),
        ({"baseline": torch.zeros(2, 3, 16, 16)}, r"baseline of shape \(2, 3, 16, 16\) does not broadcast"),
        ({"baseline": "zeros"}, r"baseline must be None, a number or a tensor, got str"),
        ({"targets": [0, 1]}, r"targets has 2 entries for a batch of 3 images"),
        ({"targets": 5}, r"target class \[5, 5, 5\] out of range: the model has 5 classes"),
    ],
)
def test_bad_arguments_name_the_bad_value(change, match) -> None:
    arguments = {"images": torch.randn(3, 3, 16, 16), "maps": torch.rand(3, 4, 4), "steps": 4}
    arguments.update(change)
    with pytest.raises(ValueError, match=match):
        faithfulness(make_cnn(), **arguments)


@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"count": 0, "size": (2, 2)}, r"count must be a positive int, got 0"),
        ({"count": 2, "size": 7}, r"size must be \(h, w\) with positive ints, got 7"),
        ({"count": 2, "size": (2, 0)}, r"got \(2, 0\)"),
    ],
)
def test_random_maps_name_the_bad_value(arguments, match) -> None:
    with pytest.raises(ValueError, match=match):
        random_maps(**arguments)
