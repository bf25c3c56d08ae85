"""A model that uses gradient checkpointing (``use_reentrant=True``, PyTorch's old default) gets every picture, the
same pictures as without checkpointing, and is left as found."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint as cp
from torch import nn

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
    assert sorted(found.activations) == ["block.2"] and found.classes is not None
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
