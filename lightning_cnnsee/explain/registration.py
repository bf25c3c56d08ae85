"""Hooks on modules for the length of a ``with`` block: registered inside ``try``, every one removed in ``finally``.

The one place that registers hooks for the package (:mod:`~lightning_cnnsee.explain.hooks`, the layer trace, the
CAMs' output replacement, guided backprop): a hook left behind would run on every training step after.

Example::

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> seen = []
    >>> with hooks_on([(model[0], lambda module, args, output: seen.append(output.shape))]):
    ...     _ = model(torch.zeros(3, 2))
    >>> seen, len(model[0]._forward_hooks)
    ([torch.Size([3, 2])], 0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from torch import nn

from lightning_cnnsee.vocabulary.checks import known

__all__ = ["HOOK_KINDS", "hooks_on"]

#: The kinds of hooks :func:`hooks_on` registers (by ``nn.Module.register_<kind>_hook``).
HOOK_KINDS = ("forward", "forward_pre")


@contextlib.contextmanager
def hooks_on(hooks: Iterable[tuple[nn.Module, Callable]], *, kind: str = "forward") -> Iterator[None]:
    """Register each ``(module, hook)`` for the block and remove them all when it ends, also when it raises or when
    registering one of them fails (those registered before are removed).

    Args:
        hooks: ``(module, hook)`` pairs, registered in this order (hooks of one module run in the order registered).
        kind: ``"forward"`` (``hook(module, args, output)``) or ``"forward_pre"`` (``hook(module, args)``).
    """
    known("hook kind", kind, HOOK_KINDS)
    handles = []
    try:
        for module, hook in hooks:
            handles.append(getattr(module, f"register_{kind}_hook")(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
