"""Replay: the pictures and numbers a live CNNSee would have logged, made afterwards from a run's checkpoints.

A run trained without CNNSee (or with it off) leaves checkpoints, one per epoch. :func:`replay` loads each one's
weights, in the order of its ``global_step``, into the model and has the given :class:`CNNSee` make, at that step,
the run it makes live, logged at that step to the given logger: the same fixed validation images, layers, pictures
and faithfulness and drift scalars. Drift (``cnnsee/drift/<map>/vs_start``) compares with the first checkpoint
replayed, where a live run compares with its baseline before the first optimizer step: the two agree when the
first checkpoint is the step-0 one. ``max_overhead`` does not apply (every checkpoint gets a complete run), and the
replay runs in one process, on one device.

A Lightning ``Trainer`` carries the logger and the callback, the way a live fit does: CNNSee's own ``setup`` opens
the logger's writers, its own validation hooks take the fixed images from a validation pass over the first
``num_sanity_val_steps`` batches (what a live fit's sanity check shows it), and its own ``run`` renders and writes.

Example::

    >>> import tempfile, torch, lightning.pytorch as pl
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from lightning_cnnsee import CNNSee, replay
    >>> from lightning_cnnsee.demo.train import ShapesClassifier
    >>> root = tempfile.mkdtemp()
    >>> model = ShapesClassifier(width=4)
    >>> images, labels = torch.randn(4, 3, 48, 48), torch.tensor([0, 1, 2, 3])
    >>> trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
    ...                      enable_model_summary=False, accelerator="cpu")
    >>> trainer.fit(model, DataLoader(TensorDataset(images, labels), batch_size=2))
    >>> trainer.save_checkpoint(f"{root}/last.ckpt")
    >>> summary = replay(
    ...     root, ShapesClassifier(width=4), val_dataloaders=DataLoader(TensorDataset(images, labels)),
    ...     callback=CNNSee(num_samples=2, techniques=["gradcam"]), accelerator="cpu",
    ...     logger=pl.loggers.CSVLogger(root, name="replay"), progress=False)
    >>> summary.replayed == [(f"{root}/last.ckpt", 2)], summary.skipped
    (True, [])
    >>> import os; os.listdir(f"{root}/replay/version_0/cnnsee/gradcam/features")
    ['step_00000002.png']
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_cnnsee.callback.cnnsee import CNNSee
from lightning_cnnsee.callback.compat import NAMESPACES, namespace_of, rank_zero_info, rank_zero_warn

__all__ = ["ReplaySummary", "find_checkpoints", "replay", "saved_hyper_parameters"]

CHECKPOINT_SUFFIX = ".ckpt"
PathLike = str | os.PathLike


@dataclass
class ReplaySummary:
    """What :func:`replay` did: the checkpoints replayed as ``(path, global_step)``, in order, the checkpoints
    skipped as ``(path, reason)``, and the logger's folder (``None`` for a logger without one)."""

    replayed: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    log_dir: str | None = None


class CheckpointProblem(Exception):
    """A checkpoint that cannot be replayed; the message says why."""


def find_checkpoints(paths: PathLike | Sequence[PathLike]) -> list[str]:
    """The checkpoint files among ``paths``: files as given, folders searched (recursively) for ``*.ckpt``.

    Raises ``FileNotFoundError`` naming a path that does not exist, or the folders when nothing is found.

    Example::

        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / "epoch=0-step=5.ckpt").touch(); (root / "notes.txt").touch()
        >>> [pathlib.Path(path).name for path in find_checkpoints(root)]
        ['epoch=0-step=5.ckpt']
    """
    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[str] = []
    for path in map(Path, given):
        if path.is_dir():
            found += sorted(str(file) for file in path.rglob(f"*{CHECKPOINT_SUFFIX}") if file.is_file())
        elif path.exists():
            found.append(str(path))
        else:
            raise FileNotFoundError(f"replay: checkpoint {str(path)!r} does not exist.")
    if not found:
        names = ", ".join(repr(str(path)) for path in given)
        raise FileNotFoundError(f"replay: no {CHECKPOINT_SUFFIX} file in {names or 'the paths given (none)'}.")
    return list(dict.fromkeys(found))


