"""Training never notices CNNSee: identical weights, early configuration errors, bad data, no leaks, resume."""

from __future__ import annotations

import gc
import os
import warnings

import pytest
import pytorch_lightning as pl
import torch
from tiny import NUM_CLASSES, TinyClassifier, count_hooks, make_loaders, read_images, trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_cnnsee import CNNSee

FAST = dict(ascent_steps=3, num_samples=6, max_overhead=None)


class EveryBatchCNNSee(CNNSee):
    """Runs after every micro-batch, so also between the micro-batches of one accumulated optimizer step."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.run(trainer, pl_module)


class RecordingModule(TinyClassifier):
    """Counts training steps, to prove that a configuration error came before the first one."""

    steps = 0

    def training_step(self, batch, batch_idx):
        RecordingModule.steps += 1
        return super().training_step(batch, batch_idx)


def _fit_state(tmp_path, callback, **overrides):
    pl.seed_everything(7, workers=True)
    model = TinyClassifier()
    train, val = make_loaders(count=64)
    trainer = pl.Trainer(
        callbacks=[callback] if callback else [],
        **trainer_kwargs(tmp_path, deterministic=True, accumulate_grad_batches=2, **overrides),
    )
    trainer.fit(model, train, val)
    optimizer_state = trainer.optimizers[0].state_dict()
    return model.state_dict(), optimizer_state, torch.get_rng_state()


def test_training_is_bitwise_identical_with_callback_running_between_micro_batches(tmp_path):
    weights_a, optimizer_a, rng_a = _fit_state(tmp_path / "a", None)
    callback = EveryBatchCNNSee(every_n_steps=1, **FAST)
    weights_b, optimizer_b, rng_b = _fit_state(tmp_path / "b", callback)
    assert callback.schedule.runs > 0 and len(read_images(str(tmp_path / "b" / "logs" / "version_0"))) > 0
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:  # parameters and BatchNorm buffers
        assert torch.equal(weights_a[name], weights_b[name]), name
    for index, state in optimizer_a["state"].items():  # SGD momentum buffers
        for key, value in state.items():
            other = optimizer_b["state"][index][key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, (index, key)
    assert torch.equal(rng_a, rng_b)  # the global random state


def _error_at_setup(tmp_path, message, **options):
    RecordingModule.steps = 0
    train, val = make_loaders()
    trainer = pl.Trainer(callbacks=[CNNSee(**options)], **trainer_kwargs(tmp_path, max_epochs=1))
    with pytest.raises(ValueError, match=message):
        trainer.fit(RecordingModule(), train, val)
    assert RecordingModule.steps == 0


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(gradcam_layers=["head.3"]), r"gradcam_layers.*'head\.3' outputs shape \(1, 4\).*\(N, C, H, W\)"),
        (dict(activation_layers=["head.2"]), r"activation_layers.*'head\.2'"),
        (dict(filter_channels=[0, 30]), r"channels \[30\] out of range for layer 'features.0' with 8 channels"),
        (dict(classes=[1, 9]), r"classes \[9\] out of range for 4 classes \(valid: 0\.\.3\)"),
        (dict(mean=[0.5], std=[0.2]), r"mean=\[0\.5\]\): 1 values for images with 3 channels"),
        (dict(layers=["featurs.0"]), r"Unknown layer name 'featurs.0'.*Closest layer names: \['features.0'"),
    ],
)
def test_configuration_errors_come_at_setup_before_the_first_training_step(tmp_path, options, message):
    _error_at_setup(tmp_path, message, **options)


class FixedSizeModel(RecordingModule):
    """A model whose Linear layer needs exactly 16x20 inputs: the 64x64 setup probe cannot run it."""

    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(12 * 8 * 10, NUM_CLASSES))


def test_configuration_errors_for_fixed_size_models_come_from_the_sanity_check(tmp_path):
    RecordingModule.steps = 0
    train, val = make_loaders()
    trainer = pl.Trainer(callbacks=[CNNSee(gradcam_layers=["head.1"], **FAST)], **trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match=r"'head\.1' outputs shape \(1, 4\)"):
        trainer.fit(FixedSizeModel(), train, val)
    assert RecordingModule.steps == 0


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(every_n_steps=0), r"CNNSee\(every_n_steps=0\): must be a whole number >= 1.*or None to turn it off"),
        (dict(every_n_epochs=0), r"CNNSee\(every_n_epochs=0\): must be a whole number >= 1"),
        (dict(num_samples=-2), r"CNNSee\(num_samples=-2\): must be a whole number >= 1"),
        (dict(num_samples=2.5), r"CNNSee\(num_samples=2\.5\): must be a whole number >= 1 \(not a float or a bool\)"),
        (dict(num_samples=True), r"CNNSee\(num_samples=True\): must be a whole number"),
        (dict(num_filters=1.5), r"CNNSee\(num_filters=1\.5\): must be a whole number >= 1"),
        (dict(ascent_steps=-1), r"CNNSee\(ascent_steps=-1\): must be a whole number >= 0"),
        (dict(filters_every_n_runs=0), r"CNNSee\(filters_every_n_runs=0\): must be a whole number >= 1"),
        (
            dict(techniques="gradcam"),
            r"CNNSee\(techniques='gradcam'\): must be a non-empty list of .*write \['gradcam'\]",
        ),
        (
            dict(techniques=[]),
            r"CNNSee\(techniques=\[\]\): must be a non-empty list of \['gradcam', 'attributions', 'filters'",
        ),
        (
            dict(attribution_methods=["lime"]),
            r"CNNSee\(attribution_methods=\['lime'\]\): unknown \['lime'\]; valid choices",
        ),
        (dict(num_diverse=0), r"CNNSee\(num_diverse=0\): must be a whole number >= 1"),
        (
            dict(model_kind="detection"),
            r"CNNSee\(model_kind='detection'\): valid choices are \['auto', 'classification'",
        ),
        (dict(ascent_lr=float("nan")), r"CNNSee\(ascent_lr=nan\): must be a finite number > 0"),
        (dict(max_overhead=float("inf")), r"CNNSee\(max_overhead=inf\): must be a finite number > 0, or None"),
        (dict(cam_alpha=float("nan")), r"CNNSee\(cam_alpha=nan\): must be a number in \[0, 1\]"),
        (
            dict(std=[0.5, float("nan"), 0.5]),
            r"CNNSee\(std=\[0\.5, nan, 0\.5\]\): must be a non-empty list of finite numbers > 0",
        ),
        (
            dict(layers="features.0"),
            r"CNNSee\(layers='features.0'\): must be a non-empty list of layer names.*write \['features.0'\]",
        ),
        (dict(strict="yes"), r"CNNSee\(strict='yes'\): must be True or False"),
        (dict(name="gradcam"), r"CNNSee\(name='gradcam'\): must not be one of the tag kinds"),
        (dict(name="a/b"), r"CNNSee\(name='a/b'\): must be a non-empty string of letters"),
        (
            dict(cam_method="gradcam2"),
            r"CNNSee\(cam_method='gradcam2'\).*valid choices: \['ablationcam'"
            r"|CNNSee\(cam_method='gradcam2'\).*valid choices: \['gradcam'",
        ),
        (dict(parameterization="dct"), r"CNNSee\(parameterization='dct'\): valid choices are \['fft', 'pixel'\]"),
        (
            dict(filter_channels=[-1]),
            r"CNNSee\(filter_channels=\[-1\]\): must be a non-empty list of whole-number indices >= 0",
        ),
        (dict(classes=[1.5]), r"CNNSee\(classes=\[1\.5\]\): must be a non-empty list of whole-number indices"),
    ],
)
def test_bad_values_are_rejected_with_the_valid_choices(options, message):
    with pytest.raises(ValueError, match=message):
        CNNSee(**options)


# ---------------------------------------------------------------- bad data


class DictDataset(Dataset):
    """Dict samples with extra items, under names CNNSee cannot guess."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"pixels": self.x[index], "cls": self.y[index], "id": index, "weight": 1.0}


