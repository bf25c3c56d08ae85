"""The input normalization found in the data: each source read right (checked by undoing the transform on a real
item), the same pictures with ``CNNSee()`` as with ``CNNSee(mean=..., std=...)``, and a warning for images that
are normalized where nothing can tell how."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny import NUM_CLASSES, TinyClassifier, trainer_kwargs
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset
from torchvision import transforms as v1
from torchvision.datasets import FakeData, VisionDataset
from torchvision.datasets.vision import StandardTransform
from torchvision.transforms import v2

from lightning_cnnsee import CNNSee
from lightning_cnnsee.callback.input_normalization import InputNormalization
from lightning_cnnsee.render.images import denormalize
from lightning_cnnsee.run.normalization import (
    MARGIN,
    Normalization,
    UnclearNormalization,
    find_normalization,
    outside_unit_range,
)
from lightning_cnnsee.run.options import Options

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZE = (3, 16, 20)


def fake(transform=None, count: int = 24) -> FakeData:
    """Generated images (no download): the same PIL image for an index whatever the transform."""
    return FakeData(count, SIZE, NUM_CLASSES, transform=transform)


def v1_pipeline(mean=MEAN, std=STD):
    return v1.Compose([v1.ToTensor(), v1.Normalize(mean, std)])


def v2_pipeline(mean=MEAN, std=STD):
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


class StandInNormalize:
    """Duck-typed like albumentations' Normalize (its class name and attributes), on (H, W, C) uint8 arrays."""

    def __init__(self, mean, std, max_pixel_value=255.0, normalization="standard", p=1.0):
        self.mean, self.std, self.max_pixel_value, self.p = mean, std, max_pixel_value, p
        self.normalization = normalization

    def __call__(self, image):
        scale = self.max_pixel_value
        return (image.astype(np.float32) - np.float32(self.mean) * scale) / (np.float32(self.std) * scale)


StandInNormalize.__name__ = "Normalize"


class StandInCompose:
    def __init__(self, transforms, p=1.0):
        self.transforms, self.p = transforms, p

    def __call__(self, image):
        for transform in self.transforms:
            image = transform(image)
        return image


class ArrayDataset(Dataset):
    """FakeData's images as (H, W, C) uint8 arrays through an albumentations-style ``transform(image=...)``, or a
    plain callable, then to a (C, H, W) tensor."""

    def __init__(self, transform, albumentations: bool = True) -> None:
        self.images, self.transform, self.albumentations = fake(), transform, albumentations

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        image, label = self.images[index]
        array = np.asarray(image)
        array = self.transform(image=array)["image"] if self.albumentations else self.transform(array)
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float(), label


