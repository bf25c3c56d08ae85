"""Filter and class ascent: the images it finds really drive their channel up, and nothing else is disturbed.

"Up" is measured against a plain grey (0.5) image and against random images, both run through the model by hand in
the test.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from tiny import Boom, Counter, count_hooks, float32_tolerance, path_terms
from torch import nn

import lightning_cnnsee.explain.ascent as ascent_module
from lightning_cnnsee import AscentResult, filter_ascent
from lightning_cnnsee.explain.objectives import channel, diversity, neuron

PARAMETERIZATIONS = ["fft", "pixel"]


class Recorder(nn.Module):
    """Identity that keeps the last input it saw."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = x.detach().clone()
        return x


def ascent_tolerance(model: nn.Module, steps: int) -> float:
    """Most two float32 ascents of one image (other batch, other summation order) can differ by: each step's forward
    and backward passes round (``2 * path_terms``), and the steps add up; images lie in [0, 1] (magnitude 1)."""
    return float32_tolerance(steps * 2 * path_terms(model))


def colour_detector() -> nn.Sequential:
    """A model whose answer is known: channel/class 0 is "red minus green", channel/class 1 is "blue minus green".

    On a grey image both read 0.1 (the bias); the best image (pure red, or pure blue, everywhere) reads 1.1.
    """
    conv = nn.Conv2d(3, 2, 1)
    head = nn.Linear(2, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [0.0, -1.0, 1.0]])[:, :, None, None])
        conv.bias.fill_(0.1)
        head.weight.copy_(torch.eye(2))
        head.bias.zero_()
    return nn.Sequential(
        OrderedDict(conv=conv, relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=head)
    )


def random_cnn(*, tail: nn.Module | None = None) -> nn.Sequential:
    """conv-BN-ReLU-conv-ReLU, pooling, linear with 6 classes; BN running statistics far from (0, 1)."""
    torch.manual_seed(0)
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1),
        bn1=nn.BatchNorm2d(8),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(8, 8, 3, padding=1),
    )
    if tail is not None:
        layers["tail"] = tail
    layers.update(relu2=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(8, 6))
    model = nn.Sequential(layers)
    with torch.no_grad():
        model.bn1.running_mean.normal_(0.0, 0.3)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.num_batches_tracked.fill_(3)
    return model


def channel_means(model: nn.Sequential, last: str, images: torch.Tensor) -> torch.Tensor:
    """Run ``model`` by hand, in eval mode, up to ``last``; mean over space of each channel: (N, C)."""
    model = copy.deepcopy(model).eval()
    x = images
    with torch.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            if name == last:
                break
    return x.flatten(2).mean(dim=2) if x.ndim == 4 else x


