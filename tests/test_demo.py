import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_cnnsee import cli, demo
from lightning_cnnsee.demo.data import CLASS_NAMES, MEAN, STD
from lightning_cnnsee.demo.train import ShapesClassifier, ShapesDataModule, run_demo


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "usage: cnnsee" in out


def test_demo_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--logdir", "--epochs", "--seed"):
        assert option in out


def test_demo_passes_its_arguments_to_run_demo_and_prints_the_tensorboard_command(monkeypatch, capsys):
    calls = []

    def fake_run_demo(logdir, max_epochs, seed):
        calls.append((logdir, max_epochs, seed))
        return SimpleNamespace(callback_metrics={"val/acc": torch.tensor(0.875)})

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert cli.main(["demo", "--logdir", "my runs", "--epochs", "3", "--seed", "5"]) == 0
    assert calls == [("my runs", 3, 5)]
    out = capsys.readouterr().out
    assert "tensorboard --logdir 'my runs'" in out
    assert "87.5%" in out


def test_demo_defaults_are_eight_epochs_and_seed_zero():
    args = cli.build_parser().parse_args(["demo"])
    assert (args.logdir, args.epochs, args.seed) == ("runs", 8, 0)


@pytest.mark.parametrize("value", ["0", "-2", "three", "1.5"])
def test_bad_epochs_exits_with_status_2_and_names_the_value(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--epochs", value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--epochs" in err and repr(value) in err


def test_no_subcommand_exits_nonzero_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "usage: cnnsee" in capsys.readouterr().err


def test_command_line_process_exits_nonzero_on_a_bad_value():
    result = subprocess.run(
        [sys.executable, "-m", "lightning_cnnsee.cli", "demo", "--epochs", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "argument --epochs: expected a positive whole number, got '0'" in result.stderr


def test_classifier_maps_images_to_one_logit_per_class_through_a_6x6_feature_map():
    model = ShapesClassifier(num_classes=6).eval()
    images = torch.randn(2, 3, 48, 48)
    assert model(images).shape == (2, 6)
    assert model.features(images).shape == (2, 64, 6, 6)


def test_datamodule_gives_standardized_batches_and_a_fixed_validation_order():
    data = ShapesDataModule(num_train=64, num_val=32, batch_size=16)
    data.setup("fit")
    first, _ = next(iter(data.val_dataloader()))
    again, _ = next(iter(data.val_dataloader()))
    assert torch.equal(first, again)
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (16, 3, 48, 48) and labels.dtype == torch.int64
    assert float(images.min()) < 0  # standardized, not in [0, 1]
    assert not torch.equal(data.train_set.images[:4], data.val_set.images[:4])


def test_run_demo_rejects_a_bad_epoch_count(tmp_path):
    with pytest.raises(ValueError, match="max_epochs"):
        run_demo(str(tmp_path), max_epochs=0)


def test_short_demo_writes_tensorboard_scalars_and_cnnsee_images(tmp_path):
    from lightning_cnnsee.callback.cnnsee import CNNSee

    callback = CNNSee(
        num_samples=4, ascent_steps=2, num_filters=2, mean=MEAN, std=STD, class_names=CLASS_NAMES, strict=True
    )
    trainer = run_demo(
        str(tmp_path),
        max_epochs=1,
        num_train=96,
        num_val=32,
        batch_size=32,
        callback=callback,
        enable_progress_bar=False,
    )
    assert trainer.current_epoch == 1
    accuracy = float(trainer.callback_metrics["val/acc"])
    assert accuracy * 32 == pytest.approx(round(accuracy * 32), abs=1e-4)  # a share of the 32 validation images
    version = Path(tmp_path) / "demo" / "version_0"
    assert list(version.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(version), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "val/loss", "val/acc", "train/acc"} <= set(tags["scalars"])
    assert events.Scalars("val/acc")[-1].value == pytest.approx(accuracy)  # the number the trainer reports
    assert any(tag.startswith("cnnsee/") for tag in tags["images"]), tags["images"]


def test_demo_trains_with_a_cnnsee_that_knows_the_normalization_class_names_and_runs_every_epoch(tmp_path, monkeypatch):
    import lightning_cnnsee.callback.cnnsee as callback_module

    created = []

    class RecordingCNNSee(callback_module.CNNSee):
        def __init__(self, **kwargs):
            created.append(kwargs)
            super().__init__(**kwargs, techniques=("gradcam",))

    monkeypatch.setattr(callback_module, "CNNSee", RecordingCNNSee)
    trainer = run_demo(str(tmp_path), max_epochs=1, num_train=64, num_val=16, batch_size=32, enable_progress_bar=False)
    assert created == [{"mean": MEAN, "std": STD, "class_names": CLASS_NAMES, "max_overhead": None}]
    assert any(isinstance(c, RecordingCNNSee) for c in trainer.callbacks)


def test_same_seed_gives_the_same_training_run(tmp_path):
    from lightning_cnnsee.callback.cnnsee import CNNSee

    def val_loss(folder):
        callback = CNNSee(num_samples=2, techniques=("gradcam",))
        trainer = run_demo(
            str(folder),
            max_epochs=1,
            num_train=64,
            num_val=32,
            batch_size=32,
            seed=3,
            callback=callback,
            enable_progress_bar=False,
        )
        return float(trainer.callback_metrics["val/loss"])

    assert val_loss(tmp_path / "a") == val_loss(tmp_path / "b")
