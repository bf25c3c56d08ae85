"""CNNSee in the stacks users run: either Lightning namespace, W&B, MLflow and CSV loggers, torch.compile, and
several CNNSee in one Trainer, each proven by reading back what was stored."""

from __future__ import annotations

import importlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny import make_loaders, read_images, wandb_history
from torch import nn

from lightning_cnnsee import CNNSee

NAMESPACES = ["lightning.pytorch", "pytorch_lightning"]
FAST = dict(ascent_steps=2, num_samples=4, max_overhead=None)
KINDS = {"gradcam", "filters", "classes", "activations"}


def tiny_module(namespace: str) -> type:
    """The tests' small classifier as a LightningModule of ``namespace``."""
    lightning = importlib.import_module(namespace)

    class Tiny(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(8, 4),
            )

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny


def fit(namespace, tmp_path, callbacks, model=None, **overrides):
    lightning = importlib.import_module(namespace)
    lightning.seed_everything(0)
    train, val = make_loaders(count=32)
    kwargs = dict(
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        logger=lightning.loggers.TensorBoardLogger(str(tmp_path), name="logs"),
    )
    kwargs.update(overrides)
    trainer = lightning.Trainer(callbacks=callbacks, **kwargs)
    model = model if model is not None else tiny_module(namespace)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train, val)
    return trainer, model, [str(w.message) for w in caught]


