"""The input normalization a fit's pictures and patterns use: the one given, else the one found in the data.

Once the fixed images are shared, :meth:`InputNormalization.settle` reads the normalization from the transforms of
the loader they came from (:func:`~lightning_cnnsee.run.normalization.find_normalization`), on rank 0, and shares it
with every rank. It says once what it found and where; when nothing is found (or what is found is unclear) and the
images lie well outside [0, 1], it warns once with their range and how to set ``mean=`` and ``std=``. Given options
always win. What was found is part of the checkpoint, so a resumed fit shows the same pictures.

Example::

    >>> import warnings
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> from lightning_cnnsee.run.options import Options
    >>> normalization = InputNormalization()
    >>> images = (torch.rand(4, 3, 8, 8) - 0.5) / 0.25
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     normalization.settle(object(), Options(), images, DataLoader(TensorDataset(images)), "validation")
    >>> "lie well outside [0, 1]" in str(caught[0].message), normalization.options_for(Options()).mean
    (True, None)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor

from lightning_cnnsee.callback.compat import rank_zero_info, rank_zero_warn
from lightning_cnnsee.callback.distributed import broadcast_from_zero, rank_and_world
from lightning_cnnsee.run.normalization import (
    Normalization,
    UnclearNormalization,
    find_normalization,
    outside_unit_range,
)
from lightning_cnnsee.run.options import Options

__all__ = ["InputNormalization"]

IMAGENET = "mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]"


class InputNormalization:
    """The normalization found in a fit's data (``found``), once ``settled``; :meth:`options_for` applies it."""

    def __init__(self) -> None:
        self.found: Normalization | None = None
        self.settled = False
        self._options: tuple[Options, Options] | None = None  # (given, with the found normalization)

    def options_for(self, options: Options) -> Options:
        """``options`` with the found mean and std, unless ``mean=`` or ``std=`` was given (or nothing was found)."""
        if self.found is None or options.mean is not None or options.std is not None:
            return options
        if self._options is None or self._options[0] is not options:
            found = dataclasses.replace(options, mean=list(self.found.mean), std=list(self.found.std))
            self._options = (options, found)
        return self._options[1]

    def settle(self, trainer: Any, options: Options, images: Tensor, data: Any, role: str) -> None:
        """Find the normalization of ``data`` (the ``role`` loader the fixed ``images`` came from) once, say what was
        found, and warn when the images cannot be shown right. Every rank calls it at the same point (one
        broadcast of rank 0's finding); it never raises."""
        if self.settled:
            return
        self.settled = True
        found, problem = None, None
        if rank_and_world(trainer)[0] == 0:
            found, problem = _search(data, role, int(images.shape[1]))
        found, problem = broadcast_from_zero(trainer, (found, problem))
        given = options.mean is not None or options.std is not None
        if given:
            if found is not None and (list(found.mean), list(found.std)) != (options.mean, options.std):
                rank_zero_info(
                    trainer,
                    f"CNNSee uses the given mean={options.mean}, std={options.std}; the data itself was normalized "
                    f"with {found.describe()}.",
                )
            return
        self.found = found
        if found is not None:
            rank_zero_info(
                trainer,
                f"CNNSee input normalization: {found.describe()}. The pictures are shown de-normalized with it, and "
                "the filter and class patterns are optimized in [0, 1] and fed to the model normalized with it; set "
                "mean= and std= to use others.",
            )
            ranges = outside_unit_range(images, found.mean, found.std)
            if ranges is not None:
                rank_zero_warn(
                    trainer,
                    f"CNNSee: de-normalized with the normalization found ({found.describe()}), the fixed images still "
                    f"lie well outside [0, 1] (per channel: {_ranges(ranges)}): the batches seem to go through "
                    "another normalization than this one. Set CNNSee(mean=[...], std=[...]) to the one your model "
                    "sees.",
                )
            return
        ranges = outside_unit_range(images)
        if problem is None and ranges is None:
            return
        why = problem or f"no normalization was found in the {role} dataset's transforms"
        where = (
            f"The fixed images lie well outside [0, 1] (per channel: {_ranges(ranges)}), as normalized images do, "
            "so the pictures show them clamped to [0, 1] and the patterns are optimized for inputs in [0, 1]. "
            if ranges is not None
            else ""
        )
        channels = int(images.shape[1])
        if ranges is not None and all(low >= 0 for low, _ in ranges) and max(high for _, high in ranges) > 2:
            example = f"they look like pixels of 0..255: mean=[0.0] * {channels}, std=[1 / 255] * {channels}"
        else:
            example = f"ImageNet's: {IMAGENET}"
        rank_zero_warn(
            trainer,
            f"CNNSee could not take the input normalization from the data: {why}. {where}Set CNNSee(mean=[...], "
            f"std=[...]) to the values your images were normalized with ({example}).",
        )

    def state_dict(self) -> dict[str, Any]:
        found = None if self.found is None else dataclasses.asdict(self.found)
        return {"normalization": found, "normalization_settled": self.settled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        found = state.get("normalization")
        if found is not None:
            self.found = Normalization(tuple(found["mean"]), tuple(found["std"]), found.get("where", "a checkpoint"))
        self.settled = bool(state.get("normalization_settled", found is not None))


def _search(data: Any, role: str, channels: int) -> tuple[Normalization | None, str | None]:
    """The normalization of ``data`` for images of ``channels`` channels, or why there is none that can be used."""
    try:
        found = find_normalization(data, role)
        return (None, None) if found is None else (found.for_channels(channels), None)
    except UnclearNormalization as error:
        return None, str(error)
    except ValueError as error:
        return None, str(error)
    except Exception as error:  # a strange dataset must not end training
        return None, f"reading the {role} data's transforms failed ({type(error).__name__}: {error})"


def _ranges(ranges: list[tuple[float, float]]) -> str:
    return ", ".join(f"[{low:.2f}, {high:.2f}]" for low, high in ranges)
