"""What only a CUDA device can show: CNNSee under CUDA mixed precision, a one-GPU DDP fit on NCCL, and memory that
does not grow over many runs. Every test here skips on a machine without CUDA, saying so; ``bash benchmarks/gpu.sh``
runs them (and every benchmark on the GPU) the day a GPU is lent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import pytorch_lightning as pl
import torch
from tiny import RecordingCNNSee, TinyClassifier, make_loaders, read_images, trainer_kwargs

from lightning_cnnsee.run.options import Options
from lightning_cnnsee.run.visualization import visualize

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason=f"needs a CUDA device: torch {torch.__version__} sees none (run bash benchmarks/gpu.sh where there is one)",
)

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_fit.py")
CALLBACK = dict(ascent_steps=4, num_samples=6, strict=True, max_overhead=None)
TIMEOUT = 300  # seconds for the DDP fit's process: a hang fails the test instead of blocking the GPU script


def fit(tmp_path, precision: str, callbacks: list) -> pl.Trainer:
    pl.seed_everything(0, workers=True)
    train, val = make_loaders()
    kwargs = trainer_kwargs(tmp_path, accelerator="cuda", precision=precision, max_epochs=2, deterministic="warn")
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(TinyClassifier(), train, val)
    return trainer


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_cnnsee_under_cuda_mixed_precision_logs_finite_float32_images(tmp_path, precision):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} does not support bfloat16")
    callback = RecordingCNNSee(**CALLBACK)
    trainer = fit(tmp_path / "with", precision, [callback])
    tags = read_images(trainer.logger.log_dir)
    assert {tag.split("/")[1] for tag in tags} == {"gradcam", "filters", "classes", "activations"}
    results = callback.last_results
    for cam in results.cams_predicted.values():
        assert cam.dtype == torch.float32 and torch.isfinite(cam).all()
    for found in [*results.filters.values(), results.class_patterns]:
        assert found.images.dtype == torch.float32 and torch.isfinite(found.images).all()
        assert found.activations.abs().sum() > 0


def test_cnnsee_does_not_change_cuda_mixed_precision_training(tmp_path):
    """Same seed, same data: the weights after a 16-mixed fit with CNNSee equal those of a fit without it, as far as
    CUDA repeats itself (two fits without CNNSee must agree first, or the comparison would prove nothing)."""
    plain = [fit(tmp_path / f"plain{i}", "16-mixed", []).lightning_module.state_dict() for i in range(2)]
    if any(not torch.equal(plain[0][name], plain[1][name]) for name in plain[0]):
        pytest.skip("two identical CUDA fits differ on this machine (non-deterministic kernels): nothing to compare")
    seen = fit(tmp_path / "seen", "16-mixed", [RecordingCNNSee(**CALLBACK)]).lightning_module.state_dict()
    for name in plain[0]:
        assert torch.equal(plain[0][name], seen[name]), name


def test_one_gpu_ddp_fit_on_nccl_logs_every_scheduled_run(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_nccl_available():
        pytest.skip("torch.distributed has no NCCL backend here")
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUBLAS_WORKSPACE_CONFIG=":4096:8")
    env.pop("LOCAL_RANK", None)
    completed = subprocess.run(
        [sys.executable, SCRIPT, str(tmp_path), "ddp", "cnnsee", "16-mixed", "cnn", "cuda", "1"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=os.path.dirname(SCRIPT),
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    result = torch.load(tmp_path / "result.pt", weights_only=False)
    assert result["world_size"] == 1 and result["backend"] == "nccl"
    assert result["wrapper_calls_during_runs"] == []  # the runs never went through the DDP wrapper
    tags = read_images(str(tmp_path / "logs" / "version_0"))
    # 64 images, batch 8, one rank: 8 steps per epoch; runs every 3 steps and at epoch ends, a baseline, the end
    assert tags and all(steps == [0, 3, 6, 8, 9, 12, 15, 16] for steps in tags.values()), tags


def test_cuda_memory_does_not_grow_over_200_runs_of_visualize():
    torch.manual_seed(0)
    model = TinyClassifier().cuda()
    images, _ = next(iter(make_loaders(count=8, batch_size=8)[0]))
    images, labels = images.cuda(), torch.arange(8, device="cuda") % 4
    options = Options(ascent_steps=2)  # CNNSee's default techniques, short ascents
    allocated = []
    for run in range(200):
        visualize(model, images, labels, options)
        if run in (19, 199):
            torch.cuda.synchronize()
            allocated.append(torch.cuda.memory_allocated())
    # after 20 runs every cache is warm; 180 more must not hold on to anything (1 MiB: allocator rounding)
    assert allocated[1] - allocated[0] <= 2**20, f"{allocated[0]} bytes after 20 runs, {allocated[1]} after 200"