class DictModel(TinyClassifier):
    def training_step(self, batch, batch_idx):
        return super().training_step((batch["pixels"], batch["cls"]), batch_idx)

    def validation_step(self, batch, batch_idx):
        return super().validation_step((batch["pixels"], batch["cls"]), batch_idx)


class TupleOutputModel(TinyClassifier):
    """Returns (features, logits): CNNSee is told where the logits are with output_key=1."""

    def forward(self, x):
        features = self.features(x)
        return features, self.head(features)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x)[1], y)

    def validation_step(self, batch, batch_idx):
        pass


def _tags(tmp_path, model, train, val, callback, **overrides):
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, **overrides))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train, val)
    cnnsee_warnings = [str(w.message) for w in caught if "CNNSee" in str(w.message)]
    return read_images(trainer.logger.log_dir), cnnsee_warnings, callback


def _all_kinds(tags):
    return {tag.split("/")[1] for tag in tags} == {"gradcam", "filters", "classes", "activations"}


def test_nan_and_inf_images_do_not_stop_training_or_the_pictures(tmp_path):
    train, val = make_loaders()
    x, y = val.dataset.tensors
    x = x.clone()
    x[0, :, :4] = float("nan")
    x[1, 0, 0, 0] = float("inf")
    val = DataLoader(TensorDataset(x, y), batch_size=8)
    tags, _, _ = _tags(tmp_path, TinyClassifier(), train, val, CNNSee(**FAST))
    assert _all_kinds(tags) and all(len(steps) >= 2 for steps in tags.values())