class Transformed(Dataset):
    """A user's wrapper: a dataset with its own transform applied after the wrapped one's."""

    def __init__(self, dataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        return self.transform(image), label


class JointTransforms(VisionDataset):
    """A VisionDataset given ``transforms=``, a joint (image, target) transform: no ``transform`` of its own."""

    def __init__(self, transforms) -> None:
        super().__init__(root=None, transforms=transforms)
        self.images = fake()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.transforms(*self.images[index])


class OnlyStandardTransform(Dataset):
    """A dataset whose only transform is torchvision's StandardTransform (as VisionDataset keeps it)."""

    def __init__(self, transform) -> None:
        self.images, self.transforms = fake(), StandardTransform(transform)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.transforms(*self.images[index])


def albumentations_dataset(**normalize):
    albumentations = pytest.importorskip("albumentations")
    pipeline = albumentations.Compose([albumentations.Normalize(**normalize)])
    return ArrayDataset(pipeline)


def sources() -> dict[str, Dataset]:
    """Each place a normalization hides, with ImageNet's values (or values that compose into them)."""
    half = [0.5, 0.5, 0.5]
    # (x - 0.5) / 0.5 then (y - m2) / s2 is (x - MEAN) / STD for m2 = (MEAN - 0.5) / 0.5, s2 = STD / 0.5
    second_mean = [(m - 0.5) / 0.5 for m in MEAN]
    second_std = [s / 0.5 for s in STD]
    return {
        "v1": fake(v1_pipeline()),
        "v2": fake(v2_pipeline()),
        "nested": fake(v1.Compose([v1.ToTensor(), v1.Compose([v1.RandomApply([v1.Normalize(MEAN, STD)], p=1.0)])])),
        "v2_random_choice": fake(
            v2.Compose(
                [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.RandomChoice([v2.Normalize(MEAN, STD)])]
            )
        ),
        "sequential": fake(v1.Compose([v1.ToTensor(), torch.nn.Sequential(v1.Normalize(MEAN, STD))])),
        "subset": Subset(fake(v1_pipeline()), list(range(0, 24, 2))),
        "subset_v2": Subset(fake(v2_pipeline()), list(range(12))),
        "concat": ConcatDataset([fake(v1_pipeline()), fake(v2_pipeline())]),
        "wrapper": Transformed(fake(v1.ToTensor()), v1.Normalize(MEAN, STD)),
        "two_in_a_row": Transformed(fake(v1_pipeline(half, half)), v1.Normalize(second_mean, second_std)),
        "joint_transforms": JointTransforms(v2_pipeline()),
        "standard_transform": OnlyStandardTransform(v1_pipeline()),
        "stand_in": ArrayDataset(StandInCompose([StandInNormalize(MEAN, STD)]), albumentations=False),
    }


def raw_image(index: int) -> torch.Tensor:
    return v1.ToTensor()(fake()[index][0])


@pytest.mark.parametrize("name", [*sources(), "albumentations"])
def test_the_normalization_found_undoes_what_the_transform_did(name):
    """Independent of the reader: the dataset's own item, de-normalized with what was found, is the [0, 1] image."""
    dataset = albumentations_dataset(mean=MEAN, std=STD) if name == "albumentations" else sources()[name]
    found = find_normalization(DataLoader(dataset, batch_size=4))
    assert found is not None, name
    found = found.for_channels(3)
    index = dataset.indices[3] if isinstance(dataset, Subset) else 3
    image = dataset[3][0]
    mean = torch.tensor(found.mean).view(3, 1, 1)
    std = torch.tensor(found.std).view(3, 1, 1)
    # float32 (x - m) / s then * s + m: a few ulps of values up to |x| ~ 2.7, and the uint8 step for albumentations
    torch.testing.assert_close(image * std + mean, raw_image(index), atol=1e-5, rtol=0)
    np.testing.assert_allclose(found.mean, MEAN, rtol=1e-6)
    np.testing.assert_allclose(found.std, STD, rtol=1e-6)


def test_albumentations_max_pixel_value_is_the_pixel_that_counts_as_one():
    """Pixels of 0..1 (float images) with max_pixel_value=1: the same mean and std, and the item undone right."""
    albumentations = pytest.importorskip("albumentations")

    class FloatImages(ArrayDataset):
        def __getitem__(self, index):
            image, label = self.images[index]
            array = np.asarray(image).astype(np.float32) / 255
            array = self.transform(image=array)["image"]
            return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float(), label

    dataset = FloatImages(albumentations.Compose([albumentations.Normalize(MEAN, STD, max_pixel_value=1.0)]))
    found = find_normalization(dataset)
    assert "max_pixel_value=1" in found.where
    image = dataset[0][0] * torch.tensor(found.std).view(3, 1, 1) + torch.tensor(found.mean).view(3, 1, 1)
    torch.testing.assert_close(image, raw_image(0), atol=1e-5, rtol=0)


def test_a_wrapper_holding_the_transform_of_what_it_wraps_counts_it_once():
    inner = fake(v1_pipeline())
    mirror = Transformed(inner, lambda image: image)
    mirror.transform = inner.transform  # exposed for convenience, applied by the inner dataset only
    shared = v1_pipeline()
    assert find_normalization(mirror).mean == tuple(MEAN)
    assert find_normalization(ConcatDataset([fake(shared), fake(shared)])).mean == tuple(MEAN)


def test_where_it_was_found_is_said():
    found = find_normalization([DataLoader(Subset(fake(v1_pipeline()), [0, 1]))], role="validation")
    assert found.describe() == (
        "mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225] from the validation dataset's transform "
        "(Subset.dataset > FakeData.transform > Compose[1] > Normalize)"
    )
    assert "ConcatDataset" in find_normalization(sources()["concat"]).where


def test_lightning_combined_loader_and_dicts_are_read_at_their_first_loader():
    first = DataLoader(fake(v1_pipeline([0.1] * 3, [0.2] * 3)))
    second = DataLoader(fake(v1_pipeline()))
    combined = pl.utilities.combined_loader.CombinedLoader({"a": first, "b": second}, "sequential")
    assert find_normalization(combined).mean == (0.1, 0.1, 0.1)
    assert find_normalization({"a": first, "b": second}).mean == (0.1, 0.1, 0.1)


def unclear_sources() -> dict[str, Dataset]:
    return {
        "concat_disagreeing": ConcatDataset([fake(v1_pipeline()), fake(v1_pipeline([0.5] * 3, [0.5] * 3))]),
        "concat_one_part_unnormalized": ConcatDataset([fake(v1_pipeline()), fake(v1.ToTensor())]),
        "random_apply": fake(v1.Compose([v1.ToTensor(), v1.RandomApply([v1.Normalize(MEAN, STD)], p=0.5)])),
        "random_choice_disagreeing": fake(
            v2.Compose([v2.ToImage(), v2.RandomChoice([v2.Normalize(MEAN, STD), v2.Normalize([0.5], [0.5])])])
        ),
        "stand_in_per_image": ArrayDataset(
            StandInCompose([StandInNormalize(MEAN, STD, normalization="image")]), albumentations=False
        ),
        "stand_in_sometimes": ArrayDataset(StandInCompose([StandInNormalize(MEAN, STD, p=0.5)]), albumentations=False),
    }


@pytest.mark.parametrize("name", unclear_sources())
def test_a_normalization_without_one_mean_and_std_is_said_to_be_unclear(name):
    with pytest.raises(UnclearNormalization, match="normaliz"):
        find_normalization(unclear_sources()[name])


def test_no_normalization_in_the_transforms_is_none():
    assert find_normalization(fake(v1.ToTensor())) is None
    assert find_normalization(TensorDataset(torch.rand(4, 3, 8, 8))) is None
    assert find_normalization(DataLoader(fake(v1.Compose([v1.ToTensor(), v1.RandomHorizontalFlip()])))) is None


def test_outside_unit_range_takes_a_strict_majority_of_channels_and_the_margin():
    inside = torch.rand(4, 3, 8, 8) * (1 + 2 * MARGIN * 0.9) - MARGIN * 0.9  # overshoot within the margin
    assert outside_unit_range(inside) is None
    one_channel_off = inside.clone()
    one_channel_off[:, 2] *= 10  # a depth or alpha channel: not the sign of a normalization
    assert outside_unit_range(one_channel_off) is None
    normalized = (inside.clamp(0, 1) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    ranges = outside_unit_range(normalized)
    assert ranges is not None and len(ranges) == 3
    assert ranges[0][0] == pytest.approx(float(normalized[:, 0].min()))
    assert outside_unit_range(normalized, MEAN, STD) is None
    assert outside_unit_range(torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)) is not None


# ------------------------------------------------------------------ fits
FAST = dict(num_samples=4, ascent_steps=2, max_overhead=None, activation_channels=4, num_filters=2, max_classes=2)


def fit_images(tmp_path, dataset: Dataset, callback: CNNSee) -> dict[str, list[bytes]]:
    """Every PNG the fit logged, by tag, in step order, and the faithfulness scalars (read back from TensorBoard's
    event files)."""
    pl.seed_everything(0, workers=True)
    loader = DataLoader(dataset, batch_size=4)
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, max_epochs=1, limit_train_batches=2))
    trainer.fit(TinyClassifier(), loader, loader)
    accumulator = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    logged = {tag: [e.encoded_image_string for e in accumulator.Images(tag)] for tag in accumulator.Tags()["images"]}
    for tag in accumulator.Tags()["scalars"]:
        if tag.startswith("cnnsee/faithfulness/"):  # the numbers of the same pictures: equal too
            logged[tag] = [(e.step, e.value) for e in accumulator.Scalars(tag)]
    return logged


