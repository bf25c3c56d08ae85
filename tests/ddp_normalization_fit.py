"""A DDP fit on the CPU (gloo) whose ranks see differently normalized validation data, run as a script by
tests/test_normalization.py (Lightning's "ddp" strategy starts the other rank by running this file again).

Usage: python tests/ddp_normalization_fit.py OUT_DIR
Each rank writes the mean and std its runs used to OUT_DIR/rank<R>.json.
"""

from __future__ import annotations

import json
import os
import sys

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import FakeData

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny import NUM_CLASSES, TinyClassifier  # noqa: E402

from lightning_cnnsee import CNNSee  # noqa: E402

#: The normalization of each rank's validation data (rank 0's is the one every rank must use).
RANK_MEAN = {0: [0.485, 0.456, 0.406], 1: [0.5, 0.5, 0.5]}
STD = [0.229, 0.224, 0.225]


def main() -> None:
    out = sys.argv[1]
    torch.set_num_threads(1)
    pl.seed_everything(0, workers=True)
    rank = int(os.environ.get("LOCAL_RANK", 0))
    pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize(RANK_MEAN[rank], STD)])
    data = DataLoader(FakeData(16, (3, 16, 20), NUM_CLASSES, transform=pipeline), batch_size=4)
    callback = CNNSee(
        techniques=["gradcam", "filters"], num_samples=4, ascent_steps=2, num_filters=2, max_overhead=None
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        callbacks=[callback],
        default_root_dir=out,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(TinyClassifier(), data, data)
    options = callback.options_in_use
    with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as handle:
        json.dump({"mean": options.mean, "std": options.std, "where": callback.normalization.found.where}, handle)


if __name__ == "__main__":
    main()
