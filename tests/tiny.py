"""What several test files share: a tiny LightningModule and data for callback tests (no downloads, a second or two per
fit on a CPU), small CNNs, the peer libraries' maps (pytorch-grad-cam, torchcam; imported where used), and float32's
error model for tolerances."""

from __future__ import annotations

import copy
import functools
import json
import struct
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_cnnsee import CNNSee

NUM_CLASSES = 4


UNIT_ROUNDOFF = 2.0**-24  # float32's unit roundoff u: one rounding of x is x (1 + d) with |d| <= u


def float32_tolerance(terms: int, magnitude: float = 1.0) -> float:
    """Most two float32 evaluations of one sum of ``terms`` terms can differ by, whatever the order of additions.

    A float32 sum of ``n`` products whose absolute values add to ``magnitude`` is within ``gamma_n * magnitude`` of
    the exact sum, ``gamma_n = n u / (1 - n u)`` (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002,
    eq. 3.4 and 4.4); two evaluations (another batch size, thread count or kernel) are within twice that. For a
    chain of layers, ``terms`` adds their fan-ins (errors to first order add up along the path) and ``magnitude``
    bounds the absolute values summed at the widest step.

    Example::

        >>> float32_tolerance(1) == 2 * 2.0**-24 / (1 - 2.0**-24)
        True
        >>> round(float32_tolerance(72, magnitude=2.0) / UNIT_ROUNDOFF)
        288
    """
    gamma = terms * UNIT_ROUNDOFF / (1 - terms * UNIT_ROUNDOFF)
    return 2 * gamma * magnitude


def path_terms(model: nn.Module) -> int:
    """The fan-ins of every convolution and linear layer of ``model`` added up: for a chain (or a ResNet, counting
    each branch), at least the number of products on the way from the input to any output (the ``terms`` of
    :func:`float32_tolerance` for one forward pass; twice that with the backward pass)."""
    layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return sum(module.weight[0].numel() for module in model.modules() if isinstance(module, layers))


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor | float) -> None:
    """``|actual - expected| <= bound`` everywhere (``bound`` a number or a tensor that broadcasts), naming the worst
    element when not."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    excess = (actual.double() - expected.double()).abs() - torch.as_tensor(bound, dtype=torch.float64)
    worst = int(excess.flatten().argmax())
    assert float(excess.flatten()[worst]) <= 0, (
        f"element {worst}: {float(actual.flatten()[worst])} vs {float(expected.flatten()[worst])}, "
        f"{float(excess.flatten()[worst]):.3g} beyond the bound"
    )


def absolute_forward(modules: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``modules`` run on ``|inputs|`` with every parameter replaced by its absolute value: for a chain of
    convolutions, linear layers, ReLUs and poolings, a bound on the sum of the absolute values of the terms of each
    output (the ``magnitude`` of :func:`float32_tolerance`)."""
    absolute = copy.deepcopy(modules).eval()
    with torch.no_grad():
        for parameter in absolute.parameters():
            parameter.abs_()
        return absolute(inputs.abs())


def count_hooks(model: nn.Module) -> int:
    """Forward, forward-pre, backward and backward-pre hooks registered on all modules of ``model``."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(module, kind, {})) for module in model.modules() for kind in kinds)


class Boom(nn.Module):
    """A layer that must never run: proves that a forward pass stopped before it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the forward pass went past the layer it should have stopped after")


