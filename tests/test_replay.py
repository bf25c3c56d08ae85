"""Replay: a run's checkpoints, replayed with CNNSee afterwards, give the pictures and numbers a live CNNSee logged at
the same steps (PNG bytes and scalars equal); bad checkpoints are named and skipped; nothing is written elsewhere."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tiny import TinyClassifier, make_loaders

from lightning_cnnsee import CNNSee, replay

# every technique, patterns every second run (the run count matters), small enough for a few seconds per fit
OPTIONS = dict(
    num_samples=4,
    techniques=["gradcam", "attributions", "filters", "classes", "activations", "faithfulness", "drift"],
    attribution_methods=["saliency", "integrated_gradients"],
    filters_every_n_runs=2,
    ascent_steps=3,
    num_filters=2,
    activation_channels=4,
    faithfulness_steps=4,
    max_overhead=None,
)


class SaveAtStart(pl.Callback):
    """A checkpoint of the weights before the first optimizer step (global_step 0), as some runs keep."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module):
        trainer.save_checkpoint(str(self.path))


def train_live(root: Path, *, epochs: int = 3, save_start: bool = True) -> Path:
    """A fit with a live CNNSee logging PNG folders (CSVLogger) and a checkpoint per epoch; returns the live run's
    ``cnnsee`` folder. The checkpoints are in ``root/checkpoints``."""
    pl.seed_everything(0, workers=True)
    train, val = make_loaders()
    callbacks = [
        CNNSee(**OPTIONS),
        pl.callbacks.ModelCheckpoint(dirpath=root / "checkpoints", save_top_k=-1, every_n_epochs=1),
    ]
    if save_start:
        callbacks.append(SaveAtStart(root / "checkpoints" / "start.ckpt"))
    trainer = pl.Trainer(
        default_root_dir=str(root),
        accelerator="cpu",
        max_epochs=epochs,
        logger=pl.loggers.CSVLogger(str(root), name="live"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    trainer.fit(TinyClassifier(), train, val)
    return Path(trainer.logger.log_dir) / "cnnsee"


def pngs(folder: Path) -> dict[tuple[str, int], bytes]:
    """``{(tag, step): PNG bytes}`` of a CNNSee PNG folder."""
    found = {}
    for path in folder.rglob("step_*.png"):
        tag = path.parent.relative_to(folder).as_posix()
        found[(tag, int(path.stem.removeprefix("step_")))] = path.read_bytes()
    return found


def scalars(folder: Path, kinds: tuple[str, ...] = ("faithfulness", "drift")) -> dict[tuple[str, int], float]:
    with open(folder / "scalars.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {(row["tag"], int(row["step"])): float(row["value"]) for row in rows if row["tag"].split("/")[1] in kinds}


def checkpoint_steps(folder: Path) -> list[int]:
    return sorted(torch.load(path, weights_only=True)["global_step"] for path in folder.glob("*.ckpt"))


def replay_into(root: Path, checkpoints, name: str = "replay", **kwargs):
    _, val = make_loaders()
    logger = pl.loggers.CSVLogger(str(root), name=name)
    summary = replay(
        checkpoints,
        TinyClassifier(),
        val_dataloaders=val,
        callback=CNNSee(**OPTIONS),
        logger=logger,
        accelerator="cpu",
        progress=False,
        **kwargs,
    )
    return summary, Path(logger.log_dir) / "cnnsee"


@pytest.mark.timeout(300)
def test_replayed_checkpoints_give_the_live_runs_pictures_and_numbers_at_every_checkpoint_step(tmp_path):
    live_folder = train_live(tmp_path)
    steps = checkpoint_steps(tmp_path / "checkpoints")
    assert steps == [0, 6, 12, 18]  # 48 images in batches of 8: 6 steps an epoch, plus the step-0 checkpoint
    summary, replay_folder = replay_into(tmp_path, tmp_path / "checkpoints")
    assert [step for _, step in summary.replayed] == steps and summary.skipped == []

    live, replayed = pngs(live_folder), pngs(replay_folder)
    # the live run shows exactly the checkpoints' steps (a baseline at 0, each epoch end, the final run)
    assert sorted({step for _, step in live}) == steps
    assert set(replayed) == set(live)
    different = [key for key in live if live[key] != replayed[key]]
    assert different == [], different
    kinds = {tag.split("/")[0] for tag, _ in live}
    assert kinds == {"gradcam", "attributions", "filters", "classes", "activations"}
    # patterns every second run, and at the final one: 0 (baseline), 12, 18 (final), not 6
    assert {step for tag, step in live if tag.startswith(("filters/", "classes"))} == {0, 12, 18}

    # faithfulness and drift: the same operations on the same weights and images, so the same float32 values
    live_numbers, replayed_numbers = scalars(live_folder), scalars(replay_folder)
    assert any(tag.split("/")[1] == "drift" for tag, _ in live_numbers)
    assert any(tag.split("/")[1] == "faithfulness" for tag, _ in live_numbers)
    assert replayed_numbers == live_numbers


@pytest.mark.timeout(300)
def test_without_a_step_zero_checkpoint_drift_starts_at_the_first_checkpoint_replayed_and_says_so(tmp_path, caplog):
    live_folder = train_live(tmp_path, save_start=False)
    with caplog.at_level("INFO"):
        summary, replay_folder = replay_into(tmp_path, tmp_path / "checkpoints")
    assert [step for _, step in summary.replayed] == [6, 12, 18]
    assert "compares with the maps of the first checkpoint replayed, at step 6" in caplog.text
    live = {key: value for key, value in pngs(live_folder).items() if key[1] > 0}  # no checkpoint of the baseline
    replayed = pngs(replay_folder)
    assert set(replayed) == set(live) and all(live[key] == replayed[key] for key in live)
    live_numbers, replayed_numbers = scalars(live_folder), scalars(replay_folder)
    faithfulness = {key: value for key, value in live_numbers.items() if "/faithfulness/" in f"/{key[0]}"}
    assert {key: replayed_numbers[key] for key in faithfulness if key[1] > 0} == {
        key: value for key, value in faithfulness.items() if key[1] > 0
    }
    drift = {key: value for key, value in replayed_numbers.items() if key[0].split("/")[1] == "drift"}
    assert drift and min(step for _, step in drift) == 12  # the first replayed checkpoint is drift's start
    # from the third checkpoint on, vs_previous compares the same two steps as the live run
    previous = {key: value for key, value in drift.items() if key[0].endswith("vs_previous") and key[1] == 18}
    assert previous and all(live_numbers[key] == value for key, value in previous.items())
    # vs_start compares with step 6 here, with step 0 in the live run: another number
    starts = [key for key in drift if key[0].endswith("vs_start")]
    assert any(live_numbers[key] != drift[key] for key in starts)


def fast_callback() -> CNNSee:
    return CNNSee(num_samples=2, techniques=["gradcam"], max_overhead=None)


@pytest.mark.timeout(300)
def test_a_damaged_and_a_mismatched_checkpoint_are_named_and_skipped_and_the_rest_replayed(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    model = TinyClassifier()
    for step in (3, 1):  # written out of order: replayed by step
        checkpoint = {"state_dict": {k: v + step for k, v in model.state_dict().items()}, "global_step": step}
        torch.save(checkpoint, folder / f"step={step}.ckpt")
    (folder / "damaged.ckpt").write_bytes(b"not a checkpoint")
    other = TinyClassifier(in_channels=1)
    torch.save({"state_dict": other.state_dict(), "global_step": 2}, folder / "other-model.ckpt")
    torch.save(model.state_dict(), folder / "bare-state-dict.ckpt")
    torch.save({"state_dict": model.state_dict(), "global_step": 1}, folder / "z-again-step-1.ckpt")

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    replayed_model = TinyClassifier().eval()
    _, val = make_loaders()
    with pytest.warns(UserWarning) as warned:
        summary = replay(folder, replayed_model, val_dataloaders=val, callback=fast_callback(), progress=False)
    assert [(Path(path).name, step) for path, step in summary.replayed] == [("step=1.ckpt", 1), ("step=3.ckpt", 3)]
    reasons = {Path(path).name: reason for path, reason in summary.skipped}
    assert set(reasons) == {"damaged.ckpt", "other-model.ckpt", "bare-state-dict.ckpt", "z-again-step-1.ckpt"}
    assert reasons["damaged.ckpt"].startswith("does not load: UnpicklingError")
    assert "does not fit TinyClassifier: other shapes features.0.weight (8, 1, 3, 3)" in reasons["other-model.ckpt"]
    assert "(the model's: (8, 3, 3, 3))" in reasons["other-model.ckpt"]
    assert (
        "no global_step" in reasons["bare-state-dict.ckpt"]
        or "not a Lightning checkpoint" in reasons["bare-state-dict.ckpt"]
    )
    assert "at global_step 1, as" in reasons["z-again-step-1.ckpt"] and "/step=1.ckpt" in reasons["z-again-step-1.ckpt"]
    messages = "\n".join(str(warning.message) for warning in warned)
    for name, reason in reasons.items():
        assert f"{name}: it {reason}" in messages

    # nothing but the default logger's folder in the working directory; the model as found, with the last weights
    assert sorted(os.listdir(work)) == ["replay"]
    assert sorted(p.parent.name for p in (work / "replay").rglob("step_*.png")) == []  # TensorBoard: event files
    assert any(p.name.startswith("events.out.tfevents") for p in (work / "replay").rglob("*"))
    assert not any(module.training for module in replayed_model.modules())
    expected = {k: v + 3 for k, v in model.state_dict().items()}
    assert all(torch.equal(replayed_model.state_dict()[k], expected[k]) for k in expected)


@pytest.mark.timeout(300)
def test_replay_logs_to_mlflow_as_artifacts_at_each_checkpoints_step(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses a file store otherwise
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    model = TinyClassifier()
    for step in (4, 2):
        state = {key: value * (1 + step / 10) for key, value in model.state_dict().items()}
        torch.save({"state_dict": state, "global_step": step}, folder / f"step={step}.ckpt")
    logger = pl.loggers.MLFlowLogger(experiment_name="replay", tracking_uri=f"file:{tmp_path / 'mlruns'}")
    _, val = make_loaders()
    summary = replay(folder, TinyClassifier(), val_dataloaders=val, callback=fast_callback(), logger=logger)
    assert [step for _, step in summary.replayed] == [2, 4]
    artifacts = tmp_path / "mlruns" / logger.experiment_id / logger.run_id / "artifacts"
    found = sorted(path.relative_to(artifacts).as_posix() for path in artifacts.rglob("*.png"))
    assert found == ["cnnsee/gradcam/features/step_00000002.png", "cnnsee/gradcam/features/step_00000004.png"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoints", "mlruns"]


def test_bad_arguments_fail_at_once_naming_the_value(tmp_path):
    _, val = make_loaders()
    with pytest.raises(FileNotFoundError, match="no .ckpt file in"):
        replay(tmp_path, TinyClassifier(), val_dataloaders=val)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        replay(tmp_path / "missing.ckpt", TinyClassifier(), val_dataloaders=val)
    with pytest.raises(ValueError, match="exactly one of val_dataloaders="):
        replay(tmp_path, TinyClassifier())
    with pytest.raises(TypeError, match=r"replay\(model=Linear\): must be a LightningModule"):
        replay(tmp_path, torch.nn.Linear(2, 2), val_dataloaders=val)
    with pytest.raises(TypeError, match=r"replay\(callback=dict\): must be a CNNSee"):
        replay(tmp_path, TinyClassifier(), val_dataloaders=val, callback={})
    used = CNNSee()
    used.schedule.started(0, maps=True, patterns=True)
    with pytest.raises(ValueError, match=r"this CNNSee has run already \(1 runs"):
        replay(tmp_path, TinyClassifier(), val_dataloaders=val, callback=used)


ROOT = Path(__file__).resolve().parent.parent


def tensorboard_images(folder: Path) -> dict[tuple[str, int], bytes]:
    """``{(tag, step): PNG bytes}`` of the images in the event files of ``folder``, read with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0})
    accumulator.Reload()
    return {
        (tag, event.step): event.encoded_image_string
        for tag in accumulator.Tags()["images"]
        for event in accumulator.Images(tag)
    }


@pytest.mark.timeout(300)
def test_the_cli_replays_the_shapes_examples_run_from_its_config_yaml(tmp_path, monkeypatch, capsys):
    import runpy
    import sys

    from lightning_cnnsee.cli import main

    checkpoints = tmp_path / "checkpoints"
    model_checkpoint = json.dumps(
        {
            "class_path": "ModelCheckpoint",
            "init_args": {"dirpath": str(checkpoints), "save_top_k": -1, "every_n_epochs": 1},
        }
    )
    arguments = [
        "fit",
        "--config",
        str(ROOT / "configs" / "shapes.yaml"),
        "--trainer.max_epochs=2",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.callbacks.ascent_steps=2",  # CNNSee is the config's last callback: these set its init_args
        "--trainer.callbacks.num_samples=4",
        "--trainer.callbacks.num_filters=2",
        "--trainer.callbacks.max_classes=3",
        "--data.num_train=32",
        "--data.num_val=32",
        "--data.batch_size=16",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_checkpointing=true",
        f"--trainer.callbacks+={model_checkpoint}",
    ]
    monkeypatch.setattr(sys, "argv", ["examples/shapes.py", *arguments])
    runpy.run_path(str(ROOT / "examples" / "shapes.py"), run_name="__main__")
    live = tmp_path / "shapes" / "version_0"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"]
    capsys.readouterr()

    monkeypatch.chdir(tmp_path)
    status = main(
        [
            "replay",
            str(checkpoints),
            "--config",
            str(live / "config.yaml"),
            "--model",  # the example's LightningCLI was given its classes in the script: the config has no class_path
            "lightning_cnnsee.demo.train.ShapesClassifier",
            "--data",
            "lightning_cnnsee.demo.train.ShapesDataModule",
            "--logdir",
            "replayed",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "Replayed 2 checkpoint(s), steps 2 to 4, into replayed/replay/version_0" in out
    assert "tensorboard --logdir replayed/replay/version_0" in out and "cnnsee report replayed/replay/version_0" in out
    live_images = {key: png for key, png in tensorboard_images(live).items() if key[1] in (2, 4)}
    replayed_images = tensorboard_images(tmp_path / "replayed" / "replay" / "version_0")
    assert {tag.split("/")[1] for tag, _ in live_images} == {"gradcam", "filters", "classes", "activations"}
    assert set(replayed_images) == set(live_images)
    assert all(replayed_images[key] == live_images[key] for key in live_images)


def test_run_parts_reads_a_subclass_mode_config_with_overrides_seed_and_the_cnnsee_of_its_callbacks(tmp_path):
    import yaml

    from lightning_cnnsee import run_parts
    from lightning_cnnsee.demo.train import ShapesClassifier

    config = {
        "seed_everything": 7,
        "trainer": {
            "accelerator": "cpu",
            "num_sanity_val_steps": 3,
            "limit_val_batches": 1,
            "callbacks": [
                {"class_path": "ModelCheckpoint", "init_args": {"save_top_k": -1}},
                {"class_path": "CNNSee", "init_args": {"num_samples": 3, "cam_method": "layercam"}},
            ],
        },
        "model": {"class_path": "lightning_cnnsee.demo.train.ShapesClassifier", "init_args": {"width": 4, "lr": 0.5}},
        "data": {"class_path": "lightning_cnnsee.demo.train.ShapesDataModule", "init_args": {"num_val": 16}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    parts = run_parts(path, overrides=["--model.lr=0.25", "--data.batch_size", "8"], cnnsee="{cam_scale: image}")
    assert isinstance(parts.model, ShapesClassifier)
    assert (parts.model.hparams.width, parts.model.hparams.lr) == (4, 0.25)
    assert (parts.datamodule.num_val, parts.datamodule.batch_size) == (16, 8)
    options = parts.callback.options
    assert (options.num_samples, options.cam_method, options.cam_scale) == (3, "layercam", "image")
    assert (parts.accelerator, parts.num_sanity_val_steps) == ("cpu", 1)  # the sanity check takes the fewer
    # seeded as LightningCLI seeds, before the classes are built: the same initial weights as seeding by hand
    pl.seed_everything(7, workers=True)
    assert torch.equal(ShapesClassifier(width=4).classifier.weight, parts.model.classifier.weight)


def test_run_parts_takes_the_hyper_parameters_a_checkpoint_saved_under_the_arguments_given(tmp_path):
    from lightning_cnnsee import run_parts

    (tmp_path / "broken.ckpt").write_bytes(b"")  # the first that loads gives them
    saved = {"width": 8, "num_classes": 5, "lr": 0.3, "_instantiator": "cli", "unknown": 1}
    torch.save({"state_dict": {}, "global_step": 3, "hyper_parameters": saved}, tmp_path / "step=3.ckpt")
    parts = run_parts(
        model="lightning_cnnsee.demo.train.ShapesClassifier",
        model_args={"lr": 0.1},
        data="lightning_cnnsee.demo.train.ShapesDataModule",
        checkpoints=[str(tmp_path / "broken.ckpt"), str(tmp_path / "step=3.ckpt")],
    )
    hparams = parts.model.hparams
    assert (hparams.width, hparams.num_classes, hparams.lr) == (8, 5, 0.1)  # the arguments given win
    assert parts.model.classifier.weight.shape == (5, 32)


def test_the_cli_names_a_missing_model_class_and_a_bad_option(tmp_path, capsys):
    from lightning_cnnsee.cli import main

    (tmp_path / "a.ckpt").write_bytes(b"")
    config = tmp_path / "config.yaml"
    config.write_text("model: {width: 4}\ndata: {num_val: 8}\n")
    assert main(["replay", str(tmp_path), "--config", str(config)]) == 2
    assert "no model class in" in capsys.readouterr().err
    data = "lightning_cnnsee.demo.train.ShapesDataModule"
    model = "lightning_cnnsee.demo.train.ShapesClassifier"
    arguments = ["replay", str(tmp_path), "--model", model, "--data", data]
    assert main([*arguments, "--cnnsee", "{cam_method: gradcam3}"]) == 2
    error = capsys.readouterr().err
    assert "cam_method" in error and "gradcam3" in error
    assert main([*arguments, "--model.width=four"]) == 2
    assert "width" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path), "--model.width=4"])  # only replay takes --model.KEY=VALUE


def test_the_demo_command_saves_checkpoints_without_cnnsee_and_prints_the_replay_command(monkeypatch, capsys):
    from types import SimpleNamespace

    from lightning_cnnsee import cli, demo

    calls = []

    def fake_run_demo(logdir, **kwargs):
        calls.append((logdir, kwargs))
        return SimpleNamespace(callback_metrics={}, logger=SimpleNamespace(log_dir=f"{logdir}/demo/version_3"))

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert cli.main(["demo", "--logdir", "my runs", "--epochs", "2", "--checkpoints", "--no-cnnsee"]) == 0
    assert calls == [("my runs", dict(max_epochs=2, seed=0, checkpoints=True, with_cnnsee=False))]
    out = capsys.readouterr().out
    assert (
        "cnnsee replay 'my runs/demo/version_3/checkpoints' --model lightning_cnnsee.demo.train.ShapesClassifier" in out
    )
    assert "tensorboard" not in out  # no CNNSee images to see before the replay


def test_the_replay_command_spells_the_demos_cnnsee_options():
    import yaml

    from lightning_cnnsee.cli import DEMO_CNNSEE
    from lightning_cnnsee.demo.data import CLASS_NAMES, MEAN, STD

    assert yaml.safe_load(DEMO_CNNSEE) == dict(mean=MEAN, std=STD, class_names=CLASS_NAMES, max_overhead=None)


@pytest.mark.timeout(300)
def test_the_demos_checkpoints_replay_with_the_command_it_prints(tmp_path, monkeypatch, capsys):
    import shlex

    from lightning_cnnsee.cli import demo_replay_command, main
    from lightning_cnnsee.demo.train import run_demo

    monkeypatch.chdir(tmp_path)
    trainer = run_demo(
        "runs", max_epochs=2, num_train=64, num_val=32, batch_size=32, checkpoints=True, with_cnnsee=False
    )
    assert not any(isinstance(callback, CNNSee) for callback in trainer.callbacks)
    folder = Path(trainer.logger.log_dir) / "checkpoints"
    assert sorted(path.name for path in folder.iterdir()) == ["epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"]
    assert not (Path(trainer.logger.log_dir) / "cnnsee").exists() and not tensorboard_images(trainer.logger.log_dir)
    command = shlex.split(demo_replay_command(str(folder), "runs"))[1:]
    fast = ["--cnnsee", "{num_samples: 2, techniques: [gradcam, drift], max_overhead: null}", "--progress"]
    small = ["--data.num_train=64", "--data.num_val=32"]
    capsys.readouterr()
    assert main([*command, *small, *fast]) == 0
    printed = capsys.readouterr()
    assert "into runs/demo-replay/version_0" in printed.out
    assert "cnnsee replay: 100%" in printed.err and "2/2" in printed.err  # the progress bar over the checkpoints
    images = tensorboard_images(tmp_path / "runs" / "demo-replay" / "version_0")
    assert sorted(images) == [("cnnsee/gradcam/features", 2), ("cnnsee/gradcam/features", 4)]
    assert sorted(os.listdir(tmp_path)) == ["runs"] and sorted(os.listdir(tmp_path / "runs")) == ["demo", "demo-replay"]