FIT_SOURCES = ["v1", "v2", "subset", "subset_v2", "nested", "concat", "wrapper", "two_in_a_row", "joint_transforms"]


@pytest.mark.parametrize("name", [*FIT_SOURCES, "stand_in", "albumentations"])
def test_a_fit_shows_the_same_pictures_found_as_given(tmp_path, name, caplog):
    dataset = albumentations_dataset(mean=MEAN, std=STD) if name == "albumentations" else sources()[name]
    with caplog.at_level(logging.INFO):
        found = fit_images(tmp_path / "found", dataset, CNNSee(**FAST))
    said = [r.getMessage() for r in caplog.records if "CNNSee input normalization" in r.getMessage()]
    assert len(said) == 1 and "mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225] from the validation" in said[0]
    given = fit_images(tmp_path / "given", dataset, CNNSee(mean=MEAN, std=STD, **FAST))
    kinds = {tag.split("/")[1] for tag in given}
    assert {"gradcam", "filters", "classes", "activations", "faithfulness"} <= kinds
    assert found == given
    if name != "v1":
        return
    # and not by chance: without a normalization the pictures are the normalized tensors clamped to [0, 1]
    unnormalized = fit_images(tmp_path / "zero", dataset, CNNSee(mean=[0.0] * 3, std=[1.0] * 3, **FAST))
    assert unnormalized["cnnsee/gradcam/features"] != given["cnnsee/gradcam/features"]


