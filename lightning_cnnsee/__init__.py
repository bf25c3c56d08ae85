"""See what your CNN sees while it trains: Grad-CAM, filter ascent and activations, logged to TensorBoard.

The core (:func:`grad_cam`, :func:`capture_activations`, :func:`filter_ascent`) is pure PyTorch and works on any
``nn.Module``; :class:`CNNSee` is the PyTorch Lightning callback built on it. Names are imported on first use, so
``cnnsee report`` and ``cnnsee export`` start without loading torch or Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_cnnsee.activations import capture_activations
    from lightning_cnnsee.ascent import AscentResult, filter_ascent
    from lightning_cnnsee.callback import CNNSee
    from lightning_cnnsee.cam import CAM_METHODS, grad_cam
    from lightning_cnnsee.layers import pick_layers

_WHERE = {
    "CAM_METHODS": "lightning_cnnsee.cam",
    "AscentResult": "lightning_cnnsee.ascent",
    "CNNSee": "lightning_cnnsee.callback",
    "capture_activations": "lightning_cnnsee.activations",
    "filter_ascent": "lightning_cnnsee.ascent",
    "grad_cam": "lightning_cnnsee.cam",
    "pick_layers": "lightning_cnnsee.layers",
}
__all__ = sorted(_WHERE)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lightning_cnnsee' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
