"""Names read from the disk and the logs as text a page or a terminal can show: never a ``UnicodeEncodeError``.

A folder whose name is not valid UTF-8 comes to Python as a ``str`` holding lone surrogates (``surrogateescape``,
``os.fsdecode``); such a string cannot be written as UTF-8. :func:`readable` turns it into the text a reader should
see, each undecodable byte shown as the replacement character ``U+FFFD``. :data:`REPLACE` names an error handler that
does the same when a whole page is encoded (the net under every name that reached the page some other way).

Example::

    >>> import os
    >>> readable(os.fsdecode(b"run\\xff"))
    'run\\ufffd'
    >>> "run\\udcff".encode("utf-8", REPLACE)
    b'run\\xef\\xbf\\xbd'
"""

from __future__ import annotations

import codecs

__all__ = ["REPLACE", "readable"]

#: The error handler that encodes each unencodable character as ``U+FFFD`` (Python's ``"replace"`` gives ``?``).
REPLACE = "cnnsee.replace"


def _replace(error: UnicodeError) -> tuple[str | bytes, int]:
    if isinstance(error, UnicodeEncodeError):  # the UTF-8 encoder takes only ASCII text back: give it the bytes
        return "\ufffd".encode(error.encoding, "replace") * (error.end - error.start), error.end
    if isinstance(error, UnicodeDecodeError | UnicodeTranslateError):
        return "\ufffd" * (error.end - error.start), error.end
    raise error


codecs.register_error(REPLACE, _replace)


def readable(text: object) -> str:
    """``text`` as a string that encodes to UTF-8: the bytes a file system name could not decode (lone surrogates)
    become ``U+FFFD``; valid text is returned as it is.

    Example::

        >>> readable("layer\\udc80.conv"), readable("caf\\u00e9")
        ('layer\\ufffd.conv', 'café')
    """
    text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape" if _only_escapes(text) else REPLACE).decode("utf-8", "replace")
    return text


def _only_escapes(text: str) -> bool:
    """Whether every surrogate in ``text`` is one ``surrogateescape`` made (U+DC80 to U+DCFF)."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)
