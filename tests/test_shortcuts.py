"""Catching shortcuts: the localization measures against direct numpy computations, and CNNSee's warning on models
trained on leaky and clean synthetic data (a class-coded corner marker, or the class in the object itself)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from tiny import RecordingCNNSee, trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_cnnsee import CNNSee, energy_inside, object_area, object_masks, pointing_game, shared_spot
from lightning_cnnsee.callback.compat import lightning as pl
from lightning_cnnsee.render.images import render_maps
from lightning_cnnsee.run.options import Options
from lightning_cnnsee.run.visualization import PER_IMAGE_DICTS, gather_measures, visualize

# ---------------------------------------------------------------- independent numpy computations


def numpy_upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with half-pixel centres (what ``align_corners=False`` means), written out."""

    def weights(out: int, inp: int) -> np.ndarray:
        matrix = np.zeros((out, inp))
        for i in range(out):
            source = max((i + 0.5) * inp / out - 0.5, 0.0)
            low = min(int(np.floor(source)), inp - 1)
            high = min(low + 1, inp - 1)
            fraction = source - low
            matrix[i, low] += 1 - fraction
            matrix[i, high] += fraction
        return matrix

    rows, cols = weights(size[0], maps.shape[1]), weights(size[1], maps.shape[2])
    return np.einsum("ih,nhw,jw->nij", rows, maps, cols)


def numpy_energy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    shown = np.clip(numpy_upsample(maps, masks.shape[1:]), 0, None)
    return np.array([shown[i][masks[i]].sum() / shown[i].sum() for i in range(len(maps))])


def numpy_pointing(maps: np.ndarray, masks: np.ndarray, tolerance: float) -> np.ndarray:
    shown = np.clip(numpy_upsample(maps, masks.shape[1:]), 0, None)
    hits = []
    for image, mask in zip(shown, masks, strict=True):
        peaks = np.argwhere(image == image.max())
        inside = np.argwhere(mask)
        distances = np.sqrt(((peaks[:, None, :] - inside[None, :, :]) ** 2).sum(-1))
        hits.append(float(distances.min() <= tolerance))
    return np.array(hits)


def random_boxes(generator: torch.Generator, count: int, size: int) -> torch.Tensor:
    corners = torch.randint(0, size - 2, (count, 2), generator=generator)
    extents = torch.randint(1, size, (count, 2), generator=generator)
    far = torch.minimum(corners + extents, torch.tensor(size))
    return torch.cat([corners, far], dim=1).float()  # (x0, y0, x1, y1)


def test_boxes_become_the_masks_numpy_slicing_gives():
    generator = torch.Generator().manual_seed(0)
    boxes = random_boxes(generator, 12, 20)
    masks = object_masks(boxes, count=12, size=(20, 20))
    for box, mask in zip(boxes.int().tolist(), masks.numpy(), strict=True):
        expected = np.zeros((20, 20), bool)
        expected[box[1] : box[3], box[0] : box[2]] = True
        np.testing.assert_array_equal(mask, expected)


def test_several_boxes_per_image_are_their_union_and_masks_are_thresholded_at_one_half():
    masks = object_masks([torch.tensor([[0, 0, 2, 2], [3, 3, 5, 5]]), torch.zeros(0, 4)], count=2, size=(5, 5))
    assert masks[0].sum() == 8 and masks[1].sum() == 0
    soft = torch.tensor([[[0.2, 0.6], [0.5, 1.0]]])
    assert object_masks(soft, count=1, size=(2, 2)).tolist() == [[[False, True], [False, True]]]