def load_checkpoint(path: str, *, weights_only: bool = True) -> dict[str, Any]:
    """The checkpoint at ``path``, on the CPU (memory-mapped when it can be); ``CheckpointProblem`` when it does not
    load or is no Lightning checkpoint (a ``state_dict`` and a ``global_step``)."""
    checkpoint: Any = None
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError as error:  # the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:
        hint = (
            " (a checkpoint holding other objects than tensors loads with weights_only=False, "
            "cnnsee replay --no-weights-only, if you trust it)"
            if weights_only and "weights_only" in str(error)
            else ""
        )
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointProblem(f"does not load: {type(error).__name__}: {first_line}{hint}") from error
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        keys = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointProblem(f"is not a Lightning checkpoint: no 'state_dict' (it holds {keys})")
    step = checkpoint.get("global_step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointProblem(f"has no global_step to replay it at (got {step!r})")
    return checkpoint


def saved_hyper_parameters(paths: Sequence[str], *, weights_only: bool = True) -> dict[str, Any]:
    """``hyper_parameters`` and ``datamodule_hyper_parameters`` of the first of ``paths`` that loads (what the run's
    ``save_hyperparameters()`` kept), as ``{key: dict}``; empty when none loads."""
    for path in paths:
        try:
            checkpoint = load_checkpoint(path, weights_only=weights_only)
        except CheckpointProblem:
            continue
        keys = ("hyper_parameters", "datamodule_hyper_parameters")
        return {key: dict(checkpoint[key]) for key in keys if isinstance(checkpoint.get(key), dict)}
    return {}


def misfit(model: nn.Module, state_dict: dict[str, Any], *, show: int = 5) -> str | None:
    """Why ``state_dict`` does not fit ``model`` strictly (missing or unexpected keys, other shapes), or ``None``."""
    own = model.state_dict()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    shapes = [
        f"{key} {tuple(value.shape)} (the model's: {tuple(own[key].shape)})"
        for key, value in state_dict.items()
        if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape
    ]
    problems = []
    for what, names in (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", shapes)):
        if names:
            more = f" and {len(names) - show} more" if len(names) > show else ""
            problems.append(f"{what} {', '.join(names[:show])}{more}")
    return "; ".join(problems) or None


def _folder_of(logger: Any) -> str | None:
    """The logger's run folder (``log_dir``), or ``None`` for a logger without one (W&B, MLflow...)."""
    try:
        folder = getattr(logger, "log_dir", None)
    except Exception:  # a property that needs what the logger lacks
        return None
    return folder if isinstance(folder, str) and folder else None


class _AtStep:
    """The trainer as CNNSee's ``run`` sees it at a checkpoint: everything the trainer's, but ``global_step``."""

    def __init__(self, trainer: Any, global_step: int) -> None:
        self._trainer = trainer
        self.global_step = global_step

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainer, name)


def _validation_images(namespace: Any, callback: CNNSee) -> Any:
    """A callback handing the validation batches to ``callback``'s own validation hooks (and nothing else: its
    ``setup`` belongs to the trainer with the logger)."""

    class ValidationImages(namespace.Callback):  # type: ignore[name-defined,misc]
        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):  # noqa: ANN001
            callback.on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

        def on_validation_epoch_end(self, trainer, pl_module):  # noqa: ANN001
            callback.on_validation_epoch_end(trainer, pl_module)

    return ValidationImages()


@contextlib.contextmanager
def _kept_as_found(model: nn.Module) -> Iterator[None]:
    """Each module's training flag and the model's device, given back after the block."""
    modes = [(module, module.training) for module in model.modules()]
    device = next((tensor.device for tensor in [*model.parameters(), *model.buffers()]), None)
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        if device is not None:
            model.to(device)


@contextlib.contextmanager
def _finalized(loggers: Sequence[Any]) -> Iterator[None]:
    """The loggers finalized after the block (their files flushed and closed), ``"failed"`` when it raised."""
    status = "failed"
    try:
        yield
        status = "success"
    finally:
        for logger in loggers:
            logger.finalize(status)


def _progress(items: list[Any], enabled: bool | None) -> Any:
    enabled = sys.stderr.isatty() if enabled is None else enabled
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="cnnsee replay", unit="checkpoint", file=sys.stderr)


