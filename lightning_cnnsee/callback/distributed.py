"""Collective steps of a visualization run under DDP, safe in a single process too.

Every rank calls these in the same order at the same scheduled points, or none of them calls any, so no rank can
wait for another forever. With one process they cost nothing.

Example::

    >>> from lightning_cnnsee.callback.distributed import rank_and_world
    >>> rank_and_world(object())
    (0, 1)
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = [
    "SHARDED_STRATEGIES",
    "all_ranks_agree",
    "broadcast_from_zero",
    "gather_objects",
    "gather_tensor",
    "rank_and_world",
    "refuse_sharded_strategies",
    "wait_for_all_ranks",
]

T = TypeVar("T")


def rank_and_world(trainer: Any) -> tuple[int, int]:
    """``(global_rank, world_size)`` of a trainer; ``(0, 1)`` for anything without them."""
    return int(getattr(trainer, "global_rank", 0)), int(getattr(trainer, "world_size", 1))


def all_ranks_agree(trainer: Any, decision: bool) -> bool:
    """True only if ``decision`` is true on every rank (one all-reduce under DDP)."""
    _, world_size = rank_and_world(trainer)
    if world_size == 1:
        return decision
    return bool(trainer.strategy.reduce_boolean_decision(decision, all=True))


def wait_for_all_ranks(trainer: Any) -> None:
    """A barrier under DDP (every rank waits until all arrive); nothing in a single process."""
    _, world_size = rank_and_world(trainer)
    if world_size > 1:
        trainer.strategy.barrier("cnnsee")


def broadcast_from_zero(trainer: Any, value: T) -> T:
    """Rank 0's ``value`` on every rank."""
    _, world_size = rank_and_world(trainer)
    if world_size == 1:
        return value
    return trainer.strategy.broadcast(value, src=0)


def gather_objects(trainer: Any, value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank."""
    _, world_size = rank_and_world(trainer)
    if world_size == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def gather_tensor(trainer: Any, tensor: Tensor) -> Tensor:
    """Stack every rank's ``tensor`` (same shape on all ranks) along a new first dimension, in rank order."""
    _, world_size = rank_and_world(trainer)
    if world_size == 1:
        return tensor[None]
    local = tensor.to(trainer.strategy.root_device).contiguous()  # NCCL needs the rank's own GPU
    gathered = [torch.empty_like(local) for _ in range(world_size)]
    torch.distributed.all_gather(gathered, local)
    return torch.stack(gathered).cpu()


SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


def refuse_sharded_strategies(trainer: Any) -> None:
    """Sharded strategies split the parameters across ranks; CNNSee needs the whole model on every rank."""
    names = [cls.__name__ for cls in type(getattr(trainer, "strategy", None)).__mro__]
    sharded = next((name for name in names if name in SHARDED_STRATEGIES), None)
    if sharded is not None:
        raise ValueError(
            f"CNNSee does not support the sharded strategy {sharded}: its visualizations run the whole model on "
            "each rank, and this strategy splits the parameters across ranks. Use strategy='ddp' (or 'ddp_spawn', "
            "'auto' on one device) while you visualize, or remove CNNSee from the callbacks for this run. "
            f"Sharded strategies refused: {list(SHARDED_STRATEGIES)}."
        )