def test_energy_inside_and_object_area_equal_the_direct_computation_at_the_image_size():
    generator = torch.Generator().manual_seed(1)
    maps = torch.randn(10, 5, 7, generator=generator)  # signed, coarse: upsampled, then the positive part
    masks = object_masks(random_boxes(generator, 10, 30), count=10, size=(30, 30))
    expected = numpy_energy(maps.double().numpy(), masks.numpy())
    # float32 sums of 900 terms of order 1: a relative error of a few 1e-6
    np.testing.assert_allclose(energy_inside(maps, masks).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(object_area(masks).numpy(), masks.numpy().mean(axis=(1, 2)))


def test_a_uniform_map_scores_the_object_area_and_attributions_are_summed_over_channels():
    masks = object_masks(torch.tensor([[2.0, 3.0, 9.0, 8.0]]), count=1, size=(12, 12))
    assert torch.allclose(energy_inside(torch.ones(1, 3, 3), masks), object_area(masks))
    attributions = torch.zeros(1, 3, 12, 12)
    attributions[0, 0, 4, 4], attributions[0, 1, 4, 4], attributions[0, 2, 0, 0] = 2.0, 1.0, 1.0
    assert torch.allclose(energy_inside(attributions, masks), torch.tensor([0.75]))


@pytest.mark.parametrize("tolerance", [0.0, 1.5, 3.0])
def test_pointing_game_equals_the_direct_computation_with_its_tolerance(tolerance):
    generator = torch.Generator().manual_seed(2)
    maps = torch.rand(16, 6, 6, generator=generator)
    masks = object_masks(random_boxes(generator, 16, 24), count=16, size=(24, 24))
    expected = numpy_pointing(maps.double().numpy(), masks.numpy(), tolerance)
    np.testing.assert_array_equal(pointing_game(maps, masks, tolerance=tolerance).numpy(), expected)


def test_pointing_game_tolerance_is_fifteen_pixels_at_224():
    masks = torch.zeros(1, 224, 224, dtype=torch.bool)
    masks[0, 100:120, 100:120] = True
    for offset, hit in ((15, 1.0), (16, 0.0)):
        maps = torch.zeros(1, 224, 224)
        maps[0, 110, 119 + offset] = 1.0
        assert pointing_game(maps, masks).item() == hit


def test_maps_without_positive_mass_and_images_without_object_give_nan():
    masks = object_masks([torch.tensor([[0, 0, 2, 2]]), torch.zeros(0, 4)], count=2, size=(4, 4))
    maps = torch.stack([-torch.ones(4, 4), torch.ones(4, 4)])
    assert energy_inside(maps, masks).isnan().all() and pointing_game(maps, masks).isnan().all()


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        (torch.tensor([[0.0, 0.0, 9.0, 4.0]]), r"box \[0.0, 0.0, 9.0, 4.0\].*outside the 8x8 image"),
        (torch.tensor([[-1.0, 0.0, 4.0, 4.0]]), r"box \[-1.0, 0.0, 4.0, 4.0\]"),
        (torch.tensor([[4.0, 0.0, 4.0, 4.0]]), r"box \[4.0, 0.0, 4.0, 4.0\].*empty"),
        (torch.tensor([[0.0, 0.0, 4.0]]), r"shape \(1, 3\)"),
        (torch.ones(2, 4), r"2 entries for 1 images"),
        (torch.ones(1, 4, 4), r"masks of shape \(1, 4, 4\) do not match the images' size 8x8"),
        (torch.full((1, 8, 8), 2.0), r"bool or in \[0, 1\], got values from 2.0 to 2.0"),
        ([torch.tensor([[0, 0, 1, 1]])] * 2, r"a list of 2 box sets for 1 images"),
        ("boxes", r"got a str"),
    ],
)
def test_bad_objects_are_refused_with_the_value_in_the_message(objects, message):
    with pytest.raises(ValueError, match=message):
        object_masks(objects, count=1, size=(8, 8))


