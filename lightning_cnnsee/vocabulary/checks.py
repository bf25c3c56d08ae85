"""Checks of plain argument values that every floor shares (torch-free): each raises ``ValueError`` naming the
argument and the bad value.

Example::

    >>> positive_int("steps", 20)
    20
    >>> positive_int("batch_size", None, or_none=True) is None
    True
    >>> positive_int("steps", 0)
    Traceback (most recent call last):
    ...
    ValueError: steps must be a positive int, got 0.
"""

from __future__ import annotations

__all__ = ["positive_int"]


def positive_int(name: str, value: object, *, or_none: bool = False) -> int | None:
    """``value`` if it is an int >= 1 (not a bool), or ``None`` where ``or_none`` allows it.

    Args:
        name: the argument's name, for the message.
        value: what was passed.
        or_none: whether ``None`` (a default chosen later) is accepted.
    """
    if value is None and or_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if or_none else ''}, got {value!r}.")
    return value
