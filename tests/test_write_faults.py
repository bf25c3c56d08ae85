"""A log folder that cannot be written never ends training: each kind of cause is said once, with the path, and a
destination that works again is said to."""

from __future__ import annotations

import errno
import os
import subprocess
import warnings

import pytest
import pytorch_lightning as pl
import torch
from tiny import TinyClassifier, make_loaders, trainer_kwargs

from lightning_cnnsee import CNNSee
from lightning_cnnsee.callback.schedule import Schedule
from lightning_cnnsee.sinks.writers import Destination, LogSinks, MlflowImageWriter, PngWriter

FAST = dict(ascent_steps=2, num_samples=4, max_overhead=0.9, techniques=["gradcam", "activations"])


@pytest.fixture(autouse=True)
def overhead_known_at_once(monkeypatch):
    """``cnnsee/overhead`` is logged once training has lasted a second; these fits are shorter: log it at once."""
    monkeypatch.setattr(Schedule, "overhead", lambda self: 0.01)


def fit_with_warnings(tmp_path, callback, **overrides):
    pl.seed_everything(0)
    train, val = make_loaders(count=16)
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, **overrides))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyClassifier(), train, val)
    return trainer, [str(w.message) for w in caught if "CNNSee could not write" in str(w.message)]


def test_a_file_where_the_cnnsee_folder_should_be_is_named_once_and_training_finishes(tmp_path):
    logger = pl.loggers.CSVLogger(str(tmp_path), name="csv", version=0)
    os.makedirs(logger.log_dir)
    blocker = os.path.join(logger.log_dir, "cnnsee")
    open(blocker, "w").close()
    trainer, said = fit_with_warnings(tmp_path, CNNSee(**FAST), logger=logger, max_epochs=2)
    assert trainer.current_epoch == 2 and trainer.state.finished
    assert len(said) == 1, said
    assert blocker in said[0] and "a file stands where a folder should be" in said[0]


def test_a_read_only_folder_is_said_once_for_all_images_and_the_overhead_scalar(tmp_path, monkeypatch):
    # root is not stopped by file modes: the write is made to fail as a read-only folder makes it fail
    def refused(self, tag, *args):
        path = os.path.join(self.root, tag.replace("/", "_"))
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(PngWriter, "add_png", refused)
    monkeypatch.setattr(PngWriter, "add_scalar", refused)
    callback = CNNSee(**FAST)
    trainer, said = fit_with_warnings(tmp_path, callback, logger=False, max_epochs=2)
    assert trainer.state.finished and trainer.current_epoch == 2
    assert len(said) == 1, said
    assert "permission refused" in said[0] and str(tmp_path / "cnnsee") in said[0]


def _full_tmpfs(folder) -> str:
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs here to fill: {result.stderr.decode(errors='replace').strip()}")
    filler = os.path.join(folder, "filler")
    try:
        handle = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(handle, b"\0" * 1024):
                pass
        except OSError:  # full
            pass
        finally:
            os.close(handle)
    except BaseException:
        subprocess.run(["umount", str(folder)], check=False)
        raise
    return filler


def test_a_full_disk_is_named_with_its_path_and_writing_again_is_said(tmp_path):
    folder = tmp_path / "full"
    filler = _full_tmpfs(folder)
    try:
        messages: list[str] = []
        sinks = LogSinks([Destination(PngWriter(str(folder / "cnnsee"), strip_prefix="cnnsee/"), "PNG files")])
        sinks.guard.warn = messages.append
        for step in range(3):
            sinks.add_image("cnnsee/gradcam/features", torch.rand(3, 32, 32), step)
            sinks.add_scalar("cnnsee/overhead", 0.01, step)
        assert len(messages) == 1, messages
        assert "the disk is full" in messages[0] and str(folder / "cnnsee") in messages[0]
        os.remove(filler)
        sinks.add_image("cnnsee/gradcam/features", torch.rand(3, 32, 32), 3)
        assert messages[1] == "CNNSee writes to PNG files again (6 writes had failed)."
        assert (folder / "cnnsee" / "gradcam" / "features" / "step_00000003.png").exists()
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_during_a_fit_ends_nothing(tmp_path, monkeypatch):
    def full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(self.root, "scalars.csv"))

    monkeypatch.setattr(PngWriter, "add_png", full)
    monkeypatch.setattr(PngWriter, "add_scalar", full)
    trainer, said = fit_with_warnings(tmp_path, CNNSee(**FAST), logger=False, max_epochs=2)
    assert trainer.state.finished
    assert len(said) == 1 and "the disk is full" in said[0] and "scalars.csv" in said[0], said


def test_one_failing_logger_keeps_the_image_from_no_other(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    messages: list[str] = []
    broken = Destination(PngWriter(str(blocked / "cnnsee")), "PNG files in blocked")
    working = Destination(PngWriter(str(tmp_path / "cnnsee"), strip_prefix="cnnsee/"), "PNG files here")
    sinks = LogSinks([broken, working])
    sinks.guard.warn = messages.append
    sinks.add_image("cnnsee/classes", torch.rand(3, 4, 4), 0)
    assert (tmp_path / "cnnsee" / "classes" / "step_00000000.png").exists()
    assert len(messages) == 1 and str(blocked) in messages[0]


def test_strict_mode_raises_the_write_error(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    sinks = LogSinks([Destination(PngWriter(str(blocked / "cnnsee")), "PNG files")])
    sinks.guard.strict = True
    with pytest.raises(OSError):
        sinks.add_image("cnnsee/classes", torch.rand(3, 4, 4), 0)


def test_a_failing_mlflow_or_wandb_destination_is_contained_and_named(tmp_path):
    class Client:
        def log_artifact(self, run_id, path, artifact_path):
            raise PermissionError(errno.EACCES, "Permission denied", "/mlruns/0/abc/artifacts")

        def log_metric(self, *args, **kwargs):
            raise ConnectionError("tracking server unreachable")

    class Logger:
        experiment, run_id = Client(), "abc"

    messages: list[str] = []
    sinks = LogSinks([Destination(MlflowImageWriter(Logger()), "MLflow artifacts")])
    sinks.guard.warn = messages.append
    for step in range(3):
        sinks.add_image("cnnsee/classes", torch.rand(3, 4, 4), step)
        sinks.add_scalar("cnnsee/overhead", 0.01, step)
    assert len(messages) == 2, messages
    assert "/mlruns/0/abc/artifacts: permission refused" in messages[0]
    assert "ConnectionError: tracking server unreachable" in messages[1]


def test_a_full_disk_that_names_no_file_is_said_with_the_file_being_written(tmp_path, monkeypatch):
    import lightning_cnnsee.sinks.writers as writers

    class FullFile:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")  # as the OS says it: no file named

    monkeypatch.setattr(writers, "open", lambda *args, **kwargs: FullFile(), raising=False)
    messages: list[str] = []
    sinks = LogSinks([Destination(PngWriter(str(tmp_path / "cnnsee"), strip_prefix="cnnsee/"), "PNG files")])
    sinks.guard.warn = messages.append
    sinks.add_image("cnnsee/gradcam/features", torch.rand(3, 4, 4), 7)
    expected = tmp_path / "cnnsee" / "gradcam" / "features" / "step_00000007.png"
    assert messages == [
        f"CNNSee could not write {expected}: the disk is full (or the quota used up) (OSError: No space left on "
        "device). Training goes on; CNNSee tries again at its next runs and says when writing to PNG files works "
        "again."
    ]