def test_shared_spot_is_small_at_the_border_for_a_corner_small_in_the_middle_for_the_centre_large_for_spread_maps():
    corner, centre, spread = torch.zeros(8, 6, 6), torch.zeros(8, 6, 6), torch.zeros(8, 6, 6)
    corner[:, 0, 0] = 1.0
    centre[:, 2:4, 2:4] = 1.0
    for index in range(8):  # each image's map on a different cell
        spread[index, index % 6, (index * 5) % 6] = 1.0
    at_corner, at_centre, apart = (shared_spot(m, (48, 48)) for m in (corner, centre, spread))
    assert at_corner.area < 0.03 and at_corner.edge > 0.85 and at_corner.agreement == 1.0
    assert at_centre.area < 0.1 and at_centre.edge < 0.3 and at_centre.agreement == 1.0
    # sharp maps at six different places: a small mean spot, but one image's spot is a fraction of it
    assert apart.area < 0.1 and apart.agreement < 0.3
    uniform = shared_spot(torch.ones(4, 6, 6), (48, 48))
    assert uniform.area == pytest.approx(0.5) and uniform.agreement == 1.0  # (its edge depends on how ties sort)
    assert np.isnan(shared_spot(torch.ones(1, 6, 6), (48, 48)).area)


def test_shared_spot_weighs_every_image_once_whatever_its_scale():
    maps = torch.zeros(4, 6, 6)
    maps[0, 0, 0] = 1000.0  # one loud map in the corner, three quiet ones in the middle
    maps[1:, 2:4, 2:4] = 0.01
    assert shared_spot(maps, (48, 48)).edge < 0.5  # by mass alone the loud corner would hold it all: about 0.9


# ---------------------------------------------------------------- leaky and clean synthetic data

COLORS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
SIZE, SIDE, MARKER = 32, 8, 6