def test_fewer_validation_images_than_num_samples_are_followed_with_a_warning(tmp_path):
    train, val = make_loaders()
    x, y = val.dataset.tensors
    val = DataLoader(TensorDataset(x[:3], y[:3]), batch_size=2)
    tags, said, callback = _tags(
        tmp_path, TinyClassifier(), train, val, CNNSee(num_samples=8, ascent_steps=3, max_overhead=None)
    )
    assert callback.fixed.images.shape[0] == 3 and _all_kinds(tags)
    assert any("only 3 images" in text for text in said)


def test_dict_batches_with_extra_items_work_with_image_key_and_label_key(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 20, generator=generator), torch.randint(0, NUM_CLASSES, (32,), generator=generator)
    train = DataLoader(DictDataset(x, y), batch_size=8)
    val = DataLoader(DictDataset(x[:16], y[:16]), batch_size=8)
    callback = CNNSee(image_key="pixels", label_key="cls", **FAST)
    tags, said, callback = _tags(tmp_path, DictModel(), train, val, callback)
    assert _all_kinds(tags) and torch.equal(callback.fixed.labels, y[:6])
    assert not any("skipped" in text for text in said)


def test_tuple_batches_with_extra_items_use_the_first_two(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 20, generator=generator), torch.randint(0, NUM_CLASSES, (32,), generator=generator)
    extra = torch.rand(32, 5)
    train = DataLoader(TensorDataset(x, y), batch_size=8)
    val = DataLoader(TensorDataset(x[:16], y[:16], extra[:16]), batch_size=8)

    class ExtraItemsValidation(TinyClassifier):
        def validation_step(self, batch, batch_idx):
            return super().validation_step(batch[:2], batch_idx)

    tags, _, callback = _tags(tmp_path, ExtraItemsValidation(), train, val, CNNSee(**FAST))
    assert _all_kinds(tags) and torch.equal(callback.fixed.labels, y[:6])


def test_models_returning_tuples_are_read_with_output_key(tmp_path):
    train, val = make_loaders()
    tags, said, _ = _tags(tmp_path, TupleOutputModel(), train, val, CNNSee(output_key=1, **FAST))
    assert _all_kinds(tags), said


def test_without_labels_the_heat_maps_show_the_prediction(tmp_path):
    train, val = make_loaders()
    x, _ = val.dataset.tensors
    val = DataLoader(TensorDataset(x), batch_size=8)  # images only

    class ImagesOnlyValidation(TinyClassifier):
        def validation_step(self, batch, batch_idx):
            self(batch[0])

    tags, said, callback = _tags(tmp_path, ImagesOnlyValidation(), train, val, CNNSee(**FAST))
    assert callback.fixed.labels is None and _all_kinds(tags)
    assert not any("skipped" in text for text in said)


def test_without_a_validation_loader_training_images_are_used_with_a_warning(tmp_path):
    train, _ = make_loaders()
    tags, said, callback = _tags(tmp_path, TinyClassifier(), train, None, CNNSee(**FAST))
    assert _all_kinds(tags) and torch.equal(callback.fixed.images, train.dataset.tensors[0][:6])
    assert any("no validation data" in text for text in said)


# ------------------------------------------------------------- no leaks


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _NullWriter:
    def add_image(self, *args, **kwargs):
        pass

    def add_scalar(self, *args, **kwargs):
        pass


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read process memory")
def test_memory_and_hooks_stay_flat_over_200_runs():
    torch.manual_seed(0)
    model = TinyClassifier()
    train, _ = make_loaders()
    x, y = train.dataset.tensors
    callback = CNNSee(ascent_steps=2, num_samples=4, activation_channels=4, num_filters=2, max_classes=2)
    callback.fixed.images, callback.fixed.labels = x[:4], y[:4]
    callback.sinks = _NullWriter()

    class FakeTrainer:
        global_step = 0

    hooks = count_hooks(model)
    for _ in range(20):  # warm up allocator caches and lazily built state
        callback.run(FakeTrainer, model)
    tensors, memory = _live_tensors(), _resident_bytes()
    for step in range(200):
        FakeTrainer.global_step = step
        callback.run(FakeTrainer, model)
    assert count_hooks(model) == hooks
    assert _live_tensors() - tensors <= 5
    assert _resident_bytes() - memory < 30 * 2**20  # 30 MiB: no per-run growth (a leak of one image grid per run
    # would pass 200 * 500 KiB = 100 MiB)


