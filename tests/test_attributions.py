"""Pixel attributions, each checked against Captum itself at the same options on small random CNNs.

Captum runs on a deep copy of the model put in eval mode (``attribute`` runs the model in eval mode itself and
gives the flags back), with explicit targets. Agreement is a relative error, ``max |ours - Captum| / max |Captum|``,
of at most float32's rounding on the way (``RELATIVE_TOLERANCE``, about 3e-4); SmoothGrad is compared at the same
seed, since both draw the noise the same way.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from tiny import Boom, count_hooks, float32_tolerance, path_terms
from torch import nn

from lightning_cnnsee.explain.attributions import ATTRIBUTION_METHODS, ROWS_PER_PASS, attribute, method_options

captum_attr = pytest.importorskip("captum.attr")

METHODS = [
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "guided_backprop",
    "guided_gradcam",
]
# The options each method needs (and a few that keep these tests fast).
REQUIRED = {
    "occlusion": {"sliding_window_shapes": (3, 4, 4), "strides": (3, 2, 2)},
    "guided_gradcam": {"layer": "conv2"},
    "integrated_gradients": {"n_steps": 8},
}
TARGETS = [0, 3, 1]


def make_cnn(seed: int = 0, *, inplace: bool = False, dropout: bool = False) -> nn.Sequential:
    """conv-BN-ReLU-pool, conv-ReLU, pool, linear: 3x16x16 images, 4 classes, BatchNorm statistics far from (0, 1)."""
    torch.manual_seed(seed)
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1),
        bn1=nn.BatchNorm2d(6),
        relu1=nn.ReLU(inplace=inplace),
        pool=nn.MaxPool2d(2),
        conv2=nn.Conv2d(6, 8, 3, padding=1),
        relu2=nn.ReLU(inplace=inplace),
        gap=nn.AdaptiveAvgPool2d(2),
        flatten=nn.Flatten(),
    )
    if dropout:
        layers["drop"] = nn.Dropout(0.5)
    layers["fc"] = nn.Linear(32, 4)
    model = nn.Sequential(layers)
    with torch.no_grad():
        model.bn1.running_mean.normal_(0.0, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.weight.uniform_(0.5, 1.5)
        model.bn1.bias.normal_(0.0, 0.3)
        model.bn1.num_batches_tracked.fill_(7)
    return model


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def reference(model: nn.Module) -> nn.Module:
    """The model as Captum should see it: an eval-mode copy."""
    return copy.deepcopy(model).eval()


# Float32 rounding between two evaluations of one attribution: the forward and backward passes of make_cnn (the
# fan-ins twice), then at most 50 steps or samples summed; the absolute terms of the scores add to at most
# CANCELLATION times the largest attribution (Occlusion's differences of scores cancel the most).
ATTRIBUTION_TERMS = 2 * path_terms(make_cnn()) + 50
CANCELLATION = 10
RELATIVE_TOLERANCE = float32_tolerance(ATTRIBUTION_TERMS, CANCELLATION)


def assert_matches(ours: torch.Tensor, theirs: torch.Tensor, tolerance: float = RELATIVE_TOLERANCE) -> None:
    assert ours.shape == theirs.shape
    scale = float(theirs.abs().max())
    assert scale > 0, "Captum's attributions are all zero: the comparison would prove nothing"
    error = float((ours - theirs).abs().max()) / scale
    assert error <= tolerance, f"relative error {error:.2e}"


def captum_result(method: str, model: nn.Module, images: torch.Tensor, targets, /, **options) -> torch.Tensor:
    """Captum's attribution with the same options (``layer`` becomes the module, as Captum wants it), detached."""
    return _captum_result(method, model, images, targets, options).detach()


