"""Layer names: resolving them, picking sensible ones automatically, and finding the logits in a model's output."""

from __future__ import annotations

import itertools
from collections import OrderedDict, namedtuple

import pytest
import torch
import torchvision
from torch import nn

from lightning_cnnsee.explain.layers import pick_layers, resolve_layer_names, select_output, spread


def small_cnn(num_classes: int = 5) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),  # 0
        nn.ReLU(),  # 1
        nn.Conv2d(8, 8, 3),  # 2
        nn.ReLU(),  # 3
        nn.AdaptiveAvgPool2d(1),  # 4
        nn.Flatten(),  # 5
        nn.Linear(8, num_classes),  # 6
    )


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)  # random weights, nothing downloaded


# resolve_layer_names


def test_known_layer_names_are_returned_as_a_list() -> None:
    model = small_cnn()
    assert resolve_layer_names(model, ("2", "6")) == ["2", "6"]
    assert resolve_layer_names(model, []) == []


def test_an_unknown_layer_name_raises_naming_it_and_the_closest_real_names(resnet18: nn.Module) -> None:
    with pytest.raises(ValueError) as error:
        resolve_layer_names(resnet18, ["layer4", "layer4.1.con2"])
    message = str(error.value)
    assert "'layer4.1.con2'" in message
    closest = message.split("Closest layer names:")[1].split("]")[0]
    assert "'layer4.1.conv2'" in closest
    assert "ResNet" in message
    assert "..." in message  # resnet18 has more names than the sample shows


def test_an_unknown_name_on_a_sequential_names_the_real_indices() -> None:
    with pytest.raises(ValueError, match=r"'7'.*Valid names.*'0', '1', '2'"):
        resolve_layer_names(small_cnn(), ["7"])


def test_a_single_string_instead_of_a_list_is_rejected_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"\['layer4'\]"):
        resolve_layer_names(small_cnn(), "layer4")


# spread


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (3, ["a", "d", "g"]),
        (2, ["a", "g"]),
        (1, ["g"]),
        (0, []),
        (7, list("abcdefg")),
        (10, list("abcdefg")),
    ],
)
def test_spread_picks_evenly_from_first_to_last(count: int, expected: list[str]) -> None:
    assert spread(list("abcdefg"), count) == expected


def test_spread_of_nothing_is_nothing() -> None:
    assert spread([], 3) == []


def test_spread_always_keeps_first_and_last_in_order_with_even_gaps() -> None:
    for length in range(1, 40):
        items = [f"conv{i}" for i in range(length)]
        for count in range(1, 9):
            picked = spread(items, count)
            indices = [items.index(item) for item in picked]
            assert len(picked) == min(length, count)
            assert indices == sorted(set(indices))
            assert picked[-1] == items[-1]
            if len(picked) > 1:
                assert picked[0] == items[0]
                gaps = [b - a for a, b in itertools.pairwise(indices)]
                assert max(gaps) - min(gaps) <= 1, (length, count, indices)


# pick_layers


def test_pick_layers_on_a_small_sequential_cnn() -> None:
    picks = pick_layers(small_cnn(), torch.rand(1, 3, 16, 16))
    assert picks.gradcam == ["3"]  # last (N, C, H, W) map before global pooling: ReLU after the last conv
    assert picks.features == ["0", "2"]  # only two convs: both
    assert picks.class_layer == "6"
    assert picks.num_classes == 5
    assert picks.output_shapes["2"] == (1, 8, 12, 12)
    assert picks.output_shapes["4"] == (1, 8, 1, 1)
    assert picks.output_shapes["6"] == (1, 5)


def test_pick_layers_takes_the_last_linear_with_as_many_units_as_classes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(3, 4, 3),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            first=nn.Linear(4, 5),
            act=nn.ReLU(),
            last=nn.Linear(5, 5),
        )
    )
    picks = pick_layers(model, torch.rand(1, 3, 8, 8))
    assert picks.class_layer == "last" and picks.num_classes == 5
    assert picks.gradcam == ["conv"]


