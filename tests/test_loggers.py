"""Every logger gets CNNSee's images, the way it shows them: each test builds the real logger under tmp_path, logs
through LogSinks and reads back what that logger stored (event file, W&B run log and media, MLflow artifacts and
metrics, PNG and CSV files), comparing pixels with an independent uint8 conversion and steps with those logged."""

from __future__ import annotations

import csv
import importlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import wandb_history

from lightning_cnnsee.sinks.writers import Destination, LogSinks, PngWriter

NAMESPACES = ["lightning.pytorch", "pytorch_lightning"]
TAG = "cnnsee/gradcam/blocks[0].conv"  # a layer name whose brackets are not safe in a path
TAG_FOLDER = ("gradcam", "blocks_0_.conv")


def loggers_of(namespace: str):
    return importlib.import_module(f"{namespace}.loggers")


def random_image(seed: int, height: int = 11, width: int = 17) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def expected_pixels(image: torch.Tensor) -> np.ndarray:
    """The uint8 pixels a PNG of ``image`` holds (x * 255 rounded half up, in float32), computed here in numpy
    rather than by the writers."""
    scaled = image.permute(1, 2, 0).numpy().astype(np.float32) * np.float32(255) + np.float32(0.5)
    return np.floor(scaled).clip(0, 255).astype(np.uint8)


def pixels_of(png: bytes | str | Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png) if isinstance(png, bytes) else png))


def assert_wandb_kept_every_row(run_folder: Path, rows: list[dict], expected_rows: int) -> None:
    assert [row["_step"] for row in rows] == list(range(expected_rows))
    internal_log = (run_folder / "logs" / "debug-internal.log").read_text()
    # what W&B writes when it drops a row for its step (seen with wandb.log(..., step=) below the current step)
    assert "ignoring partial history record" not in internal_log


