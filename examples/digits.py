"""CNNSee on scikit-learn's handwritten digits with a torchvision ResNet-18, configured from YAML by ``LightningCLI``.

The data set ships inside scikit-learn (``sklearn.datasets.load_digits``: 1797 grey 8x8 images of the digits 0-9),
so nothing is downloaded. The images are upsampled to ``image_size`` pixels and standardized with :data:`MEAN`
and :data:`STD`; the model is ``torchvision.models.resnet18`` with random weights, its first layer made a 3x3
convolution over one grey channel (stride 1), so that the last block still has a spatial map for Grad-CAM at this
small size. Run it with::

    pip install scikit-learn                   # or: pip install -e ".[examples]"
    python examples/digits.py fit --config configs/digits.yaml

Logs go to ``runs/digits/version_N``; review them with ``cnnsee report runs -o report.html``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision

try:  # `pip install lightning` (import lightning as L), or the standalone pytorch-lightning package
    import lightning.pytorch as pl
    from lightning.pytorch.cli import LightningCLI
except ImportError:
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

#: Mean and standard deviation of the upsampled grey images in [0, 1]; ``configs/digits.yaml`` gives CNNSee the
#: same values (``mean:``, ``std:``) to show the images in their true grey levels.
MEAN: list[float] = [0.305]
STD: list[float] = [0.324]
CLASS_NAMES: list[str] = [str(digit) for digit in range(10)]


class DigitsClassifier(pl.LightningModule):
    """``torchvision.models.resnet18`` (random weights) for small grey images.

    Args:
        num_classes: outputs of the last layer.
        lr: learning rate of AdamW.
        weight_decay: weight decay of AdamW.

    Example::

        >>> import torch
        >>> model = DigitsClassifier()
        >>> model(torch.randn(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, lr: float = 2e-3, weight_decay: float = 1e-4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
        # One grey channel in, stride 1: a 32x32 digit reaches layer4 as a 2x2 map instead of 1x1.
        self.net.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=stage != "train")
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class DigitsDataModule(pl.LightningDataModule):
    """scikit-learn's digits, upsampled to ``image_size`` and standardized, split into training and validation.

    Args:
        image_size: height and width after bilinear upsampling of the 8x8 originals.
        val_fraction: share of the 1797 images kept for validation.
        batch_size: images per batch (training and validation).
        seed: seed of the split.

    Example::

        >>> data = DigitsDataModule(batch_size=16)
        >>> data.setup("fit")
        >>> images, labels = next(iter(data.train_dataloader()))
        >>> images.shape, labels.shape
        (torch.Size([16, 1, 32, 32]), torch.Size([16]))
    """

    def __init__(self, image_size: int = 32, val_fraction: float = 0.2, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from sklearn.datasets import load_digits  # shipped with scikit-learn: no download

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
        images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        images = (images - MEAN[0]) / STD[0]
        labels = torch.tensor(digits.target, dtype=torch.int64)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        num_val = round(self.val_fraction * len(labels))
        self.val_set = TensorDataset(images[order[:num_val]], labels[order[:num_val]])
        self.train_set = TensorDataset(images[order[num_val:]], labels[order[num_val:]])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=0)


def main(args: Sequence[str] | None = None) -> LightningCLI:
    """Run the command line (``args``, default ``sys.argv[1:]``) and return the ``LightningCLI``."""
    with warnings.catch_warnings():
        # The data is in memory; Lightning's advice to add DataLoader workers does not apply.
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        return LightningCLI(DigitsClassifier, DigitsDataModule, args=args)


if __name__ == "__main__":
    main()