def test_pick_layers_skips_a_1x1_map_for_gradcam_and_spreads_many_convs() -> None:
    torch.manual_seed(0)
    convs = [nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1) for i in range(5)]
    model = nn.Sequential(
        OrderedDict(
            [(f"conv{i}", conv) for i, conv in enumerate(convs)]
            + [("squash", nn.Conv2d(4, 4, 8)), ("flatten", nn.Flatten()), ("hidden", nn.Linear(4, 6))]
            + [("act", nn.ReLU()), ("head", nn.Linear(6, 3))]
        )
    )
    picks = pick_layers(model, torch.rand(1, 3, 8, 8))
    assert picks.gradcam == ["conv4"]  # "squash" gives a 1x1 map
    # Six convs (conv0..conv4, squash), three of them spread evenly from the first to the last.
    assert picks.features == ["conv0", "conv2", "squash"] or picks.features == ["conv0", "conv3", "squash"]
    assert picks.class_layer == "head" and picks.num_classes == 3
    assert pick_layers(model, torch.rand(1, 3, 8, 8), num_feature_layers=1).features == ["squash"]


def test_pick_layers_on_resnet18(resnet18: nn.Module) -> None:
    flags = {name: module.training for name, module in resnet18.named_modules()}
    picks = pick_layers(resnet18, torch.rand(1, 3, 64, 64))
    assert picks.gradcam == ["layer4"]
    assert picks.class_layer == "fc"
    assert picks.num_classes == 10
    conv_names = [name for name, module in resnet18.named_modules() if isinstance(module, nn.Conv2d)]
    assert len(conv_names) == 20
    assert len(picks.features) == 3
    assert picks.features[0] == "conv1" == conv_names[0]
    assert picks.features[-1] == "layer4.1.conv2" == conv_names[-1]
    assert picks.features[1] in conv_names[9:11]  # the middle of the 20 convs
    assert picks.output_shapes["layer4"] == (1, 512, 2, 2)
    assert picks.output_shapes["fc"] == (1, 10)
    assert sum(len(m._forward_hooks) for m in resnet18.modules()) == 0
    assert {name: module.training for name, module in resnet18.named_modules()} == flags


def test_pick_layers_finds_the_logits_in_a_tuple_output_with_output_key() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = small_cnn()[:6]
            self.aux = nn.Linear(8, 2)
            self.classifier = nn.Linear(8, 7)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.body(x)
            return self.aux(features), self.classifier(features)

    picks = pick_layers(TwoHeads(), torch.rand(1, 3, 16, 16), output_key=1)
    assert picks.num_classes == 7 and picks.class_layer == "classifier"
    assert picks.gradcam == ["body.3"]


# select_output


def test_select_output_finds_logits_without_a_key() -> None:
    logits, other = torch.rand(2, 5), torch.rand(2, 3)
    Output = namedtuple("Output", ["loss"])

    class WithLogits:
        def __init__(self) -> None:
            self.logits = logits

    assert select_output(logits) is logits
    assert select_output((logits, other)) is logits
    assert select_output([logits, other]) is logits
    assert select_output({"aux": other, "logits": logits}) is logits
    assert select_output(WithLogits()) is logits
    with pytest.raises(TypeError, match="output_key"):
        select_output({"aux": other})
    with pytest.raises(TypeError, match="Output"):
        select_output(Output(loss=1.0))


def test_select_output_with_an_int_or_str_key() -> None:
    logits, other = torch.rand(2, 5), torch.rand(2, 3)
    Output = namedtuple("Output", ["aux", "scores"])
    assert select_output((other, logits), 1) is logits
    assert select_output((other, logits), -1) is logits
    assert select_output({"aux": other, "scores": logits}, "scores") is logits
    assert select_output(Output(other, logits), "scores") is logits
    assert select_output(Output(other, logits), 1) is logits


def test_select_output_with_a_bad_key_lists_the_valid_keys() -> None:
    logits, other = torch.rand(2, 5), torch.rand(2, 3)
    with pytest.raises(TypeError, match=r"'score'.*valid keys: \['aux', 'logits'\]"):
        select_output({"aux": other, "logits": logits}, "score")
    with pytest.raises(TypeError, match=r"output_key=2.*valid keys: \[0, 1\]"):
        select_output((other, logits), 2)
    with pytest.raises(TypeError, match="output_key='scores'"):
        select_output(logits, "scores")
    with pytest.raises(TypeError, match="selects a str"):
        select_output({"name": "x", "logits": logits}, "name")
