"""CNNSee from YAML with LightningCLI: every example config trains and logs images; every option is validated by
jsonargparse from CNNSee's type annotations, a bad value failing with an error that names the option."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import runpy
import sys
from pathlib import Path

import pytest
import yaml
from tiny import read_images

from lightning_cnnsee import CNNSee
from lightning_cnnsee.callback.compat import lightning
from lightning_cnnsee.demo.data import CLASS_NAMES, MEAN, STD
from lightning_cnnsee.demo.train import ShapesClassifier, ShapesDataModule

LightningCLI = importlib.import_module(lightning.__name__ + ".cli").LightningCLI  # the namespace the examples pick

pytest.importorskip("jsonargparse", reason="LightningCLI needs jsonargparse[signatures] (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# Per example: overrides that make a fit take seconds (smaller data); every run also gets FAST_TRAINER.
FAST_DATA = {
    "shapes": ["--data.num_train=96", "--data.num_val=32", "--data.batch_size=16"],
    "digits": ["--data.batch_size=16"],
}
FAST_TRAINER = [
    "--trainer.max_steps=3",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
    # CNNSee is the last callback in each config: these set its init_args
    "--trainer.callbacks.ascent_steps=2",
    "--trainer.callbacks.num_samples=4",
    "--trainer.callbacks.num_filters=2",
    "--trainer.callbacks.max_classes=3",
]


def run_example(name: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``python examples/<name>.py ARGS``, in this process (the script runs as ``__main__``)."""
    monkeypatch.setattr(sys, "argv", [f"examples/{name}.py", *args])
    runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="__main__")


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"cnnsee_example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cnnsee_init_args(config: dict) -> dict:
    [callback] = [c for c in config["trainer"]["callbacks"] if c["class_path"] == "lightning_cnnsee.CNNSee"]
    return callback["init_args"]


