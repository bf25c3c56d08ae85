"""Objectives: each term against a hand-run forward pass or lucent's own objective, sums against sums of gradients,
and the one hook context that serves every forward pass of an ascent."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from tiny import Boom, Counter, count_hooks
from torch import nn

from lightning_cnnsee.explain.objectives import Objective, channel, diversity, forward_to, neuron


def small_cnn(*, tail: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    layers = OrderedDict(conv1=nn.Conv2d(3, 6, 3, padding=1), relu1=nn.ReLU(inplace=True), conv2=nn.Conv2d(6, 5, 3))
    if tail is not None:
        layers["tail"] = tail
    layers.update(relu2=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(5, 4))
    return nn.Sequential(layers)


def by_hand(model: nn.Sequential, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every child's output, computed one child after the other (no hooks); each kept before the next runs."""
    outputs, x = {}, inputs
    for name, layer in model.named_children():
        x = layer(x.clone())
        outputs[name] = x
    outputs[None] = x
    return outputs


def scores(objective: Objective, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with forward_to(model, objective.layers) as forward:
        return objective(forward(inputs))


def lucent_objectives():
    return pytest.importorskip("lucent.optvis.objectives")


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc", None])
def test_channel_is_the_mean_of_the_channels_map_of_a_hand_run_forward(layer: str | None) -> None:
    model, inputs = small_cnn(), torch.rand(3, 3, 9, 11)
    expected = by_hand(model, inputs)[layer]
    with torch.no_grad():
        for n in range(4):
            value = scores(channel(layer, n), model, inputs)
            torch.testing.assert_close(value, expected[:, n].reshape(3, -1).mean(dim=1))


@pytest.mark.parametrize(("height", "width", "row", "column"), [(9, 9, 4, 4), (8, 12, 4, 6), (7, 10, 3, 5)])
def test_neuron_is_the_centre_unit_of_the_channels_map_of_a_hand_run_forward(height, width, row, column) -> None:
    model = small_cnn()
    inputs = torch.rand(2, 3, height + 2, width + 2)  # conv2 has no padding: its map is height x width
    expected = by_hand(model, inputs)["conv2"]
    assert expected.shape[2:] == (height, width)
    with torch.no_grad():
        for n in range(5):
            torch.testing.assert_close(scores(neuron("conv2", n), model, inputs), expected[:, n, row, column])
        torch.testing.assert_close(
            scores(neuron("conv2", 3, x=1, y=height - 1), model, inputs), expected[:, 3, height - 1, 1]
        )
        # on an (N, C) output a neuron is the unit itself
        torch.testing.assert_close(scores(neuron("fc", 2), model, inputs), by_hand(model, inputs)["fc"][:, 2])


def test_channel_and_neuron_are_minus_lucents_losses_on_a_square_map() -> None:
    lucent = lucent_objectives()
    activations = torch.randn(4, 6, 7, 7)
    for n in (0, 5):
        ours_channel = channel("x", n)({"x": activations}).mean()
        torch.testing.assert_close(ours_channel, -lucent.channel("x", n)(lambda name: activations))
        ours_neuron = neuron("x", n)({"x": activations}).mean()
        torch.testing.assert_close(ours_neuron, -lucent.neuron("x", n)(lambda name: activations))


@pytest.mark.parametrize("num_images", [2, 3, 5])
@pytest.mark.parametrize("shape", [(6, 7, 7), (4, 5, 9), (8, 1, 1)])
def test_diversity_sums_to_lucents_diversity_objective_on_the_same_activations(num_images: int, shape) -> None:
    lucent = lucent_objectives()
    generator = torch.Generator().manual_seed(num_images)
    for activations in (
        torch.randn(num_images, *shape, generator=generator),
        torch.rand(num_images, *shape, generator=generator),
    ):  # signed, and as after a ReLU
        expected = lucent.diversity("x")(lambda name: activations)
        ours = diversity("x")({"x": activations})
        assert ours.shape == (num_images,)
        torch.testing.assert_close(ours.sum(), expected)


def test_diversity_of_one_image_is_zero_and_of_equal_images_is_most_negative() -> None:
    one = torch.rand(1, 4, 5, 5)
    torch.testing.assert_close(diversity("x")({"x": one}), torch.zeros(1))
    same = one.expand(4, 4, 5, 5)
    torch.testing.assert_close(diversity("x")({"x": same}), torch.full((4,), -3 / 4))
    different = torch.rand(4, 4, 5, 5)
    assert (diversity("x")({"x": different}) > -3 / 4).all()


def test_a_weighted_sum_has_the_weighted_sum_of_gradients_and_values() -> None:
    model, inputs = small_cnn(), torch.rand(3, 3, 10, 10)
    parts = [
        (2.0, channel("conv2", 1)),
        (-0.5, neuron("conv1", 4, x=2)),
        (3.0, diversity("conv1")),
        (0.25, channel(None, 3)),
    ]
    combined = sum(weight * part for weight, part in parts) + 1.5

    def value_and_gradient(objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        x = inputs.clone().requires_grad_(True)
        value = scores(objective, model, x)
        (gradient,) = torch.autograd.grad(value.sum(), [x])
        return value.detach(), gradient

    value, gradient = value_and_gradient(combined)
    separate = [(weight, *value_and_gradient(part)) for weight, part in parts]
    torch.testing.assert_close(value, sum(w * v for w, v, _ in separate) + 1.5)
    torch.testing.assert_close(gradient, sum(w * g for w, _, g in separate))
    assert combined.layers == ("conv2", "conv1", None)


def test_arithmetic_forms_agree_and_print_what_they_are() -> None:
    a, b, c = channel("l", 0), neuron("l", 1, x=2, y=0), diversity("m")
    outputs = {"l": torch.randn(3, 4, 5, 5), "m": torch.randn(3, 2, 4, 4)}
    a_, b_, c_ = a(outputs), b(outputs), c(outputs)
    cases = [
        (a + b, a_ + b_),
        (a - b, a_ - b_),
        (0.5 * a, 0.5 * a_),
        (a * 0.5, 0.5 * a_),
        (a / 4, a_ / 4),
        (-a, -a_),
        (sum([a, b, c]), a_ + b_ + c_),
        (2 - a, 2 - a_),
        (a + 1, a_ + 1),
        (a + a - 2 * a + c, c_),
    ]
    for objective, expected in cases:
        torch.testing.assert_close(objective(outputs), expected)
    assert repr(a - 0.5 * b + 3 * c) == "channel('l', 0) - 0.5 * neuron('l', 1, x=2, y=0) + 3 * diversity('m')"
    assert repr(-a + 1) == "-channel('l', 0) + 1"
    assert (a - a).terms == () and (a - a).layers == ()
    with pytest.raises(TypeError, match="number"):
        a * b
    with pytest.raises(TypeError, match="str"):
        a + "b"
    with pytest.raises(ValueError, match="finite"):
        a * float("nan")
    with pytest.raises(ValueError, match="no term"):
        (a - a)(outputs)
    with pytest.raises(ValueError, match="channel must be an int >= 0"):
        channel("l", -1)
    with pytest.raises(TypeError, match="layer name"):
        channel(3, 1)


def test_out_of_range_indices_name_what_is_valid() -> None:
    outputs = {"l": torch.randn(2, 4, 5, 6)}
    with pytest.raises(ValueError, match=r"channel index \[7\] out of range for layer 'l' with 4 channels"):
        channel("l", 7)(outputs)
    with pytest.raises(ValueError, match=r"x=6, y=0\) is outside the 5x6 map"):
        neuron("l", 1, x=6, y=0)(outputs)
    with pytest.raises(ValueError, match=r"class index \[9\] .* \(valid: 0..3\)"):
        channel(None, 9)({None: torch.randn(2, 4)})


def test_forward_to_hooks_once_stops_after_the_deepest_layer_and_removes_its_hooks(monkeypatch) -> None:
    counter = Counter()
    model = small_cnn(tail=counter)
    registered = []
    original = nn.Module.register_forward_hook

    def counting(module, *args, **kwargs):
        registered.append(module)
        return original(module, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "register_forward_hook", counting)
    inputs = torch.rand(2, 3, 8, 8)
    expected = by_hand(model, inputs)
    counter.calls = 0
    with torch.no_grad(), forward_to(model, ["conv2", "conv1", "conv2"]) as forward:
        hooks_inside = count_hooks(model)
        for _ in range(4):
            outputs = forward(inputs)
            assert set(outputs) == {"conv1", "conv2"}
            torch.testing.assert_close(outputs["conv1"], expected["conv1"])
            torch.testing.assert_close(outputs["conv2"], expected["conv2"])
    assert counter.calls == 0  # every pass stopped after conv2, before the layer after it
    assert len(registered) == hooks_inside == 4  # conv1 and conv2: one recording and one stopping hook each
    assert set(registered) == {model.conv1, model.conv2}
    assert count_hooks(model) == 0
    with forward_to(small_cnn(tail=Boom()), ["conv1", "conv2"]) as forward:
        forward(inputs)  # Boom comes after conv2: never reached


def test_forward_to_the_model_output_runs_the_whole_model_and_hooks_nothing_after_an_error() -> None:
    counter = Counter()
    model = small_cnn(tail=counter)
    inputs = torch.rand(2, 3, 8, 8)
    with torch.no_grad(), forward_to(model, ["conv1", None]) as forward:
        outputs = forward(inputs)
        torch.testing.assert_close(outputs[None], model(inputs))
    assert counter.calls == 2 and count_hooks(model) == 0
    with pytest.raises(RuntimeError, match="inside the block"):
        with forward_to(model, ["conv2"]) as forward:
            forward(inputs)
            raise RuntimeError("inside the block")
    assert count_hooks(model) == 0
    with pytest.raises(ValueError, match="'conv3'"):
        with forward_to(model, ["conv1", "conv3"]):
            pass
    assert count_hooks(model) == 0


def test_forward_to_names_a_layer_that_gave_no_map() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(0))  # a layer of one dimension
    with pytest.raises(ValueError, match=r"'1' must output \(N, C, ...\), but it gave \(\d+,\)"):
        with forward_to(model, ["1"]) as forward:
            forward(torch.rand(1, 3, 5, 5))
    assert count_hooks(model) == 0


def test_a_batch_of_groups_scores_each_group_by_its_own_objective_alone() -> None:
    from lightning_cnnsee.explain.objectives import _ObjectiveBatch

    objectives = [
        channel("l", 1),
        neuron("l", 2) - 0.5 * channel("l", 0) + 2 * diversity("l"),
        channel("l", 3) + channel("l", 1) + 0.7,
        diversity("l") + 0 * channel("m", 0),
        3 * neuron("m", 1, x=0, y=1),
    ]
    group_size = 3
    outputs = {"l": torch.randn(15, 4, 5, 5, requires_grad=True), "m": torch.randn(15, 2, 3, 3, requires_grad=True)}
    batch = _ObjectiveBatch(objectives, group_size)
    assert batch.layers == ("l", "m")  # the zero-weight term of group 3 is dropped; group 4 still needs "m"
    found = batch(outputs)
    alone = [
        objective({name: value[g * 3 : (g + 1) * 3] for name, value in outputs.items()})
        for g, objective in enumerate(objectives)
    ]
    torch.testing.assert_close(found, torch.cat(alone))
    for group in range(len(objectives)):  # no image outside a group feeds its scores
        group_sum = found[group * 3 : (group + 1) * 3].sum()
        gradients = torch.autograd.grad(group_sum, list(outputs.values()), retain_graph=True)
        for gradient in gradients:
            outside = torch.ones(15, dtype=torch.bool)
            outside[group * 3 : (group + 1) * 3] = False
            assert gradient[outside].abs().max() == 0
    assert torch.autograd.grad(found[3], outputs["l"])[0][4:6].abs().max() > 0  # diversity couples its group