class Counter(nn.Module):
    """Identity that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


class TinyClassifier(pl.LightningModule):
    """Conv-BN-ReLU-pool, conv-ReLU, Dropout, global pooling, Linear: enough for every technique."""

    def __init__(self, in_channels: int = 3, lr: float = 0.1, momentum: float = 0.9) -> None:
        super().__init__()
        self.lr, self.momentum = lr, momentum
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


class TinyViT(TinyClassifier):
    """A timm ViT of two blocks on 32x32 inputs (patch 8: a 4x4 grid after the class token), with dropout."""

    def __init__(self, lr: float = 0.05, momentum: float = 0.9) -> None:
        import timm

        pl.LightningModule.__init__(self)
        self.lr, self.momentum = lr, momentum
        self.net = timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            img_size=32,
            patch_size=8,
            depth=2,
            embed_dim=32,
            num_heads=2,
            num_classes=NUM_CLASSES,
            drop_rate=0.1,
        )
        self.example_input_array = torch.zeros(1, 3, 32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RecordingCNNSee(CNNSee):
    """CNNSee that keeps the results of its last run that produced some (on rank 0), for tests to look at."""

    last_results = None

    def run(self, trainer, pl_module, **kwargs):
        results = super().run(trainer, pl_module, **kwargs)
        if results is not None:
            self.last_results = results
        return results


def make_loaders(
    count: int = 48, batch_size: int = 8, channels: int = 3, size: tuple[int, int] = (16, 20), seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(count, channels, *size, generator=generator)
    y = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    # make the class visible: brighten a class-dependent corner
    for cls in range(NUM_CLASSES):
        rows, cols = divmod(cls, 2)
        x[y == cls, :, rows * 8 : rows * 8 + 8, cols * 10 : cols * 10 + 10] += 1.5
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)
    val = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=batch_size)
    return train, val


def trainer_kwargs(tmp_path, **overrides) -> dict:
    kwargs = dict(
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="logs"),
        log_every_n_steps=1,
    )
    kwargs.update(overrides)
    return kwargs


def read_images(log_dir: str) -> dict[str, list[int]]:
    """``{tag: [steps]}`` of every image in the event files under ``log_dir``, read with TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(log_dir, size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return {tag: [event.step for event in accumulator.Images(tag)] for tag in accumulator.Tags()["images"]}


def make_cnn(seed: int = 0, *, dropout: bool = False, inplace: bool = False) -> nn.Sequential:
    """conv-BN-ReLU, strided conv-BN-ReLU, conv-ReLU, max-pool, linear: 12x12 RGB images, 5 classes.

    BatchNorm gets random affine parameters and running statistics far from (0, 1), so train-mode and eval-mode
    outputs differ clearly. The max-pool makes the gradient at ``relu3`` zero in most places.
    """
    torch.manual_seed(seed)
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1),
        bn1=nn.BatchNorm2d(6),
        relu1=nn.ReLU(inplace=inplace),
        conv2=nn.Conv2d(6, 8, 3, stride=2, padding=1),
        bn2=nn.BatchNorm2d(8),
        relu2=nn.ReLU(inplace=inplace),
        conv3=nn.Conv2d(8, 8, 3, padding=1),
        relu3=nn.ReLU(inplace=inplace),
        pool=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
    )
    if dropout:
        layers["drop"] = nn.Dropout(0.5)
    layers["fc"] = nn.Linear(72, 5)
    model = nn.Sequential(layers)
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.normal_(0.0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.3)
            bn.num_batches_tracked.fill_(7)
    return model


def torchcam_scorecam(model: nn.Module, images: torch.Tensor, layer: str, targets, batch_size: int = 32):
    """torchcam's raw Score-CAM map (``normalized=False``), on a copy of the model in eval mode."""
    from torchcam.methods import ScoreCAM

    model = copy.deepcopy(model).eval()
    with ScoreCAM(model, layer, batch_size=batch_size) as extractor:
        with torch.no_grad():
            model(images)
        if callable(targets) or (isinstance(targets, list) and callable(targets[0])):
            return extractor(targets=targets, normalized=False)[0]
        return extractor(class_idx=list(targets), normalized=False)[0]


