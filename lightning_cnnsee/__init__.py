"""See what your CNN sees while it trains: CAMs, pixel attributions, filter ascent, activations, and how faithful
the maps are and how they change, logged to every logger of a Lightning Trainer.

The core (:func:`grad_cam` with every CAM method, :func:`attribute`, :func:`filter_ascent` with composable
objectives, :func:`capture_activations`, :func:`faithfulness`, :func:`energy_inside`,
:func:`pointing_game`, :func:`shared_spot`, :func:`spearman`, and :func:`visualize` for a whole
run) is pure PyTorch and works on any ``nn.Module``; :class:`CNNSee` is the Lightning callback built on it. Names are
imported on first use, so ``cnnsee report`` and ``cnnsee export`` start without loading torch or Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ALL_CAM_METHODS": "lightning_cnnsee.explain.cam",
    "ATTRIBUTION_METHODS": "lightning_cnnsee.explain.attributions",
    "AscentResult": "lightning_cnnsee.explain.ascent",
    "GRADIENT_CAM_METHODS": "lightning_cnnsee.explain.cam",
    "CNNSee": "lightning_cnnsee.callback.cnnsee",
    "DriftTracker": "lightning_cnnsee.explain.drift",
    "Objective": "lightning_cnnsee.explain.objectives",
    "Options": "lightning_cnnsee.run.options",
    "ReplaySummary": "lightning_cnnsee.callback.replay",
    "Results": "lightning_cnnsee.run.results",
    "RunParts": "lightning_cnnsee.callback.run_config",
    "attribute": "lightning_cnnsee.explain.attributions",
    "capture_activations": "lightning_cnnsee.explain.activations",
    "default_cam": "lightning_cnnsee.explain.cam",
    "feature_map": "lightning_cnnsee.explain.tokens",
    "channel": "lightning_cnnsee.explain.objectives",
    "diversity": "lightning_cnnsee.explain.objectives",
    "energy_inside": "lightning_cnnsee.explain.localization",
    "faithfulness": "lightning_cnnsee.explain.metrics",
    "find_checkpoints": "lightning_cnnsee.callback.replay",
    "filter_ascent": "lightning_cnnsee.explain.ascent",
    "find_normalization": "lightning_cnnsee.run.normalization",
    "grad_cam": "lightning_cnnsee.explain.cam",
    "model_kind": "lightning_cnnsee.explain.targets",
    "neuron": "lightning_cnnsee.explain.objectives",
    "object_area": "lightning_cnnsee.explain.localization",
    "object_masks": "lightning_cnnsee.explain.localization",
    "pick_layers": "lightning_cnnsee.explain.layers",
    "pointing_game": "lightning_cnnsee.explain.localization",
    "random_faithfulness": "lightning_cnnsee.explain.metrics",
    "render_results": "lightning_cnnsee.render.images",
    "run_parts": "lightning_cnnsee.callback.run_config",
    "replay": "lightning_cnnsee.callback.replay",
    "sanity_check": "lightning_cnnsee.explain.drift",
    "shared_spot": "lightning_cnnsee.explain.localization",
    "spearman": "lightning_cnnsee.explain.drift",
    "token_layout": "lightning_cnnsee.explain.tokens",
    "visualize": "lightning_cnnsee.run.visualization",
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
