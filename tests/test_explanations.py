"""Attributions, faithfulness and drift inside a fit, and models beyond single-label classification."""

from __future__ import annotations

import itertools
import re
import warnings

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny import (
    RecordingCNNSee,
    TinyClassifier,
    float32_tolerance,
    make_loaders,
    path_terms,
    read_images,
    trainer_kwargs,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_cnnsee import CNNSee, spearman
from lightning_cnnsee.explain.attributions import ATTRIBUTION_METHODS
from lightning_cnnsee.explain.metrics import METRICS
from lightning_cnnsee.run.visualization import explained_maps

FAST = dict(ascent_steps=2, num_samples=4, max_overhead=None)


def fit(tmp_path, callback, model=None, loaders=None, **overrides):
    pl.seed_everything(0)
    train, val = loaders or make_loaders(count=32)
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, **overrides))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model or TinyClassifier(), train, val)
    return trainer, [str(w.message) for w in caught]


def scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_every_attribution_method_is_shown_with_the_gradcam_layout(tmp_path):
    methods = sorted(ATTRIBUTION_METHODS)
    callback = CNNSee(techniques=["gradcam", "attributions"], attribution_methods=methods, **FAST)
    trainer, _ = fit(tmp_path, callback, max_epochs=1)
    tags = read_images(trainer.logger.log_dir)
    assert sorted(tag for tag in tags if "/attributions/" in tag) == [f"cnnsee/attributions/{m}" for m in methods]
    assert all(steps == [0, 4] for steps in tags.values())
    events = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    gradcam = events.Images("cnnsee/gradcam/features")[-1]
    for method in methods:  # the same grid: a column per image, the image, the predicted and the true class
        image = events.Images(f"cnnsee/attributions/{method}")[-1]
        assert (image.width, image.height) == (gradcam.width, gradcam.height), method


def test_faithfulness_and_drift_scalars_are_logged_for_every_map_beside_random_maps(tmp_path):
    callback = RecordingCNNSee(
        techniques=["gradcam", "attributions", "faithfulness", "drift"],
        attribution_methods=["saliency"],
        every_n_steps=2,
        **FAST,
    )
    maps = []
    run = callback.run

    def recording(trainer, pl_module, **kwargs):
        results = run(trainer, pl_module, **kwargs)
        if results is not None:
            maps.append((trainer.global_step, {k: v.cpu() for k, v in explained_maps(results).items()}))
        return results

    callback.run = recording
    trainer, _ = fit(tmp_path, callback, max_epochs=2)
    logged = scalars(trainer.logger.log_dir)
    steps = [step for step, _ in maps]
    for name in ("features", "saliency"):
        for metric in METRICS:
            assert [s for s, _ in logged[f"cnnsee/faithfulness/{name}/{metric}"]] == steps
            assert [s for s, _ in logged[f"cnnsee/faithfulness/{name}/{metric}_random"]] == steps
        # drift: recomputed here from the maps of each run, against the first run's and the previous run's
        start = maps[0][1][name]
        expected_start = [spearman(run_maps[name], start).nanmean().item() for _, run_maps in maps[1:]]
        expected_previous = [
            spearman(now[name], before[name]).nanmean().item() for (_, before), (_, now) in itertools.pairwise(maps)
        ]
        assert [s for s, _ in logged[f"cnnsee/drift/{name}/vs_start"]] == steps[1:]
        # the same correlations (|r| <= 1): a mean over the images, then one rounding to float32 in the event file
        tolerance = float32_tolerance(len(start) + 1)
        assert [v for _, v in logged[f"cnnsee/drift/{name}/vs_start"]] == pytest.approx(expected_start, abs=tolerance)
        assert [v for _, v in logged[f"cnnsee/drift/{name}/vs_previous"]] == pytest.approx(
            expected_previous, abs=tolerance
        )
    # the faithfulness of the final run is what the functions give on its maps
    final = callback.last_results
    torch.testing.assert_close(
        torch.tensor(logged["cnnsee/faithfulness/features/deletion_auc"][-1][1]),
        final.faithfulness["features"]["deletion_auc"].float().nanmean(),
        atol=float32_tolerance(len(final.logits) + 1),  # a mean of values in [0, 1], then float32 in the event file
        rtol=0,
    )


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_maps_and_faithfulness_split_across_ranks_equal_one_process(method):
    from lightning_cnnsee import Options, visualize
    from lightning_cnnsee.run.visualization import gather_measures

    torch.manual_seed(0)
    model = TinyClassifier()
    images, labels = next(iter(make_loaders(count=32)[1]))
    options = Options(
        techniques=["gradcam", "attributions", "faithfulness"],
        cam_method=method,
        attribution_methods=["saliency", "occlusion"],
        faithfulness_steps=5,
    )
    whole = visualize(model, images[:5], labels[:5], options)
    shares = [visualize(model, images[:5], labels[:5], options, rank=rank, world_size=3) for rank in range(3)]
    assert [share.measured_images for share in shares] == [[0, 3], [1, 4], [2]]
    everyone = [
        (
            share.measured_images,
            share.logits,
            {
                name: getattr(share, name)
                for name in (
                    "cams_predicted",
                    "cams_true",
                    "attributions_predicted",
                    "attributions_true",
                    "faithfulness",
                    "faithfulness_random",
                )
            },
        )
        for share in shares
    ]
    merged = gather_measures(shares[0], lambda value: everyone)
    torch.testing.assert_close(merged.logits, whole.logits)
    # A share's batch is another batch size: the forward and backward passes round differently (twice the fan-ins),
    # then the maps' sums over channels and positions (at most 16 x 20 + 12); Occlusion's and the faithfulness
    # curves' differences of scores cancel: magnitude taken as 10 times the largest value.
    terms = 2 * path_terms(model) + 16 * 20 + 12
    for name in ("cams_predicted", "cams_true", "attributions_predicted", "attributions_true"):
        for key, maps in getattr(whole, name).items():
            bound = float32_tolerance(terms, 10 * float(maps.abs().max()))
            torch.testing.assert_close(getattr(merged, name)[key], maps.cpu(), atol=bound, rtol=0)
    for key, metrics in whole.faithfulness.items():
        for metric, values in metrics.items():
            bound = float32_tolerance(terms + options.faithfulness_steps, 10)  # probabilities, at most 1
            torch.testing.assert_close(merged.faithfulness[key][metric], values.cpu(), atol=bound, rtol=0)


