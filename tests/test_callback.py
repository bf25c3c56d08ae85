"""The CNNSee callback inside real Lightning fits: what it logs, when, and that it leaves the model alone."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny import TinyClassifier, count_hooks, make_loaders, read_images, trainer_kwargs

from lightning_cnnsee import CNNSee
from lightning_cnnsee.render.images import render_results
from lightning_cnnsee.run.options import Options
from lightning_cnnsee.run.visualization import visualize

FAST = dict(ascent_steps=4, num_samples=6, max_overhead=None)


def fit(tmp_path, callback: CNNSee | None, seed: int = 0, **overrides):
    pl.seed_everything(seed, workers=True)
    model = TinyClassifier()
    train, val = make_loaders()
    callbacks = [callback] if callback is not None else []
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **overrides))
    trainer.fit(model, train, val)
    return trainer, model


def test_fit_logs_all_four_kinds_of_images_at_several_steps_and_they_change(tmp_path):
    trainer, _ = fit(tmp_path, CNNSee(**FAST), max_epochs=3)
    tags = read_images(trainer.logger.log_dir)
    kinds = {"gradcam": 0, "filters": 0, "classes": 0, "activations": 0}
    for tag, steps in tags.items():
        kind = tag.split("/")[1]
        assert len(set(steps)) >= 2, (tag, steps)
        kinds[kind] += 1
    assert all(count >= 1 for count in kinds.values()), tags
    assert "cnnsee/gradcam/features" in tags  # last 4-D map before global pooling
    assert "cnnsee/classes" in tags
    assert tags["cnnsee/classes"][0] == 0  # the baseline, before the first optimizer step
    accumulator = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    accumulator.Reload()
    for tag in ("cnnsee/gradcam/features", "cnnsee/filters/features.4", "cnnsee/classes"):
        events = accumulator.Images(tag)
        first = np.asarray(Image.open(io.BytesIO(events[0].encoded_image_string)))
        last = np.asarray(Image.open(io.BytesIO(events[-1].encoded_image_string)))
        assert first.shape == last.shape
        assert np.abs(first.astype(int) - last.astype(int)).mean() > 0.5, f"{tag} did not change with training"


def test_runs_follow_the_step_schedule_with_a_baseline_and_a_final_run(tmp_path):
    callback = CNNSee(every_n_epochs=None, every_n_steps=4, techniques=["gradcam"], **FAST)
    trainer, _ = fit(tmp_path, callback, max_steps=10)
    steps = read_images(trainer.logger.log_dir)["cnnsee/gradcam/features"]
    assert steps == [0, 4, 8, 10]


def test_filter_ascent_can_run_less_often_than_the_rest(tmp_path):
    callback = CNNSee(every_n_epochs=None, every_n_steps=2, filters_every_n_runs=3, **FAST)
    trainer, _ = fit(tmp_path, callback, max_steps=11)
    tags = read_images(trainer.logger.log_dir)
    assert tags["cnnsee/gradcam/features"] == [0, 2, 4, 6, 8, 10, 11]
    assert tags["cnnsee/classes"] == [0, 6, 11]


def test_the_same_fixed_validation_images_are_used_at_every_run(tmp_path):
    callback = CNNSee(**FAST)
    fit(tmp_path, callback)
    _, val = make_loaders()
    expected_x, expected_y = next(iter(val))
    assert torch.equal(callback.fixed.images, expected_x[:6])
    assert torch.equal(callback.fixed.labels, expected_y[:6])
    assert callback.fixed.images.device.type == "cpu"


def test_a_run_leaves_modes_gradients_statistics_parameters_and_hooks_as_they_were():
    torch.manual_seed(0)
    model = TinyClassifier()
    model.train()
    model.head[0].eval()  # a mixed state must come back exactly
    model.features[4].weight.requires_grad_(False)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    model.features[0].bias.grad = None
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    grads = {name: (p.grad.clone() if p.grad is not None else None) for name, p in model.named_parameters()}
    flags = {name: module.training for name, module in model.named_modules()}
    requires = {name: p.requires_grad for name, p in model.named_parameters()}
    hooks = count_hooks(model)

    _, val = make_loaders()
    x, y = next(iter(val))
    with torch.inference_mode():  # as in Lightning's validation loop
        results = visualize(model, x[:4], y[:4], Options(ascent_steps=3, num_samples=4))
    assert results.cams_predicted and results.cams_true and results.activations and results.filters
    assert results.class_patterns is not None

    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    for name, parameter in model.named_parameters():
        if grads[name] is None:
            assert parameter.grad is None, name
        else:
            assert torch.equal(parameter.grad, grads[name]), name
        assert parameter.requires_grad == requires[name], name
    assert {name: module.training for name, module in model.named_modules()} == flags
    assert count_hooks(model) == hooks


def test_training_is_bitwise_identical_with_and_without_the_callback(tmp_path):
    _, without = fit(tmp_path / "without", None, deterministic=True)
    _, with_callback = fit(tmp_path / "with", CNNSee(every_n_steps=1, **FAST), deterministic=True)
    for (name, a), (_, b) in zip(without.state_dict().items(), with_callback.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_unknown_layer_name_fails_at_setup_naming_the_closest_layers(tmp_path):
    with pytest.raises(ValueError, match=r"gradcam_layers.*'features\.50'.*Closest layer names.*features\.5"):
        fit(tmp_path, CNNSee(gradcam_layers=["features.50"], **FAST))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_samples=0), r"CNNSee\(num_samples=0\): must be a whole number >= 1"),
        (dict(every_n_epochs=-1), r"CNNSee\(every_n_epochs=-1\): must be a whole number >= 1"),
        (dict(cam_method="gradcam+++"), r"CNNSee\(cam_method='gradcam\+\+\+'\).*valid choices"),
        (dict(techniques=["gradcam", "saliency"]), r"unknown \['saliency'\]; valid choices are \['gradcam'"),
        (dict(mean=[0.5, 0.5], std=[0.2]), r"CNNSee\(std=\[0.2\]\): must have as many values as mean"),
    ],
)
def test_bad_options_are_rejected_when_the_callback_is_made(options, message):
    with pytest.raises(ValueError, match=message):
        CNNSee(**options)


def test_with_a_csv_logger_png_files_land_in_its_run_folder_and_it_says_so(tmp_path, caplog):
    logger = pl.loggers.CSVLogger(str(tmp_path), name="csv")
    with caplog.at_level("INFO"):
        trainer, _ = fit(tmp_path, CNNSee(**FAST), logger=logger, max_epochs=1)
    folder = os.path.join(trainer.log_dir, "cnnsee")
    assert f"CSVLogger: PNG files in {folder}" in caplog.text
    written = sorted(
        os.path.relpath(os.path.join(root, f), folder) for root, _, files in os.walk(folder) for f in files
    )
    assert "classes/step_00000000.png" in written
    assert any(path.startswith("gradcam/features/") for path in written)
    assert any(path.startswith("activations/") for path in written)
    assert any(path.startswith("filters/") for path in written)


def test_without_a_logger_it_warns_and_writes_png_files_under_the_root_folder(tmp_path):
    with pytest.warns(UserWarning, match="CNNSee found no logger: PNG files in"):
        fit(tmp_path, CNNSee(**FAST), logger=False, max_epochs=1)
    assert (tmp_path / "cnnsee" / "classes" / "step_00000000.png").is_file()


def test_a_failing_visualization_is_reported_once_and_training_goes_on(tmp_path, monkeypatch):
    import lightning_cnnsee.run.visualization as visualize_module

    def broken(*args, **kwargs):
        raise RuntimeError("activations exploded")

    monkeypatch.setattr(visualize_module, "capture_activations", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, _ = fit(tmp_path, CNNSee(**FAST), max_epochs=3)
    reports = [w for w in caught if "activations exploded" in str(w.message)]
    assert len(reports) == 1
    assert trainer.current_epoch == 3  # training finished


def test_strict_mode_re_raises_the_visualization_error(tmp_path, monkeypatch):
    import lightning_cnnsee.run.visualization as visualize_module

    def broken(*args, **kwargs):
        raise RuntimeError("activations exploded")

    monkeypatch.setattr(visualize_module, "capture_activations", broken)
    with pytest.raises(RuntimeError, match="activations exploded"):
        fit(tmp_path, CNNSee(strict=True, **FAST))


def test_images_without_labels_show_predictions_only(tmp_path):
    options = Options(ascent_steps=2, num_samples=4)
    _, val = make_loaders()
    x, _ = next(iter(val))
    images, labels = x[:4], torch.tensor([0, 1, 2, 3])
    model = TinyClassifier()
    no_labels = render_results(visualize(model, images, None, options), images, None, options)
    with_labels = render_results(visualize(model, images, labels, options), images, labels, options)
    # one heat-map row fewer
    assert no_labels["cnnsee/gradcam/features"].shape[1] < with_labels["cnnsee/gradcam/features"].shape[1]


def test_images_are_denormalized_with_the_given_mean_and_std():
    options = Options(mean=[0.5], std=[0.25], techniques=["activations"], num_samples=2)
    model = TinyClassifier(in_channels=1)
    images = torch.full((2, 1, 16, 20), -2.0)  # (0 - 0.5) / 0.25: black after denormalizing
    image = render_results(visualize(model, images, None, options), images, None, options)[
        "cnnsee/activations/features.0"
    ]
    # the first tile of the first row is the image itself: black, not clipped white or grey
    assert float(image[:, 2:10, 2:10].max()) == 0.0


class VirtualClock:
    """Seconds that pass only where a test says so: the budget tests measure what they mean (the costs the test
    sets), not how loaded the machine is. Everything else CNNSee and training do takes no time on this clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> VirtualClock:
    """CNNSee's budget, its run timings and its pattern estimates all read a :class:`VirtualClock`."""
    import types

    import lightning_cnnsee.callback.budget as budget_module
    import lightning_cnnsee.callback.cnnsee as callback_module
    import lightning_cnnsee.run.visualization as visualize_module

    virtual = VirtualClock()
    virtual_time = types.SimpleNamespace(perf_counter=virtual.perf_counter)
    monkeypatch.setattr(callback_module, "time", virtual_time)
    monkeypatch.setattr(visualize_module, "time", virtual_time)
    monkeypatch.setattr(budget_module.OverheadBudget.__init__, "__defaults__", (virtual.perf_counter,))
    return virtual


