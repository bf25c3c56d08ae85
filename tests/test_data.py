import numpy as np
import pytest
import torch

from lightning_cnnsee.demo.data import CLASS_NAMES, MEAN, STD, ShapesDataset


def test_same_seed_gives_identical_images_and_labels():
    first = ShapesDataset(num_images=64, image_size=32, seed=7)
    second = ShapesDataset(num_images=64, image_size=32, seed=7)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)


def test_different_seeds_give_different_images():
    first = ShapesDataset(num_images=64, image_size=32, seed=0)
    second = ShapesDataset(num_images=64, image_size=32, seed=1)
    assert not torch.equal(first.images, second.images)


def test_items_are_float32_chw_images_in_unit_range_with_int64_labels():
    dataset = ShapesDataset(num_images=50, image_size=40, seed=0)
    assert len(dataset) == 50
    image, label = dataset[3]
    assert image.shape == (3, 40, 40) and image.dtype == torch.float32
    assert label.dtype == torch.int64 and label.ndim == 0
    assert dataset.images.shape == (50, 3, 40, 40)
    assert float(dataset.images.min()) >= 0.0 and float(dataset.images.max()) <= 1.0
    assert set(dataset.labels.tolist()) <= set(range(len(CLASS_NAMES)))


def test_normalize_returns_images_standardized_with_mean_and_std():
    raw = ShapesDataset(num_images=16, image_size=32, seed=3)
    normalized = ShapesDataset(num_images=16, image_size=32, seed=3, normalize=True)
    for channel in range(3):
        expected = (raw.images[:, channel] - MEAN[channel]) / STD[channel]
        torch.testing.assert_close(normalized.images[:, channel], expected)
    assert torch.equal(raw.labels, normalized.labels)


def test_mean_and_std_constants_match_the_generated_images():
    images = ShapesDataset(num_images=4096, image_size=32, seed=11).images
    assert np.allclose(images.mean(dim=(0, 2, 3)).numpy(), MEAN, atol=0.015)
    assert np.allclose(images.std(dim=(0, 2, 3)).numpy(), STD, atol=0.015)


def test_classes_are_balanced():
    labels = ShapesDataset(num_images=605, image_size=24, seed=0).labels
    counts = torch.bincount(labels, minlength=len(CLASS_NAMES))
    assert len(CLASS_NAMES) == 6 and len(set(CLASS_NAMES)) == 6
    assert int(counts.max() - counts.min()) <= 1


def test_labels_come_in_random_order():
    labels = ShapesDataset(num_images=60, image_size=24, seed=0).labels
    assert not torch.equal(labels, torch.arange(60) % len(CLASS_NAMES))


def test_class_cannot_be_predicted_from_mean_colour():
    """A nearest-centroid classifier on each image's mean RGB, fit on one seed, is at chance on another."""
    train = ShapesDataset(num_images=1800, image_size=32, seed=1)
    test = ShapesDataset(num_images=1800, image_size=32, seed=2)
    train_colours, test_colours = train.images.mean(dim=(2, 3)), test.images.mean(dim=(2, 3))
    centroids = torch.stack([train_colours[train.labels == c].mean(dim=0) for c in range(len(CLASS_NAMES))])
    # Per-class mean colours are nearly equal: the colour is drawn independently of the class.
    assert float((centroids - centroids.mean(dim=0)).abs().max()) < 0.03
    predicted = torch.cdist(test_colours, centroids).argmin(dim=1)
    accuracy = float((predicted == test.labels).float().mean())
    assert accuracy < 0.25, f"mean colour predicts the class with accuracy {accuracy:.2f} (chance is 0.17)"


def test_each_image_differs_from_its_neighbours():
    images = ShapesDataset(num_images=32, image_size=32, seed=0).images
    assert all(not torch.equal(images[i], images[i + 1]) for i in range(31))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"num_images": 0}, "num_images"), ({"image_size": 8}, "image_size"), ({"num_images": 2.5}, "2.5")],
)
def test_bad_arguments_raise_value_error_naming_the_value(arguments, message):
    with pytest.raises(ValueError, match=message):
        ShapesDataset(**arguments)
