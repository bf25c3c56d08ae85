"""One technique's failure is its own: a run logs every kind that worked and names, once, the kind that failed."""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
import torch
from tiny import TinyClassifier, make_loaders, read_images, trainer_kwargs
from torch import nn

import lightning_cnnsee.run.visualization as visualization
from lightning_cnnsee import CNNSee
from lightning_cnnsee.run.options import Options
from lightning_cnnsee.run.visualization import visualize


def small_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )


OPTIONS = Options(
    ascent_steps=2,
    techniques=["gradcam", "attributions", "filters", "classes", "activations", "faithfulness"],
    num_filters=2,
)


def test_a_failing_attribution_method_keeps_every_other_kind(monkeypatch):
    real = visualization.attribute

    def attribute(module, inputs, method, *args, **kwargs):
        if method == "saliency":
            raise RuntimeError("saliency broke")
        return real(module, inputs, method, *args, **kwargs)

    monkeypatch.setattr(visualization, "attribute", attribute)
    torch.manual_seed(0)
    results = visualize(small_model(), torch.rand(2, 3, 12, 12), torch.tensor([0, 2]), OPTIONS)
    assert results.failures == {"attributions/saliency": "RuntimeError: saliency broke"}
    assert list(results.attributions_predicted) == ["integrated_gradients"]
    assert list(results.attributions_true) == ["integrated_gradients"]
    assert results.cams_predicted and results.activations and results.filters and results.class_patterns is not None
    assert "integrated_gradients" in results.faithfulness and "saliency" not in results.faithfulness


def test_a_failing_filter_layer_keeps_the_other_layers_and_the_class_patterns(monkeypatch):
    real = visualization.filter_ascent

    def filter_ascent(module, layer, *args, **kwargs):
        if layer == "0":
            raise RuntimeError("out of memory")
        return real(module, layer, *args, **kwargs)

    monkeypatch.setattr(visualization, "filter_ascent", filter_ascent)
    results = visualize(small_model(), torch.rand(2, 3, 12, 12), torch.tensor([0, 2]), OPTIONS)
    assert results.failures == {"filters/0": "RuntimeError: out of memory"}
    assert sorted(results.filters) == ["2"] and results.class_patterns is not None
    assert results.filters["2"].images.abs().sum() > 0


def test_strict_mode_raises_the_failing_techniques_error(monkeypatch):
    monkeypatch.setattr(visualization, "capture_activations", lambda *a: (_ for _ in ()).throw(RuntimeError("x")))
    options = Options(ascent_steps=2, techniques=["activations"], strict=True)
    with pytest.raises(RuntimeError, match="x"):
        visualize(small_model(), torch.rand(2, 3, 12, 12), None, options)


def test_a_fit_whose_cams_fail_logs_every_other_kind_and_names_the_cams_once(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("target class [1, 0] out of range")

    monkeypatch.setattr(visualization, "cams_for_targets", broken)
    pl.seed_everything(0)
    train, val = make_loaders(count=16)
    callback = CNNSee(ascent_steps=2, num_samples=4, max_overhead=None, num_filters=2)
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_epochs=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyClassifier(), train, val)
    said = [str(w.message) for w in caught if "CNNSee could not make" in str(w.message)]
    assert said == [
        "CNNSee could not make the CAMs (gradcam) at step 0 because of ValueError: target class [1, 0] out of "
        "range; every other kind was logged. Training goes on; CNNSee(strict=True) raises."
    ]
    kinds = {tag.split("/")[1] for tag in read_images(trainer.logger.log_dir)}
    assert kinds == {"filters", "classes", "activations"}
