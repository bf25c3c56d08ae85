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

from collections.abc import Collection

__all__ = ["known", "positive_int"]


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


def known(what: str, value: object, choices: Collection, *, sort: bool = False) -> object:
    """``value`` if it is one of ``choices``; otherwise ``ValueError: Unknown <what> <value>; valid choices: [...]``.

    Args:
        what: what the value names (``"CAM method"``), for the message.
        value: what was passed.
        choices: the valid values, listed in the message in their order (sorted with ``sort``).

    Example::

        >>> known("CAM scale", "run", ["batch", "image"])
        Traceback (most recent call last):
        ...
        ValueError: Unknown CAM scale 'run'; valid choices: ['batch', 'image'].
    """
    if value not in choices:
        listed = sorted(choices) if sort else list(choices)
        raise ValueError(f"Unknown {what} {value!r}; valid choices: {listed}.")
    return value