def test_the_pictures_are_the_dataset_images_de_normalized(tmp_path):
    """What the pictures show (the fixed images de-normalized with the options in use) are the [0, 1] images."""
    callback = CNNSee(**{**FAST, "techniques": ["gradcam"]})
    fit_images(tmp_path, sources()["v2"], callback)
    options = callback.options_in_use
    shown = denormalize(callback.fixed.images, options.mean, options.std)
    raw = torch.stack([raw_image(index) for index in range(FAST["num_samples"])])
    torch.testing.assert_close(shown, raw, atol=1e-5, rtol=0)


def normalized_tensors(count: int = 16) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(count, *SIZE, generator=generator) - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(
        STD
    ).view(3, 1, 1)
    return TensorDataset(images, torch.randint(0, NUM_CLASSES, (count,), generator=generator))


def normalization_warnings(tmp_path, dataset) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_images(tmp_path, dataset, CNNSee(**{**FAST, "techniques": ["gradcam"]}))
    return [str(w.message) for w in caught if "input normalization" in str(w.message)]


def test_pre_normalized_tensors_get_one_warning_with_their_range_and_the_fix(tmp_path):
    said = normalization_warnings(tmp_path, normalized_tensors())
    assert len(said) == 1, said
    assert "lie well outside [0, 1] (per channel: [-2.1" in said[0]
    assert "no normalization was found in the validation dataset's transforms" in said[0]
    assert "CNNSee(mean=[...], std=[...])" in said[0] and "ImageNet's" in said[0]


def test_pixels_of_0_to_255_are_told_how_to_be_shown(tmp_path):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (16, *SIZE), generator=generator).float()
    said = normalization_warnings(tmp_path, TensorDataset(pixels, torch.randint(0, NUM_CLASSES, (16,))))
    assert len(said) == 1 and "pixels of 0..255: mean=[0.0] * 3, std=[1 / 255] * 3" in said[0]


def test_images_in_the_unit_range_get_no_warning(tmp_path):
    generator = torch.Generator().manual_seed(0)
    dataset = TensorDataset(torch.rand(16, *SIZE, generator=generator), torch.randint(0, NUM_CLASSES, (16,)))
    assert normalization_warnings(tmp_path, dataset) == []
    assert normalization_warnings(tmp_path / "fake", fake(v1.ToTensor())) == []


def test_an_unclear_normalization_is_warned_about_with_the_reason(tmp_path):
    said = normalization_warnings(tmp_path, unclear_sources()["concat_disagreeing"])
    assert len(said) == 1 and "normalize differently" in said[0]


def test_a_normalization_that_does_not_fit_the_images_is_warned_about():
    """Found in the data, but the batches were normalized once more (say in on_after_batch_transfer)."""
    images = torch.stack([fake(v1_pipeline())[i][0] for i in range(4)])
    twice = (images - 0.5) / 0.25
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        InputNormalization().settle(object(), Options(), twice, fake(v1_pipeline()), "validation")
        InputNormalization().settle(object(), Options(), images, fake(v1_pipeline()), "validation")
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and "another normalization than this one" in said[0]