def _captum_result(method: str, model: nn.Module, images: torch.Tensor, targets, options: dict) -> torch.Tensor:
    ref = reference(model)
    inputs = images.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GuidedBackprop warns that it sets backward hooks
        if method == "saliency":
            return captum_attr.Saliency(ref).attribute(inputs, target=targets, **options)
        if method == "input_x_gradient":
            return captum_attr.InputXGradient(ref).attribute(inputs, target=targets, **options)
        if method == "smoothgrad":
            return captum_attr.NoiseTunnel(captum_attr.Saliency(ref)).attribute(inputs, target=targets, **options)
        if method == "integrated_gradients":
            return captum_attr.IntegratedGradients(ref).attribute(inputs, target=targets, **options)
        if method == "occlusion":
            return captum_attr.Occlusion(ref).attribute(inputs, target=targets, **options)
        if method == "guided_backprop":
            return captum_attr.GuidedBackprop(ref).attribute(inputs, target=targets, **options)
        if method == "guided_gradcam":
            layer = dict(ref.named_modules())[options.pop("layer")]
            return captum_attr.GuidedGradCam(ref, layer).attribute(inputs, target=targets, **options)
    raise AssertionError(method)


@pytest.mark.parametrize("inplace", [False, True], ids=["relu", "inplace-relu"])
@pytest.mark.parametrize("method", METHODS)
def test_each_method_equals_captum_at_the_same_options(method: str, inplace: bool, images: torch.Tensor) -> None:
    model = make_cnn(inplace=inplace, dropout=True).train()
    options = dict(REQUIRED.get(method, {}))
    torch.manual_seed(3)
    ours = attribute(model, images, method, TARGETS, **options)
    torch.manual_seed(3)
    assert_matches(ours, captum_result(method, model, images, TARGETS, **options))


@pytest.mark.parametrize("method", METHODS)
def test_defaults_are_captums(method: str, images: torch.Tensor) -> None:
    # No options beyond the required ones: the full defaults (IG: 50 Gauss-Legendre steps, SmoothGrad: 5 samples
    # at stdevs 1.0, Occlusion: stride 1), against Captum's defaults.
    model = make_cnn(1)
    options = {
        name: value for name, value in REQUIRED.get(method, {}).items() if name in ("sliding_window_shapes", "layer")
    }
    torch.manual_seed(4)
    ours = attribute(model, images, method, TARGETS, **options)
    torch.manual_seed(4)
    assert_matches(ours, captum_result(method, model, images, TARGETS, **options))


def test_saliency_signed_gradient_with_abs_false(images: torch.Tensor) -> None:
    model = make_cnn()
    signed = attribute(model, images, "saliency", TARGETS, abs=False)
    assert (signed < 0).any()
    assert_matches(signed, captum_result("saliency", model, images, TARGETS, abs=False))
    assert torch.equal(signed.abs(), attribute(model, images, "saliency", TARGETS))


@pytest.mark.parametrize(
    "quadrature", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
)
def test_integrated_gradients_equals_captum_for_each_quadrature(quadrature: str, images: torch.Tensor) -> None:
    model = make_cnn(inplace=True)
    ours = attribute(model, images, "integrated_gradients", TARGETS, method=quadrature, n_steps=12)
    assert_matches(ours, captum_result("integrated_gradients", model, images, TARGETS, method=quadrature, n_steps=12))


@pytest.mark.parametrize("internal_batch_size", [None, 1, 7, 10_000])
def test_integrated_gradients_batching_and_baselines_change_nothing(internal_batch_size, images: torch.Tensor) -> None:
    model = make_cnn()
    baselines = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    ours = attribute(
        model,
        images,
        "integrated_gradients",
        TARGETS,
        baselines=baselines,
        n_steps=10,
        internal_batch_size=internal_batch_size,
    )
    theirs = captum_result("integrated_gradients", model, images, TARGETS, baselines=baselines, n_steps=10)
    assert_matches(ours, theirs)
    scalar = attribute(
        model,
        images,
        "integrated_gradients",
        TARGETS,
        baselines=0.5,
        n_steps=10,
        internal_batch_size=internal_batch_size,
    )
    assert_matches(scalar, captum_result("integrated_gradients", model, images, TARGETS, baselines=0.5, n_steps=10))