def test_no_hook_is_left_behind_when_a_run_fails(monkeypatch):
    import lightning_cnnsee.explain.ascent as ascent_module

    model = TinyClassifier()
    x, y = make_loaders()[0].dataset.tensors
    callback = CNNSee(**FAST)
    callback.fixed.images = x[:4]
    callback.sinks = _NullWriter()
    hooks = count_hooks(model)

    def broken_transform(*args, **kwargs):
        raise RuntimeError("transform failed mid-ascent")

    monkeypatch.setattr(ascent_module, "random_transform", broken_transform)

    class FakeTrainer:
        global_step = 3

    with pytest.warns(UserWarning, match="transform failed mid-ascent"):
        callback.run(FakeTrainer, model)
    assert count_hooks(model) == hooks
    assert model.training


# ------------------------------------------------------ checkpoint / resume


def _checkpointing_trainer(tmp_path, callbacks, **overrides):
    kwargs = trainer_kwargs(tmp_path, enable_checkpointing=True, **overrides)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    return pl.Trainer(callbacks=[*callbacks, checkpoint], **kwargs)


def test_resumed_run_keeps_the_same_images_and_schedule(tmp_path):
    train, val = make_loaders()
    first = CNNSee(**FAST)
    trainer = _checkpointing_trainer(tmp_path, [first], max_epochs=2)
    trainer.fit(TinyClassifier(), train, val)
    steps_before = read_images(trainer.logger.log_dir)["cnnsee/classes"]

    # resume with other validation data: the fixed images must come from the checkpoint, not from this data
    _, other_val = make_loaders(seed=99)
    resumed = CNNSee(**FAST)
    trainer = _checkpointing_trainer(tmp_path, [resumed], max_epochs=4)
    trainer.fit(TinyClassifier(), train, other_val, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert torch.equal(resumed.fixed.images, first.fixed.images)
    assert torch.equal(resumed.fixed.labels, first.fixed.labels)
    steps_after = read_images(trainer.logger.log_dir)["cnnsee/classes"]
    assert steps_before == [0, 6, 12]
    assert steps_after == [18, 24]  # no second baseline, the schedule goes on


def test_checkpoints_load_across_runs_with_and_without_cnnsee(tmp_path):
    train, val = make_loaders()
    trainer = _checkpointing_trainer(tmp_path / "plain", [], max_epochs=1)
    trainer.fit(TinyClassifier(), train, val)
    with_callback = CNNSee(**FAST)
    trainer = _checkpointing_trainer(tmp_path / "plain", [with_callback], max_epochs=2)
    trainer.fit(TinyClassifier(), train, val, ckpt_path=str(tmp_path / "plain" / "ckpt" / "last.ckpt"))
    assert with_callback.fixed.images is not None and trainer.current_epoch == 2

    trainer = _checkpointing_trainer(tmp_path / "see", [CNNSee(**FAST)], max_epochs=1)
    trainer.fit(TinyClassifier(), train, val)
    trainer = _checkpointing_trainer(tmp_path / "see", [], max_epochs=2)
    trainer.fit(TinyClassifier(), train, val, ckpt_path=str(tmp_path / "see" / "ckpt" / "last.ckpt"))
    assert trainer.current_epoch == 2


def _files(root):
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


def test_only_the_loggers_directory_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, val = make_loaders()
    for name, callbacks in [("without", []), ("with", [CNNSee(**FAST)])]:
        pl.seed_everything(0)
        trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path / name))
        trainer.fit(TinyClassifier(), train, val)
    log_dir = os.path.relpath(trainer.logger.log_dir, tmp_path / "with")
    without, with_callback = _files(tmp_path / "without"), _files(tmp_path / "with")
    added = {path for path in with_callback if not path.startswith(log_dir + os.sep)}
    assert added == without - {p for p in without if p.startswith(log_dir + os.sep)}
    assert _files(tmp_path) - {f"with/{p}" for p in with_callback} - {f"without/{p}" for p in without} == set()
