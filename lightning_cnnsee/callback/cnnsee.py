"""The Lightning callback: Lightning's hooks calling the pieces (images, schedule, visualize, render, writers).

Example::

    >>> import lightning.pytorch as pl
    >>> from lightning_cnnsee import CNNSee
    >>> trainer = pl.Trainer(callbacks=[CNNSee()], max_epochs=1, logger=False, enable_progress_bar=False)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from typing_extensions import override

from lightning_cnnsee.callback.compat import (
    CALLBACK_BASES,
    is_overridden,
    preserved_random_state,
    rank_zero_info,
    rank_zero_warn,
)
from lightning_cnnsee.callback.distributed import (
    all_ranks_agree,
    broadcast_from_zero,
    gather_objects,
    gather_tensor,
    rank_and_world,
    refuse_sharded_strategies,
    wait_for_all_ranks,
)
from lightning_cnnsee.callback.fixed_images import FixedImages
from lightning_cnnsee.callback.input_normalization import InputNormalization
from lightning_cnnsee.callback.schedule import Schedule
from lightning_cnnsee.explain.drift import DriftTracker
from lightning_cnnsee.explain.hooks import run_eagerly
from lightning_cnnsee.explain.layers import LayerPicks
from lightning_cnnsee.explain.targets import class_indices
from lightning_cnnsee.render.images import render_results
from lightning_cnnsee.render.scalars import failed_sanity_checks, run_scalars
from lightning_cnnsee.run.batches import BatchKey
from lightning_cnnsee.run.failures import describe_unit, merge_failures
from lightning_cnnsee.run.localization import fixed_accuracy, localization_numbers, shortcut_message
from lightning_cnnsee.run.objects import ObjectsError
from lightning_cnnsee.run.options import Options, default_name
from lightning_cnnsee.run.selection import (
    ChosenLayers,
    automatic_picks,
    check_layer_names,
    choose_from_picks,
    example_input,
)
from lightning_cnnsee.run.visualization import (
    Results,
    estimate_pattern_seconds,
    gather_measures,
    gather_patterns,
    model_images,
    visualize,
)
from lightning_cnnsee.sinks.guard import WriteGuard
from lightning_cnnsee.sinks.writers import ImageWriter, LogSinks
from lightning_cnnsee.vocabulary.choices import TECHNIQUES
from lightning_cnnsee.vocabulary.tags import make_tag

__all__ = ["AttributionMethod", "CNNSee", "CamMethod", "Technique"]

Technique = Literal[
    "gradcam", "attributions", "filters", "classes", "activations", "faithfulness", "drift", "localization"
]
CamMethod = Literal[
    "auto",
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "hirescam",
    "scorecam",
    "ablationcam",
    "eigencam",
    "gradient_rollout",
    "attention_rollout",
]
AttributionMethod = Literal[
    "saliency",
    "input_x_gradient",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "guided_backprop",
    "guided_gradcam",
]


class CNNSee(*CALLBACK_BASES):  # type: ignore[misc]
    """See what your CNN sees while it trains: Grad-CAM heat maps, filter and class ascent, activation grids.

    With no arguments it picks the layers itself (the last convolutional block for Grad-CAM, three conv layers
    spread through the depth for filters and activations, the last ``nn.Linear`` for classes), says which, and
    logs to every logger of the trainer at each epoch end, before the first optimizer step (a baseline), and at the
    end of training. The images are a fixed batch of ``num_samples`` validation images, taken from the batches
    Lightning passes through validation (the sanity check counts) and kept on the CPU. It subclasses the
    ``Callback`` of ``lightning.pytorch`` and of ``pytorch_lightning``, whichever are installed.

    Args:
        num_samples: how many validation images to follow.
        every_n_epochs: run at the end of every n-th training epoch (``None``: never by epochs).
        every_n_steps: run every n optimizer steps (``None``: never by steps).
        filters_every_n_runs: filter and class ascent, the costly part, only every n-th run (and always in the
            final run), as far as ``max_overhead`` allows.
        techniques: a list of any of ``"gradcam"``, ``"attributions"``, ``"filters"``, ``"classes"``,
            ``"activations"``, ``"faithfulness"`` (Average Drop, Increase in Confidence, deletion and insertion AUC of
            every map, beside the same numbers for random maps) and ``"drift"`` (each map's rank correlation with its
            map at the baseline run and at the previous run; a map that hardly changes while the model learns fails
            the randomization sanity check, said once) and ``"localization"`` (whether the maps sit on the objects
            of ``object_key``: ``cnnsee/localization/<layer or method>/energy_inside``, ``object_area``,
            ``pointing_game``; with or without objects, whether the maps of all images point at the same small place
            near the border: ``spot_area``, ``spot_edge``, ``spot_agreement``; a warning with the word "shortcut",
            once per layer or method, when the maps miss the objects or share such a spot while the model gets the
            fixed images right). All but ``"attributions"`` by
            default.
        layers: layer names (from ``model.named_modules()``) for Grad-CAM, filters and activations at once.
        gradcam_layers: layers for Grad-CAM (overrides ``layers``); each must output a (N, C, H, W) map, a Swin
            stage's (N, H, W, C) or a transformer's tokens (N, L, C) (read on the patch grid); for the rollout
            methods, layers holding a ViT's attention (``"net.blocks"``).
        filter_layers: conv layers for filter ascent (overrides ``layers``).
        activation_layers: layers whose feature maps are shown (overrides ``layers``).
        class_layer: the layer whose units are the classes (default: the last ``nn.Linear`` with one unit per
            class; without one, the model's output logits).
        cam_method: ``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``, ``"layercam"``, ``"hirescam"``, or a
            gradient-free ``"scorecam"``, ``"ablationcam"``, ``"eigencam"``, or for a ViT ``"gradient_rollout"``
            (Chefer et al., 2021) or ``"attention_rollout"`` (Abnar and Zuidema, 2020) on the layer holding its
            blocks. ``"auto"``: Grad-CAM for a CNN or Swin, ``"attention_rollout"`` for a ViT, chosen by
            measurement (``benchmarks/transformers.py``; said once at setup).
        cam_scale: ``"batch"`` (one colour scale for all heat maps of a run, so weak maps look weak) or
            ``"image"`` (each map stretched to its own maximum).
        cam_alpha: heat-map opacity over the image, in [0, 1].
        num_filters: how many channels per filter layer (the first ones) when ``filter_channels`` is not given.
        filter_channels: explicit channel indices for every filter layer.
        classes: class indices for the class patterns (default: the first ``max_classes``).
        max_classes: how many classes at most by default.
        class_names: names for captions, indexed by class.
        activation_channels: feature maps shown per image and layer.
        ascent_steps: gradient-ascent steps per filter or class image (fewer than ``filter_ascent``'s, to fit the
            default ``max_overhead``; ``benchmarks/README.md`` has the curve).
        ascent_lr: Adam learning rate of the ascent.
        parameterization: ``"fft"`` (decorrelated colour, Fourier basis) or ``"pixel"``.
        mean: per-channel mean of the input normalization, to show images (and optimize patterns) in [0, 1].
            Default: found in the transforms of the loader the images come from (torchvision's or albumentations'
            ``Normalize``, said once; see :mod:`lightning_cnnsee.run.normalization`), else none (a warning when
            the images lie well outside [0, 1]). Given, ``mean`` and ``std`` always win.
        std: per-channel standard deviation of the input normalization (found with ``mean``).
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
        name: this instance's name in the tags (``cnnsee/<name>/gradcam/...``) and its checkpoint state, for
            several CNNSee in one Trainer. Default: none for a single CNNSee; with several, each gets a name from
            the options that set it apart (``layercam``; ``default`` for the one at the defaults).
        attribution_methods: with ``"attributions"`` in ``techniques``, the pixel attributions shown (tags
            ``cnnsee/attributions/<method>``): any of ``"saliency"``, ``"input_x_gradient"``, ``"smoothgrad"``,
            ``"integrated_gradients"``, ``"occlusion"``, ``"guided_backprop"``, ``"guided_gradcam"``.
        num_diverse: filter and class patterns per channel, made different from each other (Lucid's diversity).
        faithfulness_steps: perturbation steps of the deletion and insertion curves.
        model_kind: ``"auto"`` (from the output and the labels, said once), ``"classification"``,
            ``"multilabel"`` (a map per label predicted or true) or ``"segmentation"`` (outputs (N, C, H, W), also
            in a dict such as ``{"out": ...}``: a map per class of the predicted mask) or ``"binary"`` (one logit
            per image, ``BCEWithLogitsLoss``: the map of the positive logit for a positive prediction, of its negative
            for a negative one; captions and faithfulness use its sigmoid).
        max_classes_per_image: segmentation: maps for at most this many classes per image (the largest areas).
        object_key: where a batch holds each image's object (an int for a tuple or list, a string for a dict):
            boxes (N, 4) ``(x0, y0, x1, y1)`` in pixels, a list of N (K, 4) boxes, or masks (N, H, W) (bool or in
            [0, 1]). The fixed images keep their objects (also in the checkpoint); objects of a wrong shape or boxes
            outside the image raise ``ValueError`` before training starts.

    Example::

        >>> import lightning.pytorch as pl
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
        cam_method: CamMethod = "auto",
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
        name: str | None = None,
        attribution_methods: list[AttributionMethod] = ["saliency", "integrated_gradients"],  # noqa: B006
        num_diverse: int = 1,
        faithfulness_steps: int = 20,
        model_kind: Literal["auto", "classification", "multilabel", "segmentation", "binary"] = "auto",
        max_classes_per_image: int = 3,
        object_key: BatchKey = None,
    ) -> None:
        super().__init__()
        arguments = dict(locals())
        del arguments["self"], arguments["__class__"]
        self.options = Options(**arguments)
        self.fixed = FixedImages(num_samples, image_key, label_key, object_key)
        self.schedule = Schedule(every_n_epochs, every_n_steps, filters_every_n_runs, max_overhead)
        self.instance: str | None = name
        self.choice: ChosenLayers | None = None
        self.sinks: ImageWriter = LogSinks()
        self.drift = DriftTracker()
        self._warned: set[str] = set()
        self.normalization = InputNormalization()  # found in the data, unless mean= or std= was given
        self._images_from = "validation"

    @property
    @override
    def state_key(self) -> str:
        """``CNNSee`` for default options; otherwise the name, or the options that differ from the defaults."""
        if self.options.name is not None:
            return self._generate_state_key(name=self.options.name)
        differing = self.options.differing(Options())
        return self._generate_state_key(**differing) if differing else type(self).__qualname__

    # ------------------------------------------------------------------ setup
    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        refuse_sharded_strategies(trainer)
        check_layer_names(pl_module, self.options)
        others = [callback.options for callback in trainer.callbacks if isinstance(callback, CNNSee)]
        self.instance = self.options.name or default_name(self.options, others)
        if self.choice is None and (example := example_input(pl_module)) is not None:
            try:
                with run_eagerly():
                    picks = automatic_picks(pl_module, example, self.options)
            except Exception:  # the model does not take this example: check on the first real images instead
                picks = None
            if picks is not None:
                self._adopt(trainer, picks, int(example.shape[1]))
        self.sinks = LogSinks.for_loggers(trainer.loggers, trainer.default_root_dir)
        self.sinks.guard = WriteGuard(lambda message: rank_zero_warn(trainer, message), strict=self.options.strict)
        (rank_zero_warn if self.sinks.falls_back else rank_zero_info)(trainer, self.sinks.describe())

    def _adopt(self, trainer: Any, picks: LayerPicks, channels: int) -> None:
        self.choice = choose_from_picks(picks, self.options, channels)
        rank_zero_info(
            trainer,
            f"CNNSee layers: {self.choice.describe()}. Set gradcam_layers=, filter_layers=, "
            "activation_layers=, class_layer= to choose others.",
        )

    # ---------------------------------------------------------- fixed images
    @override
    def on_validation_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if dataloader_idx == 0:
            self._collect(trainer, batch, "validation")

    def _collect(self, trainer: Any, batch: Any, source: str) -> None:
        try:
            if not self.fixed.frozen:
                self._images_from = source
            self.fixed.collect(batch)
        except ObjectsError:  # object_key given but its objects unreadable: refused before training, not skipped
            raise
        except ValueError as error:
            self._report(trainer, error, f"reading a {source} batch")

    @override
    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if 0 < self.fixed.count < self.options.num_samples and not self.fixed.shared:
            rank_zero_warn(
                trainer,
                f"CNNSee: validation gave only {self.fixed.count} images, fewer than "
                f"num_samples={self.options.num_samples}; following those.",
            )
        self._share(trainer, pl_module)

    def _share(self, trainer: Any, pl_module: Any) -> None:
        self.fixed.share(trainer)
        self._settle_normalization(trainer)
        if self.choice is None and self.fixed.images is not None:  # no example input could be run at setup
            example = model_images(self.fixed.images, pl_module, count=1)
            with run_eagerly():
                self._adopt(trainer, automatic_picks(pl_module, example, self.options), int(example.shape[1]))

    def _settle_normalization(self, trainer: Any) -> None:
        """Once the images are shared: the normalization of the loader they came from (every rank, same point)."""
        if self.normalization.settled or not self.fixed.shared or self.fixed.images is None:
            return
        validation = self._images_from == "validation" and trainer.val_dataloaders is not None
        data = trainer.val_dataloaders if validation else trainer.train_dataloader
        role = "validation" if validation else "training"
        self.normalization.settle(trainer, self.options, self.fixed.images, data, role)

    @property
    def options_in_use(self) -> Options:
        """The options a run uses: those given, with the normalization found in the data unless mean= or std=
        was given."""
        return self.normalization.options_for(self.options)

    # -------------------------------------------------------------- schedule
    @override
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.schedule.budget.start()

    @override
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if not self.fixed.shared:
            if _validation_runs(trainer, pl_module):  # no sanity check: read the first validation batches now
                with preserved_random_state():
                    for val_batch in _first_loader(trainer.val_dataloaders):
                        self._collect(trainer, val_batch, "validation")
                        if self.fixed.frozen:
                            break
            else:
                rank_zero_warn(
                    trainer,
                    "CNNSee: no validation data (no val_dataloaders, or limit_val_batches=0); "
                    f"following the first {self.options.num_samples} training images instead.",
                )
                self._collect(trainer, batch, "training")
            self._share(trainer, pl_module)
        if trainer.global_step == 0 and self.schedule.runs == 0:
            self._maybe_run(trainer, pl_module, "baseline")

    @override
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.schedule.due_after_step(trainer.global_step):
            self._maybe_run(trainer, pl_module, "step")

    @override
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.schedule.due_after_epoch(trainer.current_epoch):
            self._maybe_run(trainer, pl_module, "epoch")

    @override
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._maybe_run(trainer, pl_module, "final")
        wait_for_all_ranks(trainer)  # no rank may leave while the final run's gather is still reaching rank 0

    def _maybe_run(self, trainer: Any, pl_module: Any, reason: str) -> None:
        if self.fixed.images is None:
            return
        self._settle_normalization(trainer)  # a fit resumed from a checkpoint without it
        step, schedule = trainer.global_step, self.schedule
        wanted = schedule.wanted(step, reason, self.options.patterns)
        if wanted is None:
            return
        plan = broadcast_from_zero(trainer, self._plan(trainer, pl_module, reason, *wanted))
        if not plan.run:
            if reason not in ("baseline", "final") and schedule.deferring():
                rank_zero_info(
                    trainer,
                    f"CNNSee deferred a run at step {step} to stay within max_overhead="
                    f"{self.options.max_overhead:g} of training time; raise it (or set None) for more.",
                )
            return
        schedule.started(step, maps=plan.maps, patterns=plan.patterns)
        started = time.perf_counter()
        results = self.run(
            trainer, pl_module, include_patterns=plan.patterns, include_maps=plan.maps, final=reason == "final"
        )
        patterns_seconds = results.patterns_seconds if results is not None and plan.patterns else None
        schedule.finished(time.perf_counter() - started, maps=plan.maps, patterns_seconds=patterns_seconds)
        overhead = schedule.overhead()
        if overhead is not None and trainer.is_global_zero:
            try:  # a destination that cannot be written must not end training (LogSinks contains its own errors)
                self.sinks.add_scalar(make_tag("overhead", instance=self.instance), overhead, step)
            except Exception as error:
                self._report(trainer, error, "logging cnnsee/overhead")

    def _plan(self, trainer: Any, pl_module: Any, reason: str, maps: bool, patterns: bool) -> Any:
        """Rank 0's plan (its clock decides for every rank, so that all ranks meet in the same collectives)."""
        budget = self.schedule.budget
        if budget.max_overhead is None or not trainer.is_global_zero:
            return self.schedule.plan(reason, maps, patterns)
        if patterns and budget.patterns_seconds is None and self.choice is not None:
            started = time.perf_counter()
            try:
                with run_eagerly():
                    estimate = estimate_pattern_seconds(
                        pl_module, self.fixed.images, self.choice, self.options_in_use, *rank_and_world(trainer)
                    )
            except Exception:  # the run itself will meet (and report) the same error
                estimate = 0.0
            budget.add(time.perf_counter() - started)
            budget.record(patterns_seconds=estimate)
        plan = self.schedule.plan(reason, maps, patterns)
        if reason == "final" and patterns and not plan.patterns:
            rank_zero_info(
                trainer,
                f"CNNSee left the filter and class patterns out of the final run: they take "
                f"about {budget.patterns_seconds:.2f} s, and {max(budget.allowed(), 0.0):.2f} s of "
                f"max_overhead={self.options.max_overhead:g} of {budget.training_seconds():.1f} s of "
                "training is left. Raise max_overhead (or set it to None) to see them.",
            )
        return plan

    # ------------------------------------------------------------------- run
    def run(
        self,
        trainer: Any,
        pl_module: Any,
        *,
        include_patterns: bool = True,
        include_maps: bool = True,
        final: bool = False,
    ) -> Results | None:
        """Compute, render and log every visualization now, at ``trainer.global_step``; errors are contained.

        Under DDP every rank must call this at the same point: each rank optimizes its share of the patterns, the
        ranks decide together whether the run succeeded (so a failure on one rank cannot leave the others
        waiting), the patterns are gathered, and global rank 0 alone computes the maps, renders and writes.
        Returns the gathered results on rank 0 (``None`` elsewhere, or when the run failed). ``final``: the last
        run of the fit, where the maps' drift is checked whatever the number of runs.
        """
        if self.fixed.images is None:
            return None
        started = time.perf_counter()
        rank, world_size = rank_and_world(trainer)
        results, failure = None, None
        try:
            with run_eagerly():
                results = visualize(
                    pl_module,
                    self.fixed.images,
                    self.fixed.labels,
                    self.options_in_use,
                    choice=self.choice,
                    include_maps=include_maps,
                    include_patterns=include_patterns,
                    rank=rank,
                    world_size=world_size,
                    objects=self.fixed.objects,
                )
        except Exception as error:  # a visualization must never end training
            failure = error
        if not all_ranks_agree(trainer, failure is None):
            causes = gather_objects(trainer, None if failure is None else f"{type(failure).__name__}: {failure}")
            if failure is None:  # another rank failed: report its cause
                cause = next(c for c in causes if c is not None)
                failure = RuntimeError(f"rank {causes.index(cause)} failed with {cause}")
            self._report(trainer, failure, "a visualization run")
            return None
        assert results is not None
        try:
            if world_size > 1:  # a part that failed on any rank is left out, and named, on every rank
                results.failures = merge_failures(gather_objects(trainer, results.failures))
                results = gather_patterns(results, lambda tensor: gather_tensor(trainer, tensor))
                results = gather_measures(results, lambda value: gather_objects(trainer, value))
            if rank == 0:
                images = render_results(
                    results,
                    self.fixed.images,
                    self.fixed.labels,
                    self.options_in_use,
                    instance=self.instance,
                    objects=self.fixed.objects,
                )
                for tag, image in images.items():
                    self.sinks.add_image(tag, image, trainer.global_step)
                self.sinks.add_scalar(
                    make_tag("wall_time_s", instance=self.instance), time.perf_counter() - started, trainer.global_step
                )
                self._report_failures(trainer, results.failures)
        except Exception as error:  # after the last collective: rank 0 alone may fail here, safely
            self._report(trainer, error, "rendering or logging")
            return None
        if rank == 0:
            try:  # apart from the images: a number that cannot be made must not cost the pictures
                self._log_numbers(trainer, results, final)
            except Exception as error:
                self._report(trainer, error, "the faithfulness and drift scalars")
        return results if rank == 0 else None

    def _log_numbers(self, trainer: Any, results: Results, final: bool) -> None:
        """The faithfulness and drift scalars of a run; the model's kind and a failed sanity check, said once."""
        if results.logits is not None and "kind" not in self._warned:
            self._warned.add("kind")
            labels = "" if self.fixed.labels is None else f", labels {tuple(self.fixed.labels.shape)}"
            rank_zero_info(
                trainer,
                f"CNNSee sees a {results.kind} model (outputs {tuple(results.logits.shape)}"
                f"{labels}); set model_kind= to say otherwise.",
            )
        drift = self.drift if "drift" in self.options.techniques else None
        localization = localization_numbers(results) if "localization" in self.options.techniques else {}
        for tag, value in run_scalars(results, drift, instance=self.instance, localization=localization).items():
            self.sinks.add_scalar(tag, value, trainer.global_step)
        self._warn_shortcuts(trainer, results, localization)
        for verdict in failed_sanity_checks(self.drift, final=final) if drift is not None else ():
            if verdict.method not in self._warned:
                self._warned.add(verdict.method)
                rank_zero_warn(trainer, f"CNNSee: {verdict.message}")

    def _report_failures(self, trainer: Any, failures: dict[str, str]) -> None:
        """The parts of a run that failed (the others were logged), each said once per cause."""
        for unit, cause in failures.items():
            if f"{unit}: {cause}" not in self._warned:
                self._warned.add(f"{unit}: {cause}")
                rank_zero_warn(
                    trainer,
                    f"CNNSee could not make {describe_unit(unit)} ({unit}) at step {trainer.global_step} because of "
                    f"{cause}; every other kind was logged. Training goes on; CNNSee(strict=True) raises.",
                )

    def _warn_shortcuts(self, trainer: Any, results: Results, localization: dict[str, dict[str, float]]) -> None:
        """The shortcut warning (:func:`~lightning_cnnsee.run.localization.shortcut_message`), once per map, from its
        ``localization`` numbers."""
        accuracy = fixed_accuracy(results, class_indices(self.fixed.labels, results.kind))
        for name, numbers in localization.items():
            kind = "gradcam" if name in results.cams_predicted else "attributions"
            message = shortcut_message(name, numbers, accuracy, kind=kind, instance=self.instance)
            if message is not None and f"shortcut {name}" not in self._warned:
                self._warned.add(f"shortcut {name}")
                rank_zero_warn(trainer, message)

    def _report(self, trainer: Any, error: BaseException, during: str) -> None:
        if self.options.strict:
            raise error
        cause = f"{type(error).__name__}: {error}"
        if cause not in self._warned:
            self._warned.add(cause)
            rank_zero_warn(
                trainer, f"CNNSee skipped {during} because of {cause}. Training goes on; CNNSee(strict=True) raises."
            )

    # ------------------------------------------------------------ checkpoint
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            **self.fixed.state_dict(),
            **self.schedule.state_dict(),
            "drift": self.drift.state_dict(),
            **self.normalization.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.fixed.load_state_dict(state_dict)
        self.schedule.load_state_dict(state_dict)
        if "drift" in state_dict:
            self.drift.load_state_dict(state_dict["drift"])
        self.normalization.load_state_dict(state_dict)


def _validation_runs(trainer: Any, pl_module: Any) -> bool:
    """Whether this fit runs validation (so the fixed images can come from it). Without a sanity check the
    validation loader is not set up before training: it is set up here, as the sanity check would, with every
    random state kept; without any validation loader, Lightning's default ``val_dataloader`` raises."""
    if trainer.limit_val_batches == 0 or not is_overridden("validation_step", pl_module):
        return False
    if trainer.val_dataloaders is None:
        try:
            with preserved_random_state():
                trainer.fit_loop.epoch_loop.val_loop.setup_data()
        except Exception:  # no validation loader anywhere (Lightning's MisconfigurationException)
            return False
    return sum(trainer.num_val_batches) > 0


def _first_loader(loaders: Any) -> Any:
    """The first validation loader of ``trainer.val_dataloaders`` (a loader, or a list or dict of them)."""
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), [])
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else []
    return loaders
