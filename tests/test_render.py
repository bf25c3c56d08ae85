"""What users look at: colour scales, opacity, the colormap, mistake frames and captions, pixel by pixel."""

from __future__ import annotations

import pytest
import torch

from lightning_cnnsee.render.images import (
    CORRECT_COLOUR,
    MISTAKE_COLOUR,
    caption,
    overlay,
    render_activations,
    render_maps,
    render_results,
    scale_cams,
    turbo,
)

# Google's published Turbo table (Mikhailov 2019): its first and last entries.
TURBO_LOW_END = torch.tensor([0.18995, 0.07176, 0.23217])
TURBO_HIGH_END = torch.tensor([0.47960, 0.01583, 0.01055])


def test_batch_scale_keeps_a_weak_map_weak_next_to_a_strong_one():
    strong = torch.linspace(0, 10, 100).reshape(1, 10, 10)
    weak = strong / 10
    scaled_strong, scaled_weak = scale_cams([strong, weak], "batch")
    assert float(scaled_strong.max()) == 1.0
    assert float(scaled_weak.max()) < 0.15  # one scale for the whole run: the weak map stays dim
    unsaturated = scaled_strong < 1
    torch.testing.assert_close(scaled_weak[unsaturated] * 10, scaled_strong[unsaturated])


def test_image_scale_stretches_each_map_to_its_own_maximum():
    strong = torch.zeros(2, 4, 4)
    strong[0, 1, 1] = 10.0
    strong[1, 2, 2] = 0.5  # a second image with a weak map
    (scaled,) = scale_cams([strong], "image")
    assert scaled.flatten(1).amax(dim=1).tolist() == [1.0, 1.0]


def test_batch_scale_is_one_scale_for_every_image_of_the_run():
    maps = torch.linspace(0, 4, 32).reshape(2, 4, 4)  # the second image's map is brighter than the first's
    (scaled,) = scale_cams([maps], "batch")
    top = torch.quantile(maps.flatten(), 0.99)
    torch.testing.assert_close(scaled, (maps / top).clamp(0, 1))