def squares(count: int, kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, labels, boxes)``: one 8x8 square per 32x32 image over noise.

    ``"clean"``: the square's colour is the class (one of :data:`COLORS`), anywhere in the image. ``"leak"``: the
    square is grey (no class in it) and a class-coloured marker sits in the top-left corner: it predicts the label
    better than the object. ``"centre"``: as clean, with the squares near the middle.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.arange(count) % len(COLORS))[torch.randperm(count, generator=generator)]
    images = torch.rand(count, 3, SIZE, SIZE, generator=generator) * 0.5 + 0.25
    low, high = (SIZE // 2 - SIDE // 2 - 4, SIZE // 2 - SIDE // 2 + 4) if kind == "centre" else (0, SIZE - SIDE)
    x0, y0 = (torch.randint(low, high + 1, (count,), generator=generator) for _ in range(2))
    grey = torch.rand(count, 1, generator=generator).expand(count, 3)
    colours = grey if kind == "leak" else COLORS[labels]
    for index in range(count):
        images[index, :, y0[index] : y0[index] + SIDE, x0[index] : x0[index] + SIDE] = colours[index][:, None, None]
        if kind == "leak":
            images[index, :, :MARKER, :MARKER] = COLORS[labels[index]][:, None, None]
    boxes = torch.stack([x0, y0, x0 + SIDE, y0 + SIDE], dim=1).float()
    return (images - 0.5) / 0.25, labels, boxes


class SquaresNet(pl.LightningModule):
    """Three conv layers, two poolings (8x8 maps at the last), global average pooling, one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            *(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            *(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(COLORS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_acc", (self(batch[0]).argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def fit_squares(tmp_path, kind: str, *, boxes: bool = True, epochs: int = 8, every: int | None = None, **options):
    """Train :class:`SquaresNet` on ``kind`` squares with a CNNSee (Grad-CAM and localization only); return the
    callback (its last results) and the warnings raised."""
    torch.manual_seed(0)
    train, val = squares(512, kind, seed=0), squares(16, kind, seed=1)
    if not boxes:
        train, val = train[:2], val[:2]
    options.setdefault("techniques", ["gradcam", "localization"])
    callback = RecordingCNNSee(
        num_samples=16,
        gradcam_layers=["features"],
        object_key=2 if boxes else None,
        max_overhead=None,
        every_n_epochs=every or epochs,
        **options,
    )
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_epochs=epochs, num_sanity_val_steps=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(
            SquaresNet(),
            DataLoader(TensorDataset(*train), batch_size=32, shuffle=True),
            DataLoader(TensorDataset(*val), batch_size=16),
        )
    return callback, trainer, [str(w.message) for w in caught if "shortcut" in str(w.message)]


def localization_scalars(trainer) -> dict[str, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag.split("/", 3)[-1]: accumulator.Scalars(tag)[-1].value
        for tag in accumulator.Tags()["scalars"]
        if tag.startswith("cnnsee/localization/")
    }


def test_a_class_coded_corner_marker_raises_the_shortcut_warning_with_energy_inside_below_object_area(tmp_path):
    callback, trainer, caught = fit_squares(tmp_path, "leak", every=3)
    numbers = localization_scalars(trainer)
    assert float(trainer.callback_metrics["val_acc"]) >= 0.9
    assert numbers["energy_inside"] < numbers["object_area"], numbers
    assert callback.schedule.runs >= 3  # the baseline, epochs 3 and 6, the final run
    assert len(caught) == 1, caught  # once, though more than one run saw it
    assert "cnnsee/localization/features/energy_inside" in caught[0] and "cnnsee/gradcam/features" in caught[0]
    # the numbers of the run that warned (the first with the model right): energy inside below the area
    energy, area = (float(x) for x in re.search(r"put ([\d.]+)% .* objects' ([\d.]+)%", caught[0]).groups())
    assert energy < area and area == pytest.approx(100 * numbers["object_area"], abs=0.05)


def test_a_clean_run_raises_no_warning_and_its_maps_put_several_times_the_object_area_inside(tmp_path):
    callback, trainer, caught = fit_squares(tmp_path, "clean")
    numbers = localization_scalars(trainer)
    assert float(trainer.callback_metrics["val_acc"]) >= 0.9
    assert caught == []
    assert numbers["energy_inside"] > 3 * numbers["object_area"], numbers
    assert numbers["pointing_game"] >= 0.8


def test_without_boxes_a_corner_marker_is_caught_by_the_shared_spot_and_centred_objects_are_not(tmp_path):
    _, leaky, caught = fit_squares(tmp_path / "leak", "leak", boxes=False)
    spot = localization_scalars(leaky)
    assert spot["spot_area"] <= 0.2 and spot["spot_edge"] >= 0.5 and spot["spot_agreement"] >= 0.5, spot
    assert "energy_inside" not in spot
    assert len(caught) == 1 and "cnnsee/localization/features/spot_area" in caught[0]
    for kind in ("centre", "clean"):
        _, trainer, caught = fit_squares(tmp_path / kind, kind, boxes=False)
        spot = localization_scalars(trainer)
        assert caught == [], (kind, caught, spot)
        assert spot["spot_area"] > 0.2 or spot["spot_edge"] < 0.5 or spot["spot_agreement"] < 0.5, spot


def test_localization_can_be_turned_off_with_techniques(tmp_path):
    _, trainer, caught = fit_squares(tmp_path, "leak", epochs=2)
    assert localization_scalars(trainer)
    _, trainer, caught = fit_squares(tmp_path / "off", "leak", epochs=2, techniques=["gradcam"])
    assert localization_scalars(trainer) == {} and caught == []


def test_boxes_outside_the_images_are_refused_before_training_with_the_value(tmp_path):
    images, labels, boxes = squares(32, "clean", seed=0)
    boxes[3] = torch.tensor([30.0, 2.0, 40.0, 9.0])
    callback = CNNSee(num_samples=8, object_key=2, techniques=["gradcam"])
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_epochs=1))
    loader = DataLoader(TensorDataset(images, labels, boxes), batch_size=8)
    with pytest.raises(ValueError, match=r"object_key=2.*objects\[3\]: box \[30.0, 2.0, 40.0, 9.0\]"):
        trainer.fit(SquaresNet(), loader, loader)
    assert trainer.global_step == 0


def test_object_key_must_be_an_int_or_a_string():
    with pytest.raises(ValueError, match=r"object_key=1.5"):
        Options(object_key=1.5)


def test_the_fixed_images_keep_their_objects_through_a_checkpoint():
    images, labels, boxes = squares(12, "clean", seed=0)
    callback = CNNSee(num_samples=10, object_key="box")
    callback.fixed.collect({"image": images[:6], "label": labels[:6], "box": boxes[:6]})
    callback.fixed.collect({"image": images[6:], "label": labels[6:], "box": boxes[6:]})
    expected = object_masks(boxes[:10], count=10, size=(SIZE, SIZE))
    assert torch.equal(callback.fixed.objects, expected)
    resumed = CNNSee(num_samples=10, object_key="box")
    resumed.load_state_dict(callback.state_dict())
    assert torch.equal(resumed.fixed.objects, expected)


def test_two_ranks_give_the_numbers_of_one_process():
    torch.manual_seed(0)
    model = SquaresNet()
    images, labels, boxes = squares(7, "clean", seed=3)
    options = Options(techniques=["gradcam", "localization"], gradcam_layers=["features"])
    single = visualize(model, images, labels, options, objects=boxes)
    shares = [
        visualize(model, images, labels, options, objects=boxes, rank=rank, world_size=2, include_patterns=False)
        for rank in (0, 1)
    ]
    # what every rank's gather_objects returns: each rank's (images, logits, per-image fields), in rank order
    every = [(s.measured_images, s.logits, {name: getattr(s, name) for name in PER_IMAGE_DICTS}) for s in shares]
    merged = gather_measures(shares[0], lambda value: every)
    assert merged.measured_images == list(range(7))
    for metric, values in single.localization["features"].items():
        torch.testing.assert_close(merged.localization["features"][metric], values, equal_nan=True)


def test_the_objects_are_outlined_on_the_gradcam_grid_and_nothing_else_changes():
    images = torch.zeros(2, 3, 32, 32)
    masks = object_masks(torch.tensor([[8.0, 8.0, 24.0, 24.0], [0.0, 0.0, 16.0, 16.0]]), count=2, size=(32, 32))
    settings = dict(min_tile=32, alpha=0.0)
    plain = render_maps(images, [torch.zeros(2, 4, 4)], ["a", "b"], **settings)
    outlined = render_maps(images, [torch.zeros(2, 4, 4)], ["a", "b"], objects=masks, **settings)
    changed = (outlined != plain).any(dim=0)
    top, left = 2, 2  # make_grid's padding before the first tile
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:24, 8:24] = True
    expected[9:23, 9:23] = False  # a one-pixel outline of the box
    assert torch.equal(changed[top : top + 32, left : left + 32], expected)
    assert (outlined[:, top : top + 32, left : left + 32][:, expected] == 1.0).all()  # white


def test_the_report_charts_the_object_measures_with_the_area_as_reference_and_the_spot_apart():
    from pathlib import Path

    from lightning_cnnsee.review.charts import charts_of
    from lightning_cnnsee.review.runs import Run

    scalars = {
        f"cnnsee/localization/features/{metric}": [(0, 0.1), (8, 0.05)]
        for metric in ("energy_inside", "object_area", "pointing_game", "spot_area", "spot_edge", "spot_agreement")
    }
    charts = {chart.title: chart for chart in charts_of([Run("a", Path("."), scalars=scalars)])}
    assert sorted(charts) == ["localization · features · objects", "localization · features · spot"]
    objects = charts["localization · features · objects"]
    assert [(s.name, s.reference) for s in objects.series] == [
        ("energy_inside", False),
        ("pointing_game", False),
        ("object_area", True),
    ]


def test_cnnsee_demo_leak_asks_for_the_leaky_demo(monkeypatch):
    from types import SimpleNamespace

    from lightning_cnnsee import cli, demo

    calls = []
    monkeypatch.setattr(
        demo, "run_demo", lambda *args, **kwargs: calls.append(kwargs) or SimpleNamespace(callback_metrics={})
    )
    assert cli.main(["demo", "--leak", "--epochs", "2"]) == 0
    assert calls == [{"max_epochs": 2, "seed": 0, "leak": True}]


def test_the_leaky_shapes_carry_a_class_coded_marker_and_the_shapes_boxes():
    from lightning_cnnsee.demo.data import MARKER_COLORS, ShapesDataset

    clean = ShapesDataset(num_images=12, image_size=32, seed=0, with_boxes=True)
    leaky = ShapesDataset(num_images=12, image_size=32, seed=0, marker=True, with_boxes=True)
    image, label, box = leaky[5]
    assert torch.equal(image[:, :4, :4], torch.from_numpy(MARKER_COLORS[int(label)])[:, None, None].expand(3, 4, 4))
    assert torch.equal(leaky.images[:, :, 4:], clean.images[:, :, 4:])  # the same shapes, the marker apart
    assert torch.equal(box, clean.boxes[5]) and bool((leaky.boxes[:, 2:] > leaky.boxes[:, :2]).all())
    # each box is the shape's reach (1.13 radius, the radius 0.2 to 0.32 of the image) within the image
    masks = object_masks(leaky.boxes, count=12, size=(32, 32))
    assert object_area(masks).min() > 0.05 and object_area(masks).max() < 0.6


@pytest.mark.parametrize(
    ("numbers", "accuracy", "tag"),
    [
        ({"energy_inside": 0.04, "object_area": 0.06}, 1.0, "energy_inside"),
        ({"energy_inside": 0.04, "object_area": 0.06}, 0.5, None),  # the model is not right yet: nothing to say
        ({"energy_inside": 0.30, "object_area": 0.06}, 1.0, None),
        ({"spot_area": 0.08, "spot_edge": 0.78, "spot_agreement": 0.76}, 1.0, "spot_area"),
        ({"spot_area": 0.08, "spot_edge": 0.25, "spot_agreement": 0.8}, 1.0, None),  # agreeing, in the middle
        ({"spot_area": 0.142, "spot_edge": 0.616, "spot_agreement": 0.985}, 1.0, "spot_area"),  # cnnsee demo --leak
        ({"spot_area": 0.08, "spot_edge": 0.78, "spot_agreement": 0.2}, 1.0, None),  # sharp maps, different places
        ({"spot_area": 0.3, "spot_edge": 0.78, "spot_agreement": 0.8}, 1.0, None),  # a large spot
        (
            {"energy_inside": 0.5, "object_area": 0.4, "spot_area": 0.08, "spot_edge": 0.8, "spot_agreement": 1},
            1.0,
            "spot_area",
        ),  # boxes too large to tell, the spot still does
    ],
)
def test_the_shortcut_rules(numbers, accuracy, tag):
    from lightning_cnnsee.run.localization import shortcut_message

    message = shortcut_message("features", numbers, accuracy, kind="gradcam", instance="mine")
    if tag is None:
        assert message is None
    else:
        assert "shortcut" in message and f"cnnsee/mine/localization/features/{tag}" in message
        assert "cnnsee/mine/gradcam/features" in message


def test_the_accuracy_behind_the_warning_reads_a_binary_classifiers_one_logit():
    """A binary classifier's positive class is sigmoid(s) > 0.5: the accuracy that gates the shortcut warning counts
    it as the captions and faithfulness do, not as an argmax over one column (always class 0)."""
    from lightning_cnnsee.run.localization import fixed_accuracy
    from lightning_cnnsee.run.results import Results

    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])  # predicted 1, 0, 1, 0
    binary = Results(kind="binary", logits=logits)
    assert fixed_accuracy(binary, torch.tensor([1, 0, 1, 0])) == 1.0
    assert fixed_accuracy(binary, torch.tensor([1, 1, 1, 0])) == 0.75
    two_classes = Results(kind="classification", logits=torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert fixed_accuracy(two_classes, torch.tensor([1, 1])) == 0.5