def test_integrated_gradients_runs_whole_steps_in_large_batches(images: torch.Tensor) -> None:
    model = make_cnn()
    sizes = []
    handle = model.conv1.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        attribute(model, images, "integrated_gradients", TARGETS)  # 50 steps of 3 images
        assert sizes == [ROWS_PER_PASS // 3 * 3] * 2 + [150 - 2 * (ROWS_PER_PASS // 3 * 3)]
        sizes.clear()
        attribute(model, images, "integrated_gradients", TARGETS, n_steps=10, internal_batch_size=7)
        assert sizes == [6] * 5  # two steps of three images per pass, as Captum's internal batching
        sizes.clear()
        attribute(model, images, "integrated_gradients", n_steps=10, internal_batch_size=7)
        assert sizes == [3] + [6] * 5  # the predicted classes come from one pass over the images
    finally:
        handle.remove()


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("batching", [{}, {"nt_samples": 7, "nt_samples_batch_size": 3}], ids=["one-pass", "3+3+1"])
def test_smoothgrad_equals_captums_noise_tunnel_with_the_same_seed(nt_type: str, batching, images) -> None:
    model = make_cnn(inplace=True)
    options = dict(nt_type=nt_type, stdevs=0.3, **batching)
    for abs_ in (True, False):
        torch.manual_seed(11)
        ours = attribute(model, images, "smoothgrad", TARGETS, abs=abs_, **options)
        torch.manual_seed(11)
        assert_matches(ours, captum_result("smoothgrad", model, images, TARGETS, abs=abs_, **options))


def test_smoothgrad_without_noise_is_saliency(images: torch.Tensor) -> None:
    model = make_cnn()
    smooth = attribute(model, images, "smoothgrad", TARGETS, stdevs=0.0, nt_samples=3)
    torch.testing.assert_close(smooth, attribute(model, images, "saliency", TARGETS))
    assert float(attribute(model, images, "smoothgrad", TARGETS, stdevs=0.0, nt_type="vargrad").abs().max()) < 1e-6


def test_smoothgrad_noise_averages_out_towards_the_expected_saliency(images: torch.Tensor) -> None:
    # Statistically: the mean over 4x more samples is closer to a 256-sample estimate than the mean over few.
    model = make_cnn()
    torch.manual_seed(0)
    target = attribute(model, images, "smoothgrad", TARGETS, stdevs=0.5, nt_samples=256)
    errors = []
    for samples in (4, 64):
        torch.manual_seed(1)
        estimate = attribute(model, images, "smoothgrad", TARGETS, stdevs=0.5, nt_samples=samples)
        errors.append(float((estimate - target).pow(2).mean()))
    assert errors[1] < errors[0] / 4


@pytest.mark.parametrize(
    "window, strides",
    [((3, 4, 4), (3, 2, 2)), ((1, 5, 5), (1, 3, 3)), ((3, 16, 16), None), ((2, 3, 6), (1, 2, 4)), ((3, 6, 6), 4)],
    ids=["half-overlap", "overhanging-last-window", "whole-image", "channels-apart", "int-stride"],
)
def test_occlusion_equals_captum_for_windows_and_strides(window, strides, images: torch.Tensor) -> None:
    model = make_cnn(inplace=True)
    theirs = captum_result("occlusion", model, images, TARGETS, sliding_window_shapes=window, strides=strides)
    for per_eval in (None, 1, 7):
        ours = attribute(
            model,
            images,
            "occlusion",
            TARGETS,
            sliding_window_shapes=window,
            strides=strides,
            perturbations_per_eval=per_eval,
        )
        assert_matches(ours, theirs)


def test_occlusion_baselines_and_a_window_over_all_channels(images: torch.Tensor) -> None:
    model = make_cnn()
    baselines = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    for value in (0.7, baselines):
        ours = attribute(
            model, images, "occlusion", TARGETS, sliding_window_shapes=(3, 5, 5), strides=(3, 2, 2), baselines=value
        )
        assert_matches(
            ours,
            captum_result(
                "occlusion", model, images, TARGETS, sliding_window_shapes=(3, 5, 5), strides=(3, 2, 2), baselines=value
            ),
        )
        two_d = attribute(
            model, images, "occlusion", TARGETS, sliding_window_shapes=(5, 5), strides=(2, 2), baselines=value
        )
        assert torch.equal(two_d, ours)


def test_occlusion_runs_its_perturbations_in_large_batches_under_inference_mode(images: torch.Tensor) -> None:
    model = make_cnn()
    calls = []

    def record(module, args):
        calls.append((args[0].shape[0], torch.is_inference_mode_enabled()))

    handle = model.conv1.register_forward_pre_hook(record)
    try:
        # 7 x 7 window positions: one unperturbed pass, then passes of 64 // 3 = 21 positions of 3 images.
        attribute(model, images, "occlusion", TARGETS, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2))
    finally:
        handle.remove()
    per_pass = ROWS_PER_PASS // 3
    assert [size for size, _ in calls] == [3] + [3 * per_pass] * 2 + [3 * (49 - 2 * per_pass)]
    assert all(inference for _, inference in calls)


