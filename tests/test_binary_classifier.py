"""A binary classifier with one logit (``BCEWithLogitsLoss``, output (N, 1)) gets every picture: the map explains the
positive logit for a positive prediction and its negative for a negative one (pytorch-grad-cam's
``BinaryClassifierOutputTarget``), captions and faithfulness use the sigmoid, and the kind is told once."""

from __future__ import annotations

import logging
import warnings

import pytest
import pytorch_lightning as pl
import torch
from tiny import grad_cam_library_raw, read_images, trainer_kwargs
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_cnnsee import CNNSee
from lightning_cnnsee.explain.cam import cam
from lightning_cnnsee.explain.metrics import faithfulness, normalize_maps
from lightning_cnnsee.explain.targets import model_kind, resolve_targets
from lightning_cnnsee.run.options import Options
from lightning_cnnsee.run.visualization import visualize

pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus  # noqa: E402
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget  # noqa: E402


def binary_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 1),
    )
    return model.eval()


def images_of_both_signs(model: nn.Module, count: int = 6) -> torch.Tensor:
    """Images on which the model predicts both classes (the bias moved to the logits' median)."""
    images = torch.rand(count, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model[-1].weight *= 100  # logits spread out
        middle = model(images)[:, 0].sort().values
        model[-1].bias -= middle[count // 2 - 1 : count // 2 + 1].mean()
        logits = model(images)[:, 0]
    assert (logits > 0).any() and (logits < 0).any()
    return images


def library_raw(cam_class, model, layer: str, images, categories) -> torch.Tensor:
    """pytorch-grad-cam's raw map (before its scaling) for BinaryClassifierOutputTarget(category) per image."""
    targets = [BinaryClassifierOutputTarget(int(c)) for c in categories]
    return grad_cam_library_raw(cam_class, model, layer, images, targets)


@pytest.mark.parametrize("method, library", [("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus)])
@pytest.mark.parametrize("targets", ["predicted", "flipped"])
def test_the_map_explains_the_logit_for_class_1_and_its_negative_for_class_0_as_pytorch_grad_cam(
    method, library, targets
):
    model = binary_model()
    images = images_of_both_signs(model)
    with torch.no_grad():
        predicted = (model(images)[:, 0] > 0).long()
    categories = predicted if targets == "predicted" else 1 - predicted
    ours = cam(model, images, ["3"], None if targets == "predicted" else categories, method)["3"]
    expected = library_raw(library, model, "3", images, categories.tolist()).float()
    assert ours.abs().amax() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_one_logit_is_a_binary_model_and_its_prediction_is_the_sign():
    from lightning_cnnsee.explain.targets import class_probabilities

    logits = torch.tensor([[2.0], [-0.5], [0.1]])
    assert model_kind(logits) == "binary" and model_kind(logits, torch.tensor([[1.0], [0.0], [1.0]])) == "binary"
    assert resolve_targets(None, logits).tolist() == [1, 0, 1]
    torch.testing.assert_close(class_probabilities(logits)[:, 1], torch.sigmoid(logits[:, 0]))
    torch.testing.assert_close(class_probabilities(logits).sum(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match=r"labels of 0 and 1"):
        model_kind(logits, torch.tensor([0, 2, 1]))


def test_faithfulness_of_a_binary_model_uses_the_sigmoid_of_the_predicted_class():
    model = binary_model()
    images = images_of_both_signs(model)
    maps = torch.rand(len(images), 4, 4, generator=torch.Generator().manual_seed(0))
    found = faithfulness(model, images, maps, steps=4)
    with torch.no_grad():
        logits = model(images)[:, 0]
        masked = model(normalize_maps(maps, images)[:, None] * images)[:, 0]
    sign = torch.where(logits > 0, 1.0, -1.0)
    clean, kept = torch.sigmoid(sign * logits), torch.sigmoid(sign * masked)  # the predicted class's probability
    expected = (clean - kept).clamp(min=0) / (clean + 1e-7)
    torch.testing.assert_close(found["avg_drop"], expected, rtol=1e-5, atol=1e-6)


def test_visualize_gives_every_kind_for_bce_labels_and_the_true_class_map_of_a_wrong_prediction():
    model = binary_model()
    images = images_of_both_signs(model)
    with torch.no_grad():
        predicted = (model(images)[:, 0] > 0).long()
    labels = torch.ones(len(images), 1)  # BCEWithLogitsLoss targets: float (N, 1)
    options = Options(
        ascent_steps=2, num_filters=2, techniques=["gradcam", "attributions", "filters", "classes", "activations"]
    )
    results = visualize(model, images, labels, options)
    assert results.kind == "binary" and results.failures == {}
    assert results.filters and results.class_patterns is not None and results.activations
    torch.testing.assert_close(results.cams_predicted["3"], cam(model, images, ["3"], predicted)["3"])
    torch.testing.assert_close(results.cams_true["3"], cam(model, images, ["3"], 1)["3"])
    assert sorted(results.attributions_true) == ["integrated_gradients", "saliency"]


class BinaryModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = binary_model()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.binary_cross_entropy_with_logits(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.binary_cross_entropy_with_logits(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_fit_of_a_binary_classifier_logs_every_kind_and_tells_its_kind_once(tmp_path, caplog):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 12, 12, generator=generator)
    y = (x[:, 0].mean(dim=(1, 2)) > 0.5).float()[:, None]
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    callback = CNNSee(ascent_steps=2, num_samples=4, max_overhead=None, num_filters=2)
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_epochs=2))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        trainer.fit(BinaryModule(), loader, loader)
    assert not [str(w.message) for w in caught if "CNNSee" in str(w.message)]
    kinds = {tag.split("/")[1] for tag in read_images(trainer.logger.log_dir)}
    assert kinds == {"gradcam", "filters", "classes", "activations"}
    told = [record.getMessage() for record in caplog.records if "CNNSee sees a" in record.getMessage()]
    assert told == ["CNNSee sees a binary model (outputs (4, 1), labels (4, 1)); set model_kind= to say otherwise."]