def grey(shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.full((1, *shape), 0.5)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_conv_channel_ascent_lifts_the_channel_far_above_grey(parameterization: str) -> None:
    model = colour_detector()
    shape = (3, 16, 16)
    grey_value = channel_means(model, "conv", grey(shape))[0]
    torch.testing.assert_close(grey_value, torch.tensor([0.1, 0.1]))
    result = filter_ascent(model, "conv", [0, 1], shape, steps=24, lr=0.3, parameterization=parameterization)
    assert isinstance(result, AscentResult) and result.layer == "conv" and result.channels == [0, 1]
    assert (result.activations > grey_value + 0.2).all(), result.activations
    assert (result.activations > 2 * grey_value).all()
    # The reported activation is the channel's mean on the returned image, recomputed here by hand.
    recomputed = channel_means(model, "conv", result.images)
    torch.testing.assert_close(result.activations, recomputed[[0, 1], [0, 1]])
    # And the image found is the expected colour: redder than green for channel 0, bluer than green for channel 1.
    red, green, blue = result.images.mean(dim=(2, 3)).unbind(dim=1)
    assert red[0] > green[0] + 0.2 and blue[1] > green[1] + 0.2


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_class_ascent_on_the_final_linear_layer_lifts_the_logit_far_above_grey(parameterization: str) -> None:
    model = colour_detector()
    shape = (3, 16, 16)
    with torch.no_grad():
        grey_logits = model(grey(shape))[0]
    torch.testing.assert_close(grey_logits, torch.tensor([0.1, 0.1]))
    result = filter_ascent(model, "fc", [1, 0], shape, steps=24, lr=0.3, parameterization=parameterization)
    assert result.layer == "fc" and result.channels == [1, 0]
    assert (result.activations > grey_logits + 0.2).all(), result.activations
    assert (result.activations > 2 * grey_logits).all()
    with torch.no_grad():
        torch.testing.assert_close(result.activations, model(result.images)[[0, 1], [1, 0]])


def test_no_layer_maximizes_the_model_output_and_equals_the_final_linear() -> None:
    model = colour_detector()
    by_name = filter_ascent(model, "fc", [0, 1], (3, 16, 16), steps=10, lr=0.3)
    by_output = filter_ascent(model, None, [0, 1], (3, 16, 16), steps=10, lr=0.3)
    assert by_output.layer is None
    torch.testing.assert_close(by_output.images, by_name.images, rtol=0, atol=ascent_tolerance(model, 10))
    torch.testing.assert_close(by_output.activations, by_name.activations)


def test_no_layer_with_an_output_key_picks_the_logits_from_a_tuple() -> None:
    class TupleOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = colour_detector()

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return -self.net(x), self.net(x)

    plain = filter_ascent(colour_detector(), None, [0], (3, 16, 16), steps=10, lr=0.3)
    keyed = filter_ascent(TupleOutput(), None, [0], (3, 16, 16), steps=10, lr=0.3, output_key=1)
    torch.testing.assert_close(keyed.images, plain.images, rtol=0, atol=ascent_tolerance(colour_detector(), 10))


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_ascent_on_a_random_cnn_beats_grey_and_64_random_images_on_every_channel(parameterization: str) -> None:
    model = random_cnn().train()
    shape = (3, 16, 16)
    channels = list(range(8))
    grey_value = channel_means(model, "conv2", grey(shape))[0]
    random_images = torch.rand(64, *shape, generator=torch.Generator().manual_seed(3))
    best_random = channel_means(model, "conv2", random_images).max(dim=0).values
    result = filter_ascent(model, "conv2", channels, shape, steps=24, lr=0.2, parameterization=parameterization)
    assert (result.activations > torch.maximum(grey_value, best_random)).all()
    assert (result.activations - grey_value).mean() > 0.01
    torch.testing.assert_close(result.activations, channel_means(model, "conv2", result.images)[channels, channels])


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_a_channels_image_does_not_depend_on_the_channels_run_with_it(parameterization: str) -> None:
    model = random_cnn().train()  # eval mode inside: BatchNorm must not mix the images of a batch
    kwargs = dict(steps=24, lr=0.2, seed=7, parameterization=parameterization)
    alone = filter_ascent(model, "conv2", [3], (3, 16, 16), **kwargs)
    together = filter_ascent(model, "conv2", [1, 3, 5], (3, 16, 16), **kwargs)
    other_order = filter_ascent(model, "conv2", [5, 1, 3], (3, 16, 16), **kwargs)
    # Not bitwise: a batch of 3 may take other float summation orders than a batch of 1.
    tolerance = ascent_tolerance(model, 24)  # activations: one pass more, of values below 1
    torch.testing.assert_close(together.images[1], alone.images[0], rtol=0, atol=tolerance)
    torch.testing.assert_close(other_order.images[2], alone.images[0], rtol=0, atol=tolerance)
    torch.testing.assert_close(together.images[0], other_order.images[1], rtol=0, atol=tolerance)
    torch.testing.assert_close(together.activations[1], alone.activations[0], rtol=0, atol=tolerance)
    # The three channels' images are different from each other, so the comparison above is meaningful.
    assert (together.images[0] - together.images[1]).abs().max() > 0.05


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_same_seed_gives_identical_images_and_another_seed_different_ones(parameterization: str) -> None:
    model = random_cnn()
    kwargs = dict(steps=8, lr=0.2, parameterization=parameterization)
    first = filter_ascent(model, "conv2", [0, 4], (3, 16, 16), seed=11, **kwargs)
    again = filter_ascent(model, "conv2", [0, 4], (3, 16, 16), seed=11, **kwargs)
    other = filter_ascent(model, "conv2", [0, 4], (3, 16, 16), seed=12, **kwargs)
    assert torch.equal(first.images, again.images)
    assert torch.equal(first.activations, again.activations)
    assert (first.images - other.images).abs().max() > 1e-3


def test_global_random_state_does_not_change_the_result() -> None:
    model = random_cnn()
    torch.manual_seed(1)
    first = filter_ascent(model, "conv2", [2], (3, 16, 16), steps=6, lr=0.2, seed=0)
    torch.manual_seed(2)
    second = filter_ascent(model, "conv2", [2], (3, 16, 16), steps=6, lr=0.2, seed=0)
    assert torch.equal(first.images, second.images)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 16, 16), (4, 16, 16), (3, 24, 40), (1, 24, 40)])
