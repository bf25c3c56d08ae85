"""A destination that cannot be written keeps training going: every write is tried, a failure is said once per kind
of cause with the path, later writes try again, and a destination that works again is said to.

The kinds of cause a user can act on (:data:`CAUSES`): a folder that is missing or a file where a folder should be
(``ENOENT``, ``ENOTDIR``, ``EEXIST``, ``EISDIR``), a permission refused or a read-only file system (``EACCES``,
``EPERM``, ``EROFS``), a full disk or quota (``ENOSPC``, ``EDQUOT``); any other error is its own kind (its type and
errno). :class:`WriteGuard` is what :class:`~lightning_cnnsee.sinks.writers.LogSinks` writes through.

Example::

    >>> import errno, warnings
    >>> guard = WriteGuard()
    >>> def full():
    ...     raise OSError(errno.ENOSPC, "No space left on device", "/logs/cnnsee/gradcam/step_00000001.png")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     guard.attempt("PNG files in /logs/cnnsee", full)
    ...     guard.attempt("PNG files in /logs/cnnsee", full)  # the same cause: said once
    ...     guard.attempt("PNG files in /logs/cnnsee", lambda: None)
    False
    False
    True
    >>> [str(warning.message)[:72] for warning in caught]  # doctest: +NORMALIZE_WHITESPACE
    ['CNNSee could not write /logs/cnnsee/gradcam/step_00000001.png: the disk ',
     'CNNSee writes to PNG files in /logs/cnnsee again (2 writes had failed).']
"""

from __future__ import annotations

import errno
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["CAUSES", "WriteGuard", "cause_of"]

#: Each kind of cause: the errno values it covers and what the user is told.
CAUSES: dict[str, tuple[frozenset[int], str]] = {
    "missing": (
        frozenset({errno.ENOENT, errno.ENOTDIR, errno.EEXIST, errno.EISDIR}),
        "a folder is missing, or a file stands where a folder should be",
    ),
    "permission": (
        frozenset({errno.EACCES, errno.EPERM, errno.EROFS}),
        "permission refused (a read-only folder or file system)",
    ),
    "full": (
        frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}),
        "the disk is full (or the quota used up)",
    ),
}


def cause_of(error: BaseException) -> tuple[str, str]:
    """The kind of cause of a failed write (a key of :data:`CAUSES`, or the error's type and errno) and its words.

    Example::

        >>> import errno
        >>> cause_of(PermissionError(errno.EACCES, "Permission denied", "/x"))[0]
        'permission'
        >>> cause_of(FileExistsError(errno.EEXIST, "File exists", "/x"))[0]
        'missing'
        >>> cause_of(ValueError("bad"))
        ('ValueError', 'ValueError: bad')
    """
    number = getattr(error, "errno", None)
    for kind, (numbers, words) in CAUSES.items():
        if isinstance(error, OSError) and number in numbers:
            return kind, words
    kind = type(error).__name__ + (f"[{number}]" if number is not None else "")
    return kind, f"{type(error).__name__}: {error}"


def path_of(error: BaseException, where: str) -> str:
    """The path an ``OSError`` names (the second one of a rename too), else the destination in words."""
    names = [getattr(error, name, None) for name in ("filename", "filename2")]
    names = [str(name) for name in names if name is not None]
    return " -> ".join(names) if names else where


@dataclass
class _State:
    failures: int = 0
    said: set[str] = field(default_factory=set)


class WriteGuard:
    """Runs writes to named destinations, containing their errors.

    Args:
        warn: how a message reaches the user (default: a ``UserWarning``).
        strict: re-raise the error instead (``CNNSee(strict=True)``).
    """

    def __init__(self, warn: Callable[[str], None] | None = None, strict: bool = False) -> None:
        self.warn = warn or _warn
        self.strict = strict
        self._states: dict[str, _State] = {}

    def attempt(self, where: str, write: Callable[[], object]) -> bool:
        """Call ``write`` for the destination ``where``; ``True`` if it worked. A failure is told once per kind of
        cause until the destination works again, which is told too."""
        state = self._states.setdefault(where, _State())
        try:
            write()
        except Exception as error:
            if self.strict:
                raise
            state.failures += 1
            kind, words = cause_of(error)
            if kind not in state.said:
                state.said.add(kind)
                reason = getattr(error, "strerror", None) or error
                detail = "" if words.startswith(type(error).__name__) else f" ({type(error).__name__}: {reason})"
                self.warn(
                    f"CNNSee could not write {path_of(error, where)}: {words}{detail}. Training goes on; CNNSee "
                    f"tries again at its next runs and says when writing to {where} works again."
                )
            return False
        if state.failures:
            self.warn(f"CNNSee writes to {where} again ({state.failures} writes had failed).")
            self._states[where] = _State()
        return True

    def failing(self) -> list[str]:
        """The destinations whose last write failed."""
        return [where for where, state in self._states.items() if state.failures]


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=4)
