"""See what your CNN sees while it trains: CAMs, pixel attributions, filter ascent, activations, and how faithful
the maps are and how they change, logged to every logger of a Lightning Trainer.

The core (:func:`grad_cam` with every CAM method, :func:`attribute`, :func:`filter_ascent` with composable
objectives, :func:`capture_activations`, :func:`faithfulness`, :func:`spearman`, and :func:`visualize` for a whole
run) is pure PyTorch and works on any ``nn.Module``; :class:`CNNSee` is the Lightning callback built on it. Names are
imported on first use, so ``cnnsee report`` and ``cnnsee export`` start without loading torch or Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ALL_CAM_METHODS": "lightning_cnnsee.cam",
    "ATTRIBUTION_METHODS": "lightning_cnnsee.attributions",
    "AscentResult": "lightning_cnnsee.ascent",
    "CAM_METHODS": "lightning_cnnsee.cam",
    "CNNSee": "lightning_cnnsee.callback",
    "DriftTracker": "lightning_cnnsee.drift",
    "Objective": "lightning_cnnsee.objectives",
    "Options": "lightning_cnnsee.options",
    "Results": "lightning_cnnsee.visualization",
    "attribute": "lightning_cnnsee.attributions",
    "capture_activations": "lightning_cnnsee.activations",
    "channel": "lightning_cnnsee.objectives",
    "diversity": "lightning_cnnsee.objectives",
    "faithfulness": "lightning_cnnsee.metrics",
    "filter_ascent": "lightning_cnnsee.ascent",
    "grad_cam": "lightning_cnnsee.cam",
    "model_kind": "lightning_cnnsee.targets",
    "neuron": "lightning_cnnsee.objectives",
    "pick_layers": "lightning_cnnsee.layers",
    "random_faithfulness": "lightning_cnnsee.metrics",
    "render_results": "lightning_cnnsee.render",
    "sanity_check": "lightning_cnnsee.drift",
    "spearman": "lightning_cnnsee.drift",
    "visualize": "lightning_cnnsee.visualization",
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
