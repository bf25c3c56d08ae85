"""One technique's failure is its own: a run keeps every kind that worked and names the kind that failed.

Each part of a run (the CAMs, one attribution method, the faithfulness, the activations, the filter patterns of one
layer, the class patterns) runs inside :func:`contained`, which records an error as ``results.failures[unit]`` (the
error's type and message) instead of letting it take the other parts down. :func:`describe_unit` says a unit in
words, for the callback's warning.

Example::

    >>> from lightning_cnnsee.run.results import Results
    >>> results = Results()
    >>> with contained(results, "filters/features.4"):
    ...     raise RuntimeError("out of memory")
    >>> results.failures, describe_unit("filters/features.4")
    ({'filters/features.4': 'RuntimeError: out of memory'}, 'the filter patterns of features.4')
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from lightning_cnnsee.run.results import Results

__all__ = ["contained", "describe_unit", "merge_failures"]

_WORDS = {
    "gradcam": "the CAMs",
    "attributions": "the {} attributions",
    "faithfulness": "the faithfulness scalars",
    "activations": "the activations",
    "filters": "the filter patterns of {}",
    "classes": "the class patterns",
}


@contextlib.contextmanager
def contained(results: Results, unit: str, strict: bool = False) -> Iterator[None]:
    """Run the block; an ``Exception`` in it is recorded as ``results.failures[unit]`` (first cause kept) and the
    run goes on. ``strict``: raise it instead."""
    try:
        yield
    except Exception as error:
        if strict:
            raise
        results.failures.setdefault(unit, f"{type(error).__name__}: {error}")


def describe_unit(unit: str) -> str:
    """A unit of a run (``"gradcam"``, ``"attributions/saliency"``, ``"filters/<layer>"``, ...) in words."""
    kind, _, name = unit.partition("/")
    words = _WORDS.get(kind, kind)
    return words.format(name) if "{}" in words else words


def merge_failures(every_rank: Iterable[dict[str, str] | None]) -> dict[str, str]:
    """The failures of every rank's run in one dict (the first rank's cause of a unit kept)."""
    merged: dict[str, str] = {}
    for failures in every_rank:
        for unit, cause in (failures or {}).items():
            merged.setdefault(unit, cause)
    return merged