def grad_cam_library_raw(cam_class, model: nn.Module, layer: str, images: torch.Tensor, targets, **kwargs):
    """pytorch-grad-cam's per-layer map before scaling: ``BaseCAM.forward`` up to ``np.maximum(cam, 0)``."""
    model = copy.deepcopy(model)
    module = dict(model.named_modules())[layer]
    extractor = cam_class(model=model, target_layers=[module], **kwargs)
    try:
        outputs = extractor.activations_and_grads(images)
        gradients = None
        if extractor.uses_gradients:
            sum(target(output) for target, output in zip(targets, outputs, strict=True)).backward()
            gradients = extractor.activations_and_grads.gradients[0].numpy()
        activations = extractor.activations_and_grads.activations[0].numpy()
        raw = extractor.get_cam_image(images, module, targets, activations, gradients, False)
    finally:
        extractor.activations_and_grads.release()
    return torch.from_numpy(np.maximum(raw, 0))


def assert_maps_close(actual: torch.Tensor, expected: torch.Tensor, model: nn.Module, amplification: float = 1) -> None:
    """Two float32 computations of one map (ours batched, the peer's its own way) agree up to the rounding of every
    sum on the way: the model's forward passes (``path_terms``), then the sum of the weighted channels, with twice
    the map's top value as magnitude, times ``amplification`` where a weight divides by a score (Ablation-CAM)."""
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    scale = float(expected.abs().max())
    assert scale > 0, "the reference map is all zero: the test would prove nothing"
    terms = path_terms(model) + actual.shape[-1] * actual.shape[-2] + 512  # + positions and channels, at most
    assert_within(actual, expected.float(), float32_tolerance(terms, 2 * scale * amplification))
    varying = expected.flatten(1).std(dim=1) > 0
    assert min(correlations(actual[varying], expected[varying])) >= 0.999


PATCH_SIZE, PATCH, PATCH_CORNERS = 24, 8, [(2, 2), (2, 14), (14, 2), (14, 14)]


CAM_LAYER = "relu3"


def make_patch_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images (3x24x24) whose class (0-3) is a bright 8x8 patch near one of the four corners."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, PATCH_SIZE, PATCH_SIZE, generator=generator)
    labels = torch.randint(0, len(PATCH_CORNERS), (count,), generator=generator)
    for label, (row, col) in enumerate(PATCH_CORNERS):
        images[labels == label, :, row : row + PATCH, col : col + PATCH] += 2.0
    return images, labels


def make_patch_model() -> nn.Sequential:
    """Three conv-ReLU blocks (16 channels; 24 -> 12 -> 6), global average pooling, linear: 4 classes."""
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 16, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(16, 16, 3, padding=1), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
            conv3=nn.Conv2d(16, 16, 3, padding=1), relu3=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(16, 4),
        )
    )  # fmt: skip