def kinds(tags) -> set[str]:
    return {tag.split("/")[-2] if tag.count("/") > 1 else tag.split("/")[1] for tag in tags}


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("sanity_steps", [2, 0])
def test_each_namespace_logs_every_kind_to_its_own_tensorboard_logger(namespace, sanity_steps, tmp_path):
    trainer, _, said = fit(namespace, tmp_path, [CNNSee(**FAST)], num_sanity_val_steps=sanity_steps)
    tags = read_images(trainer.logger.log_dir)
    assert {tag.split("/")[1] for tag in tags} == KINDS
    # with the sanity check the baseline at step 0 has validation images; without it, validation is set up early
    assert all(steps == [0, 4, 8] for steps in tags.values()), tags
    assert not any("TensorBoardLogger" in message or "PNG" in message for message in said)
    assert not (tmp_path / "cnnsee").exists()


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_each_namespace_trains_bitwise_identically_with_and_without_cnnsee(namespace, tmp_path):
    _, plain, _ = fit(namespace, tmp_path / "plain", [], deterministic=True)
    _, seen, _ = fit(namespace, tmp_path / "seen", [CNNSee(every_n_steps=1, **FAST)], deterministic=True)
    for (name, a), (_, b) in zip(plain.state_dict().items(), seen.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_one_namespace_works_when_the_other_is_not_installed(tmp_path):
    import subprocess
    import sys

    script = f"""
import sys
sys.modules["pytorch_lightning"] = None  # as if only `lightning` were installed
import torch, lightning.pytorch as L
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from lightning_cnnsee import CNNSee

class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    def forward(self, x):
        return self.net(x)
    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])
    def validation_step(self, batch, batch_idx):
        pass
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

data = DataLoader(TensorDataset(torch.rand(8, 3, 12, 12), torch.randint(0, 2, (8,))), batch_size=4)
logger = L.loggers.TensorBoardLogger({str(tmp_path)!r}, name="logs")
trainer = L.Trainer(callbacks=[CNNSee(ascent_steps=1, num_samples=2, max_overhead=None)], logger=logger, max_epochs=1,
                    enable_progress_bar=False, enable_checkpointing=False, accelerator="cpu")
trainer.fit(Tiny(), data, data)
events = EventAccumulator(logger.log_dir, size_guidance={{"images": 0}})
events.Reload()
print(sorted(events.Tags()["images"]))
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "cnnsee/gradcam/net.1" in completed.stdout and "cnnsee/classes" in completed.stdout


def png_pixels(data: bytes | Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data) if isinstance(data, bytes) else data))


def test_every_logger_gets_the_same_images_where_it_shows_them(tmp_path, wandb_offline, mlflow_file_store):  # noqa: F811
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
    from mlflow.tracking import MlflowClient

    loggers = [
        TensorBoardLogger(str(tmp_path), name="tb"),
        WandbLogger(save_dir=str(tmp_path), project="cnnsee-test"),
        MLFlowLogger(experiment_name="cnnsee", tracking_uri=mlflow_file_store),
        CSVLogger(str(tmp_path), name="csv"),
    ]
    trainer, _, _ = fit("lightning.pytorch", tmp_path, [CNNSee(**FAST)], logger=loggers, max_epochs=1)
    tensorboard, wandb, mlflow, csv_logger = loggers
    tag = "cnnsee/gradcam/net.4"

    events = EventAccumulator(tensorboard.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert {t.split("/")[1] for t in events.Tags()["images"]} == KINDS
    reference = {event.step: png_pixels(event.encoded_image_string) for event in events.Images(tag)}
    assert sorted(reference) == [0, 4]

    run_folder = Path(wandb.experiment.dir).parent
    wandb.experiment.finish()
    rows = [row for row in wandb_history(run_folder) if tag in row]
    assert [row["trainer/global_step"] for row in rows] == [0, 4]
    for row in rows:
        assert np.array_equal(
            png_pixels(run_folder / "files" / row[tag]["path"]), reference[row["trainer/global_step"]]
        )

    client = MlflowClient(mlflow_file_store)
    artifacts = [a.path for a in client.list_artifacts(mlflow.run_id, "cnnsee/gradcam/net.4")]
    assert artifacts == ["cnnsee/gradcam/net.4/step_00000000.png", "cnnsee/gradcam/net.4/step_00000004.png"]
    local = client.download_artifacts(mlflow.run_id, artifacts[1], str(tmp_path / "download"))
    assert np.array_equal(png_pixels(Path(local)), reference[4])
    assert [m.step for m in client.get_metric_history(mlflow.run_id, "cnnsee/wall_time_s")] == [0, 4]

    csv_png = Path(csv_logger.log_dir) / "cnnsee" / "gradcam" / "net.4" / "step_00000004.png"
    assert np.array_equal(png_pixels(csv_png), reference[4])
    assert not (tmp_path / "cnnsee").exists() and not (tmp_path / "mlruns" / "cnnsee").exists()


@pytest.mark.parametrize("where", ["submodule", "whole module"])
def test_a_compiled_network_shows_every_kind_and_is_not_recompiled(where, tmp_path):
    from torch._dynamo.utils import counters

    def compiled_fit(folder, callbacks):
        torch._dynamo.reset()
        counters.clear()
        torch.manual_seed(0)
        model = tiny_module("lightning.pytorch")()
        if where == "submodule":
            model.net = torch.compile(model.net)
        else:
            model = torch.compile(model)
        trainer, model, _ = fit("lightning.pytorch", folder, callbacks, model=model, max_epochs=1)
        return trainer, dict(counters["stats"]), sum(counters["recompiles"].values()), model

    _, plain_stats, plain_recompiles, plain = compiled_fit(tmp_path / "plain", [])
    trainer, stats, recompiles, seen = compiled_fit(tmp_path / "seen", [CNNSee(strict=True, **FAST)])
    tags = read_images(trainer.logger.log_dir)
    assert {tag.split("/")[1] for tag in tags} == KINDS
    assert "cnnsee/gradcam/net.4" in tags  # the layer's own name, without torch.compile's _orig_mod
    assert stats == plain_stats and recompiles == plain_recompiles  # the same graphs, compiled as often
    assert plain_stats["unique_graphs"] >= 1
    for (name, a), (_, b) in zip(plain.state_dict().items(), seen.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_several_cnnsee_in_one_trainer_keep_their_tags_state_and_checkpoints_apart(tmp_path):
    import lightning.pytorch as L

    gradcam = CNNSee(techniques=["gradcam"], **FAST)
    layercam = CNNSee(techniques=["gradcam"], cam_method="layercam", **FAST)
    named = CNNSee(techniques=["activations"], name="acts", **FAST)
    checkpoint = L.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    trainer, _, _ = fit(
        "lightning.pytorch", tmp_path, [gradcam, layercam, named, checkpoint], enable_checkpointing=True, max_epochs=1
    )
    keys = [callback.state_key for callback in (gradcam, layercam, named)]
    assert len(set(keys)) == 3 and "layercam" in keys[1] and "acts" in keys[2]
    tags = read_images(trainer.logger.log_dir)
    assert sorted(tags) == [
        "cnnsee/acts/activations/net.0",
        "cnnsee/acts/activations/net.3",
        "cnnsee/default/gradcam/net.4",
        "cnnsee/layercam/gradcam/net.4",
    ]
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    for callback in (gradcam, layercam, named):
        assert torch.equal(saved[callback.state_key]["images"], callback.fixed.images)
        assert saved[callback.state_key]["runs"] == 2


def test_several_unnamed_cnnsee_get_short_names_that_say_what_sets_them_apart():
    from lightning_cnnsee.run.options import Options, default_name

    def names(*every: Options) -> list[str | None]:
        return [default_name(options, list(every)) for options in every]

    # The pair: 'techniques-gradcam-filters-classes-activations-faithfulness-' and
    # 'techniques-gradcam_cam_method-layercam' before.
    assert names(Options(), Options(techniques=["gradcam"], cam_method="layercam")) == [
        "default",
        "gradcam_only-layercam",
    ]
    assert names(Options(num_samples=16), Options(every_n_epochs=None, every_n_steps=50)) == [
        "num_samples_16",
        "no_every_n_epochs-every_n_steps_50",
    ]
    assert names(Options(), Options(), Options(cam_method="scorecam")) == ["cnnsee0", "cnnsee1", "scorecam"]
    many = Options(cam_method="layercam", num_samples=16, ascent_steps=7, cam_alpha=0.3, seed=5, cam_scale="image")
    [_, long] = names(Options(), many)
    assert long == "num_samples_16-layercam-image" and len(long) <= 40  # in the options' order, cut at a part
    assert names(Options(name="mine"), Options()) == [None, None]  # one unnamed: no name needed


def test_a_default_cnnsee_keeps_the_state_key_of_earlier_checkpoints():
    assert CNNSee().state_key == "CNNSee"
    assert CNNSee(num_samples=4).state_key != CNNSee(num_samples=5).state_key


def test_the_lightning_namespace_cli_takes_cnnsee_from_yaml(tmp_path, monkeypatch):
    import sys

    from lightning.pytorch.cli import LightningCLI

    monkeypatch.setattr(sys, "argv", ["cnnsee-test"])
    config = {
        "trainer": {
            "logger": False,
            "default_root_dir": str(tmp_path),
            "enable_progress_bar": False,
            "callbacks": [
                {
                    "class_path": "lightning_cnnsee.CNNSee",
                    "init_args": {"num_samples": 3, "cam_method": "layercam", "name": "lc"},
                }
            ],
        },
    }
    cli = LightningCLI(tiny_module("lightning.pytorch"), run=False, args=config)
    [callback] = [c for c in cli.trainer.callbacks if isinstance(c, CNNSee)]
    assert callback.options.cam_method == "layercam" and callback.options.name == "lc"
    assert os.path.isdir(tmp_path)
