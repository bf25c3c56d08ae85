"""A two-minute demo on the CPU: a small CNN learns :class:`~lightning_cnnsee.demo.data.ShapesDataset` with CNNSee on.

The story is the one of a real project: the dataset hands the model standardized images (``(x - MEAN) / STD``),
and :class:`~lightning_cnnsee.CNNSee` is given the same ``MEAN`` and ``STD`` to show the images in their true
colours and to optimize filter patterns in [0, 1]. Open TensorBoard on the log folder afterwards and move the step
slider: the Grad-CAM maps move from the clutter onto the shapes as validation accuracy climbs.

``run_demo`` is what ``cnnsee demo`` runs.

Example::

    >>> from lightning_cnnsee.demo.train import run_demo
    >>> trainer = run_demo("runs", max_epochs=8)  # doctest: +SKIP
    >>> float(trainer.callback_metrics["val/acc"]) > 0.9  # doctest: +SKIP
    True

Then ``tensorboard --logdir runs``.
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_cnnsee.callback.compat import lightning as pl
from lightning_cnnsee.demo.data import CLASS_NAMES, MEAN, STD, ShapesDataset
from lightning_cnnsee.vocabulary.checks import positive_int

__all__ = ["ShapesClassifier", "ShapesDataModule", "run_demo"]

if TYPE_CHECKING:
    from lightning_cnnsee.callback.cnnsee import CNNSee


class ShapesClassifier(pl.LightningModule):
    """A small CNN for :class:`ShapesDataset`: five conv blocks, global average pooling, one linear layer.

    Each block is Conv2d 3x3, BatchNorm2d, ReLU; the first three end with a 2x2 max pooling, so the last two work
    at an eighth of the input size (6x6 for 48x48 images) with a receptive field of 54 pixels, enough to see a
    whole shape from any cell. Their output, ``features``, is the map Grad-CAM shows. Trained with Adam and a
    one-cycle learning-rate schedule; logs ``train/loss``, ``train/acc``, ``val/loss`` and ``val/acc``.

    Args:
        num_classes: outputs of the last layer.
        width: channels of the first block; the next blocks have twice and four times as many.
        lr: peak learning rate of the one-cycle schedule.
        weight_decay: Adam weight decay.

    Example::

        >>> import torch
        >>> from lightning_cnnsee.demo.train import ShapesClassifier
        >>> model = ShapesClassifier(num_classes=6)
        >>> model(torch.randn(2, 3, 48, 48)).shape
        torch.Size([2, 6])
    """

    def __init__(
        self, num_classes: int = len(CLASS_NAMES), width: int = 16, lr: float = 0.02, weight_decay: float = 1e-4
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            *_conv_block(3, width),
            nn.MaxPool2d(2),
            *_conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_block(2 * width, 4 * width),
            nn.MaxPool2d(2),
            *_conv_block(4 * width, 4 * width),
            *_conv_block(4 * width, 4 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(images)).flatten(1))

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch[0], batch[1]  # (and the shapes' boxes, with ShapesDataModule(leak=True))
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step)
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total_steps = self.trainer.estimated_stepping_batches
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """Conv2d 3x3 (same size out), BatchNorm2d, ReLU."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU()]


class ShapesDataModule(pl.LightningDataModule):
    """Train and validation splits of :class:`ShapesDataset`, standardized with ``MEAN`` and ``STD``.

    The two splits are generated from different seeds (``seed`` and ``seed + 1``), so no validation image is a
    copy of a training image. Validation is not shuffled: its first batch, the one CNNSee follows, is the same
    every epoch.

    Args:
        num_train: training images.
        num_val: validation images.
        image_size: height and width in pixels.
        batch_size: images per batch.
        seed: seed of the training split (the validation split uses ``seed + 1``).
        leak: a class-coded marker in the corner of every image (``ShapesDataset(marker=True)``), and batches of
            ``(images, labels, boxes)`` with each shape's box, for ``CNNSee(object_key=2)``.

    Example::

        >>> from lightning_cnnsee.demo.train import ShapesDataModule
        >>> data = ShapesDataModule(num_train=64, num_val=32, batch_size=16)
        >>> data.setup("fit")
        >>> images, labels = next(iter(data.train_dataloader()))
        >>> images.shape, labels.shape
        (torch.Size([16, 3, 48, 48]), torch.Size([16]))
    """

    def __init__(
        self,
        num_train: int = 4096,
        num_val: int = 1024,
        image_size: int = 48,
        batch_size: int = 64,
        seed: int = 0,
        leak: bool = False,
    ) -> None:
        super().__init__()
        self.leak = leak
        self.num_train = num_train
        self.num_val = num_val
        self.image_size = image_size
        self.batch_size = batch_size
        self.seed = seed
        self.train_set: ShapesDataset | None = None
        self.val_set: ShapesDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            leak = dict(marker=self.leak, with_boxes=self.leak)
            self.train_set = ShapesDataset(self.num_train, self.image_size, seed=self.seed, normalize=True, **leak)
            self.val_set = ShapesDataset(self.num_val, self.image_size, seed=self.seed + 1, normalize=True, **leak)

    def train_dataloader(self) -> DataLoader:
        # The images are already in memory: worker processes would only add start-up time.
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256, shuffle=False, num_workers=0)