def test_given_options_win_and_the_difference_is_said(tmp_path, caplog):
    callback = CNNSee(mean=[0.5] * 3, std=[0.5] * 3, **{**FAST, "techniques": ["gradcam"]})
    with caplog.at_level(logging.INFO):
        fit_images(tmp_path, sources()["v1"], callback)
    assert callback.options_in_use.mean == [0.5] * 3
    assert any("uses the given mean=[0.5, 0.5, 0.5]" in r.getMessage() for r in caplog.records)


def test_the_checkpoint_keeps_what_was_found(tmp_path):
    """Resumed with validation data that no longer says how it is normalized: the checkpoint does, silently."""
    options = {**FAST, "techniques": ["gradcam"]}
    first = CNNSee(**options)
    key = first.state_key
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    kwargs = trainer_kwargs(tmp_path, enable_checkpointing=True, max_epochs=1, limit_train_batches=2)
    loader = DataLoader(sources()["subset"], batch_size=4)
    pl.Trainer(callbacks=[first, checkpoint], **kwargs).fit(TinyClassifier(), loader, loader)
    assert first.options_in_use.mean == MEAN and first.state_key == key  # the key is that of the options given

    resumed = CNNSee(**options)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    kwargs.update(max_epochs=2)
    trainer = pl.Trainer(callbacks=[resumed, checkpoint], **kwargs)
    other = DataLoader(normalized_tensors(), batch_size=4)  # pre-normalized: nothing to find in it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyClassifier(), loader, other, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert trainer.current_epoch == 2
    assert resumed.options_in_use.mean == MEAN and resumed.options_in_use.std == STD
    assert "Subset" in resumed.normalization.found.where
    assert [str(w.message) for w in caught if "input normalization" in str(w.message)] == []


def test_one_value_for_every_channel_is_spread_to_the_channels():
    state = InputNormalization()
    state.found = Normalization((0.5,), (0.25,)).for_channels(3)
    options = state.options_for(Options())
    assert options.mean == [0.5] * 3 and options.std == [0.25] * 3
    assert state.options_for(Options(std=[1.0] * 3)).mean is None  # either given: the given ones, as they are
    with pytest.raises(ValueError, match="2 mean values for images with 3 channels"):
        Normalization((0.5, 0.5), (0.25,)).for_channels(3)


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="needs gloo"
)
def test_under_ddp_every_rank_uses_rank_zeros_normalization(tmp_path):
    """Rank 1's validation data is normalized otherwise: it still uses what rank 0 found (its images are rank 0's)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_normalization_fit.py")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("LOCAL_RANK", None)
    completed = subprocess.run(
        [sys.executable, script, str(tmp_path)], capture_output=True, text=True, timeout=240, env=env
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    used = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert used[0] == used[1]
    assert used[0]["mean"] == MEAN and used[0]["std"] == STD


class FakeDataModule(pl.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(fake(v1.ToTensor()), batch_size=4)  # training data unnormalized: the images are validation's

    def val_dataloader(self):
        return DataLoader(Subset(fake(v2_pipeline()), list(range(8))), batch_size=4)


@pytest.mark.parametrize("setting", ["no_sanity_check", "training_only", "datamodule"])
def test_the_normalization_is_found_in_the_loader_the_images_come_from(tmp_path, setting):
    pl.seed_everything(0)
    callback = CNNSee(**{**FAST, "techniques": ["gradcam"]})
    overrides = dict(max_epochs=1, limit_train_batches=2)
    if setting == "no_sanity_check":
        overrides["num_sanity_val_steps"] = 0
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, **overrides))
    loader = DataLoader(fake(v1_pipeline()), batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if setting == "datamodule":
            trainer.fit(TinyClassifier(), datamodule=FakeDataModule())
        else:
            trainer.fit(TinyClassifier(), loader, None if setting == "training_only" else loader)
    assert callback.options_in_use.mean == MEAN and callback.options_in_use.std == STD
    role = "training" if setting == "training_only" else "validation"
    assert callback.normalization.found.where.startswith(f"the {role} dataset's transform")
    options = callback.options_in_use
    shown = denormalize(callback.fixed.images, options.mean, options.std)
    indices = range(FAST["num_samples"])
    torch.testing.assert_close(shown, torch.stack([raw_image(i) for i in indices]), atol=1e-5, rtol=0)