def test_guided_backprop_on_a_resnet_whose_relus_run_twice_equals_captum() -> None:
    # torchvision's BasicBlock calls its one self.relu twice; guided Grad-CAM at layer3 upsamples a 2x2 map.
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    for method, options in (("guided_backprop", {}), ("guided_gradcam", {"layer": "layer3"})):
        ours = attribute(model, images, method, [4, 1], **options)
        assert_matches(ours, captum_result(method, model, images, [4, 1], **options))
    with_bilinear = attribute(model, images, "guided_gradcam", [4, 1], layer="layer3", interpolate_mode="bilinear")
    assert_matches(
        with_bilinear,
        captum_result("guided_gradcam", model, images, [4, 1], layer="layer3", interpolate_mode="bilinear"),
    )


def test_functional_relu_is_not_guided_as_in_captum(images: torch.Tensor) -> None:
    class FunctionalRelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
            self.fc = nn.Linear(6 * 16 * 16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(F.relu(self.conv(x)).flatten(1))

    model = FunctionalRelu()
    guided = attribute(model, images, "guided_backprop", TARGETS)
    assert torch.equal(guided, attribute(model, images, "saliency", TARGETS, abs=False))
    assert_matches(guided, captum_result("guided_backprop", model, images, TARGETS))
    # With an nn.ReLU module instead, the gradient is guided and differs.
    modular = make_cnn()
    assert not torch.allclose(
        attribute(modular, images, "guided_backprop", TARGETS),
        attribute(modular, images, "saliency", TARGETS, abs=False),
    )


def test_guided_backprop_replaces_no_module_and_sets_no_attribute(images: torch.Tensor) -> None:
    model = make_cnn(inplace=True)

    def snapshot():
        return [
            (name, id(module), type(module), sorted(vars(module)), getattr(module, "inplace", None))
            for name, module in model.named_modules()
        ]

    before = snapshot()
    seen_during = []
    handle = model.fc.register_forward_hook(lambda module, args, output: seen_during.append(snapshot()))
    try:
        attribute(model, images, "guided_backprop", TARGETS)
        attribute(model, images, "guided_gradcam", TARGETS, layer="relu2")
    finally:
        handle.remove()
    assert seen_during and all(during == before for during in seen_during)
    assert snapshot() == before


@pytest.mark.parametrize("method", METHODS)
def test_the_model_is_untouched_by_each_method(method: str, images: torch.Tensor, model_untouched) -> None:
    model = make_cnn(inplace=True, dropout=True).train()
    model.bn1.eval()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.conv1.bias.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    with model_untouched(model):
        attribute(model, images, method, TARGETS, **REQUIRED.get(method, {}))
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert not images.requires_grad and images.grad is None


@pytest.mark.parametrize("method", METHODS)
def test_the_model_is_untouched_when_its_forward_raises(method: str, images: torch.Tensor, model_untouched) -> None:
    # The error comes after every ReLU has run, so guided backprop's hooks are in place when it is raised.
    model = nn.Sequential(make_cnn(inplace=True, dropout=True), Boom()).train()
    model[0].fc.weight.grad = torch.ones_like(model[0].fc.weight)
    options = {"layer": "0.conv2"} if method == "guided_gradcam" else REQUIRED.get(method, {})
    with model_untouched(model):
        with pytest.raises(AssertionError, match="went past"):
            attribute(model, images, method, TARGETS, **options)
    assert count_hooks(model) == 0


@pytest.mark.parametrize("method", METHODS)
def test_works_inside_inference_mode_with_images_made_inside_it(method: str, images: torch.Tensor) -> None:
    model = make_cnn(inplace=True)
    options = REQUIRED.get(method, {})
    torch.manual_seed(2)
    expected = attribute(model, images, method, TARGETS, **options)
    with torch.inference_mode():
        batch = images.clone()  # an inference tensor, like a Lightning validation batch
        targets = torch.tensor(TARGETS)
        assert batch.is_inference() and targets.is_inference()
        for classes in (TARGETS, targets):
            torch.manual_seed(2)
            inside = attribute(model, batch, method, classes, **options)
            assert torch.is_inference_mode_enabled()
            torch.testing.assert_close(inside.clone(), expected)
    with torch.no_grad():
        torch.manual_seed(2)
        torch.testing.assert_close(attribute(model, images, method, TARGETS, **options), expected)
        assert not torch.is_grad_enabled()


@pytest.mark.parametrize("method", METHODS)
def test_maps_have_the_input_shape_dtype_and_no_graph(method: str) -> None:
    model = make_cnn()
    for dtype in (torch.float32, torch.float64):
        images = torch.randn(2, 3, 12, 20, dtype=dtype, generator=torch.Generator().manual_seed(0))
        maps = attribute(model.to(dtype), images, method, **REQUIRED.get(method, {}))
        assert maps.shape == (2, 3, 12, 20) and maps.dtype == dtype
        assert not maps.requires_grad and torch.isfinite(maps).all()


def test_targets_none_means_the_predicted_class_and_an_int_means_every_image(images: torch.Tensor) -> None:
    model = make_cnn()
    with torch.no_grad():
        predicted = reference(model)(images).argmax(dim=1)
    for method in METHODS:
        options = REQUIRED.get(method, {})
        torch.manual_seed(0)
        automatic = attribute(model, images, method, **options)
        torch.manual_seed(0)
        assert torch.equal(automatic, attribute(model, images, method, predicted, **options)), method
        torch.manual_seed(0)
        as_int = attribute(model, images, method, 2, **options)
        torch.manual_seed(0)
        assert torch.equal(as_int, attribute(model, images, method, [2, 2, 2], **options)), method


def test_output_key_finds_the_logits_in_a_dict_output(images: torch.Tensor) -> None:
    class DictOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_cnn()

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            logits = self.net(x)
            return {"probabilities": logits.softmax(dim=1), "scores": logits}

    model = DictOutput()
    for method in METHODS:
        options = {"layer": "net.conv2"} if method == "guided_gradcam" else REQUIRED.get(method, {})
        torch.manual_seed(0)
        keyed = attribute(model, images, method, TARGETS, output_key="scores", **options)
        torch.manual_seed(0)
        # the wrapper is not traced, so occlusion runs the full forward pass for it: compare with the same
        full = {"incremental": False} if method == "occlusion" else {}
        plain = attribute(model.net, images, method, TARGETS, **REQUIRED.get(method, {}), **full)
        assert torch.equal(keyed, plain), method


def test_unknown_method_names_the_valid_methods(images: torch.Tensor) -> None:
    with pytest.raises(ValueError) as error:
        attribute(make_cnn(), images, "gradient_shap")
    message = str(error.value)
    assert "'gradient_shap'" in message
    assert all(repr(method) in message for method in METHODS)
    assert sorted(ATTRIBUTION_METHODS) == sorted(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_unknown_option_names_it_and_the_methods_options(method: str, images: torch.Tensor) -> None:
    model = make_cnn()
    with pytest.raises(ValueError) as error:
        attribute(model, images, method, TARGETS, n_step=3, **REQUIRED.get(method, {}))
    message = str(error.value)
    assert "'n_step'" in message and repr(method) in message
    for option in method_options(method):
        assert f"{option}=" in message
    assert count_hooks(model) == 0


def test_the_options_are_captums() -> None:
    assert method_options("saliency") == {"abs": True}
    assert method_options("input_x_gradient") == {} and method_options("guided_backprop") == {}
    assert method_options("smoothgrad") == {
        "nt_type": "smoothgrad",
        "nt_samples": 5,
        "nt_samples_batch_size": None,
        "stdevs": 1.0,
        "abs": True,
    }
    assert method_options("integrated_gradients") == {
        "baselines": None,
        "n_steps": 50,
        "method": "gausslegendre",
        "internal_batch_size": None,
    }
    assert list(method_options("occlusion")) == [
        "sliding_window_shapes",
        "strides",
        "baselines",
        "perturbations_per_eval",
        "incremental",
    ]
    assert list(method_options("guided_gradcam")) == ["layer", "interpolate_mode"]


@pytest.mark.parametrize("method, option", [("occlusion", "sliding_window_shapes"), ("guided_gradcam", "layer")])
def test_a_missing_required_option_is_named(method: str, option: str, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=f"needs the option '{option}'"):
        attribute(make_cnn(), images, method)


@pytest.mark.parametrize(
    "method, options, match",
    [
        ("integrated_gradients", {"method": "simpson"}, "'simpson'.*gausslegendre"),
        ("integrated_gradients", {"n_steps": 0}, "n_steps must be an int >= 1"),
        ("integrated_gradients", {"method": "riemann_left", "n_steps": 1}, "n_steps must be an int >= 2"),
        ("integrated_gradients", {"internal_batch_size": 0}, "internal_batch_size must be a positive int"),
        ("integrated_gradients", {"baselines": torch.zeros(2, 3, 16, 16)}, r"\(2, 3, 16, 16\).*\(3, 3, 16, 16\)"),
        ("smoothgrad", {"nt_type": "smoothgrad_squared"}, "'smoothgrad_squared'.*vargrad"),
        ("smoothgrad", {"nt_samples": 0}, "nt_samples must be a positive int"),
        ("smoothgrad", {"stdevs": -1.0}, "stdevs must be a non-negative number"),
        ("occlusion", {"sliding_window_shapes": (3, 20, 4)}, r"\(3, 20, 4\) is larger than the images"),
        ("occlusion", {"sliding_window_shapes": (3, 4, 4), "strides": (3, 5, 5)}, "must not exceed"),
        ("occlusion", {"sliding_window_shapes": 4}, "sliding_window_shapes must be"),
        ("occlusion", {"sliding_window_shapes": (3, 4, 4), "perturbations_per_eval": 0}, "perturbations_per_eval"),
        ("guided_gradcam", {"layer": "conv9"}, "'conv9'"),
    ],
)
def test_bad_option_values_are_refused_with_the_value(method, options, match, images, model_untouched) -> None:
    model = make_cnn()
    with model_untouched(model):
        with pytest.raises(ValueError, match=match):
            attribute(model, images, method, TARGETS, **options)


@pytest.mark.parametrize("method", METHODS)
def test_targets_out_of_range_or_miscounted_are_refused(method: str, images: torch.Tensor, model_untouched) -> None:
    model = make_cnn()
    options = REQUIRED.get(method, {})
    with model_untouched(model):
        for targets, match in ((4, "out of range"), ([0, 9, 1], r"\[0, 9, 1\] out of range"), ([0, 1], "2 entries")):
            with pytest.raises(ValueError, match=match):
                attribute(model, images, method, targets, **options)


def test_images_must_be_a_float_batch_of_maps() -> None:
    with pytest.raises(ValueError, match=r"\(3, 16, 16\)"):
        attribute(make_cnn(), torch.rand(3, 16, 16), "saliency")
    with pytest.raises(ValueError, match="floating-point"):
        attribute(make_cnn(), torch.zeros(1, 3, 16, 16, dtype=torch.long), "saliency")


class ViewsItsFeatures(nn.Module):
    """Flattens a feature map with ``.view()``, which a channels-last tensor refuses."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x))
        return self.fc(features.view(features.shape[0], -1))


def test_occlusion_falls_back_to_the_usual_layout_for_a_model_that_views_its_features() -> None:
    model = ViewsItsFeatures()
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeError, match="view"):  # the layout occlusion tries first
        model(images.contiguous(memory_format=torch.channels_last))
    ours = attribute(model, images, "occlusion", [0, 2], sliding_window_shapes=(3, 2, 2), strides=(3, 2, 2))
    assert_matches(
        ours, captum_result("occlusion", model, images, [0, 2], sliding_window_shapes=(3, 2, 2), strides=(3, 2, 2))
    )
