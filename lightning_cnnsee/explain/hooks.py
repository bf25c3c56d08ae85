"""Context managers that touch a model only for as long as a ``with`` block lasts.

Every visualization in this package goes through these: forward hooks that record layer outputs, a hook that ends
the forward pass early, and a context that puts the model in eval mode. Each one restores what it changed in a
``finally`` clause, so nothing is left behind, also when the block raises.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from lightning_cnnsee.explain.hooks import record_outputs
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> with record_outputs(model, ["0"]) as outputs:
    ...     _ = model(torch.rand(2, 3, 8, 8))
    >>> outputs["0"].shape
    torch.Size([2, 4, 6, 6])
    >>> len(model[0]._forward_hooks)
    0
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from lightning_cnnsee.explain.layers import named_layers, plain_name, resolve_layer_names
from lightning_cnnsee.explain.registration import hooks_on

__all__ = [
    "StopForward",
    "eval_mode",
    "get_modules",
    "gradients_enabled",
    "graph_from",
    "record_outputs",
    "run_eagerly",
    "stop_after",
    "stop_hooks",
]


class StopForward(Exception):
    """Raised by :func:`stop_after` to end a forward pass once the layers of interest have run."""


def get_modules(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Return ``{name: module}`` for names of ``model.named_modules()``; raises ``ValueError`` naming close matches."""
    resolve_layer_names(model, names)
    layers = named_layers(model)
    return {name: layers[plain_name(name)] for name in names}


@contextlib.contextmanager
def record_outputs(model: nn.Module, names: Sequence[str], *, detach: bool = False) -> Iterator[dict[str, object]]:
    """Record the output of each named layer during the forward passes run inside the block.

    The first output of each layer is kept (a layer called twice keeps its first call). The recorded tensor is the
    one the layer returned; the hook hands a copy on to the rest of the network so that a later in-place operation
    (``nn.ReLU(inplace=True)``) cannot change the recorded values. With ``detach=True`` the recorded tensors carry
    no autograd graph.
    """
    modules = get_modules(model, names)
    outputs: dict[str, object] = {}

    def make_hook(name: str):
        def hook(module: nn.Module, args: object, output: object) -> object:
            if name in outputs:
                return None
            if isinstance(output, torch.Tensor):
                if not detach and torch.is_grad_enabled() and output.is_floating_point() and not output.requires_grad:
                    # computed without a graph (see graph_from): make it the leaf that gradients are taken against
                    output = output.detach().requires_grad_(True)
                outputs[name] = output.detach() if detach else output
                return output.clone()
            outputs[name] = output
            return None

        return hook

    with hooks_on((module, make_hook(name)) for name, module in modules.items()):
        yield outputs


@contextlib.contextmanager
def stop_hooks(model: nn.Module, names: Sequence[str]) -> Iterator[Callable[[], None]]:
    """Inside the block, a forward pass raises :class:`StopForward` once every named layer has produced its output
    since the last call of the function the block gets (which re-arms the hooks for the next pass; armed at first).

    Hooks registered before these (for example by :func:`record_outputs`) run first, so their records are complete
    when the pass stops. :func:`stop_after` is the one-pass form.
    """
    modules = get_modules(model, names)
    pending = set(names)

    def arm() -> None:
        pending.clear()
        pending.update(names)

    def make_hook(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            pending.discard(name)
            if not pending:
                raise StopForward(name)

        return hook

    with hooks_on((module, make_hook(name)) for name, module in modules.items()):
        yield arm


@contextlib.contextmanager
def stop_after(model: nn.Module, names: Sequence[str]) -> Iterator[None]:
    """End the forward pass (raise :class:`StopForward`) once every named layer has produced its output.

    The exception is swallowed when it leaves the block, so ``with stop_after(m, ["3"]): m(x)`` simply runs the
    network up to layer ``"3"``. Hooks registered before this context (for example by :func:`record_outputs`) run
    first, so their records are complete when the pass stops.
    """
    with stop_hooks(model, names):
        try:
            yield
        except StopForward:
            pass


@contextlib.contextmanager
def graph_from(model: nn.Module, names: Sequence[str]) -> Iterator[None]:
    """Inside the block, a forward pass records no autograd graph until the first of the named layers starts.

    Gradients with respect to those layers' outputs need the graph from there on only: the layers before them run as
    under ``torch.no_grad()``, faster and without keeping their activations. Use with :func:`record_outputs`, which
    makes a recorded output that came without a graph the leaf to differentiate against.
    """
    modules = get_modules(model, names)

    def start_graph(module: nn.Module, args: object) -> None:
        torch.set_grad_enabled(True)

    with hooks_on(((module, start_graph) for module in modules.values()), kind="forward_pre"):
        with torch.no_grad():  # restores the grad mode of before on the way out
            yield


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode inside the block and give each its own ``training`` flag back afterwards.

    Eval mode makes BatchNorm use (and not update) its running statistics and turns Dropout off, so each image is
    treated on its own and the training state is not disturbed.
    """
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def gradients_enabled() -> Iterator[None]:
    """Allow autograd inside the block, even inside ``torch.inference_mode()`` or ``torch.no_grad()``.

    Lightning runs validation under inference mode; a visualization started from a validation hook still needs
    gradients with respect to activations or input images.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def run_eagerly() -> Iterator[None]:
    """Inside the block, modules and functions wrapped by ``torch.compile`` run their eager originals.

    A compiled graph runs none of the forward hooks registered after it was traced, and tracing it again for a
    visualization would cost a recompilation of the training graph. ``torch.compiler.set_stance("force_eager")``
    runs the original Python code instead, hooks and all, and leaves the compiled graphs and their caches as they
    were. Without ``set_stance`` (torch < 2.6) the block runs as it is.
    """
    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    if set_stance is None:
        yield
        return
    with set_stance("force_eager"):
        yield