def _check_arguments(model: Any, val_dataloaders: Any, datamodule: Any, callback: Any, num_sanity_val_steps: Any):
    lightning_modules = tuple(namespace.LightningModule for namespace in NAMESPACES.values())
    if not isinstance(model, lightning_modules):
        raise TypeError(f"replay(model={type(model).__name__}): must be a LightningModule (of the run's class).")
    if (val_dataloaders is None) == (datamodule is None):
        raise ValueError(
            "replay needs the run's validation data, as exactly one of val_dataloaders= (a DataLoader or a list of "
            f"them) or datamodule= (a LightningDataModule); got val_dataloaders={type(val_dataloaders).__name__}, "
            f"datamodule={type(datamodule).__name__}."
        )
    if not isinstance(callback, CNNSee):
        raise TypeError(f"replay(callback={type(callback).__name__}): must be a CNNSee (with the options to replay).")
    if callback.schedule.runs or callback.fixed.images is not None:
        raise ValueError(
            f"replay(callback=...): this CNNSee has run already ({callback.schedule.runs} runs, its images and drift "
            "kept); give a new CNNSee(...) with the same options."
        )
    if not isinstance(num_sanity_val_steps, int) or isinstance(num_sanity_val_steps, bool) or num_sanity_val_steps < -1:
        raise ValueError(
            f"replay(num_sanity_val_steps={num_sanity_val_steps!r}): must be a whole number >= 0, or -1 (every batch)."
        )


def order_checkpoints(
    paths: Sequence[str], model: nn.Module, *, weights_only: bool = True
) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """``(replayable, skipped)``: the checkpoints that load and fit ``model`` as ``(path, global_step)`` sorted by
    step (one per step: the first in ``paths`` order), and the others as ``(path, reason)``."""
    good: dict[int, str] = {}
    skipped: list[tuple[str, str]] = []
    for path in paths:
        try:
            checkpoint = load_checkpoint(path, weights_only=weights_only)
            step = int(checkpoint["global_step"])
            problem = misfit(model, checkpoint["state_dict"])
            del checkpoint
            if problem is not None:
                raise CheckpointProblem(f"does not fit {type(model).__name__}: {problem}")
            if step in good:
                raise CheckpointProblem(f"is at global_step {step}, as {good[step]}, replayed instead")
        except CheckpointProblem as problem:
            skipped.append((path, str(problem)))
            continue
        good[step] = path
    return [(good[step], step) for step in sorted(good)], skipped


