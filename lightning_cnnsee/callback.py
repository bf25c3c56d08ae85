"""The PyTorch Lightning callback: Grad-CAM, filter and class ascent, and activations in TensorBoard while training.

Example::

    >>> import pytorch_lightning as pl
    >>> from lightning_cnnsee import CNNSee
    >>> trainer = pl.Trainer(callbacks=[CNNSee()], max_epochs=1, logger=False, enable_progress_bar=False)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_cnnsee.activations import capture_activations
from lightning_cnnsee.ascent import AscentResult, filter_ascent
from lightning_cnnsee.batches import BatchKey, copy_to_cpu, split_batch
from lightning_cnnsee.budget import OverheadBudget, Plan
from lightning_cnnsee.cam import CAM_METHODS, cams_for_targets
from lightning_cnnsee.distributed import (
    all_ranks_agree,
    broadcast_from_zero,
    gather_objects,
    gather_tensor,
    rank_and_world,
    split_jobs,
    unsplit,
    wait_for_all_ranks,
)
from lightning_cnnsee.hooks import eval_mode, gradients_enabled
from lightning_cnnsee.layers import LayerPicks, pick_layers, resolve_layer_names
from lightning_cnnsee.render import denormalize, render_activations, render_gradcam, render_patterns
from lightning_cnnsee.writers import ImageWriter, PngWriter, tensorboard_writers

Technique = Literal["gradcam", "filters", "classes", "activations"]
CamMethod = Literal["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"]
TECHNIQUES: tuple[str, ...] = ("gradcam", "filters", "classes", "activations")
TAG_PREFIX = "cnnsee"


@dataclass
class _Results:
    """What one visualization run produced, before rendering."""

    logits: Tensor | None = None
    cams_predicted: dict[str, Tensor] = field(default_factory=dict)
    cams_true: dict[str, Tensor] = field(default_factory=dict)
    activations: dict[str, Tensor] = field(default_factory=dict)
    filters: dict[str, AscentResult] = field(default_factory=dict)
    classes: AscentResult | None = None
    pattern_jobs: list[tuple[str | None, int, str]] = field(default_factory=list)
    pattern_images: Tensor | None = None
    pattern_activations: Tensor | None = None


def _positive(name: str, value: int | float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        extra = " or None to turn it off" if allow_none else ""
        raise ValueError(f"{name} must be a positive number{extra}, got {value!r}.")


def _has_validation(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
    """Whether this fit will run validation at all (so the fixed images can come from it)."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    if trainer.limit_val_batches == 0 or not is_overridden("validation_step", pl_module):
        return False
    if sum(trainer.num_val_batches) > 0:
        return True
    source = getattr(getattr(trainer.fit_loop.epoch_loop, "val_loop", None), "_data_source", None)
    return bool(source.is_defined()) if source is not None else True


SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


def _refuse_sharded_strategies(trainer: pl.Trainer) -> None:
    """Sharded strategies split the parameters across ranks; CNNSee needs the whole model on every rank."""
    names = [cls.__name__ for cls in type(getattr(trainer, "strategy", None)).__mro__]
    sharded = next((name for name in names if name in SHARDED_STRATEGIES), None)
    if sharded is not None:
        raise ValueError(
            f"CNNSee does not support the sharded strategy {sharded}: its visualizations run the whole model on "
            "each rank, and this strategy splits the parameters across ranks. Use strategy='ddp' (or 'ddp_spawn', "
            "'auto' on one device) while you visualize, or remove CNNSee from the callbacks for this run. "
            f"Sharded strategies refused: {list(SHARDED_STRATEGIES)}."
        )