def test_num_diverse_shows_that_many_different_patterns_per_channel(tmp_path):
    callback = RecordingCNNSee(
        techniques=["filters", "classes"],
        num_diverse=2,
        num_filters=2,
        max_classes=2,
        ascent_steps=6,
        num_samples=4,
        max_overhead=None,
    )
    fit(tmp_path, callback, max_epochs=1)
    results = callback.last_results
    for found in [*results.filters.values(), results.class_patterns]:
        assert found.channels == [0, 0, 1, 1]  # channel-major, two images each
        assert not torch.equal(found.images[0], found.images[1])  # different starts, pushed apart
        assert found.images.shape[0] == 4 and found.activations.shape == (4,)


class Frozen(TinyClassifier):
    """Trains with a learning rate of zero: its maps never change, the case the randomization check catches."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_maps_that_do_not_change_while_training_fail_the_sanity_check_said_once(tmp_path):
    callback = CNNSee(techniques=["gradcam", "drift"], every_n_steps=1, **FAST)
    _, said = fit(tmp_path, callback, model=Frozen(), max_epochs=2)
    failed = [message for message in said if "sanity check" in message.lower() and "features" in message]
    assert len(failed) == 1, said
    # the numbers: nearly the same maps as at the start (only BatchNorm's running statistics moved)
    assert re.search(r"mean Spearman correlation 0\.9[5-9]\d", failed[0]), failed[0]


def test_maps_of_a_learning_model_pass_the_sanity_check(tmp_path):
    callback = CNNSee(techniques=["gradcam", "drift"], **FAST)
    _, said = fit(tmp_path, callback, max_epochs=3)
    assert not [message for message in said if "sanity check" in message.lower()]


# ----------------------------------------------------------------------------- beyond single-label classification
class MultiLabel(pl.LightningModule):
    """Four independent labels, each a bright quadrant of the image."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))

    def forward(self, x):
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        return nn.functional.binary_cross_entropy_with_logits(self(batch[0]), batch[1].float())

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def multilabel_loaders():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(32, 4, generator=generator) > 0.5).long()
    images = torch.rand(32, 3, 16, 16, generator=generator) * 0.2
    for index, (row, column) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
        images[labels[:, index] == 1, :, row : row + 8, column : column + 8] += 0.8
    data = TensorDataset(images, labels)
    return DataLoader(data, batch_size=8), DataLoader(data, batch_size=8)


