"""The choices of CNNSee's options, in one torch-free module: the option checks, the core and the renderer read them
here, so there is one list of each and no module imports another just for a tuple.

Example::

    >>> from lightning_cnnsee.vocabulary.choices import CAM_SCALES
    >>> CAM_SCALES
    ('batch', 'image')
"""

from __future__ import annotations

__all__ = ["ALL_TECHNIQUES", "CAM_SCALES", "MODEL_KIND_CHOICES", "PARAMETERIZATIONS", "TECHNIQUES"]

#: How CAM maps are scaled to [0, 1] for display: over the whole batch, or each image on its own.
CAM_SCALES = ("batch", "image")
#: How filter ascent parameterizes the image it optimizes.
PARAMETERIZATIONS = ("fft", "pixel")
#: Every technique; all but ``"attributions"`` are on by default.
ALL_TECHNIQUES = (
    "gradcam",
    "attributions",
    "filters",
    "classes",
    "activations",
    "faithfulness",
    "drift",
    "localization",
)
TECHNIQUES = ("gradcam", "filters", "classes", "activations", "faithfulness", "drift", "localization")
#: ``cam_method="auto"``: the method measured best for the architecture (``benchmarks/transformers.py``): Grad-CAM for
#: CNNs and windowed-attention transformers (Swin), attention rollout for ViTs.
AUTO_CAM_METHOD = "auto"
#: What kind of model CNNSee explains (``"auto"``: found from the output and the labels).
MODEL_KIND_CHOICES = ("auto", "classification", "multilabel", "segmentation", "binary")
