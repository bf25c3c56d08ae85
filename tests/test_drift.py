"""Drift of maps over training: Spearman against scipy, the tracker's bookkeeping, the model-randomization check."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy import stats
from tiny import CAM_LAYER, float32_tolerance, trained_patch_model
from torch import nn

from lightning_cnnsee import grad_cam
from lightning_cnnsee.explain.drift import DriftTracker, SanityCheck, average_ranks, sanity_check, spearman


def scipy_spearman(maps_a: torch.Tensor, maps_b: torch.Tensor) -> np.ndarray:
    pairs = zip(maps_a, maps_b, strict=True)
    return np.array([stats.spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic for a, b in pairs])


def sobel_magnitude(images: torch.Tensor) -> torch.Tensor:
    """An edge detector: the gradient magnitude of the channel-mean image (N, H, W). It never sees a model."""
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([kernel_x, kernel_x.T])[:, None]
    gradients = nn.functional.conv2d(images.mean(dim=1, keepdim=True), kernels, padding=1)
    return gradients.square().sum(dim=1).sqrt()


@pytest.mark.parametrize("kind", ["continuous", "ties", "many-ties", "channels"])
def test_spearman_equals_scipy_per_image(kind) -> None:
    generator = torch.Generator().manual_seed(0)
    shape = (6, 3, 5, 7) if kind == "channels" else (6, 5, 7)
    if kind in ("continuous", "channels"):
        maps_a = torch.randn(shape, generator=generator)
        maps_b = maps_a + torch.randn(shape, generator=generator)
    else:
        levels = 4 if kind == "ties" else 2
        maps_a = torch.randint(0, levels, shape, generator=generator).float()
        redrawn = torch.randint(0, levels, shape, generator=generator).float()
        maps_b = torch.where(torch.rand(shape, generator=generator) < 0.7, maps_a, redrawn)
    ours = spearman(maps_a, maps_b)
    assert ours.shape == (6,) and ours.dtype == torch.float32
    # Pearson on centred ranks: three float32 sums over the 105 positions (covariance, two variances), each bounded
    # by the product of the norms (Cauchy-Schwarz), so magnitude 1 relative to the correlation's scale.
    positions = maps_a[0].numel()
    np.testing.assert_allclose(
        ours.numpy(), scipy_spearman(maps_a, maps_b), rtol=0, atol=float32_tolerance(3 * positions)
    )


def test_average_ranks_equal_scipys_rankdata() -> None:
    values = torch.randint(0, 5, (4, 30), generator=torch.Generator().manual_seed(1)).float()
    expected = np.stack([stats.rankdata(row.numpy(), method="average") for row in values])
    np.testing.assert_array_equal(average_ranks(values).numpy(), expected)


def test_a_constant_map_has_no_correlation_as_in_scipy() -> None:
    maps_a = torch.rand(3, 4, 4)
    maps_b = torch.rand(3, 4, 4)
    maps_b[1] = 0.0
    ours = spearman(maps_a, maps_b)
    with np.errstate(invalid="ignore"), pytest.warns(stats.ConstantInputWarning):
        expected = scipy_spearman(maps_a, maps_b)
    assert ours[1].isnan() and np.isnan(expected[1])
    np.testing.assert_allclose(ours[[0, 2]].numpy(), expected[[0, 2]], rtol=0, atol=float32_tolerance(3 * 16))


@pytest.mark.parametrize(
    "maps_a, maps_b, match",
    [
        (torch.rand(2, 7, 7), torch.rand(2, 14, 14), r"same shape, got \(2, 7, 7\) and \(2, 14, 14\); resize"),
        (torch.rand(2, 7, 7), torch.rand(3, 7, 7), r"got \(2, 7, 7\) and \(3, 7, 7\)"),
        (torch.rand(5), torch.rand(5), r"got \(5,\) and \(5,\)"),
    ],
)
def test_spearman_needs_two_batches_of_the_same_shape(maps_a, maps_b, match) -> None:
    with pytest.raises(ValueError, match=match):
        spearman(maps_a, maps_b)


def test_tracker_compares_each_update_with_the_first_and_the_previous_maps() -> None:
    generator = torch.Generator().manual_seed(2)
    first, second, third = (torch.rand(4, 6, 6, generator=generator) for _ in range(3))
    tracker = DriftTracker()
    assert tracker.update("layer4", first) == {"vs_start": None, "vs_previous": None}
    assert tracker.update("gradcam++", third) == {"vs_start": None, "vs_previous": None}  # keys are independent
    after_second = tracker.update("layer4", second)
    assert torch.equal(after_second["vs_start"], spearman(first, second))
    assert torch.equal(after_second["vs_previous"], spearman(first, second))
    after_third = tracker.update("layer4", third)
    assert torch.equal(after_third["vs_start"], spearman(first, third))
    assert torch.equal(after_third["vs_previous"], spearman(second, third))
    assert tracker.keys() == ["layer4", "gradcam++"] and tracker.updates("layer4") == 3
    assert torch.equal(tracker.start("layer4"), first) and torch.equal(tracker.previous("layer4"), third)


def test_tracker_keeps_detached_float32_copies_on_the_cpu() -> None:
    maps = torch.rand(2, 5, 5, dtype=torch.float64, requires_grad=True)
    tracker = DriftTracker()
    tracker.update("cam", maps)
    with torch.no_grad():
        maps.add_(1.0)  # the caller reuses its tensor: the tracker's copy must not follow
    stored = tracker.start("cam")
    assert stored.device.type == "cpu" and stored.dtype == torch.float32 and not stored.requires_grad
    assert torch.allclose(stored.double(), maps.detach() - 1.0)


def test_tracker_refuses_maps_of_another_shape_or_an_unknown_key() -> None:
    tracker = DriftTracker()
    tracker.update("layer3", torch.rand(4, 6, 6))
    with pytest.raises(ValueError, match=r"'layer3' have shape \(4, 3, 3\), but its first maps had \(4, 6, 6\)"):
        tracker.update("layer3", torch.rand(4, 3, 3))
    with pytest.raises(KeyError, match=r"no maps for 'layer4'; keys so far: \['layer3'\]"):
        tracker.sanity_check("layer4")


def test_state_dict_round_trip_through_a_checkpoint() -> None:
    generator = torch.Generator().manual_seed(3)
    tracker = DriftTracker()
    for _ in range(3):
        tracker.update("gradcam", torch.rand(3, 4, 4, generator=generator))
    tracker.update("layercam", torch.rand(3, 4, 4, generator=generator))
    buffer = io.BytesIO()
    torch.save({"drift": tracker.state_dict()}, buffer)
    buffer.seek(0)
    resumed = DriftTracker()
    resumed.load_state_dict(torch.load(buffer, weights_only=True)["drift"])
    following = torch.rand(3, 4, 4, generator=generator)
    for key in ("gradcam", "layercam"):
        assert resumed.updates(key) == tracker.updates(key)
        expected, got = tracker.update(key, following), resumed.update(key, following)
        for name in ("vs_start", "vs_previous"):
            assert torch.equal(expected[name], got[name])
    with pytest.raises(KeyError, match=r"lacks \['updates'\]"):
        DriftTracker().load_state_dict({"start": {}, "previous": {}})


def test_an_edge_detector_fails_the_sanity_check_and_gradcam_of_the_trained_model_passes() -> None:
    initial, trained, images, labels = trained_patch_model()
    tracker = DriftTracker()
    # baseline run: the randomly initialized model; latest run: the same model after training
    for model in (initial, trained):
        tracker.update("sobel", sobel_magnitude(images))
        tracker.update("gradcam", grad_cam(model, images, [CAM_LAYER], targets=labels)[CAM_LAYER])
    edges = tracker.sanity_check("sobel")
    cams = tracker.sanity_check("gradcam")
    assert isinstance(edges, SanityCheck) and not edges and edges.mean_similarity == pytest.approx(1.0)
    assert edges.message.startswith("sobel fails the model-randomization sanity check: mean Spearman correlation 1.000")
    assert cams and cams.mean_similarity < 0.6, cams.message
    assert cams.message.startswith(
        f"gradcam passes the model-randomization sanity check: mean Spearman correlation {cams.mean_similarity:.3f}"
    )
    assert cams.similarity.shape == (len(images),) and "threshold 0.9" in cams.message


def test_sanity_check_counts_constant_maps_as_unchanged_only_when_both_are_constant() -> None:
    maps = torch.rand(4, 5, 5, generator=torch.Generator().manual_seed(4))
    zeros = torch.zeros(4, 5, 5)
    assert sanity_check("dead", zeros, zeros).similarity.tolist() == [1.0] * 4
    assert not sanity_check("dead", zeros, zeros)
    assert sanity_check("woke up", zeros, maps).similarity.tolist() == [0.0] * 4
    assert sanity_check("woke up", zeros, maps)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 1.5"):
        sanity_check("cam", maps, maps, threshold=1.5)