@pytest.fixture
def slow_ascent(monkeypatch, clock):
    """Filter and class ascent that take 0.05 s per step and layer (and 0.01 s to set up), so that the patterns cost
    about 0.6 s a run: far over a budget of a few seconds when runs come every step; the maps 0.02 s a run."""
    import lightning_cnnsee.run.visualization as visualize_module

    real_ascent, real_cams = visualize_module.filter_ascent, visualize_module.cams_for_targets

    def slow_ascent(*args, **kwargs):
        clock.sleep(0.01 + 0.05 * kwargs["steps"])
        return real_ascent(*args, **kwargs)

    def slow_cams(*args, **kwargs):
        clock.sleep(0.02)
        return real_cams(*args, **kwargs)

    monkeypatch.setattr(visualize_module, "filter_ascent", slow_ascent)
    monkeypatch.setattr(visualize_module, "cams_for_targets", slow_cams)


class SlowTraining(TinyClassifier):
    """0.1 s per training step (on the test's clock), so that a budget in fractions of training time means
    something."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def training_step(self, batch, batch_idx):
        self.clock.sleep(0.1)
        return super().training_step(batch, batch_idx)


def fit_slowly(tmp_path, callback: CNNSee, steps: int, clock: VirtualClock):
    pl.seed_everything(0)
    train, val = make_loaders()
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_steps=steps, max_epochs=100))
    trainer.fit(SlowTraining(clock), train, val)
    return trainer


def test_max_overhead_counts_every_run_and_keeps_the_patterns_for_the_final_run(tmp_path, slow_ascent, clock):
    callback = CNNSee(every_n_epochs=None, every_n_steps=1, ascent_steps=4, num_samples=4, max_overhead=0.5)
    trainer = fit_slowly(tmp_path, callback, steps=40, clock=clock)
    tags = read_images(trainer.logger.log_dir)
    maps, patterns = tags["cnnsee/gradcam/features"], tags["cnnsee/classes"]
    assert maps[0] == 0 and maps[-1] == 40  # the baseline and the final run always happen
    assert 3 <= len(maps) <= 30  # of the 41 runs asked for, the budget let some through (20 on the test clock)
    assert patterns[-1] == 40 and 0 not in patterns  # no budget at step 0; the final run's were kept room for
    budget = callback.schedule.budget
    # every run counted, the baseline, the final run and the estimate of the patterns too
    assert budget.spent <= 0.5 * budget.training_seconds()
    assert callback.schedule.deferred > 0


def test_the_estimate_of_the_pattern_cost_comes_before_the_first_patterns_and_is_close(
    tmp_path, slow_ascent, clock, monkeypatch
):
    import lightning_cnnsee.callback.cnnsee as callback_module

    callback = CNNSee(every_n_epochs=None, every_n_steps=1, ascent_steps=4, num_samples=4, max_overhead=0.5)
    estimates = []
    estimate = callback_module.estimate_pattern_seconds

    def record(*args):
        estimates.append((estimate(*args), callback.schedule.runs))
        return estimates[-1][0]

    monkeypatch.setattr(callback_module, "estimate_pattern_seconds", record)
    fit_slowly(tmp_path, callback, steps=12, clock=clock)
    [(estimated, runs_before)] = estimates
    assert runs_before == 0  # at the baseline, which shows the maps only
    measured = callback.schedule.budget.patterns_seconds  # of the final run: 3 layers x (0.01 + 4 x 0.05) s of sleep
    assert measured == pytest.approx(0.63)
    assert 0.8 * measured <= estimated <= 1.2 * measured


def test_a_final_run_without_room_for_the_patterns_says_so(tmp_path, slow_ascent, clock, caplog):
    callback = CNNSee(every_n_epochs=None, every_n_steps=None, ascent_steps=4, num_samples=4, max_overhead=0.01)
    with caplog.at_level("INFO"):
        trainer = fit_slowly(tmp_path, callback, steps=5, clock=clock)
    tags = read_images(trainer.logger.log_dir)
    assert tags["cnnsee/gradcam/features"] == [0, 5] and "cnnsee/classes" not in tags
    assert "left the filter and class patterns out of the final run" in caplog.text
    assert "max_overhead=0.01" in caplog.text


def test_without_max_overhead_every_scheduled_run_happens(tmp_path, slow_ascent):
    callback = CNNSee(every_n_epochs=None, every_n_steps=5, ascent_steps=2, num_samples=4, max_overhead=None)
    trainer, _ = fit(tmp_path, callback, max_steps=15, max_epochs=10)
    assert read_images(trainer.logger.log_dir)["cnnsee/classes"] == [0, 5, 10, 15]
