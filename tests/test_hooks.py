"""The context managers of hooks.py, and capture_activations built on them, against hand-run forward passes."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from tiny import Boom, Counter, count_hooks
from torch import nn

from lightning_cnnsee import capture_activations
from lightning_cnnsee.explain.hooks import (
    eval_mode,
    get_modules,
    gradients_enabled,
    record_outputs,
    stop_after,
)


def make_cnn(*, tail: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, padding=1),
        bn1=nn.BatchNorm2d(4),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(4, 6, 3, stride=2, padding=1),
        relu2=nn.ReLU(),
    )
    if tail is not None:
        layers["tail"] = tail
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(6, 3)
    model = nn.Sequential(layers)
    with torch.no_grad():
        model.bn1.running_mean.normal_(0.0, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    return model


def flags(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def raw_hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


# record_outputs


def test_record_outputs_records_what_a_manual_forward_computes() -> None:
    model = make_cnn().eval()
    x = torch.rand(2, 3, 8, 8)
    with record_outputs(model, ["relu1", "conv2", "fc"]) as recorded:
        logits = model(x)
    with torch.no_grad():
        relu1 = model.relu1(model.bn1(model.conv1(x)))
        conv2 = model.conv2(relu1)
        fc = model.fc(model.flatten(model.pool(model.relu2(conv2))))
    assert set(recorded) == {"relu1", "conv2", "fc"}
    torch.testing.assert_close(recorded["relu1"], relu1)
    torch.testing.assert_close(recorded["conv2"], conv2)
    torch.testing.assert_close(recorded["fc"], fc)
    torch.testing.assert_close(logits, fc)
    assert recorded["conv2"].requires_grad  # the graph is kept unless detach=True


def test_record_outputs_with_detach_keeps_no_graph() -> None:
    model = make_cnn()
    with record_outputs(model, ["conv2"], detach=True) as recorded:
        model(torch.rand(1, 3, 8, 8))
    assert not recorded["conv2"].requires_grad and recorded["conv2"].grad_fn is None


def test_record_outputs_keeps_the_first_call_of_a_layer_called_twice() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shared(self.shared(x))

    model = Twice()
    x = torch.rand(3, 2)
    with record_outputs(model, ["shared"]) as recorded:
        model(x)
    with torch.no_grad():
        torch.testing.assert_close(recorded["shared"], model.shared(x))


def test_record_outputs_is_not_changed_by_a_later_in_place_relu() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
    x = torch.rand(2, 3, 6, 6)
    with torch.no_grad():
        expected = model[0](x)
    assert (expected < 0).any()
    with record_outputs(model, ["0"]) as recorded, torch.no_grad():
        out = model(x)
    torch.testing.assert_close(recorded["0"], expected)
    torch.testing.assert_close(out, expected.clamp(min=0))


def test_record_outputs_removes_its_hooks_also_on_exception() -> None:
    model = make_cnn()
    before = raw_hook_count(model)
    with record_outputs(model, ["conv1", "relu2"]):
        assert raw_hook_count(model) == before + 2
    assert raw_hook_count(model) == before
    with pytest.raises(RuntimeError, match="inside"):
        with record_outputs(model, ["conv1", "relu2"]):
            model(torch.rand(1, 3, 8, 8))
            raise RuntimeError("raised inside the block")
    assert raw_hook_count(model) == before
    with pytest.raises(ValueError, match="'conv3'"):
        with record_outputs(model, ["conv1", "conv3"]):
            pass
    assert raw_hook_count(model) == before


# stop_after


def test_stop_after_ends_the_forward_pass_at_the_layer() -> None:
    model = make_cnn(tail=Boom())
    with record_outputs(model, ["relu2"]) as recorded, stop_after(model, ["relu2"]):
        model(torch.rand(2, 3, 8, 8))
    assert recorded["relu2"].shape == (2, 6, 4, 4)


def test_stop_after_waits_for_every_named_layer() -> None:
    counter = Counter()
    model = make_cnn(tail=counter)
    with stop_after(model, ["tail", "conv1"]):
        model(torch.rand(1, 3, 8, 8))
    assert counter.calls == 1
    with stop_after(model, ["conv1", "relu2"]):
        model(torch.rand(1, 3, 8, 8))
    assert counter.calls == 1  # not run a second time


def test_stop_after_swallows_only_its_own_signal_and_removes_its_hooks() -> None:
    model = make_cnn(tail=Boom())
    before = raw_hook_count(model)
    with stop_after(model, ["conv2"]):
        model(torch.rand(1, 3, 8, 8))
    assert raw_hook_count(model) == before
    with pytest.raises(ZeroDivisionError):
        with stop_after(model, ["conv2"]):
            raise ZeroDivisionError
    assert raw_hook_count(model) == before
    # Without stop_after the Boom layer runs (so the tests above really prove the stop).
    with pytest.raises(AssertionError, match="went past"):
        model(torch.rand(1, 3, 8, 8))


# eval_mode


def test_eval_mode_sets_every_module_to_eval_and_restores_mixed_flags() -> None:
    model = make_cnn().train()
    model.bn1.eval()
    model.fc.eval()
    before = flags(model)
    with eval_mode(model) as inside:
        assert inside is model
        assert not any(flags(model).values())
    assert flags(model) == before


def test_eval_mode_restores_flags_also_on_exception() -> None:
    model = make_cnn().eval()
    model.conv2.train()
    before = flags(model)
    with pytest.raises(KeyError):
        with eval_mode(model):
            model.train()  # even a block that changes the flags itself is undone
            raise KeyError("x")
    assert flags(model) == before


def test_eval_mode_makes_batchnorm_use_and_keep_its_running_stats() -> None:
    model = make_cnn().train()
    stats = model.bn1.running_mean.clone(), model.bn1.running_var.clone()
    x = torch.rand(2, 4, 5, 5)
    with eval_mode(model), torch.no_grad():
        out = model.bn1(x)
    expected = (x - stats[0][:, None, None]) / torch.sqrt(stats[1][:, None, None] + model.bn1.eps)
    expected = expected * model.bn1.weight[:, None, None] + model.bn1.bias[:, None, None]
    torch.testing.assert_close(out, expected.detach())
    assert torch.equal(model.bn1.running_mean, stats[0]) and torch.equal(model.bn1.running_var, stats[1])


# gradients_enabled


@pytest.mark.parametrize("outer", [torch.inference_mode, torch.no_grad])
def test_gradients_enabled_allows_autograd_inside_inference_mode_and_no_grad(outer) -> None:
    with outer():
        with gradients_enabled():
            assert torch.is_grad_enabled()
            assert not torch.is_inference_mode_enabled()
            x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
            (grad,) = torch.autograd.grad((x**2).sum(), [x])
        assert not torch.is_grad_enabled()
        assert torch.is_inference_mode_enabled() == (outer is torch.inference_mode)
    assert torch.equal(grad, torch.tensor([2.0, 4.0, 6.0]))
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_gradients_enabled_restores_the_outer_mode_also_on_exception() -> None:
    with torch.inference_mode():
        with pytest.raises(ValueError):
            with gradients_enabled():
                raise ValueError
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()


# count_hooks and get_modules


def test_count_hooks_counts_forward_pre_forward_and_backward_hooks() -> None:
    model = make_cnn()
    assert count_hooks(model) == 0
    handles = [
        model.conv1.register_forward_hook(lambda *args: None),
        model.relu1.register_forward_pre_hook(lambda *args: None),
        model.fc.register_full_backward_hook(lambda *args: None),
        model.register_forward_hook(lambda *args: None),
    ]
    assert count_hooks(model) == 4
    if hasattr(model.fc, "register_full_backward_pre_hook"):
        handles.append(model.fc.register_full_backward_pre_hook(lambda *args: None))
        assert count_hooks(model) == 5
    for handle in handles:
        handle.remove()
    assert count_hooks(model) == 0


def test_get_modules_returns_the_named_submodules() -> None:
    model = make_cnn()
    assert get_modules(model, ["conv2", "fc"]) == {"conv2": model.conv2, "fc": model.fc}
    with pytest.raises(ValueError, match="'fcc'"):
        get_modules(model, ["fcc"])


# capture_activations


def test_capture_activations_matches_a_manual_eval_mode_forward() -> None:
    model = make_cnn().train()
    x = torch.rand(3, 3, 8, 8)
    maps = capture_activations(model, x, ["relu1", "conv2"])
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        relu1 = reference.relu1(reference.bn1(reference.conv1(x)))
        conv2 = reference.conv2(relu1)
    assert list(maps) == ["relu1", "conv2"]
    torch.testing.assert_close(maps["relu1"], relu1)
    torch.testing.assert_close(maps["conv2"], conv2)
    assert not maps["conv2"].requires_grad and maps["conv2"].grad_fn is None


def test_capture_activations_stops_after_the_deepest_layer(model_untouched) -> None:
    counter = Counter()
    model = make_cnn(tail=counter).train()
    model.conv1.eval()
    model.fc.weight.grad = torch.randn_like(model.fc.weight)
    with model_untouched(model):
        maps = capture_activations(model, torch.rand(2, 3, 8, 8), ["relu2", "conv1"])
    assert counter.calls == 0
    assert maps["relu2"].shape == (2, 6, 4, 4) and maps["conv1"].shape == (2, 4, 8, 8)
    model_with_boom = make_cnn(tail=Boom())
    capture_activations(model_with_boom, torch.rand(2, 3, 8, 8), ["relu2"])


def test_capture_activations_works_inside_inference_mode() -> None:
    model = make_cnn()
    x = torch.rand(2, 3, 8, 8)
    expected = capture_activations(model, x, ["relu2"])["relu2"]
    with torch.inference_mode():
        inside = capture_activations(model, x.clone(), ["relu2"])["relu2"]
    assert torch.equal(inside, expected)


def test_capture_activations_rejects_a_layer_that_is_not_a_4d_map(model_untouched) -> None:
    model = make_cnn().train()
    with model_untouched(model):
        with pytest.raises(ValueError, match="'fc'.*\\(2, 3\\)"):
            capture_activations(model, torch.rand(2, 3, 8, 8), ["relu1", "fc"])
        with pytest.raises(ValueError, match="'relu3'"):
            capture_activations(model, torch.rand(2, 3, 8, 8), ["relu3"])