def test_every_config_has_an_example_script_and_the_other_way_round():
    scripts = sorted(path.stem for path in (ROOT / "examples").glob("*.py"))
    assert [path.stem for path in CONFIGS] == scripts == ["digits", "shapes"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_each_example_trains_from_its_config_and_cnnsee_logs_images(config, tmp_path, monkeypatch):
    name = config.stem
    run_example(
        name,
        [
            "fit",
            "--config",
            str(config),
            *FAST_TRAINER,
            *FAST_DATA[name],
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        monkeypatch,
    )
    version = tmp_path / name / "version_0"
    images = read_images(str(version))
    kinds = {tag.split("/")[1] for tag in images}
    assert kinds == {"gradcam", "filters", "classes", "activations"}, images
    assert all(steps[0] == 0 and steps[-1] == 3 for steps in images.values()), images
    # the configuration LightningCLI saved is the one CNNSee ran with, overrides included
    saved = cnnsee_init_args(yaml.safe_load((version / "config.yaml").read_text()))
    assert saved["ascent_steps"] == 2 and saved["num_samples"] == 4
    assert saved["cam_method"] == cnnsee_init_args(yaml.safe_load(config.read_text()))["cam_method"]


@pytest.mark.parametrize("name", ["shapes", "digits"])
def test_the_examples_docstring_examples_run(name):
    failed, attempted = doctest.testmod(load_example(name), optionflags=doctest.ELLIPSIS)
    assert failed == 0 and (attempted > 0 or name == "shapes")


def test_the_configs_show_images_with_the_normalization_their_data_uses():
    shapes = cnnsee_init_args(yaml.safe_load((ROOT / "configs" / "shapes.yaml").read_text()))
    assert (shapes["mean"], shapes["std"], shapes["class_names"]) == (MEAN, STD, CLASS_NAMES)
    digits_example = load_example("digits")
    digits = cnnsee_init_args(yaml.safe_load((ROOT / "configs" / "digits.yaml").read_text()))
    assert (digits["mean"], digits["std"], digits["class_names"]) == (
        digits_example.MEAN,
        digits_example.STD,
        digits_example.CLASS_NAMES,
    )


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_a_bad_value_in_the_yaml_fails_with_jsonargparses_error_naming_the_option(
    config, tmp_path, monkeypatch, capsys
):
    values = yaml.safe_load(config.read_text())
    cnnsee_init_args(values)["cam_method"] = "gradcam3"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    with pytest.raises(SystemExit) as exit_info:
        run_example(config.stem, ["fit", "--config", str(bad)], monkeypatch)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert 'Parser key "cam_method"' in error and "Got value: gradcam3" in error
    assert "'gradcam', 'gradcam++', 'xgradcam', 'layercam', 'hirescam'" in error  # the valid choices
    assert not (tmp_path / "runs").exists()


# A value for every option of CNNSee.__init__, none of them the default, of every annotated type.
EVERY_OPTION = {
    "num_samples": 3,
    "every_n_epochs": None,
    "every_n_steps": 5,
    "filters_every_n_runs": 2,
    "techniques": ["gradcam", "activations"],
    "layers": ["features.0"],
    "gradcam_layers": ["features.12"],
    "filter_layers": ["features.3"],
    "activation_layers": ["features.6"],
    "class_layer": "classifier",
    "cam_method": "gradcam++",
    "cam_scale": "image",
    "cam_alpha": 0.25,
    "num_filters": 4,
    "filter_channels": [0, 2],
    "classes": [1, 3],
    "max_classes": 4,
    "class_names": ["a", "b", "c", "d", "e", "f"],
    "activation_channels": 6,
    "ascent_steps": 7,
    "ascent_lr": 0.05,
    "parameterization": "pixel",
    "mean": [0.4, 0.5, 0.6],
    "std": [0.2, 0.3, 0.4],
    "image_key": 0,
    "label_key": "label",
    "output_key": "logits",
    "seed": 11,
    "strict": True,
    "max_overhead": None,
    "name": "every-option",
    "attribution_methods": ["occlusion"],
    "num_diverse": 2,
    "faithfulness_steps": 5,
    "model_kind": "classification",
    "max_classes_per_image": 2,
    "object_key": "boxes",
}


def cli_with_cnnsee(init_args: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LightningCLI:
    """``LightningCLI`` as the examples use it, parsing (not running) a config with CNNSee in trainer.callbacks."""
    monkeypatch.setattr(sys, "argv", ["cnnsee-test"])  # LightningCLI warns when sys.argv holds pytest's arguments
    config = {
        "trainer": {
            "logger": False,
            "default_root_dir": str(tmp_path),
            "enable_progress_bar": False,
            "callbacks": [{"class_path": "lightning_cnnsee.CNNSee", "init_args": init_args}],
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return LightningCLI(
        ShapesClassifier, ShapesDataModule, run=False, args=["--config", str(path)], save_config_callback=None
    )


def test_every_cnnsee_option_is_set_from_yaml(tmp_path, monkeypatch):
    parameters = inspect.signature(CNNSee.__init__).parameters
    assert set(EVERY_OPTION) == set(parameters) - {"self"}, "a new option: add a value for it here"
    assert [name for name, value in EVERY_OPTION.items() if value == parameters[name].default] == []
    [callback] = [
        c for c in cli_with_cnnsee(EVERY_OPTION, tmp_path, monkeypatch).trainer.callbacks if isinstance(c, CNNSee)
    ]
    got = {name: getattr(callback.options, name) for name in EVERY_OPTION}
    assert {**got, "techniques": list(got["techniques"])} == EVERY_OPTION
    assert isinstance(callback.options.image_key, int) and isinstance(callback.options.label_key, str)


@pytest.mark.parametrize(
    "option, value",
    [
        ("cam_method", "gradcam3"),
        ("cam_scale", "pixel"),
        ("parameterization", "dct"),
        ("techniques", ["gradcam", "saliency"]),
        ("num_samples", "eight"),
        ("every_n_steps", 2.5),
        ("cam_alpha", "half"),
        ("max_overhead", "lots"),
        ("strict", "maybe"),
        ("layers", "features.0"),
        ("mean", ["grey"]),
        ("class_names", {"0": "zero"}),
        ("image_key", [0]),
    ],
)
def test_a_value_of_the_wrong_type_is_rejected_naming_the_option_and_the_value(
    option, value, tmp_path, monkeypatch, capsys
):
    with pytest.raises(SystemExit) as exit_info:
        cli_with_cnnsee({option: value}, tmp_path, monkeypatch)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f'Parser key "{option}"' in error, error


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("num_samples", 0, r"CNNSee\(num_samples=0\): must be a whole number >= 1"),
        ("cam_alpha", 2.0, r"CNNSee\(cam_alpha=2.0\): must be a number in \[0, 1\]"),
        ("std", [0.5, 0.0, 0.5], r"CNNSee\(std=\[0.5, 0.0, 0.5\]\): must be a non-empty list of finite numbers > 0"),
        ("ascent_lr", float("nan"), r"CNNSee\(ascent_lr=nan\): must be a finite number > 0"),
    ],
)
def test_a_value_of_the_right_type_out_of_range_fails_with_cnnsees_own_message(
    option, value, message, tmp_path, monkeypatch
):
    # jsonargparse checks types; ranges are CNNSee's own checks, run when LightningCLI instantiates the callback
    with pytest.raises(ValueError, match=message):
        cli_with_cnnsee({option: value}, tmp_path, monkeypatch)
