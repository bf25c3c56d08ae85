"""DDP on the CPU (gloo, two processes) and precision plugins: no hang, one writer, shared work, same training."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny import (
    RecordingCNNSee,
    TinyClassifier,
    float32_tolerance,
    make_loaders,
    path_terms,
    read_images,
    trainer_kwargs,
)

from lightning_cnnsee import CNNSee
from lightning_cnnsee.run.options import Options
from lightning_cnnsee.run.visualization import visualize

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_fit.py")
TIMEOUT = 240  # seconds: a hang fails the test instead of blocking CI

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with the gloo backend",
)


def run_ddp(out, strategy: str, mode: str, precision: str = "32-true", model: str = "cnn") -> tuple[dict, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="always")
    env.pop("LOCAL_RANK", None)
    completed = subprocess.run(
        [sys.executable, SCRIPT, str(out), strategy, mode, precision, model],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=os.path.dirname(SCRIPT),
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    return torch.load(os.path.join(out, "result.pt"), weights_only=False), output


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return {mode: (root / mode, *run_ddp(root / mode, "ddp", mode)) for mode in ("none", "cnnsee")}


def test_ddp_logs_each_scheduled_run_once_from_rank_zero(ddp_runs):
    out, result, _ = ddp_runs["cnnsee"]
    assert result["world_size"] == 2
    log_dir = out / "logs" / "version_0"
    event_files = [name for name in os.listdir(log_dir) if name.startswith("events.out")]
    assert len(event_files) == 1  # rank 1 writes nothing
    tags = read_images(str(log_dir))
    # 64 images, 2 ranks, batch 8: 4 steps per epoch; runs every 3 steps and at epoch ends, a baseline, the end
    expected = [0, 3, 4, 6, 8]
    assert {tag: steps for tag, steps in tags.items()} == {tag: expected for tag in tags}
    assert {tag.split("/")[1] for tag in tags} == {"gradcam", "filters", "classes", "activations"}


def test_visualizations_never_call_the_ddp_wrapper(ddp_runs):
    _, result, _ = ddp_runs["cnnsee"]
    assert result["runs"] >= 4 and result["wrapper_calls_during_runs"] == []


def test_ddp_training_is_identical_with_and_without_cnnsee(ddp_runs):
    without, with_callback = ddp_runs["none"][1]["weights"], ddp_runs["cnnsee"][1]["weights"]
    for name in without:
        assert torch.equal(without[name], with_callback[name]), name


def test_patterns_split_across_ranks_equal_a_single_process_run(ddp_runs):
    _, result, _ = ddp_runs["cnnsee"]
    model = TinyClassifier()
    model.load_state_dict(result["weights"])
    single = visualize(model, result["images"], result["labels"], Options(ascent_steps=4, num_samples=6))
    assert single.filters.keys() == result["filters"].keys()
    for layer, (channels, images, activations) in result["filters"].items():
        assert channels == single.filters[layer].channels
        # another batch per rank: each of the 4 steps' forward and backward passes rounds differently (images in
        # [0, 1]); the activations' magnitude: their largest value
        bound = float32_tolerance(4 * 2 * path_terms(model))
        torch.testing.assert_close(images, single.filters[layer].images, atol=bound, rtol=0)
        scale = max(1.0, float(activations.abs().max()))
        torch.testing.assert_close(activations, single.filters[layer].activations, atol=bound * scale, rtol=0)
    shares = [int((ddp_runs["cnnsee"][0] / f"share_rank{rank}.txt").read_text()) for rank in (0, 1)]
    total = sum(len(found.channels) for found in single.filters.values()) + len(single.class_patterns.channels)
    assert shares == [-(-total // 2), total // 2]  # each rank optimized its half
    channels, images, activations = result["classes"]
    assert channels == single.class_patterns.channels
    torch.testing.assert_close(
        images, single.class_patterns.images, atol=float32_tolerance(4 * 2 * path_terms(model)), rtol=0
    )


def test_faithfulness_split_across_ranks_equals_a_single_process_run(ddp_runs):
    out, result, _ = ddp_runs["cnnsee"]
    model = TinyClassifier()
    model.load_state_dict(result["weights"])
    options = Options(ascent_steps=4, num_samples=6, techniques=["gradcam", "faithfulness"])
    single = visualize(model, result["images"], result["labels"], options)
    events = EventAccumulator(str(out / "logs" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    for metric, values in single.faithfulness["features"].items():
        logged = events.Scalars(f"cnnsee/faithfulness/features/{metric}")
        assert logged[-1].step == 8  # the final run, on the final weights
        # another batch per rank: a forward pass, the curve's steps and the mean, of probabilities at most 1
        bound = float32_tolerance(path_terms(model) + options.faithfulness_steps + len(values))
        assert logged[-1].value == pytest.approx(float(values.float().nanmean()), abs=bound), metric


def test_shared_spot_of_the_gathered_maps_equals_a_single_process_run(ddp_runs):
    from lightning_cnnsee.run.localization import localization_numbers

    out, result, _ = ddp_runs["cnnsee"]
    model = TinyClassifier()
    model.load_state_dict(result["weights"])
    options = Options(ascent_steps=4, num_samples=6, techniques=["gradcam", "localization"])
    single = localization_numbers(visualize(model, result["images"], result["labels"], options))["features"]
    events = EventAccumulator(str(out / "logs" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    for metric in ("spot_area", "spot_edge", "spot_agreement"):
        logged = events.Scalars(f"cnnsee/localization/features/{metric}")
        assert logged[-1].step == 8  # the final run, on the final weights
        assert logged[-1].value == pytest.approx(single[metric], abs=1e-5), metric


def test_ddp_fixed_images_are_rank_zeros_validation_images(ddp_runs):
    _, result, _ = ddp_runs["cnnsee"]
    _, val = make_loaders(count=64, batch_size=8)
    x, y = val.dataset.tensors
    # the distributed sampler gives rank 0 every other image
    assert torch.equal(result["images"], x[0::2][:6])
    assert torch.equal(result["labels"], y[0::2][:6])


def test_a_failure_on_one_rank_is_decided_together_and_training_goes_on(tmp_path):
    result, output = run_ddp(tmp_path, "ddp", "failing")
    assert "rank 1 failed with RuntimeError: rank one broke" in output
    # reported once per cause, not at every run (the fit runs with PYTHONWARNINGS=always: no deduplication there)
    assert output.count("CNNSee skipped a visualization run because of") == 1
    assert "weights" in result


def test_a_part_failing_on_one_rank_is_named_once_and_the_other_kinds_are_logged(tmp_path):
    result, output = run_ddp(tmp_path, "ddp", "parts_failing")
    assert output.count("CNNSee could not make the CAMs (gradcam)") == 1
    assert "because of RuntimeError: rank one's part broke; every other kind was logged" in output
    assert "CNNSee skipped" not in output  # no run was lost whole
    kinds = {tag.split("/")[1] for tag in read_images(str(tmp_path / "logs" / "version_0"))}
    assert "activations" in kinds and "gradcam" not in kinds  # rank 1's share of the CAMs failed: none shown
    failed_patterns = [line for line in output.splitlines() if "patterns" in line and "could not make" in line]
    assert failed_patterns  # rank 1's share of the patterns: named, left out
    assert "weights" in result


def test_ddp_spawn_logs_and_trains_identically(tmp_path):
    plain, _ = run_ddp(tmp_path / "none", "ddp_spawn", "none")
    seen, _ = run_ddp(tmp_path / "cnnsee", "ddp_spawn", "cnnsee")
    for name in plain["weights"]:
        assert torch.equal(plain["weights"][name], seen["weights"][name]), name
    tags = read_images(str(tmp_path / "cnnsee" / "logs" / "version_0"))
    assert tags and all(steps == [0, 3, 4, 6, 8] for steps in tags.values())


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true"])
def test_visualizations_work_under_each_cpu_precision(tmp_path, precision):
    pl.seed_everything(0)
    train, val = make_loaders()
    callback = RecordingCNNSee(ascent_steps=4, num_samples=6, strict=True, max_overhead=None)
    trainer = pl.Trainer(callbacks=[callback], **trainer_kwargs(tmp_path, precision=precision, max_epochs=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(TinyClassifier(), train, val)
    tags = read_images(trainer.logger.log_dir)
    assert {tag.split("/")[1] for tag in tags} == {"gradcam", "filters", "classes", "activations"}
    results = callback.last_results
    for cam in results.cams_predicted.values():
        assert cam.dtype == torch.float32 and torch.isfinite(cam).all()
    for found in [*results.filters.values(), results.class_patterns]:
        assert found.images.dtype == torch.float32 and torch.isfinite(found.images).all()
        assert found.activations.abs().sum() > 0


def test_sharded_strategies_are_refused_at_setup_with_what_to_do(tmp_path):
    from pytorch_lightning.strategies import FSDPStrategy

    class FakeTrainer:
        strategy = FSDPStrategy()

    with pytest.raises(ValueError, match=r"sharded strategy FSDPStrategy.*Use strategy='ddp'"):
        CNNSee().setup(FakeTrainer(), TinyClassifier(), "fit")


def test_the_readme_multi_gpu_command_runs_on_two_cpu_processes(tmp_path):
    root = os.path.dirname(os.path.dirname(SCRIPT))
    readme = open(os.path.join(root, "README.md")).read()
    command = next(line for line in readme.splitlines() if "--trainer.accelerator=cpu --trainer.devices=2" in line)
    arguments = command.split()[1:]  # drop "python"
    small = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=1",
        "--data.num_train=256",
        "--data.num_val=64",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="always")
    completed = subprocess.run(
        [sys.executable, *arguments, *small], cwd=root, capture_output=True, text=True, timeout=TIMEOUT, env=env
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    log_dir = tmp_path / "shapes" / "version_0"
    tags = read_images(str(log_dir))
    assert {tag.split("/")[1] for tag in tags} == {"gradcam", "filters", "classes", "activations"}