def run_demo(
    logdir: str,
    max_epochs: int = 8,
    seed: int = 0,
    num_train: int = 4096,
    num_val: int = 1024,
    image_size: int = 48,
    batch_size: int = 64,
    callback: CNNSee | None = None,
    enable_progress_bar: bool | None = None,
    accelerator: str = "cpu",
    checkpoints: bool = False,
    with_cnnsee: bool = True,
    leak: bool = False,
) -> pl.Trainer:
    """Train :class:`ShapesClassifier` on :class:`ShapesDataModule` with CNNSee logging to TensorBoard.

    Logs go to ``TensorBoardLogger(logdir, name="demo")``, that is ``logdir/demo/version_N``; view them with
    ``tensorboard --logdir <logdir>``. With the defaults it takes about a minute on two CPU cores and ends above
    90% validation accuracy.

    Args:
        logdir: root folder of the TensorBoard logs.
        max_epochs: training epochs (CNNSee runs before the first step and after every epoch).
        seed: seed of the data, the weights and the data order (``pl.seed_everything``).
        num_train: training images.
        num_val: validation images.
        image_size: height and width of the images.
        batch_size: training batch size.
        callback: the CNNSee to train with; default ``CNNSee(mean=MEAN, std=STD, class_names=CLASS_NAMES,
            max_overhead=None)``: every epoch shows every kind of image.
        enable_progress_bar: show Lightning's progress bar; default: only when the output is a terminal.
        accelerator: Lightning accelerator; the default ``"cpu"`` because the model is too small to gain on a GPU.
        checkpoints: save a checkpoint at every epoch end in ``logdir/demo/version_N/checkpoints`` (for
            ``cnnsee replay``).
        with_cnnsee: ``False`` trains without CNNSee (a run to see afterwards with ``cnnsee replay``).
        leak: train on shapes with a class-coded marker in the top-left corner (``ShapesDataModule(leak=True)``)
            and give CNNSee the shapes' boxes (``object_key=2``): the model learns the marker, CNNSee's maps sit on
            it, and CNNSee warns of a shortcut. Logs go to ``logdir/demo-leak/version_N``.

    Returns:
        The fitted ``pl.Trainer``; ``trainer.callback_metrics["val/acc"]`` is the last validation accuracy.

    Example::

        >>> from lightning_cnnsee.demo.train import run_demo
        >>> trainer = run_demo("runs", max_epochs=1, num_train=256, num_val=64)  # doctest: +SKIP
        >>> sorted(trainer.callback_metrics)  # doctest: +SKIP
        ['train/acc', 'train/loss', 'val/acc', 'val/loss']
    """
    positive_int("max_epochs", max_epochs)
    from lightning_cnnsee.callback.cnnsee import CNNSee

    if callback is None:
        # the demo trains for under a minute: at the default 5% budget most filter and class ascents would be
        # deferred, and the point here is to watch every kind of image change at every epoch
        leaky = {"object_key": 2} if leak else {}  # the shapes' boxes are the batches' third item
        callback = CNNSee(mean=MEAN, std=STD, class_names=CLASS_NAMES, max_overhead=None, **leaky)
    if enable_progress_bar is None:
        enable_progress_bar = sys.stderr.isatty()
    callbacks: list[Any] = [callback] if with_cnnsee else []
    if checkpoints:  # one per epoch end, every one kept, in the logger's folder
        callbacks.append(pl.callbacks.ModelCheckpoint(save_top_k=-1, every_n_epochs=1))
    pl.seed_everything(seed, workers=True, verbose=False)
    data = ShapesDataModule(num_train, num_val, image_size, batch_size, seed, leak=leak)
    model = ShapesClassifier(num_classes=len(CLASS_NAMES))
    log_every = max(1, min(10, num_train // batch_size))
    name = "demo-leak" if leak else "demo"
    trainer = _demo_trainer(
        logdir, name, max_epochs, accelerator, callbacks, checkpoints, enable_progress_bar, log_every
    )
    with warnings.catch_warnings():
        # The data is in memory; Lightning's advice to add DataLoader workers does not apply.
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        trainer.fit(model, datamodule=data)
    return trainer


def _demo_trainer(
    logdir: str,
    name: str,
    max_epochs: int,
    accelerator: str,
    callbacks: list[Any],
    checkpoints: bool,
    enable_progress_bar: bool,
    log_every: int,
) -> pl.Trainer:
    """The demo's Trainer: one device, TensorBoard logs under ``logdir/name``, deterministic, checkpoints if asked."""
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=1,
        logger=pl.loggers.TensorBoardLogger(logdir, name=name, default_hp_metric=False),
        callbacks=callbacks,
        # CUDA has no deterministic backward for adaptive pooling; "warn" keeps a GPU run going.
        deterministic=True if accelerator == "cpu" else "warn",
        enable_progress_bar=enable_progress_bar,
        enable_checkpointing=checkpoints,
        log_every_n_steps=log_every,
    )
