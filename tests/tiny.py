"""A tiny LightningModule and data for callback tests (no downloads, a second or two per fit on a CPU)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_cnnsee import CNNSee

NUM_CLASSES = 4


def count_hooks(model: nn.Module) -> int:
    """Forward, forward-pre, backward and backward-pre hooks registered on all modules of ``model``."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(module, kind, {})) for module in model.modules() for kind in kinds)


class Boom(nn.Module):
    """A layer that must never run: proves that a forward pass stopped before it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the forward pass went past the layer it should have stopped after")


class Counter(nn.Module):
    """Identity that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


class TinyClassifier(pl.LightningModule):
    """Conv-BN-ReLU-pool, conv-ReLU, Dropout, global pooling, Linear: enough for every technique."""

    def __init__(self, in_channels: int = 3, lr: float = 0.1, momentum: float = 0.9) -> None:
        super().__init__()
        self.lr, self.momentum = lr, momentum
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


class TinyViT(TinyClassifier):
    """A timm ViT of two blocks on 32x32 inputs (patch 8: a 4x4 grid after the class token), with dropout."""

    def __init__(self, lr: float = 0.05, momentum: float = 0.9) -> None:
        import timm

        pl.LightningModule.__init__(self)
        self.lr, self.momentum = lr, momentum
        self.net = timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            img_size=32,
            patch_size=8,
            depth=2,
            embed_dim=32,
            num_heads=2,
            num_classes=NUM_CLASSES,
            drop_rate=0.1,
        )
        self.example_input_array = torch.zeros(1, 3, 32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RecordingCNNSee(CNNSee):
    """CNNSee that keeps the results of its last run that produced some (on rank 0), for tests to look at."""

    last_results = None

    def run(self, trainer, pl_module, **kwargs):
        results = super().run(trainer, pl_module, **kwargs)
        if results is not None:
            self.last_results = results
        return results


def make_loaders(
    count: int = 48, batch_size: int = 8, channels: int = 3, size: tuple[int, int] = (16, 20), seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, channels, *size, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    # make the class visible: brighten a class-dependent corner
    for cls in range(NUM_CLASSES):
        rows, cols = divmod(cls, 2)
        x[y == cls, :, rows * 8 : rows * 8 + 8, cols * 10 : cols * 10 + 10] += 1.5
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)
    val = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=batch_size)
    return train, val


def trainer_kwargs(tmp_path, **overrides) -> dict:
    kwargs = dict(
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="logs"),
        log_every_n_steps=1,
    )
    kwargs.update(overrides)
    return kwargs


def read_images(log_dir: str) -> dict[str, list[int]]:
    """``{tag: [steps]}`` of every image in the event files under ``log_dir``, read with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(log_dir, size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return {tag: [event.step for event in accumulator.Images(tag)] for tag in accumulator.Tags()["images"]}
