"""See what your CNN sees while it trains: Grad-CAM, filter ascent and activations, logged to TensorBoard.

The core (:func:`grad_cam`, :func:`capture_activations`, :func:`filter_ascent`) is pure PyTorch and works on any
``nn.Module``; :class:`CNNSee` is the PyTorch Lightning callback built on it.
"""

from lightning_cnnsee.activations import capture_activations
from lightning_cnnsee.ascent import AscentResult, filter_ascent
from lightning_cnnsee.callback import CNNSee
from lightning_cnnsee.cam import CAM_METHODS, grad_cam
from lightning_cnnsee.layers import pick_layers

__all__ = [
    "CAM_METHODS",
    "AscentResult",
    "CNNSee",
    "capture_activations",
    "filter_ascent",
    "grad_cam",
    "pick_layers",
]
__version__ = "0.1.0"