def replay(
    checkpoints: PathLike | Sequence[PathLike],
    model: Any,
    val_dataloaders: Any = None,
    datamodule: Any = None,
    callback: CNNSee | None = None,
    logger: Any = None,
    *,
    accelerator: str = "auto",
    num_sanity_val_steps: int = 2,
    weights_only: bool = True,
    default_root_dir: PathLike | None = None,
    progress: bool | None = None,
) -> ReplaySummary:
    """Make, for each checkpoint in the order of its ``global_step``, the run a live ``callback`` would have made at
    that step, and log it at that step to ``logger``.

    Each checkpoint's ``state_dict`` is loaded into ``model`` strictly; a checkpoint that does not load, is no
    Lightning checkpoint, does not fit the model, or repeats a step already replayed is named with the reason (a
    warning) and skipped, and the rest are replayed. The last checkpoint replayed is the final run (the filter and
    class patterns, the drift sanity check); ``filters_every_n_runs`` counts as in a live run with a baseline at
    step 0. Gradients are on during the runs (also where Lightning's validation would turn them off); the model's
    modes and device are given back afterwards, with the weights of the last checkpoint replayed.

    Args:
        checkpoints: checkpoint files, or folders searched for ``*.ckpt``.
        model: the run's ``LightningModule``, built as for training (its weights are replaced).
        val_dataloaders: the run's validation loaders (or ``datamodule``).
        datamodule: the run's ``LightningDataModule`` (``prepare_data`` and ``setup("fit")`` as in the live fit).
        callback: the CNNSee to replay (default ``CNNSee()``), with the options of the live run to reproduce.
        logger: any logger CNNSee writes to (TensorBoard, CSV, W&B, MLflow...); default a ``TensorBoardLogger`` in
            ``<default_root_dir>/replay``. Nothing is written elsewhere.
        accelerator: Lightning's accelerator for the runs (one device).
        num_sanity_val_steps: the live run's ``Trainer(num_sanity_val_steps=)``: the fixed images come from the
            first this many validation batches, as the live sanity check's did (0: as many as ``num_samples`` takes;
            -1: every batch).
        weights_only: ``torch.load``'s safety switch; ``False`` only for checkpoints you trust that hold objects.
        default_root_dir: the folder of the default logger (default: the working directory).
        progress: a progress bar over the checkpoints on stderr (default: when stderr is a terminal).

    Returns:
        A :class:`ReplaySummary`.
    """
    callback = CNNSee() if callback is None else callback
    _check_arguments(model, val_dataloaders, datamodule, callback, num_sanity_val_steps)
    ordered, skipped = order_checkpoints(find_checkpoints(checkpoints), model, weights_only=weights_only)
    namespace = namespace_of(model)
    root = os.fspath(default_root_dir) if default_root_dir is not None else os.getcwd()
    if logger is None:
        logger = namespace.loggers.TensorBoardLogger(root, name="replay")
    settings = dict(
        accelerator=accelerator,
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
    )
    trainer = namespace.Trainer(logger=logger, callbacks=[callback], **settings)
    summary = ReplaySummary(skipped=skipped, log_dir=_folder_of(logger))
    for path, reason in skipped:
        rank_zero_warn(trainer, f"cnnsee replay skipped {path}: it {reason}.")
    if not ordered:
        return summary
    with _kept_as_found(model), _finalized(trainer.loggers):
        device = trainer.strategy.root_device
        model.to(device)
        callback.setup(trainer, model, "fit")
        _take_validation_images(namespace, callback, model, val_dataloaders, datamodule, num_sanity_val_steps, settings)
        if callback.fixed.images is None:
            raise ValueError(
                "replay: the validation data gave CNNSee no images (empty loaders, or batches without (N, C, H, W) "
                "images: set CNNSee(image_key=...))."
            )
        first_step = ordered[0][1]
        if "drift" in callback.options.techniques and first_step > 0:
            rank_zero_info(
                trainer,
                f"cnnsee replay: drift (cnnsee/drift/.../vs_start) compares with the maps of the first checkpoint "
                f"replayed, at step {first_step}; a live run compares with its baseline at step 0.",
            )
        if first_step > 0:  # a live run made its baseline at step 0: the patterns' run count starts after it
            callback.schedule.started(0, maps=True, patterns=callback.options.patterns)
        model.to(device).train()
        for index, (path, step) in enumerate(_progress(ordered, progress)):
            final = index == len(ordered) - 1
            checkpoint = load_checkpoint(path, weights_only=weights_only)
            model.load_state_dict(checkpoint["state_dict"], strict=True)
            del checkpoint
            maps, patterns = callback.schedule.wanted(step, "final" if final else "epoch", callback.options.patterns)
            callback.schedule.started(step, maps=maps, patterns=patterns)
            results = callback.run(
                _AtStep(trainer, step), model, include_patterns=patterns, include_maps=maps, final=final
            )
            if results is None:
                summary.skipped.append((path, "its run failed (see CNNSee's warning)"))
            else:
                summary.replayed.append((path, step))
    return summary


def _take_validation_images(
    namespace: Any,
    callback: CNNSee,
    model: Any,
    val_dataloaders: Any,
    datamodule: Any,
    num_sanity_val_steps: int,
    settings: dict[str, Any],
) -> None:
    """A validation pass (no logger) over the batches a live sanity check shows, through CNNSee's own hooks."""
    limit: int | float = num_sanity_val_steps or callback.options.num_samples
    if num_sanity_val_steps == -1:  # Lightning's "the whole validation set"
        limit = 1.0
    reader = namespace.Trainer(
        logger=False, callbacks=[_validation_images(namespace, callback)], limit_val_batches=limit, **settings
    )
    loaders = val_dataloaders
    if datamodule is not None:  # the stage of the live fit, whose validation loader the images came from
        datamodule.trainer = reader
        datamodule.prepare_data()
        datamodule.setup("fit")
        loaders = datamodule.val_dataloader()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            reader.validate(model, dataloaders=loaders, verbose=False)
    finally:
        if datamodule is not None:
            datamodule.teardown("fit")
            datamodule.trainer = None
