"""Gradient checkpointing off while a model is explained: every technique works on a model that checkpoints.

``torch.utils.checkpoint.checkpoint(fn, x, use_reentrant=True)`` (the default before PyTorch 2.4, still common in
model code) runs ``fn`` without autograd and replays it in the backward pass. Explaining such a model fails: its
output does not require grad when the input does not ("element 0 of tensors does not require grad"), a layer hooked
inside the segment gives activations outside the graph, and the reentrant backward refuses ``torch.autograd.grad``
("Checkpointing is not compatible with .grad()"). Checkpointing only trades memory for time during training; it does
not change what the segment computes. :func:`checkpointing_off` runs each reentrant checkpoint as a plain call of its
function while CNNSee explains the model (a handful of images: the memory saved is small), and restores it on exit,
also on error. It patches ``CheckpointFunction.apply``, where ``checkpoint`` sends every reentrant call, so it works
however the model imported ``checkpoint``. The non-reentrant variant (``use_reentrant=False``) supports
``torch.autograd.grad`` and is left as it is.

Example::

    >>> import torch
    >>> from torch.utils.checkpoint import checkpoint
    >>> layer = torch.nn.Linear(3, 1)
    >>> with checkpointing_off():
    ...     y = checkpoint(layer, torch.ones(1, 3), use_reentrant=True)
    >>> y.requires_grad  # a plain call: the parameters' graph is there
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["checkpointing_off"]


def _plain_call(function: Any, preserve_rng_state: bool, *args: Any) -> Any:
    """What ``CheckpointFunction.apply(function, preserve_rng_state, *args)`` computes, as a plain call."""
    return function(*args)


@contextlib.contextmanager
def checkpointing_off() -> Iterator[None]:
    """Reentrant gradient checkpoints run as plain calls inside the block (see the module); restored on exit.

    Example::

        >>> import torch.utils.checkpoint as cp
        >>> before = cp.CheckpointFunction.apply
        >>> with checkpointing_off():
        ...     cp.CheckpointFunction.apply is before
        False
        >>> cp.CheckpointFunction.apply == before
        True
    """
    try:
        from torch.utils.checkpoint import CheckpointFunction
    except ImportError:  # a PyTorch without the reentrant variant: nothing to turn off
        yield
        return
    own = CheckpointFunction.__dict__.get("apply", None)
    CheckpointFunction.apply = staticmethod(_plain_call)  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del CheckpointFunction.apply
        else:
            CheckpointFunction.apply = own  # type: ignore[method-assign]
