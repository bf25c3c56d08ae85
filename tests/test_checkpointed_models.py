"""A model that uses gradient checkpointing (``use_reentrant=True``, PyTorch's old default) gets every picture, the
same pictures as without checkpointing, and is left as found."""

from __future__ import annotations

import warnings

import pytest
import pytorch_lightning as pl
import torch
import torch.utils.checkpoint as cp
from tiny import read_images, trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_cnnsee import CNNSee
from lightning_cnnsee.run.options import Options
from lightning_cnnsee.run.visualization import visualize

ALL = ["gradcam", "attributions", "filters", "classes", "activations", "faithfulness"]


class Checkpointed(nn.Module):
    def __init__(self, reentrant: bool | None) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.reentrant is None:
            x = self.block(x)
        else:
            x = cp.checkpoint(self.block, x, use_reentrant=self.reentrant)
        return self.head(x)


OPTIONS = Options(
    ascent_steps=2,
    techniques=ALL,
    gradcam_layers=["block", "block.0"],
    filter_layers=["block.0"],
    activation_layers=["block.2"],
    num_filters=2,
)


def _run(model):
    torch.manual_seed(0)
    images, labels = torch.rand(3, 3, 12, 12), torch.tensor([0, 1, 2])
    return visualize(model, images, labels, OPTIONS)


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_every_kind_works_through_checkpointed_segments_and_matches_the_model_without_them(reentrant):
    torch.manual_seed(0)
    plain = Checkpointed(None).eval()
    checkpointed = Checkpointed(reentrant).eval()
    checkpointed.load_state_dict(plain.state_dict())
    expected, found = _run(plain), _run(checkpointed)
    assert sorted(found.cams_predicted) == ["block", "block.0"] and sorted(found.filters) == ["block.0"]
    assert sorted(found.activations) == ["block.2"] and found.class_patterns is not None
    assert sorted(found.attributions_predicted) == ["integrated_gradients", "saliency"]
    for name in expected.cams_predicted:  # hooks inside the segment fire once, on the right activations
        torch.testing.assert_close(found.cams_predicted[name], expected.cams_predicted[name])
    for name in expected.attributions_predicted:
        torch.testing.assert_close(found.attributions_predicted[name], expected.attributions_predicted[name])
    torch.testing.assert_close(found.activations["block.2"], expected.activations["block.2"])
    torch.testing.assert_close(found.filters["block.0"].images, expected.filters["block.0"].images)
    for name, metrics in expected.faithfulness.items():
        for metric, value in metrics.items():
            torch.testing.assert_close(found.faithfulness[name][metric], value)


def test_checkpointing_is_restored_for_training_after_a_run():
    model = Checkpointed(True)
    before = cp.CheckpointFunction.__dict__.get("apply")
    _run(model)
    assert cp.CheckpointFunction.__dict__.get("apply") is before
    x = torch.rand(2, 3, 12, 12, requires_grad=True)
    # the segment is checkpointed again: its output comes from CheckpointFunction's backward node
    segment = cp.checkpoint(model.block, model.stem(x), use_reentrant=True)
    assert "CheckpointFunction" in type(segment.grad_fn).__name__


class CheckpointedModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = Checkpointed(True)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x.requires_grad_(True)), y)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_fit_of_a_reentrant_checkpointed_model_logs_every_kind_without_a_warning(tmp_path):
    x = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, torch.arange(16) % 3), batch_size=8)
    callback = CNNSee(ascent_steps=2, num_samples=4, max_overhead=None, num_filters=2)
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_epochs=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(CheckpointedModule(), loader, loader)
    assert not [str(w.message) for w in caught if "CNNSee" in str(w.message)]
    kinds = {tag.split("/")[1] for tag in read_images(trainer.logger.log_dir)}
    assert kinds == {"gradcam", "filters", "classes", "activations"}