@functools.lru_cache(maxsize=1)
def trained_patch_model() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """``(initial, trained, images, labels)``: the model before and after 6 epochs of Adam on 512 patch images, and
    32 held-out images with their labels (the trained model gets all of them right). Cached: do not modify."""
    model = make_patch_model()
    initial = copy.deepcopy(model)
    images, labels = make_patch_images(512, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(6):
            for start in range(0, len(images), 32):
                loss = nn.functional.cross_entropy(model(images[start : start + 32]), labels[start : start + 32])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.zero_grad(set_to_none=True)
    held_out, held_out_labels = make_patch_images(32, seed=1)
    with torch.no_grad():
        assert (model(held_out).argmax(dim=1) == held_out_labels).all(), "the patch model did not learn its task"
    return initial, model, held_out, held_out_labels


def correlations(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return [
        float(torch.corrcoef(torch.stack([x.flatten(), y.flatten()]).double())[0, 1]) for x, y in zip(a, b, strict=True)
    ]


def wandb_history(run_folder: Path, timeout: float = 30.0) -> list[dict]:
    """The history rows of an offline W&B run, read from its ``run-*.wandb`` file once that holds the run's exit
    record (``finish()`` can return before W&B's service process has written it all)."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(run_folder)
        if any(record.WhichOneof("record_type") == "exit" for record in records) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row: dict = {}
            for item in record.history.item:
                keys = [item.key] if item.key else list(item.nested_key)
                target = row
                for key in keys[:-1]:
                    target = target.setdefault(key, {})
                target[keys[-1]] = json.loads(item.value_json)
            rows.append(row)
    return rows


def wandb_records(run_folder: Path) -> list:
    """The records of an offline W&B run's ``run-*.wandb`` file (LevelDB log format: a 7-byte file header, then
    32 KiB blocks of chunks, each with a 7-byte header: CRC-32, length, type FULL=1/FIRST/MIDDLE/LAST=4)."""
    from wandb.proto.wandb_internal_pb2 import Record

    [path] = run_folder.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, position = [], b"", 7
    while position + 7 <= len(data):
        left_in_block = 32768 - position % 32768
        if left_in_block < 7:
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if position + 7 + length > len(data):
            break  # a chunk still being written
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


EVIL = "</script><script>alert(1)</script>"


EVIL_TAG = "cnnsee/<script>alert(1)</script>"


RUNS = ["logs/version_0", "logs/version_1"]


CHART_SCALARS = {
    RUNS[0]: {
        "cnnsee/faithfulness/features.3/deletion": [(0, 0.61), (6, 0.52), (12, 0.40)],
        "cnnsee/faithfulness/features.3/deletion_random": [(0, 0.60), (6, 0.59), (12, 0.61)],
        "cnnsee/drift/features.3/vs_start": [(0, 0.0), (6, 0.35), (12, 0.55)],
        "cnnsee/drift/features.3/vs_previous": [(6, 0.35), (12, 0.21)],
        "cnnsee/overhead": [(6, 0.043), (12, 0.038)],
    },
    RUNS[1]: {
        "cnnsee/faithfulness/features.3/deletion": [(0, 0.58), (6, 0.47)],
        "cnnsee/faithfulness/features.3/deletion_random": [(0, 0.57), (6, 0.60)],
    },
}


_BUILT: dict[Path, Path] = {}  # the session's base temp folder -> the logs built in it


def review_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real fits with CNNSee under one folder (built once per test session, for test_review.py and test_browser.py).

    ``logs/version_0``: 2 epochs (CNNSee at steps 0, 6, 12), hyper-parameters ``lr=0.1`` and ``note=EVIL``, and an
    extra image under the tag ``EVIL_TAG`` at steps 0 and 12. ``logs/version_1``: 1 epoch (steps 0, 6), ``lr=0.05``.
    Both get the scalars of ``CHART_SCALARS``.
    """
    from torch.utils.tensorboard import SummaryWriter

    session = tmp_path_factory.getbasetemp()
    if session in _BUILT:
        return _BUILT[session]
    root = tmp_path_factory.mktemp("review_logs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for epochs, hparams in [(2, {"lr": 0.1, "note": EVIL}), (1, {"lr": 0.05, "note": "plain"})]:
            pl.seed_everything(epochs, verbose=False)
            logger = pl.loggers.TensorBoardLogger(str(root), name="logs")
            logger.log_hyperparams(hparams)
            train, val = make_loaders()
            callback = CNNSee(ascent_steps=3, num_samples=4, max_overhead=None)
            trainer = pl.Trainer(**trainer_kwargs(root, max_epochs=epochs, logger=logger, callbacks=[callback]))
            trainer.fit(TinyClassifier(), train, val)
        with SummaryWriter(str(root / RUNS[0])) as writer:
            for step, value in [(0, 0.2), (12, 0.9)]:
                writer.add_image(EVIL_TAG, torch.full((3, 5, 7), value), step)
        for run, scalars in CHART_SCALARS.items():
            with SummaryWriter(str(root / run)) as writer:
                for tag, series in scalars.items():
                    for step, value in series:
                        writer.add_scalar(tag, value, step)
    finally:
        torch.set_num_threads(threads)
    _BUILT[session] = root
    return root