def test_images_are_in_0_1_with_the_requested_shape(shape: tuple[int, int, int], parameterization: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(shape[0], 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 5, 3, padding=1))
    result = filter_ascent(model, "2", [0, 4, 2], shape, steps=4, lr=0.5, parameterization=parameterization)
    assert result.images.shape == (3, *shape)
    assert result.images.dtype == torch.float32
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.activations.shape == (3,) and result.activations.dtype == torch.float32
    assert not result.images.requires_grad and not result.activations.requires_grad
    assert result.images.std() > 1e-3  # the optimization moved the image away from its near-grey start
    torch.testing.assert_close(result.activations, channel_means(model, "2", result.images)[[0, 1, 2], [0, 4, 2]])


def test_mean_and_std_normalize_the_image_fed_to_the_model() -> None:
    torch.manual_seed(0)
    recorder = Recorder()
    model = nn.Sequential(recorder, nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    result = filter_ascent(model, "1", [0, 3], (3, 12, 12), steps=5, lr=0.2, mean=mean, std=std)
    # The last forward pass is the one that measures the returned images.
    expected = (result.images - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(recorder.last, expected)
    with torch.no_grad():
        torch.testing.assert_close(result.activations, model[1](expected)[[0, 1], [0, 3]].mean(dim=(1, 2)))
    plain = filter_ascent(model, "1", [0, 3], (3, 12, 12), steps=5, lr=0.2)
    torch.testing.assert_close(recorder.last, plain.images)  # no mean/std: fed as is
    assert not torch.allclose(plain.images, result.images, atol=1e-3)


def test_mean_and_std_give_the_same_normalized_input_as_a_model_that_normalizes_itself() -> None:
    class Normalize(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - 0.3) / 0.5

    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    outside = filter_ascent(nn.Sequential(conv), "0", [1], (1, 12, 12), steps=6, lr=0.2, mean=[0.3], std=[0.5])
    inside = filter_ascent(nn.Sequential(Normalize(), conv), "1", [1], (1, 12, 12), steps=6, lr=0.2)
    torch.testing.assert_close(outside.images, inside.images)
    torch.testing.assert_close(outside.activations, inside.activations)


def test_an_out_of_range_channel_names_the_index_and_the_valid_range(model_untouched) -> None:
    model = random_cnn().train()
    model.bn1.eval()
    with model_untouched(model):
        with pytest.raises(ValueError) as error:
            filter_ascent(model, "conv2", [2, 9], (3, 12, 12), steps=2)
        assert "[9]" in str(error.value) and "0..7" in str(error.value) and "'conv2'" in str(error.value)
        with pytest.raises(ValueError) as error:
            filter_ascent(model, "fc", [6], (3, 12, 12), steps=0)
        assert "[6]" in str(error.value) and "0..5" in str(error.value) and "class" in str(error.value)
        with pytest.raises(ValueError, match="-1"):
            filter_ascent(model, "conv2", [-1], (3, 12, 12), steps=2)
        with pytest.raises(ValueError, match="empty"):
            filter_ascent(model, "conv2", [], (3, 12, 12), steps=2)


def test_bad_arguments_raise_value_errors(model_untouched) -> None:
    model = random_cnn()
    with model_untouched(model):
        with pytest.raises(ValueError, match=r"mean has 2 values .* 3 channels"):
            filter_ascent(model, "conv2", [0], (3, 12, 12), steps=2, mean=[0.5, 0.5])
        with pytest.raises(ValueError, match=r"std has 4 values"):
            filter_ascent(model, "conv2", [0], (3, 12, 12), steps=2, std=[1, 1, 1, 1])
        with pytest.raises(ValueError, match=r"'fourier'.*'fft', 'pixel'"):
            filter_ascent(model, "conv2", [0], (3, 12, 12), steps=2, parameterization="fourier")
        with pytest.raises(ValueError, match="steps"):
            filter_ascent(model, "conv2", [0], (3, 12, 12), steps=-1)
        with pytest.raises(ValueError, match="input_shape"):
            filter_ascent(model, "conv2", [0], (12, 12), steps=2)
        with pytest.raises(ValueError, match="'conv3'"):
            filter_ascent(model, "conv3", [0], (3, 12, 12), steps=2)


@pytest.mark.parametrize("layer", ["conv2", "fc", None])
def test_the_model_is_left_exactly_as_it_was(layer: str | None, model_untouched) -> None:
    model = random_cnn().train()
    model.conv2.eval()
    generator = torch.Generator().manual_seed(0)
    for index, parameter in enumerate(model.parameters()):
        if index % 2:
            parameter.grad = torch.randn(parameter.shape, generator=generator)
    hooks = count_hooks(model)
    with model_untouched(model):
        filter_ascent(model, layer, [0, 2], (3, 12, 12), steps=3, lr=0.2)
    assert count_hooks(model) == hooks == 0


def test_the_forward_pass_stops_at_the_target_layer() -> None:
    counter = Counter()
    model = random_cnn(tail=counter)
    filter_ascent(model, "conv2", [0, 1], (3, 12, 12), steps=5)
    assert counter.calls == 0
    result = filter_ascent(random_cnn(tail=Boom()), "conv2", [0, 1], (3, 12, 12), steps=5)
    assert result.images.shape == (2, 3, 12, 12)
    filter_ascent(model, "fc", [0], (3, 12, 12), steps=5)
    assert counter.calls == 6  # 5 steps and the final measurement: the check above was not vacuous


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_zero_steps_returns_the_near_grey_start_and_its_activation(parameterization: str) -> None:
    model = random_cnn()
    result = filter_ascent(model, "conv2", [1, 6], (3, 12, 20), steps=0, parameterization=parameterization)
    assert result.images.shape == (2, 3, 12, 20)
    assert (result.images - 0.5).abs().max() < 0.1
    torch.testing.assert_close(result.activations, channel_means(model, "conv2", result.images)[[0, 1], [1, 6]])


def test_works_inside_no_grad() -> None:
    model = random_cnn()
    expected = filter_ascent(model, "conv2", [1], (3, 12, 12), steps=4)
    with torch.no_grad():
        inside = filter_ascent(model, "conv2", [1], (3, 12, 12), steps=4)
        assert not torch.is_grad_enabled()
    assert torch.equal(inside.images, expected.images)


def test_works_inside_inference_mode() -> None:
    model = random_cnn()
    expected = filter_ascent(model, "conv2", [1], (3, 12, 12), steps=4)
    with torch.inference_mode():
        inside = filter_ascent(model, "conv2", [1], (3, 12, 12), steps=4)
    assert torch.equal(inside.images.clone(), expected.images)


# ------------------------------------------------------------------ hooks: registered once, removed always


@pytest.fixture
def registered_hooks(monkeypatch) -> list[nn.Module]:
    """The modules of every ``register_forward_hook`` call made while the test runs."""
    modules: list[nn.Module] = []
    original = nn.Module.register_forward_hook

    def counting(module: nn.Module, *args, **kwargs):
        modules.append(module)
        return original(module, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "register_forward_hook", counting)
    return modules


@pytest.mark.parametrize("layer", ["conv2", "fc", None])
def test_hooks_are_registered_once_per_ascent_whatever_the_steps(layer: str | None, registered_hooks) -> None:
    model = random_cnn()
    counts = []
    for steps in (1, 7):
        registered_hooks.clear()
        filter_ascent(model, layer, [0, 2], (3, 12, 12), steps=steps)
        counts.append(len(registered_hooks))
        assert count_hooks(model) == 0
    expected = {"conv2": {model.conv2}, "fc": {model.fc}, None: set()}[layer]
    assert set(registered_hooks) == expected
    assert counts[0] == counts[1] == 2 * len(expected)  # one recording and one stopping hook per layer, per run
    registered_hooks.clear()
    filter_ascent(
        model,
        "conv2",
        [0, 2],
        (3, 12, 12),
        steps=5,
        num_diverse=2,
        objective=lambda c: channel("conv1", c) + neuron("conv2", c),
    )
    assert sorted(map(id, registered_hooks)) == sorted(map(id, [model.conv1, model.conv2] * 2))


def test_no_hook_is_left_when_a_step_fails(model_untouched, monkeypatch, registered_hooks) -> None:
    model = random_cnn().train()
    calls = []
    transform = ascent_module.random_transform

    def fails_at_the_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("transform failed at step 3")
        return transform(*args, **kwargs)

    monkeypatch.setattr(ascent_module, "random_transform", fails_at_the_third_step)
    with model_untouched(model):
        with pytest.raises(RuntimeError, match="step 3"):
            filter_ascent(model, "conv2", [0, 1], (3, 12, 12), steps=6, num_diverse=2)
    assert count_hooks(model) == 0 and len(registered_hooks) == 2 and len(calls) == 3

    class FailsOnThirdCall(Counter):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.calls == 2:
                raise RuntimeError("layer failed on its third call")
            return super().forward(x)

    failing = random_cnn(tail=FailsOnThirdCall())
    with model_untouched(failing):  # the model itself raises in the middle of the loop
        with pytest.raises(RuntimeError, match="third call"):
            filter_ascent(failing, "fc", [0, 1], (3, 12, 12), steps=6)
    assert failing.tail.calls == 2 and count_hooks(failing) == 0


def test_the_forward_pass_stops_after_the_deepest_layer_the_objective_needs() -> None:
    counter = Counter()
    model = random_cnn(tail=counter)
    filter_ascent(
        model,
        "conv1",
        [0, 1],
        (3, 12, 12),
        steps=3,
        objective=lambda c: channel("conv2", c) + neuron("conv1", c) + diversity("bn1"),
    )
    assert counter.calls == 0
    filter_ascent(
        random_cnn(tail=Boom()),
        "conv2",
        [0],
        (3, 12, 12),
        steps=3,
        num_diverse=2,
        objective=lambda c: channel("conv1", c) - channel("conv2", c),
    )
    filter_ascent(model, "conv1", [0], (3, 12, 12), steps=3, objective=lambda c: channel("conv1", c) + channel("fc", c))
    assert counter.calls == 4  # 3 steps and the final measurement: the first check was not vacuous


# --------------------------------------------------------------------------------------- objectives


def test_the_default_objective_is_the_channel_objective() -> None:
    model = random_cnn()
    default = filter_ascent(model, "conv2", [4, 1], (3, 12, 12), steps=6)
    explicit = filter_ascent(model, "conv2", [4, 1], (3, 12, 12), steps=6, objective=lambda c: channel("conv2", c))
    assert torch.equal(default.images, explicit.images) and torch.equal(default.activations, explicit.activations)


@pytest.mark.parametrize("shape", [(3, 13, 13), (3, 12, 16)])
def test_a_neuron_objective_drives_up_the_centre_unit_of_a_hand_run_forward(shape: tuple[int, int, int]) -> None:
    model = random_cnn()
    channels = [0, 3, 6]
    result = filter_ascent(model, "conv2", channels, shape, steps=24, lr=0.2, objective=lambda c: neuron("conv2", c))
    assert result.channels == channels

    def centre_units(images: torch.Tensor) -> torch.Tensor:  # by hand: conv1, bn1, relu1, conv2, then the centre
        with torch.no_grad():
            maps = model.conv2(model.relu1(copy.deepcopy(model.bn1).eval()(model.conv1(images))))
        return maps[:, :, shape[1] // 2, shape[2] // 2]

    found = centre_units(result.images)[range(3), channels]
    torch.testing.assert_close(result.activations, found)
    assert (found > centre_units(grey(shape))[0, channels] + 0.05).all()
    # the centre unit, not the mean of the map, is what went up most
    assert (found - channel_means(model, "conv2", result.images)[range(3), channels] > 0.05).all()


def test_an_objective_must_be_a_function_of_the_channel_returning_an_objective() -> None:
    model = random_cnn()
    with pytest.raises(TypeError, match="function of a channel index.*lambda c"):
        filter_ascent(model, "conv2", [0], (3, 12, 12), steps=1, objective=channel("conv2", 0))
    with pytest.raises(TypeError, match=r"objective\(3\) returned 'conv2' \(str\)"):
        filter_ascent(model, "conv2", [3], (3, 12, 12), steps=1, objective=lambda c: "conv2")
    with pytest.raises(ValueError, match="reads no layer"):
        filter_ascent(model, "conv2", [3], (3, 12, 12), steps=1, objective=lambda c: channel("conv2", c) * 0)
    with pytest.raises(ValueError, match=r"channel index \[8\] out of range"):
        filter_ascent(model, "conv2", [1], (3, 12, 12), steps=1, objective=lambda c: neuron("conv2", 8))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="num_diverse must be a positive int"):
            filter_ascent(model, "conv2", [1], (3, 12, 12), steps=1, num_diverse=bad)


# ------------------------------------------------------------------------------------------ diversity


def gram_similarity(maps: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean cosine similarity of the Gram matrices of each group's images, pairs of distinct images: (groups,)."""
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    grams = torch.nn.functional.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
    grams = grams.reshape(-1, group_size, grams.shape[1])
    similarity = grams @ grams.transpose(1, 2)
    return (similarity.sum(dim=(1, 2)) - group_size) / (group_size * (group_size - 1))


def pixel_distance(images: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean L2 distance between the images of each group, pairs of distinct images: (groups,)."""
    flat = images.reshape(-1, group_size, images[0].numel())
    return torch.cdist(flat, flat).sum(dim=(1, 2)) / (group_size * (group_size - 1))


def test_num_diverse_makes_a_channels_images_differ_while_each_still_drives_its_channel_up() -> None:
    model, shape, channels = random_cnn(), (3, 16, 16), [0, 2, 5]
    kwargs = dict(steps=24, lr=0.2, num_diverse=3)
    diverse = filter_ascent(model, "conv1", channels, shape, diversity_weight=1.0, **kwargs)
    undiversified = filter_ascent(model, "conv1", channels, shape, diversity_weight=0.0, **kwargs)
    assert diverse.images.shape == (9, *shape) and diverse.activations.shape == (9,)
    assert diverse.channels == [0, 0, 0, 2, 2, 2, 5, 5, 5]
    # images differ: in pixels, and in the Gram matrices the diversity term compares (computed here by hand)
    assert (pixel_distance(diverse.images, 3) > pixel_distance(undiversified.images, 3) + 0.5).all()
    with torch.no_grad():
        maps = {name: model.conv1(result.images) for name, result in (("diverse", diverse), ("plain", undiversified))}
    dissimilarity = {name: 1 - gram_similarity(value, 3) for name, value in maps.items()}
    assert (dissimilarity["diverse"] > 2 * dissimilarity["plain"]).all()
    # each image still drives its channel above grey; the activations reported are the channel's means alone
    means = channel_means(model, "conv1", diverse.images)[range(9), diverse.channels]
    torch.testing.assert_close(diverse.activations, means)
    grey_value = channel_means(model, "conv1", grey(shape))[0, diverse.channels]
    assert (diverse.activations > grey_value).all()


def test_without_the_diversity_term_a_channels_first_image_is_the_image_it_gets_alone() -> None:
    model = random_cnn()
    kwargs = dict(steps=12, lr=0.2, seed=3)
    alone = filter_ascent(model, "conv2", [1, 6], (3, 12, 12), **kwargs)
    three = filter_ascent(model, "conv2", [1, 6], (3, 12, 12), num_diverse=3, diversity_weight=0.0, **kwargs)
    tolerance = ascent_tolerance(model, 12)
    torch.testing.assert_close(three.images[[0, 3]], alone.images, rtol=0, atol=tolerance)
    torch.testing.assert_close(three.activations[[0, 3]], alone.activations, rtol=0, atol=tolerance)
    assert (three.images[0] - three.images[1]).abs().max() > 0.05  # different random starts


def test_a_channels_diverse_images_do_not_depend_on_the_channels_run_with_it() -> None:
    model = random_cnn().train()
    kwargs = dict(steps=12, lr=0.2, seed=5, num_diverse=2, diversity_weight=1.0)
    alone = filter_ascent(model, "conv1", [3], (3, 12, 12), **kwargs)
    together = filter_ascent(model, "conv1", [5, 3, 0], (3, 12, 12), **kwargs)
    tolerance = ascent_tolerance(model, 12)
    torch.testing.assert_close(together.images[2:4], alone.images, rtol=0, atol=tolerance)
    torch.testing.assert_close(together.activations[2:4], alone.activations, rtol=0, atol=tolerance)


@pytest.mark.parametrize("layer", ["conv2", "fc", None])
def test_the_model_is_left_exactly_as_it_was_with_diverse_images(layer: str | None, model_untouched) -> None:
    model = random_cnn().train()
    model.conv2.eval()
    with model_untouched(model):
        filter_ascent(
            model,
            layer,
            [0, 2],
            (3, 12, 12),
            steps=3,
            lr=0.2,
            num_diverse=2,
            objective=lambda c: channel(layer, c) + neuron("conv1", c),
        )
    assert count_hooks(model) == 0