def test_the_colormap_runs_from_turbos_dark_blue_to_its_dark_red():
    low, high = turbo(torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(low, TURBO_LOW_END, atol=0.001, rtol=0)
    torch.testing.assert_close(high, TURBO_HIGH_END, atol=0.001, rtol=0)
    middle = turbo(torch.tensor(0.5))
    assert middle[1] > 0.8  # Turbo's middle is a bright green-yellow, not a blend of the two ends


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_overlay_blends_the_heat_colours_over_the_image_with_the_given_opacity(alpha):
    images = torch.rand(1, 3, 4, 4)
    heat = torch.rand(1, 4, 4)  # same size: no resampling
    expected = (1 - alpha) * images + alpha * turbo(heat).permute(0, 3, 1, 2)
    torch.testing.assert_close(overlay(images, heat, alpha), expected.clamp(0, 1))


def _frame_colour(grid: torch.Tensor, column: int, tile_width: int) -> torch.Tensor:
    """The colour of the left border of a column's first tile in a make_grid of padding 2."""
    x = 2 + column * (tile_width + 2)
    return grid[:, 10, x]


def test_a_mistake_is_framed_red_and_a_correct_prediction_green():
    images = torch.rand(2, 3, 96, 96)
    cams = torch.rand(2, 6, 6)
    grid = render_maps(images, [cams], ["a", "b"], mistakes=torch.tensor([True, False]))
    torch.testing.assert_close(_frame_colour(grid, 0, 96), torch.tensor(MISTAKE_COLOUR))
    torch.testing.assert_close(_frame_colour(grid, 1, 96), torch.tensor(CORRECT_COLOUR))


def test_without_labels_no_tile_is_framed():
    images = torch.zeros(1, 3, 96, 96)
    grid = render_maps(images, [torch.zeros(1, 6, 6)], ["a"], mistakes=None, alpha=0.0)
    assert float(_frame_colour(grid, 0, 96).max()) == 0.0  # the black image itself, no frame


def test_captions_are_written_under_each_tile_and_differ_with_the_text():
    tiles = torch.zeros(3, 3, 40, 80)
    captioned = caption(tiles, ["pred 3\np=0.91", "", "true 7"])
    strips = captioned[:, :, 40:]
    assert captioned.shape[2] > 40  # a strip was added under the tiles
    assert float(strips[0].max()) > 0.9 and float(strips[2].max()) > 0.9  # white text
    assert float(strips[1].max()) == 0.0  # an empty caption leaves the strip black
    assert not torch.equal(strips[0], strips[2])  # the text itself is drawn
    assert torch.equal(captioned[:, :, :40], tiles)  # the tiles are untouched


def test_rendered_results_frame_mistakes_from_the_true_labels():
    from torch import nn

    from lightning_cnnsee.run.options import Options
    from lightning_cnnsee.run.visualization import visualize

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    images = torch.rand(2, 3, 12, 12)
    options = Options(techniques=["gradcam"])
    predicted = model(images).argmax(dim=1)
    labels = torch.stack([predicted[0], 1 - predicted[1]])  # the first right, the second wrong
    grid = render_results(visualize(model, images, labels, options), images, labels, options)["cnnsee/gradcam/1"]
    torch.testing.assert_close(_frame_colour(grid, 0, 96), torch.tensor(CORRECT_COLOUR))
    torch.testing.assert_close(_frame_colour(grid, 1, 96), torch.tensor(MISTAKE_COLOUR))


def test_signed_maps_keep_their_sign_negative_below_the_middle_zero_at_it():
    maps = torch.tensor([[[-2.0, 0.0], [1.0, 2.0]]])
    (scaled,) = scale_cams([maps], "image", signed=True)
    torch.testing.assert_close(scaled, torch.tensor([[[0.0, 0.5], [0.75, 1.0]]]))  # (m / max|m| + 1) / 2
    grid = render_maps(torch.zeros(1, 3, 96, 96), [maps], ["a"], mistakes=None, alpha=1.0, signed=True, scale="image")
    tile = grid[:, 2 + 96 + 2 + strip_height(grid, rows=2, tile=96) :, 2 : 2 + 96]  # the map's row, below the image's
    negative, positive = tile[:, 5, 5], tile[:, 90, 90]  # nearest the -2 corner and the +2 corner
    assert negative[2] > negative[0] + 0.3 and positive[0] > positive[2] + 0.3  # blue below zero, red above


def strip_height(grid: torch.Tensor, rows: int, tile: int) -> int:
    """The caption strip under each tile of a make_grid of ``rows`` rows of ``tile``-high tiles, padding 2."""
    return (grid.shape[1] - 2) // rows - 2 - tile


def test_each_activation_tile_is_scaled_on_its_own_so_a_weak_channel_spans_the_colormap():
    ramp = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8)
    activations = torch.cat([10 * ramp, 0.1 * ramp.flip(-1)], dim=1)  # a strong and a weak channel
    grid = render_activations(torch.zeros(1, 3, 8, 8), activations, min_tile=48)
    for channel in (0, 1):
        x = 2 + (channel + 1) * (48 + 2)  # after the image's tile
        tile = grid[:, 2 : 2 + 48, x : x + 48].reshape(3, -1)
        highest = tile[:, (tile - TURBO_HIGH_END[:, None]).abs().sum(dim=0).argmin()]
        lowest = tile[:, (tile - TURBO_LOW_END[:, None]).abs().sum(dim=0).argmin()]
        torch.testing.assert_close(highest, TURBO_HIGH_END, atol=0.001, rtol=0)  # its top: Turbo's end
        torch.testing.assert_close(lowest, TURBO_LOW_END, atol=0.001, rtol=0)  # its bottom: Turbo's start


def test_multilabel_frames_are_green_where_predicted_equals_true_and_red_where_not():
    from lightning_cnnsee.run.options import Options
    from lightning_cnnsee.run.results import Results

    logits = torch.tensor([[3.0, 3.0, -3.0, -3.0]])  # labels 0 and 1 predicted
    labels = torch.tensor([[1, 0, 1, 0]])  # labels 0 and 2 true
    pairs = (torch.tensor([0, 0, 0]), torch.tensor([0, 1, 2]))  # every label predicted or true
    results = Results(kind="multilabel", logits=logits, pairs=pairs, pair_cams={"l": torch.rand(3, 6, 6)})
    [grid] = render_results(results, torch.rand(1, 3, 96, 96), labels, Options()).values()
    row = (grid.shape[1] - 2) // 4  # the image, then a tile per pair: 4 rows
    frames = [grid[:, 2 + r * row + 10, 2] for r in (1, 2, 3)]
    torch.testing.assert_close(frames[0], torch.tensor(CORRECT_COLOUR))  # predicted and true
    torch.testing.assert_close(frames[1], torch.tensor(MISTAKE_COLOUR))  # predicted, not true
    torch.testing.assert_close(frames[2], torch.tensor(MISTAKE_COLOUR))  # true, not predicted
