"""Each rank's share of a run's jobs, and the images put back in order: pure bookkeeping, no collectives.

Example::

    >>> from lightning_cnnsee.run.shares import split_jobs
    >>> split_jobs(list("abcde"), rank=1, world_size=2)
    ['b', 'd']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from torch import Tensor

__all__ = ["split_jobs", "unsplit"]

T = TypeVar("T")


def split_jobs(jobs: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's share of ``jobs``: every ``world_size``-th job from index ``rank`` (round robin)."""
    return list(jobs[rank::world_size])


def unsplit(per_rank: Tensor, count: int) -> Tensor:
    """Undo :func:`split_jobs`: ``per_rank[r, i]`` holds job ``i * world_size + r``; return jobs ``0..count-1``."""
    world_size, per = per_rank.shape[:2]
    ordered = per_rank.transpose(0, 1).reshape(world_size * per, *per_rank.shape[2:])
    return ordered[:count]