def test_a_multilabel_model_gets_a_map_per_label_predicted_or_true_and_says_so(tmp_path, caplog):
    callback = RecordingCNNSee(gradcam_layers=["features"], **FAST)
    with caplog.at_level("INFO"):
        trainer, _ = fit(tmp_path, callback, model=MultiLabel(), loaders=multilabel_loaders(), max_epochs=2)
    assert "CNNSee sees a multilabel model (outputs (4, 4), labels (4, 4))" in caplog.text
    tags = read_images(trainer.logger.log_dir)
    assert "cnnsee/gradcam/features" in tags and "cnnsee/activations/features.0" in tags
    results = callback.last_results
    images, labels = results.pairs
    predicted = results.logits.sigmoid() > 0.5
    truth = callback.fixed.labels.bool()
    expected = (predicted | truth).nonzero(as_tuple=True)
    assert images.tolist() == expected[0].tolist() and labels.tolist() == expected[1].tolist()
    assert results.pair_cams["features"].shape[0] == images.numel()


class Segmenter(pl.LightningModule):
    """A tiny fully convolutional net returning torchvision's {"out": (N, C, H, W)}."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.classifier = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return {"out": self.classifier(self.backbone(x))}

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0])["out"], batch[1])

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def test_a_segmentation_model_gets_the_predicted_mask_and_a_map_per_class(tmp_path, caplog):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 16, 16, generator=generator)
    masks = (images[:, 0] > 0.5).long() + (images[:, 1] > 0.8).long()  # classes 0, 1, 2 by pixel colour
    data = DataLoader(TensorDataset(images, masks), batch_size=8)
    callback = RecordingCNNSee(techniques=["gradcam", "activations", "filters", "classes"], **FAST)
    with caplog.at_level("INFO"):
        trainer, _ = fit(tmp_path, callback, model=Segmenter(), loaders=(data, data), max_epochs=1)
    assert "CNNSee sees a segmentation model (outputs (4, 3, 16, 16), labels (4, 16, 16))" in caplog.text
    tags = read_images(trainer.logger.log_dir)
    assert {"cnnsee/gradcam/backbone", "cnnsee/classes"} <= set(tags), tags
    results = callback.last_results
    images_index, classes = results.pairs
    predicted = results.logits.argmax(dim=1)
    for image, cls in zip(images_index.tolist(), classes.tolist(), strict=True):
        assert bool((predicted[image] == cls).any())  # a map per class of the predicted mask
    assert len(results.class_patterns.channels) == 3  # class patterns: the output channels


def test_one_hot_labels_of_a_classifier_given_its_kind_become_class_indices(tmp_path):
    train, val = make_loaders(count=32)
    one_hot = [
        DataLoader(TensorDataset(x, nn.functional.one_hot(y, 4)), batch_size=8)
        for x, y in (loader.dataset.tensors for loader in (train, val))
    ]

    class OneHot(TinyClassifier):
        def training_step(self, batch, batch_idx):
            return super().training_step((batch[0], batch[1].argmax(dim=1)), batch_idx)

        def validation_step(self, batch, batch_idx):
            return super().validation_step((batch[0], batch[1].argmax(dim=1)), batch_idx)

    callback = RecordingCNNSee(model_kind="classification", techniques=["gradcam"], strict=True, **FAST)
    trainer, _ = fit(tmp_path, callback, model=OneHot(), loaders=one_hot, max_epochs=1)
    results = callback.last_results
    assert results.kind == "classification" and set(results.cams_true) == {"features"}
    assert "cnnsee/gradcam/features" in read_images(trainer.logger.log_dir)


def test_a_failing_number_costs_neither_the_images_nor_the_training(tmp_path, monkeypatch):
    import lightning_cnnsee.callback.cnnsee as callback_module

    def broken(*args, **kwargs):
        raise ValueError("drift exploded")

    monkeypatch.setattr(callback_module, "run_scalars", broken)
    trainer, said = fit(tmp_path, CNNSee(**FAST), max_epochs=2)
    assert [message for message in said if "drift exploded" in message] != []
    assert len([message for message in said if "drift exploded" in message]) == 1  # said once
    assert read_images(trainer.logger.log_dir)["cnnsee/gradcam/features"] == [0, 4, 8]
    assert trainer.current_epoch == 2