# ---------------------------------------------------------------------------------------------------- TensorBoard
@pytest.mark.parametrize("namespace", NAMESPACES)
def test_tensorboard_logger_event_file_holds_the_exact_pixels_at_each_step(namespace, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = loggers_of(namespace).TensorBoardLogger(str(tmp_path), name="tb")
    sinks = LogSinks.for_loggers([logger], str(tmp_path / "root"))
    images = {3: random_image(0), 8: random_image(1)}
    for step, image in images.items():
        sinks.add_image(TAG, image, step)
        sinks.add_scalar("cnnsee/overhead", step / 100, step)
    logger.experiment.close()

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    stored = events.Images(TAG)
    assert [event.step for event in stored] == [3, 8]
    for event, image in zip(stored, images.values(), strict=True):
        assert (event.height, event.width) == (11, 17)
        assert np.array_equal(pixels_of(event.encoded_image_string), expected_pixels(image))
    assert [(s.step, s.value) for s in events.Scalars("cnnsee/overhead")] == [
        (3, pytest.approx(0.03)),
        (8, pytest.approx(0.08)),
    ]
    assert sinks.describe() == f"CNNSee logs its images to TensorBoardLogger: TensorBoard images in {logger.log_dir}."
    assert not (tmp_path / "root").exists()


# ------------------------------------------------------------------------------------------------------- W&B
@pytest.mark.parametrize("namespace", NAMESPACES)
def test_wandb_logger_run_holds_each_png_at_the_trainer_step_and_drops_none_of_lightnings_rows(
    namespace, tmp_path, wandb_offline
):
    logger = loggers_of(namespace).WandbLogger(save_dir=str(tmp_path), project="cnnsee-test")
    sinks = LogSinks.for_loggers([logger], str(tmp_path / "root"))
    steps = [1, 2, 2]  # from the second row on, each trainer step is below W&B's own row count (its _step)
    images = [random_image(seed) for seed in range(len(steps))]
    for step, image in zip(steps, images, strict=True):
        logger.log_metrics({"train_loss": 1.0 / (step + 1)}, step=step)  # how Lightning logs a metric
        sinks.add_image(TAG, image, step)
        sinks.add_scalar("cnnsee/overhead", step / 100, step)
    run_folder = Path(logger.experiment.dir).parent
    logger.experiment.finish()

    rows = wandb_history(run_folder)
    assert_wandb_kept_every_row(run_folder, rows, 3 * len(steps))
    losses = [(row["trainer/global_step"], row["train_loss"]) for row in rows if "train_loss" in row]
    assert losses == [(step, pytest.approx(1.0 / (step + 1))) for step in steps]
    overheads = [(row["trainer/global_step"], row["cnnsee/overhead"]) for row in rows if "cnnsee/overhead" in row]
    assert overheads == [(step, pytest.approx(step / 100)) for step in steps]
    logged = [(row["trainer/global_step"], row[TAG]) for row in rows if TAG in row]
    assert [step for step, _ in logged] == steps
    for (_, media), image in zip(logged, images, strict=True):
        assert (media["_type"], media["width"], media["height"]) == ("image-file", 17, 11)
        stored = (run_folder / "files" / media["path"]).read_bytes()
        assert np.array_equal(pixels_of(stored), expected_pixels(image))
    assert "W&B media" in sinks.describe()


# ---------------------------------------------------------------------------------------------------- MLflow
@pytest.mark.parametrize("namespace", NAMESPACES)
def test_mlflow_logger_runs_each_hold_their_own_pngs_as_artifacts_and_scalars_as_metrics(
    namespace, tmp_path, mlflow_file_store
):
    from mlflow.tracking import MlflowClient

    MLFlowLogger = loggers_of(namespace).MLFlowLogger
    runs = [MLFlowLogger(experiment_name="cnnsee", tracking_uri=mlflow_file_store) for _ in range(2)]
    images = {}
    for index, logger in enumerate(runs):  # the same tag and steps in both runs
        sinks = LogSinks.for_loggers([logger], str(tmp_path / "root"))
        for step in (4, 9):
            images[logger.run_id, step] = random_image(10 * index + step)
            sinks.add_image(TAG, images[logger.run_id, step], step)
            sinks.add_scalar("cnnsee/overhead", index + step / 100, step)
    assert runs[0].run_id != runs[1].run_id

    client = MlflowClient(mlflow_file_store)
    for index, logger in enumerate(runs):
        run_id = logger.run_id
        assert [artifact.path for artifact in client.list_artifacts(run_id)] == ["cnnsee"]
        folder = "/".join(("cnnsee", *TAG_FOLDER))
        stored = [artifact.path for artifact in client.list_artifacts(run_id, folder)]
        assert stored == [f"{folder}/step_00000004.png", f"{folder}/step_00000009.png"]
        for step, path in zip((4, 9), stored, strict=True):
            local = client.download_artifacts(run_id, path, str(tmp_path / "downloads" / run_id))
            assert np.array_equal(pixels_of(local), expected_pixels(images[run_id, step]))
        history = client.get_metric_history(run_id, "cnnsee/overhead")
        assert [(metric.step, metric.value) for metric in history] == [
            (4, pytest.approx(index + 0.04)),
            (9, pytest.approx(index + 0.09)),
        ]
    assert not (tmp_path / "root").exists()


# ------------------------------------------------------------------------------------------ CSV, none, others
@pytest.mark.parametrize("namespace", NAMESPACES)
def test_csv_logger_run_folder_holds_the_pngs_and_scalars(namespace, tmp_path):
    logger = loggers_of(namespace).CSVLogger(str(tmp_path), name="csv")
    sinks = LogSinks.for_loggers([logger], str(tmp_path / "root"))
    image = random_image(3)
    sinks.add_image(TAG, image, 6)
    sinks.add_scalar("cnnsee/overhead", 0.25, 6)

    folder = Path(logger.log_dir) / "cnnsee"
    assert folder == tmp_path / "csv" / "version_0" / "cnnsee"
    assert np.array_equal(pixels_of(folder.joinpath(*TAG_FOLDER, "step_00000006.png")), expected_pixels(image))
    with open(folder / "scalars.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [["tag", "step", "value"], ["cnnsee/overhead", "6", "0.25"]]
    assert sinks.describe() == f"CNNSee logs its images to CSVLogger: PNG files in {folder}."
    assert not (tmp_path / "root").exists()


def test_without_a_logger_pngs_and_scalars_go_under_default_root_dir(tmp_path):
    sinks = LogSinks.for_loggers([], str(tmp_path))
    image = random_image(4)
    sinks.add_image("cnnsee/classes", image, 2)
    sinks.add_scalar("cnnsee/wall_time_s", 0.5, 2)
    assert np.array_equal(pixels_of(tmp_path / "cnnsee" / "classes" / "step_00000002.png"), expected_pixels(image))
    assert (tmp_path / "cnnsee" / "scalars.csv").read_text().splitlines()[1] == "cnnsee/wall_time_s,2,0.5"
    assert sinks.describe() == f"CNNSee found no logger: PNG files in {tmp_path / 'cnnsee'}."


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_a_logger_without_a_folder_gets_pngs_under_default_root_dir_and_describe_says_so(namespace, tmp_path):
    class ServiceLogger(importlib.import_module(f"{namespace}.loggers.logger").Logger):
        """A logger that only talks to a service (as CometLogger online does): no log_dir, no images."""

        name, version = "service", 0

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    csv_logger = loggers_of(namespace).CSVLogger(str(tmp_path), name="csv")
    sinks = LogSinks.for_loggers([ServiceLogger(), csv_logger, ServiceLogger()], str(tmp_path / "root"))
    sinks.add_image("cnnsee/classes", random_image(5), 1)
    assert (tmp_path / "root" / "cnnsee" / "classes" / "step_00000001.png").exists()
    assert (Path(csv_logger.log_dir) / "cnnsee" / "classes" / "step_00000001.png").exists()
    description = sinks.describe()
    assert f"ServiceLogger, ServiceLogger: PNG files in {tmp_path / 'root' / 'cnnsee'}" in description
    assert "CNNSee cannot send images to ServiceLogger, which keeps no folder" in description


def test_a_failing_logger_keeps_the_image_from_no_other_logger_and_its_error_is_said(tmp_path):
    class Broken(PngWriter):
        def add_png(self, tag, png, global_step):
            raise OSError("disk full")

    working = PngWriter(str(tmp_path / "cnnsee"), strip_prefix="cnnsee/")
    sinks = LogSinks([Destination(Broken(str(tmp_path)), "nowhere", ["Broken"]), Destination(working, "here")])
    with pytest.warns(UserWarning, match="CNNSee could not write nowhere: OSError: disk full"):
        sinks.add_image("cnnsee/classes", random_image(6), 0)
    assert (tmp_path / "cnnsee" / "classes" / "step_00000000.png").exists()


# ------------------------------------------------------------------------------------------- several at once
def test_several_loggers_from_both_namespaces_each_get_the_image_encoded_once(
    tmp_path, monkeypatch, wandb_offline, mlflow_file_store
):
    import lightning.pytorch.loggers as lightning_loggers
    import pytorch_lightning.loggers as pl_loggers
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tensorboard = lightning_loggers.TensorBoardLogger(str(tmp_path), name="tb")
    wandb = pl_loggers.WandbLogger(save_dir=str(tmp_path), project="cnnsee-test")
    mlflow = lightning_loggers.MLFlowLogger(experiment_name="cnnsee", tracking_uri=mlflow_file_store)
    csv_logger = pl_loggers.CSVLogger(str(tmp_path), name="csv")
    sinks = LogSinks.for_loggers([tensorboard, wandb, mlflow, csv_logger], str(tmp_path / "root"))
    assert [type(writer).__name__ for writer in sinks.writers] == [
        "TensorBoardImageWriter",
        "WandbImageWriter",
        "MlflowImageWriter",
        "PngWriter",
    ]
    wandb.experiment  # the run starts here, not in the counted call

    saves = []
    original_save = Image.Image.save

    def counting_save(self, fp, format=None, **params):
        saves.append(format)
        return original_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", counting_save)  # every PNG encoding, by CNNSee or any logger
    image = random_image(7)
    sinks.add_image(TAG, image, 5)
    monkeypatch.setattr(Image.Image, "save", original_save)
    assert saves == ["PNG"]

    expected = expected_pixels(image)
    tensorboard.experiment.close()
    events = EventAccumulator(tensorboard.log_dir, size_guidance={"images": 0})
    events.Reload()
    [event] = events.Images(TAG)
    assert event.step == 5 and np.array_equal(pixels_of(event.encoded_image_string), expected)

    run_folder = Path(wandb.experiment.dir).parent
    wandb.experiment.finish()
    [row] = [row for row in wandb_history(run_folder) if TAG in row]
    assert row["trainer/global_step"] == 5
    assert np.array_equal(pixels_of(run_folder / "files" / row[TAG]["path"]), expected)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_file_store)
    path = "/".join(("cnnsee", *TAG_FOLDER, "step_00000005.png"))
    assert np.array_equal(pixels_of(client.download_artifacts(mlflow.run_id, path, str(tmp_path / "dl"))), expected)

    assert np.array_equal(
        pixels_of(Path(csv_logger.log_dir).joinpath("cnnsee", *TAG_FOLDER, "step_00000005.png")), expected
    )
    assert not (tmp_path / "root").exists()


# ------------------------------------------------------------------------------- one package without the other
@pytest.mark.parametrize(
    "namespace, missing", [("pytorch_lightning", "lightning"), ("lightning.pytorch", "pytorch_lightning")]
)
def test_loggers_are_recognised_when_the_other_lightning_package_is_not_installed(namespace, missing, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules[{missing!r}] = None  # import {missing} now raises ImportError, as if it were not installed
        import torch
        from {namespace}.loggers import CSVLogger, TensorBoardLogger
        from lightning_cnnsee.sinks.writers import LogSinks

        root = {str(tmp_path)!r}
        sinks = LogSinks.for_loggers([TensorBoardLogger(root, name="tb"), CSVLogger(root, name="csv")], root)
        sinks.add_image("cnnsee/classes", torch.rand(3, 4, 4), 0)
        print(*[type(writer).__name__ for writer in sinks.writers])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["TensorBoardImageWriter", "PngWriter"]
    assert (tmp_path / "csv" / "version_0" / "cnnsee" / "classes" / "step_00000000.png").exists()
    assert list((tmp_path / "tb" / "version_0").glob("events.out.tfevents.*"))


# ------------------------------------------------------------------------------------------------- in a fit
def test_images_logged_during_fit_reach_every_logger_beside_lightnings_own_metrics(
    tmp_path, wandb_offline, mlflow_file_store
):
    import pytorch_lightning as pl
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader, TensorDataset

    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class LogsImages(pl.Callback):
        """What CNNSee does with LogSinks: build at setup, log an image and a scalar at some steps."""

        def setup(self, trainer, pl_module, stage):
            self.sinks = LogSinks.for_loggers(trainer.loggers, trainer.default_root_dir)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step % 2 == 0:
                self.sinks.add_image(TAG, random_image(trainer.global_step), trainer.global_step)
                self.sinks.add_scalar("cnnsee/overhead", trainer.global_step / 100, trainer.global_step)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(24, 4), torch.randn(24, 1)), batch_size=4)
    loggers = [
        TensorBoardLogger(str(tmp_path), name="tb"),
        WandbLogger(save_dir=str(tmp_path), project="cnnsee-test"),
        MLFlowLogger(experiment_name="cnnsee", tracking_uri=mlflow_file_store),
        CSVLogger(str(tmp_path), name="csv"),
    ]
    trainer = pl.Trainer(
        max_epochs=1,
        logger=loggers,
        callbacks=[LogsImages()],
        log_every_n_steps=1,
        default_root_dir=str(tmp_path / "root"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Regression(), data)
    steps = [2, 4, 6]  # global_step after batches 2, 4 and 6
    tensorboard, wandb, mlflow, csv_logger = loggers

    events = EventAccumulator(tensorboard.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert [event.step for event in events.Images(TAG)] == steps
    for event, step in zip(events.Images(TAG), steps, strict=True):
        assert np.array_equal(pixels_of(event.encoded_image_string), expected_pixels(random_image(step)))

    run_folder = Path(wandb.experiment.dir).parent
    wandb.experiment.finish()
    rows = wandb_history(run_folder)
    assert_wandb_kept_every_row(run_folder, rows, len(rows))
    assert [row["trainer/global_step"] for row in rows if "train_loss" in row] == list(range(6))
    images = [(row["trainer/global_step"], row[TAG]["path"]) for row in rows if TAG in row]
    assert [step for step, _ in images] == steps
    for step, path in images:
        assert np.array_equal(pixels_of(run_folder / "files" / path), expected_pixels(random_image(step)))

    client = MlflowClient(mlflow_file_store)
    folder = "/".join(("cnnsee", *TAG_FOLDER))
    assert [a.path for a in client.list_artifacts(mlflow.run_id, folder)] == [
        f"{folder}/step_{step:08d}.png" for step in steps
    ]
    assert len(client.get_metric_history(mlflow.run_id, "train_loss")) == 6
    assert [m.step for m in client.get_metric_history(mlflow.run_id, "cnnsee/overhead")] == steps

    pngs = sorted(Path(csv_logger.log_dir).joinpath("cnnsee", *TAG_FOLDER).iterdir())
    assert [png.name for png in pngs] == [f"step_{step:08d}.png" for step in steps]
    assert os.path.exists(os.path.join(csv_logger.log_dir, "metrics.csv"))
    assert not (tmp_path / "root" / "cnnsee").exists()