class CNNSee(pl.Callback):
    """See what your CNN sees while it trains: Grad-CAM heat maps, filter and class ascent, activation grids.

    With no arguments it picks the layers itself (the last convolutional block for Grad-CAM, three conv layers
    spread through the depth for filters and activations, the last ``nn.Linear`` for classes), says which, and
    logs to every TensorBoard logger of the trainer at each epoch end, before the first optimizer step (a
    baseline), and at the end of training. The images are a fixed batch of ``num_samples`` validation images,
    taken from the batches Lightning passes through validation (the sanity check counts) and kept on the CPU.

    Args:
        num_samples: how many validation images to follow.
        every_n_epochs: run at the end of every n-th training epoch (``None``: never by epochs).
        every_n_steps: run every n optimizer steps (``None``: never by steps).
        filters_every_n_runs: filter and class ascent, the costly part, only every n-th run (and always in the
            final run), as far as ``max_overhead`` allows.
        techniques: any of ``"gradcam"``, ``"filters"``, ``"classes"``, ``"activations"``.
        layers: layer names (from ``model.named_modules()``) for Grad-CAM, filters and activations at once.
        gradcam_layers: layers for Grad-CAM (overrides ``layers``); each must output a (N, C, H, W) map.
        filter_layers: conv layers for filter ascent (overrides ``layers``).
        activation_layers: layers whose feature maps are shown (overrides ``layers``).
        class_layer: the layer whose units are the classes (default: the last ``nn.Linear`` with one unit per
            class; without one, the model's output logits).
        cam_method: ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"layercam"`` or ``"hirescam"``.
        cam_scale: ``"batch"`` (one colour scale for all heat maps of a run, so weak maps look weak) or
            ``"image"`` (each map stretched to its own maximum).
        cam_alpha: heat-map opacity over the image, in [0, 1].
        num_filters: how many channels per filter layer (the first ones) when ``filter_channels`` is not given.
        filter_channels: explicit channel indices for every filter layer.
        classes: class indices for the class patterns (default: the first ``max_classes``).
        max_classes: how many classes at most by default.
        class_names: names for captions, indexed by class.
        activation_channels: feature maps shown per image and layer.
        ascent_steps: gradient-ascent steps per filter or class image (32, fewer than ``filter_ascent``'s 48: a
            run's ascent then costs half of what 64 steps at lr 0.2 cost and reaches 0.76 to 0.97 of their
            activation, and fits the default ``max_overhead`` of the demo).
        ascent_lr: Adam learning rate of the ascent.
        parameterization: ``"fft"`` (decorrelated colour, Fourier basis) or ``"pixel"``.
        mean: per-channel mean of the input normalization, to show images (and optimize patterns) in [0, 1].
        std: per-channel standard deviation of the input normalization.
        image_key: where the images are in a batch (an int for a tuple or list, a string for a dict).
        label_key: where the labels are in a batch.
        output_key: where the logits are when the model returns a tuple or dict.
        seed: seed of the ascent's own random generators (the global random state is never used).
        strict: re-raise an error inside a visualization instead of warning and going on.
        max_overhead: the most CNNSee may cost, as a fraction of training time (0.05: 5%), every run counted.
            CNNSee measures its runs and plans each one: the filter and class ascent (the costly part) only when
            a complete final run still fits afterwards, else the maps only (Grad-CAM, activations), else the run
            is deferred. The baseline and the final run always happen, at least with the maps; the final run has
            the patterns whenever they fit. ``None``: no limit, every run complete.

    Example::

        >>> import pytorch_lightning as pl
        >>> from lightning_cnnsee import CNNSee
        >>> callback = CNNSee(num_samples=4, every_n_steps=100, mean=[0.5] * 3, std=[0.25] * 3)
        >>> trainer = pl.Trainer(callbacks=[callback], max_steps=1, logger=False, enable_progress_bar=False)
    """

    def __init__(
        self,
        num_samples: int = 8,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        filters_every_n_runs: int = 1,
        techniques: Sequence[Technique] = TECHNIQUES,  # type: ignore[assignment]
        layers: list[str] | None = None,
        gradcam_layers: list[str] | None = None,
        filter_layers: list[str] | None = None,
        activation_layers: list[str] | None = None,
        class_layer: str | None = None,
        cam_method: CamMethod = "gradcam",
        cam_scale: Literal["batch", "image"] = "batch",
        cam_alpha: float = 0.5,
        num_filters: int = 8,
        filter_channels: list[int] | None = None,
        classes: list[int] | None = None,
        max_classes: int = 10,
        class_names: list[str] | None = None,
        activation_channels: int = 16,
        ascent_steps: int = 32,
        ascent_lr: float = 0.4,
        parameterization: Literal["fft", "pixel"] = "fft",
        mean: list[float] | None = None,
        std: list[float] | None = None,
        image_key: BatchKey = None,
        label_key: BatchKey = None,
        output_key: int | str | None = None,
        seed: int = 0,
        strict: bool = False,
        max_overhead: float | None = 0.05,
    ) -> None:
        super().__init__()
        for name, value in [
            ("num_samples", num_samples),
            ("filters_every_n_runs", filters_every_n_runs),
            ("num_filters", num_filters),
            ("max_classes", max_classes),
            ("activation_channels", activation_channels),
            ("ascent_lr", ascent_lr),
        ]:
            _positive(name, value)
        _positive("every_n_epochs", every_n_epochs, allow_none=True)
        _positive("every_n_steps", every_n_steps, allow_none=True)
        _positive("max_overhead", max_overhead, allow_none=True)
        if not isinstance(ascent_steps, int) or ascent_steps < 0:
            raise ValueError(f"ascent_steps must be an int >= 0, got {ascent_steps!r}.")
        unknown = [t for t in techniques if t not in TECHNIQUES]
        if isinstance(techniques, str) or unknown:
            raise ValueError(f"Unknown techniques {unknown or techniques!r}; valid choices: {list(TECHNIQUES)}.")
        if cam_method not in CAM_METHODS:
            raise ValueError(f"Unknown cam_method {cam_method!r}; valid choices: {sorted(CAM_METHODS)}.")
        if cam_scale not in ("batch", "image"):
            raise ValueError(f"Unknown cam_scale {cam_scale!r}; valid choices: ['batch', 'image'].")
        if parameterization not in ("fft", "pixel"):
            raise ValueError(f"Unknown parameterization {parameterization!r}; valid choices: ['fft', 'pixel'].")
        if not 0.0 <= cam_alpha <= 1.0:
            raise ValueError(f"cam_alpha must be in [0, 1], got {cam_alpha!r}.")
        for name, values in [("filter_channels", filter_channels), ("classes", classes)]:
            if values is not None and (not values or min(values) < 0):
                raise ValueError(f"{name} must be a non-empty list of indices >= 0, got {values!r}.")
        if mean is not None and std is not None and len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values {mean} but std has {len(std)} values {std}.")
        if std is not None and any(value <= 0 for value in std):
            raise ValueError(f"std values must be > 0, got {std}.")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.filters_every_n_runs = filters_every_n_runs
        self.techniques = tuple(techniques)
        self.layers = layers
        self.gradcam_layers = gradcam_layers
        self.filter_layers = filter_layers
        self.activation_layers = activation_layers
        self.class_layer = class_layer
        self.cam_method = cam_method
        self.cam_scale = cam_scale
        self.cam_alpha = cam_alpha
        self.num_filters = num_filters
        self.filter_channels = filter_channels
        self.classes = classes
        self.max_classes = max_classes
        self.class_names = class_names
        self.activation_channels = activation_channels
        self.ascent_steps = ascent_steps
        self.ascent_lr = ascent_lr
        self.parameterization = parameterization
        self.mean = mean
        self.std = std
        self.image_key = image_key
        self.label_key = label_key
        self.output_key = output_key
        self.seed = seed
        self.strict = strict
        self.max_overhead = max_overhead

        self._images: Tensor | None = None
        self._labels: Tensor | None = None
        self._frozen = False
        self._shared = False
        self._runs = 0
        self._last_step: int | None = None
        self._picks: LayerPicks | None = None
        self._activation_layers: list[str] = []
        self._warned: set[str] = set()
        self._writers: list[ImageWriter] = []
        self.last_results: _Results | None = None
        self.last_share = 0  # filter and class patterns this rank optimized in the last run
        self._budget = OverheadBudget(max_overhead)
        self._deferred = 0
        self._patterns_seconds = 0.0  # time of the filter and class ascent in the last run
        self._last_patterns_step: int | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        _refuse_sharded_strategies(trainer)
        for option in ("layers", "gradcam_layers", "filter_layers", "activation_layers"):
            names = getattr(self, option)
            if names is not None:
                try:
                    resolve_layer_names(pl_module, names)
                except ValueError as error:
                    raise ValueError(f"CNNSee({option}=...): {error}") from None
        if self.class_layer is not None:
            try:
                resolve_layer_names(pl_module, [self.class_layer])
            except ValueError as error:
                raise ValueError(f"CNNSee(class_layer=...): {error}") from None
        self._check_early(pl_module)
        self._writers = tensorboard_writers(list(trainer.loggers))
        if not self._writers and trainer.is_global_zero:
            folder = self._png_folder(trainer)
            names = [type(logger).__name__ for logger in trainer.loggers]
            rank_zero_warn(
                f"CNNSee found no TensorBoardLogger in trainer.loggers ({names}); writing PNG files under {folder}. "
                "Add pytorch_lightning.loggers.TensorBoardLogger to see the images in TensorBoard."
            )
            self._writers = [PngWriter(folder, strip_prefix=f"{TAG_PREFIX}/")]

    def _check_early(self, pl_module: pl.LightningModule) -> None:
        """Check the configuration against the model before any training step, on an example input when one can be
        had without loading data: ``example_input_array``, else a 64x64 input for the first conv layer. When neither
        runs, the same checks run on the first validation images (the sanity check, still before training)."""
        if self._picks is not None:
            return
        example = getattr(pl_module, "example_input_array", None)
        if not isinstance(example, Tensor):
            first_conv = next((m for m in pl_module.modules() if isinstance(m, torch.nn.Conv2d)), None)
            if first_conv is None:
                return
            example = torch.zeros(1, first_conv.in_channels, 64, 64)
        try:
            device, dtype = self._input_device_dtype(pl_module)
            picks = self._probe(pl_module, example.to(device=device, dtype=dtype))
        except Exception:  # the model does not take this example: check on the first real images instead
            return
        self._adopt_picks(picks, int(example.shape[1]))

    @staticmethod
    def _png_folder(trainer: pl.Trainer) -> str:
        root = trainer.log_dir if trainer.loggers and trainer.log_dir else trainer.default_root_dir
        return os.path.join(root, TAG_PREFIX)

    # ---------------------------------------------------------- fixed images
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._frozen or dataloader_idx != 0:
            return
        self._collect(batch, "validation")

    def _collect(self, batch: Any, source: str) -> None:
        """Add images (and labels) of ``batch`` to the fixed set until it holds ``num_samples``."""
        try:
            images, labels = split_batch(batch, self.image_key, self.label_key)
        except ValueError as error:
            self._report(error, f"reading a {source} batch")
            return
        have = 0 if self._images is None else self._images.shape[0]
        take = min(self.num_samples - have, images.shape[0])
        if take <= 0:
            return
        new_images = copy_to_cpu(images[:take])
        new_labels = None if labels is None else copy_to_cpu(labels[:take])
        if self._images is None:
            self._images, self._labels = new_images, new_labels
        else:
            self._images = torch.cat([self._images, new_images])
            if self._labels is not None and new_labels is not None:
                self._labels = torch.cat([self._labels, new_labels])
            else:
                self._labels = None
        if self._images.shape[0] >= self.num_samples:
            self._frozen = True

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._images is not None and self._images.shape[0] < self.num_samples and not self._shared:
            rank_zero_warn(
                f"CNNSee: validation gave only {self._images.shape[0]} images, fewer than num_samples="
                f"{self.num_samples}; following those."
            )
        self._share_images(trainer)
        self._check_on_images(pl_module)

    def _share_images(self, trainer: pl.Trainer) -> None:
        """Make rank 0's images the fixed images of every rank (once; a no-op in a single process)."""
        if self._shared:
            return
        self._images, self._labels = broadcast_from_zero(trainer, (self._images, self._labels))
        self._shared = self._frozen = self._images is not None

    def _check_on_images(self, pl_module: pl.LightningModule) -> None:
        """Check the configuration on the first real images when no example input could be run at setup."""
        if self._picks is None and self._images is not None:
            device, dtype = self._input_device_dtype(pl_module)
            with gradients_enabled():
                example = torch.nan_to_num(self._images[:1].to(device=device, dtype=dtype))
                self.resolve_layers(pl_module, example)

    # -------------------------------------------------------------- schedule
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._shared and not _has_validation(trainer, pl_module):
            rank_zero_warn(
                "CNNSee: no validation data (no val_dataloaders, or limit_val_batches=0); following the first "
                f"{self.num_samples} training images instead."
            )
            self._collect(batch, "training")
            self._share_images(trainer)
            self._check_on_images(pl_module)
        if trainer.global_step == 0 and self._runs == 0:
            self._maybe_run(trainer, pl_module, "baseline")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.every_n_steps and trainer.global_step > 0 and trainer.global_step % self.every_n_steps == 0:
            self._maybe_run(trainer, pl_module, "step")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._maybe_run(trainer, pl_module, "epoch")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_run(trainer, pl_module, "final")
        wait_for_all_ranks(trainer)  # no rank may leave while the final run's gather is still reaching rank 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._budget.start()

    def _maybe_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, reason: str) -> None:
        if self._images is None:
            return
        step = trainer.global_step
        maps = self._last_step != step
        if not maps and reason != "final":
            return
        patterns = (
            self._has_patterns()
            and self._last_patterns_step != step
            and (reason == "final" or self._runs % self.filters_every_n_runs == 0)
        )
        if not (maps or patterns):
            return
        plan = self._plan(trainer, pl_module, reason, maps, patterns)
        if not plan.run:
            if reason not in ("baseline", "final"):
                self._deferred += 1
                if self._deferred == 1:
                    rank_zero_info(
                        f"CNNSee deferred a run at step {step} to stay within max_overhead={self.max_overhead:g} of "
                        "training time; raise max_overhead (or set it to None) for more."
                    )
            return
        if maps:
            self._last_step = step
            self._runs += 1
        if plan.patterns:
            self._last_patterns_step = step
        started = time.perf_counter()
        self.run(trainer, pl_module, include_patterns=plan.patterns, include_maps=plan.maps)
        cost = time.perf_counter() - started
        self._budget.add(cost)
        patterns_seconds = self._patterns_seconds if plan.patterns else None
        maps_seconds = max(cost - (patterns_seconds or 0.0), 0.0) if plan.maps else None
        self._budget.record(maps_seconds=maps_seconds, patterns_seconds=patterns_seconds)
        training = self._budget.training_seconds()
        if training >= 1.0 and trainer.is_global_zero:
            for writer in self._writers:
                writer.add_scalar(f"{TAG_PREFIX}/overhead", self._budget.spent / training, step)

    def _has_patterns(self) -> bool:
        return "filters" in self.techniques or "classes" in self.techniques

    def _plan(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, reason: str, maps: bool, patterns: bool
    ) -> Plan:
        """What this run does within ``max_overhead``; rank 0's clock decides for every rank, so that all ranks run
        (and meet in collectives) together."""
        if self.max_overhead is None:
            return Plan(run=True, maps=maps, patterns=patterns)
        plan = None
        if trainer.is_global_zero:
            if patterns and self._budget.patterns_seconds is None:
                self._estimate_patterns(pl_module, *rank_and_world(trainer))
            plan = self._budget.plan(
                maps=maps, patterns=patterns, always=reason in ("baseline", "final"), final=reason == "final"
            )
            if reason == "final" and patterns and not plan.patterns:
                rank_zero_info(
                    f"CNNSee left the filter and class patterns out of the final run: they take about "
                    f"{self._budget.patterns_seconds:.2f} s, and {max(self._budget.allowed(), 0.0):.2f} s of "
                    f"max_overhead={self.max_overhead:g} of {self._budget.training_seconds():.1f} s of training is "
                    "left. Raise max_overhead (or set it to None) to see them."
                )
        return broadcast_from_zero(trainer, plan)

    def _estimate_patterns(self, pl_module: pl.LightningModule, rank: int, world_size: int) -> None:
        """Time this rank's share of the pattern ascent at 0 and 1 steps (about two steps of work) and extrapolate
        to ``ascent_steps``, so that the budget knows the cost before the first run with patterns."""
        started = time.perf_counter()
        try:
            with self._isolated(pl_module):
                images = self._model_images(pl_module, count=1)
                mine = split_jobs(self._pattern_jobs(self.resolve_layers(pl_module, images)), rank, world_size)
                shape = tuple(images.shape[1:])
                seconds = []
                for steps in (0, 1):
                    tic = time.perf_counter()
                    self._ascend(pl_module, mine, shape, steps)
                    seconds.append(time.perf_counter() - tic)
            estimate = seconds[0] + max(seconds[1] - seconds[0], 0.0) * self.ascent_steps
        except Exception:  # the run itself will meet (and report) the same error
            estimate = 0.0
        self._budget.add(time.perf_counter() - started)
        self._budget.record(patterns_seconds=estimate)

    # ------------------------------------------------------------------- run
    def run(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        *,
        include_patterns: bool = True,
        include_maps: bool = True,
    ) -> None:
        """Compute, render and log every visualization now, at ``trainer.global_step``; errors are contained.

        Under DDP every rank must call this at the same point: each rank optimizes its share of the filter and
        class patterns, the ranks decide together whether the run succeeded (so a failure on one rank cannot leave
        the others waiting), the patterns are gathered, and global rank 0 alone computes Grad-CAM and activations,
        renders and writes.
        """
        if self._images is None:
            return
        started = time.perf_counter()
        rank, world_size = rank_and_world(trainer)
        local: _Results | None = None
        failure: BaseException | None = None
        try:
            local = self._compute_local(pl_module, include_patterns, rank, world_size, include_maps=include_maps)
        except Exception as error:  # a visualization must never end training
            failure = error
        if not all_ranks_agree(trainer, failure is None):
            causes = gather_objects(trainer, None if failure is None else f"{type(failure).__name__}: {failure}")
            if failure is None:  # another rank failed: report its cause
                cause = next(c for c in causes if c is not None)
                failure = RuntimeError(f"rank {causes.index(cause)} failed with {cause}")
            if self.strict:
                raise failure
            self._report(failure, "a visualization run")
            return
        assert local is not None
        try:
            if local.pattern_jobs:
                local = self._gather_patterns(trainer, local)
            if rank == 0:
                for tag, image in self.render(local).items():
                    self._log_image(tag, image, trainer.global_step)
        except Exception as error:  # after the last collective: rank 0 alone may fail here, safely
            if self.strict:
                raise
            self._report(error, "rendering or logging")
            return
        elapsed = time.perf_counter() - started
        self.last_results = local if rank == 0 else None
        if rank == 0:
            for writer in self._writers:
                writer.add_scalar(f"{TAG_PREFIX}/wall_time_s", elapsed, trainer.global_step)

    def _report(self, error: BaseException, during: str) -> None:
        if self.strict:
            raise error
        cause = f"{type(error).__name__}: {error}"
        if cause in self._warned:
            return
        self._warned.add(cause)
        rank_zero_warn(f"CNNSee skipped {during} because of {cause}. Training goes on; CNNSee(strict=True) raises.")

    def _log_image(self, tag: str, image: Tensor, step: int) -> None:
        for writer in self._writers:
            writer.add_image(tag, image, step)

    # --------------------------------------------------------------- compute
    def _input_device_dtype(self, pl_module: pl.LightningModule) -> tuple[torch.device, torch.dtype]:
        for parameter in pl_module.parameters():
            if parameter.is_floating_point():
                return parameter.device, parameter.dtype
        return pl_module.device, torch.float32

    def resolve_layers(self, pl_module: pl.LightningModule, images: Tensor) -> LayerPicks:
        """Pick and check the layers to show (once, on an example input): the user's choices, automatic picks for
        the rest. Raises ``ValueError`` for a configuration that cannot work with this model."""
        if self._picks is None:
            self._adopt_picks(self._probe(pl_module, images), int(images.shape[1]))
        assert self._picks is not None
        return self._picks

    def _probe(self, pl_module: pl.LightningModule, example: Tensor) -> LayerPicks:
        with gradients_enabled(), eval_mode(pl_module), torch.no_grad():
            return pick_layers(pl_module, example[:1], output_key=self.output_key)

    def _adopt_picks(self, picks: LayerPicks, channels: int) -> None:
        if self.layers is not None:
            picks.gradcam = picks.features = list(self.layers)
        feature_layers = list(picks.features)
        if self.gradcam_layers is not None:
            picks.gradcam = list(self.gradcam_layers)
        picks.features = list(self.filter_layers) if self.filter_layers is not None else feature_layers
        activation_layers = list(self.activation_layers) if self.activation_layers is not None else feature_layers
        if self.class_layer is not None:
            picks.classes = self.class_layer
        self._check_layers(picks, activation_layers, channels)
        self._activation_layers = activation_layers
        rank_zero_info(
            f"CNNSee layers: Grad-CAM {picks.gradcam}, filters {picks.features}, activations "
            f"{self._activation_layers}, classes {picks.classes or 'model output'} "
            f"({picks.num_classes} classes). Set gradcam_layers=, filter_layers=, activation_layers=, class_layer= "
            "to choose others."
        )
        self._picks = picks

    def _check_layers(self, picks: LayerPicks, activation_layers: list[str], channels: int) -> None:
        shapes = picks.output_shapes
        maps = [name for name, shape in shapes.items() if len(shape) == 4]

        def require_map(option: str, names: list[str]) -> None:
            for name in names:
                shape = shapes.get(name)
                if shape is None or len(shape) != 4:
                    found = "did not run in the forward pass" if shape is None else f"outputs shape {shape}"
                    raise ValueError(
                        f"CNNSee({option}=...): layer {name!r} {found}, but it must output a (N, C, H, W) feature "
                        f"map. Layers with such maps: {maps[-12:]}."
                    )

        if "gradcam" in self.techniques:
            require_map("gradcam_layers", picks.gradcam)
        if "activations" in self.techniques:
            require_map("activation_layers", activation_layers)
        if "filters" in self.techniques:
            require_map("filter_layers", picks.features)
            if self.filter_channels is not None:
                for name in picks.features:
                    count = shapes[name][1]
                    bad = [c for c in self.filter_channels if c >= count]
                    if bad:
                        raise ValueError(
                            f"CNNSee(filter_channels=...): channels {bad} out of range for layer {name!r} with "
                            f"{count} channels (valid: 0..{count - 1})."
                        )
        if "classes" in self.techniques and self.classes is not None:
            if picks.num_classes is None:
                raise ValueError("CNNSee(classes=...): the model's output is not (N, num_classes) logits.")
            bad = [c for c in self.classes if c >= picks.num_classes]
            if bad:
                raise ValueError(
                    f"CNNSee(classes=...): classes {bad} out of range for {picks.num_classes} classes "
                    f"(valid: 0..{picks.num_classes - 1})."
                )
        for option in ("mean", "std"):
            values = getattr(self, option)
            if values is not None and len(values) != channels:
                raise ValueError(
                    f"CNNSee({option}={values}): {len(values)} values for images with {channels} channels; give one "
                    "value per channel."
                )

    def compute(self, pl_module: pl.LightningModule, *, include_patterns: bool = True) -> _Results:
        """Every visualization of the fixed images, in this process (no collectives); leaves the model exactly as
        it was (modes, gradients, statistics, hooks)."""
        return self._gather_patterns(None, self._compute_local(pl_module, include_patterns, 0, 1))

    def _pattern_jobs(self, picks: LayerPicks) -> list[tuple[str | None, int, str]]:
        """``(layer, channel, tag)`` for every filter and class pattern of a run, in a fixed order."""
        jobs: list[tuple[str | None, int, str]] = []
        if "filters" in self.techniques:
            for layer in picks.features:
                count = picks.output_shapes.get(layer, (0, self.num_filters))[1]
                for channel in self.filter_channels or range(min(self.num_filters, count)):
                    jobs.append((layer, channel, f"{TAG_PREFIX}/filters/{layer}"))
        if "classes" in self.techniques and picks.num_classes:
            for channel in self.classes or range(min(self.max_classes, picks.num_classes)):
                jobs.append((picks.classes, channel, f"{TAG_PREFIX}/classes"))
        return jobs

    @contextlib.contextmanager
    def _isolated(self, pl_module: pl.LightningModule) -> Iterator[None]:
        """Gradients on (also inside inference mode), and the global random state restored afterwards (the CPU's
        and, on a GPU, the module's device's)."""
        device, _ = self._input_device_dtype(pl_module)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), gradients_enabled():
            yield

    def _model_images(self, pl_module: pl.LightningModule, count: int | None = None) -> Tensor:
        """The first ``count`` fixed images (all by default) on the module's device in its dtype (float32 for
        integer images), NaN and Inf replaced."""
        assert self._images is not None
        device, dtype = self._input_device_dtype(pl_module)
        dtype = dtype if self._images.is_floating_point() else torch.float32
        return torch.nan_to_num(self._images[:count].to(device=device, dtype=dtype))

    def _compute_local(
        self,
        pl_module: pl.LightningModule,
        include_patterns: bool,
        rank: int,
        world_size: int,
        include_maps: bool = True,
    ) -> _Results:
        """This rank's part of a run: Grad-CAM and activations on rank 0 (unless ``include_maps`` is false), a share
        of the patterns on every rank."""
        results = _Results()
        with self._isolated(pl_module):
            images = self._model_images(pl_module)
            picks = self.resolve_layers(pl_module, images)
            maps = rank == 0 and include_maps
            if maps and "gradcam" in self.techniques and picks.gradcam:
                target_sets = [None] if self._labels is None else [None, self._labels.to(images.device)]
                cam_sets, results.logits = cams_for_targets(
                    pl_module, images, picks.gradcam, target_sets, self.cam_method, output_key=self.output_key
                )
                results.cams_predicted = cam_sets[0]
                if len(cam_sets) > 1:
                    results.cams_true = cam_sets[1]
            if maps and "activations" in self.techniques and self._activation_layers:
                results.activations = capture_activations(pl_module, images, self._activation_layers)
            patterns_started = time.perf_counter()
            if include_patterns:
                results.pattern_jobs = self._pattern_jobs(picks)
                mine = split_jobs(results.pattern_jobs, rank, world_size)
                self.last_share = len(mine)
                shape = tuple(images.shape[1:])
                per_rank = -(-len(results.pattern_jobs) // world_size)
                results.pattern_images, results.pattern_activations = self._ascend(
                    pl_module, mine, shape, self.ascent_steps, pad_to=per_rank
                )
            self._patterns_seconds = time.perf_counter() - patterns_started
        return results

    def _ascend(
        self,
        pl_module: pl.LightningModule,
        jobs: list[tuple[str | None, int, str]],
        shape: tuple[int, ...],
        steps: int,
        pad_to: int = 0,
    ) -> tuple[Tensor, Tensor]:
        """Images (max(len(jobs), pad_to), C, H, W) and activations of ``jobs``, on the CPU: one batched ascent per
        layer, in order (rows past ``len(jobs)`` stay zero)."""
        images = torch.zeros(max(len(jobs), pad_to), *shape)
        activations = torch.zeros(images.shape[0])
        for layer in dict.fromkeys(job[0] for job in jobs):
            indices = [i for i, job in enumerate(jobs) if job[0] == layer]
            found = filter_ascent(
                pl_module, layer, [jobs[i][1] for i in indices], shape, steps=steps, lr=self.ascent_lr,
                seed=self.seed, mean=self.mean, std=self.std, parameterization=self.parameterization,
                output_key=self.output_key,
            )
            images[indices] = found.images.cpu()
            activations[indices] = found.activations.cpu()
        return images, activations

    def _gather_patterns(self, trainer: pl.Trainer | None, results: _Results) -> _Results:
        """Collect every rank's patterns (one all-gather each for images and activations) into ``results``."""
        count = len(results.pattern_jobs)
        if not count:
            return results
        images = unsplit(gather_tensor(trainer, results.pattern_images), count)
        activations = unsplit(gather_tensor(trainer, results.pattern_activations), count)
        for tag in dict.fromkeys(job[2] for job in results.pattern_jobs):
            indices = [i for i, job in enumerate(results.pattern_jobs) if job[2] == tag]
            layer = results.pattern_jobs[indices[0]][0]
            found = AscentResult(
                layer=layer,
                channels=[results.pattern_jobs[i][1] for i in indices],
                images=images[indices],
                activations=activations[indices],
            )
            if tag == f"{TAG_PREFIX}/classes":
                results.classes = found
            else:
                results.filters[str(layer)] = found
        return results

    # ---------------------------------------------------------------- render
    def _class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return str(index)

    def render(self, results: _Results) -> dict[str, Tensor]:
        """Turn a run's results into ``{tag: (3, H, W) image}``."""
        assert self._images is not None
        display = denormalize(self._images, self.mean, self.std)
        rendered: dict[str, Tensor] = {}
        if results.cams_predicted and results.logits is not None:
            probabilities = results.logits.float().softmax(dim=-1).cpu()
            predicted = probabilities.argmax(dim=-1)
            labels = self._labels
            image_captions, predicted_captions, true_captions = [], [], []
            for index in range(display.shape[0]):
                guess = int(predicted[index])
                predicted_captions.append(f"pred {self._class_name(guess)}\np={probabilities[index, guess]:.2f}")
                if labels is not None:
                    truth = int(labels[index])
                    mark = "ok" if guess == truth else "WRONG"
                    image_captions.append(f"#{index} {mark}\nlabel {self._class_name(truth)}")
                    true_captions.append(f"true {self._class_name(truth)}\np={probabilities[index, truth]:.2f}")
                else:
                    image_captions.append(f"#{index}")
            mistakes = None if labels is None else predicted != labels.cpu()
            for layer, cam in results.cams_predicted.items():
                rows = [cam]
                captions = [predicted_captions]
                if layer in results.cams_true:
                    rows.append(results.cams_true[layer])
                    captions.append(true_captions)
                rendered[f"{TAG_PREFIX}/gradcam/{layer}"] = render_gradcam(
                    display, rows, captions, image_captions=image_captions, mistakes=mistakes,
                    alpha=self.cam_alpha, scale=self.cam_scale,
                )
        for layer, maps in results.activations.items():
            rendered[f"{TAG_PREFIX}/activations/{layer}"] = render_activations(
                display, maps, max_channels=self.activation_channels
            )
        for layer, result in results.filters.items():
            captions = [f"ch {c}\n{a:.2f}" for c, a in zip(result.channels, result.activations.tolist())]
            rendered[f"{TAG_PREFIX}/filters/{layer}"] = render_patterns(result.images, captions)
        if results.classes is not None:
            result = results.classes
            captions = [f"{self._class_name(c)}\n{a:.2f}" for c, a in zip(result.channels, result.activations.tolist())]
            rendered[f"{TAG_PREFIX}/classes"] = render_patterns(result.images, captions)
        return rendered

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "images": self._images,
            "labels": self._labels,
            "frozen": self._frozen,
            "runs": self._runs,
            "last_step": self._last_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._images = state_dict.get("images")
        self._labels = state_dict.get("labels")
        self._frozen = bool(state_dict.get("frozen", self._images is not None))
        self._shared = self._images is not None  # every rank loads the same checkpoint
        self._runs = int(state_dict.get("runs", 0))
        self._last_step = state_dict.get("last_step")
