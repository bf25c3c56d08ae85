"""The demo: synthetic shapes made in code (:mod:`.data`) and a small CNN trained on them with CNNSee
(:mod:`.train`). ``cnnsee demo`` runs it; the examples and configs use its classes.

Names are imported on first use (``lightning_cnnsee.demo.ShapesClassifier`` in a LightningCLI config), so
``lightning_cnnsee.demo.data`` loads without Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ShapesClassifier": "lightning_cnnsee.demo.train",
    "ShapesDataModule": "lightning_cnnsee.demo.train",
    "run_demo": "lightning_cnnsee.demo.train",
    "ShapesDataset": "lightning_cnnsee.demo.data",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lightning_cnnsee.demo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
