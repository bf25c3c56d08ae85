"""Both Lightning namespaces: ``lightning.pytorch`` (``import lightning as L``) and ``pytorch_lightning``.

They hold the same code under two names, and their classes are distinct: a ``pytorch_lightning.Callback`` is not a
``lightning.pytorch.Callback``. CNNSee subclasses the ``Callback`` of every namespace installed, so either Trainer
takes it, and asks the trainer it runs in which namespace to use for everything else (rank utilities,
``is_overridden``, loggers). Neither package is needed when the other is there.

Example::

    >>> from lightning_cnnsee.callback.compat import CALLBACK_BASES, NAMESPACES
    >>> len(CALLBACK_BASES) == len(NAMESPACES) >= 1
    True
"""

from __future__ import annotations

import contextlib
import importlib
import random
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import torch

__all__ = [
    "CALLBACK_BASES",
    "NAMESPACES",
    "NAMESPACE_NAMES",
    "is_overridden",
    "lightning",
    "namespace_of",
    "preserved_random_state",
    "rank_zero_info",
    "rank_zero_warn",
]

NAMESPACE_NAMES = ("lightning.pytorch", "pytorch_lightning")


def _installed() -> dict[str, ModuleType]:
    found = {}
    for name in NAMESPACE_NAMES:
        try:
            found[name] = importlib.import_module(name)
        except ImportError:
            continue
    return found


NAMESPACES = _installed()
if not NAMESPACES:
    raise ImportError(
        "CNNSee's callback needs PyTorch Lightning: pip install lightning (or pytorch-lightning), or "
        "pip install 'lightning-cnnsee[lightning]'. The core functions (grad_cam, attribute, filter_ascent, ...) "
        "work without it."
    )

#: The namespace the package's own Lightning code uses (the demo): ``lightning.pytorch`` where it is installed.
lightning: ModuleType = next(iter(NAMESPACES.values()))

#: ``Callback`` of each installed namespace: CNNSee subclasses them all.
CALLBACK_BASES: tuple[type, ...] = tuple(module.Callback for module in NAMESPACES.values())


def namespace_of(obj: Any) -> ModuleType:
    """The Lightning namespace module that ``obj`` (a Trainer, a LightningModule, a logger...) comes from; the
    first installed one for anything else."""
    for cls in type(obj).__mro__:
        for name, module in NAMESPACES.items():
            if cls.__module__ == name or cls.__module__.startswith(name + "."):
                return module
    return next(iter(NAMESPACES.values()))


def is_overridden(method: str, instance: Any) -> bool:
    """Whether ``instance`` (a LightningModule or LightningDataModule of either namespace) overrides ``method``."""
    namespace = namespace_of(instance)
    helpers = importlib.import_module(namespace.__name__ + ".utilities.model_helpers")
    return bool(helpers.is_overridden(method, instance))


def rank_zero_warn(trainer: Any, message: str) -> None:
    """A warning from global rank 0 only, through the trainer's own namespace (which knows the rank)."""
    if getattr(trainer, "is_global_zero", True):
        namespace_of(trainer).utilities.rank_zero_warn(message, stacklevel=2)


def rank_zero_info(trainer: Any, message: str) -> None:
    """An info log line from global rank 0 only, through the trainer's own namespace."""
    if getattr(trainer, "is_global_zero", True):
        namespace_of(trainer).utilities.rank_zero_info(message)


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Give Python's, NumPy's and torch's (CPU and current CUDA device) random states back after the block."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
