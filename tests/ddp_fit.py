"""A DDP fit on the CPU (gloo), run as a script by tests/test_distributed.py: Lightning's "ddp" strategy starts the
other rank by running this file again, which it cannot do from inside pytest.

Usage: python tests/ddp_fit.py OUT_DIR STRATEGY WITH_CNNSEE [PRECISION [MODEL [ACCELERATOR DEVICES]]]
Rank 0 saves the final weights, the callback's fixed images and last results to OUT_DIR/result.pt. MODEL is "cnn"
(the default) or "vit". ACCELERATOR "cuda" with DEVICES 1 is the one-GPU DDP fit of tests/test_gpu.py (Lightning
picks NCCL on CUDA).
"""

from __future__ import annotations

import os
import sys

import pytorch_lightning as pl
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny import RecordingCNNSee, TinyClassifier, TinyViT, make_loaders  # noqa: E402

import lightning_cnnsee.callback.cnnsee as callback_module  # noqa: E402
import lightning_cnnsee.run.visualization as visualize_module  # noqa: E402

SHARE = []  # the number of patterns this rank optimized in each run


def count_share(ascend):
    def counted(module, jobs, *args, **kwargs):
        if kwargs.get("steps") is None:  # a run, not the cost estimate
            SHARE.append(len(jobs))
        return ascend(module, jobs, *args, **kwargs)

    return counted


visualize_module.ascend = count_share(visualize_module.ascend)


class FailingOnRankOne(RecordingCNNSee):
    """Fails inside the computation on rank 1 only: the ranks must decide together and go on."""

    def run(self, trainer, pl_module, **kwargs):
        real = callback_module.visualize

        def failing(*args, **inner):
            raise RuntimeError("rank one broke")

        callback_module.visualize = failing if trainer.global_rank == 1 else real
        try:
            return super().run(trainer, pl_module, **kwargs)
        finally:
            callback_module.visualize = real


class PartsFailingOnRankOne(RecordingCNNSee):
    """On rank 1 only, the CAMs and every filter and class ascent fail: the ranks keep the other kinds, and rank 0
    names the parts that failed."""

    def run(self, trainer, pl_module, **kwargs):
        real = visualize_module.cams_for_targets, visualize_module.filter_ascent

        def failing(*args, **inner):
            raise RuntimeError("rank one's part broke")

        if trainer.global_rank == 1:
            visualize_module.cams_for_targets = visualize_module.filter_ascent = failing
        try:
            return super().run(trainer, pl_module, **kwargs)
        finally:
            visualize_module.cams_for_targets, visualize_module.filter_ascent = real


WRAPPER_CALLS_DURING_RUNS = []


class WatchingWrapper(RecordingCNNSee):
    """Records any call of the DDP wrapper's forward while a visualization runs (there must be none)."""

    def run(self, trainer, pl_module, **kwargs):
        from torch.nn.parallel import DistributedDataParallel

        real = DistributedDataParallel.forward

        def watched(wrapper, *args, **inner):
            WRAPPER_CALLS_DURING_RUNS.append(trainer.global_step)
            return real(wrapper, *args, **inner)

        DistributedDataParallel.forward = watched
        try:
            return super().run(trainer, pl_module, **kwargs)
        finally:
            DistributedDataParallel.forward = real


def main() -> None:
    out, strategy, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    precision = sys.argv[4] if len(sys.argv) > 4 else "32-true"
    vit = len(sys.argv) > 5 and sys.argv[5] == "vit"
    accelerator, devices = (sys.argv[6], int(sys.argv[7])) if len(sys.argv) > 7 else ("cpu", 2)
    torch.set_num_threads(1)
    pl.seed_everything(0, workers=True)
    train, val = make_loaders(count=64, batch_size=8, size=(32, 32) if vit else (16, 20))
    options = dict(ascent_steps=4, num_samples=6, every_n_epochs=1, every_n_steps=3, max_overhead=None)
    callbacks = {
        "none": [],
        "cnnsee": [WatchingWrapper(**options)],
        "failing": [FailingOnRankOne(**options)],
        "parts_failing": [PartsFailingOnRankOne(**options)],
    }[mode]
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        max_epochs=2,
        deterministic=True
        if accelerator == "cpu"
        else "warn",  # CUDA: some backward kernels have no deterministic form
        callbacks=callbacks,
        default_root_dir=out,
        logger=pl.loggers.TensorBoardLogger(out, name="logs", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    model = TinyViT() if vit else TinyClassifier()
    trainer.fit(model, train, val)
    if callbacks:
        with open(os.path.join(out, f"share_rank{trainer.global_rank}.txt"), "w") as handle:
            handle.write(str(SHARE[-1] if SHARE else 0))
    if trainer.is_global_zero:
        callback = callbacks[0] if callbacks else None
        saved = {
            "weights": trainer.lightning_module.state_dict(),
            "world_size": trainer.world_size,
            "backend": getattr(trainer.strategy, "process_group_backend", None),
            "wrapper_calls_during_runs": list(WRAPPER_CALLS_DURING_RUNS),
        }
        if callback is not None and callback.last_results is not None:  # ddp_spawn: state stays in the workers
            saved["images"] = callback.fixed.images
            saved["labels"] = callback.fixed.labels
            results = callback.last_results
            saved["filters"] = {k: (v.channels, v.images, v.activations) for k, v in results.filters.items()}
            if results.class_patterns is not None:
                saved["classes"] = (
                    results.class_patterns.channels,
                    results.class_patterns.images,
                    results.class_patterns.activations,
                )
            saved["runs"] = callback.schedule.runs
        torch.save(saved, os.path.join(out, "result.pt"))


if __name__ == "__main__":
    main()
