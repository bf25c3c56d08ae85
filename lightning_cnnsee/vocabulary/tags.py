"""The names CNNSee logs under: one vocabulary for the callback, the writers and the review, without torch.

A tag is ``cnnsee/<kind>/<subject>``: the prefix, the kind of picture or number (``gradcam``, ``filters``, ...), and
its subject, the layer or method it shows (``classes`` and the overhead scalars have none). Several CNNSee callbacks
in one Trainer keep apart by their instance, which goes right after the prefix: ``cnnsee/<instance>/<kind>/<subject>``
(the instance is ``CNNSee(name=...)``, or a name made from the options that differ).

Example::

    >>> from lightning_cnnsee.vocabulary.tags import make_tag, parse_tag, path_parts
    >>> make_tag("gradcam", "features.8")
    'cnnsee/gradcam/features.8'
    >>> make_tag("gradcam", "layer4", instance="layercam")
    'cnnsee/layercam/gradcam/layer4'
    >>> parse_tag("cnnsee/layercam/gradcam/layer4")
    Tag(instance='layercam', kind='gradcam', subject='layer4')
    >>> path_parts("cnnsee/gradcam/blocks[0]/conv")
    ['cnnsee', 'gradcam', 'blocks_0_', 'conv']
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "IMAGE_KINDS",
    "TAG_KINDS",
    "PREFIX",
    "SCALAR_KINDS",
    "Tag",
    "is_cnnsee_tag",
    "make_tag",
    "parse_tag",
    "path_parts",
    "safe_path_part",
    "tag_order",
]

PREFIX = "cnnsee"

#: Every kind, in the order a reader meets them (the report's sections, the export's folders).
IMAGE_KINDS = ("gradcam", "attributions", "filters", "classes", "activations")
SCALAR_KINDS = ("faithfulness", "localization", "drift", "overhead", "wall_time_s")
TAG_KINDS = IMAGE_KINDS + SCALAR_KINDS


class Tag(NamedTuple):
    """A parsed CNNSee tag: the instance (``""`` for an unnamed callback), the kind and the subject, the layer or
    method (``""`` when the kind has none)."""

    instance: str
    kind: str
    subject: str


def make_tag(kind: str, subject: str | None = None, *, instance: str | None = None) -> str:
    """``cnnsee[/<instance>]/<kind>[/<subject>]``; raises ``ValueError`` for a kind not in :data:`TAG_KINDS`."""
    if kind not in TAG_KINDS:
        raise ValueError(f"Unknown tag kind {kind!r}; valid kinds: {list(TAG_KINDS)}.")
    parts = [PREFIX, *([instance] if instance else []), kind, *([subject] if subject else [])]
    return "/".join(parts)


def is_cnnsee_tag(tag: str) -> bool:
    """Whether ``tag`` is one of CNNSee's (starts with ``cnnsee/``)."""
    return tag.startswith(PREFIX + "/")


def parse_tag(tag: str) -> Tag:
    """Split a CNNSee tag into instance, kind and subject (a tag of another shape gets kind ``""``)."""
    parts = tag.split("/")
    if not parts or parts[0] != PREFIX:
        return Tag("", "", tag)
    rest = parts[1:]
    if rest and rest[0] in TAG_KINDS:
        return Tag("", rest[0], "/".join(rest[1:]))
    if len(rest) >= 2 and rest[1] in TAG_KINDS:
        return Tag(rest[0], rest[1], "/".join(rest[2:]))
    return Tag("", "", "/".join(rest))


def tag_order(tags: Iterable[str]) -> list[str]:
    """Tags in reading order: by instance (first seen first), then kind as in :data:`TAG_KINDS`, anything else last;
    first-seen order within a kind (the order CNNSee logs its layers: by depth)."""
    tags = list(dict.fromkeys(tags))
    instances = list(dict.fromkeys(parse_tag(tag).instance for tag in tags))

    def key(item: tuple[int, str]) -> tuple[int, int, int]:
        index, tag = item
        parsed = parse_tag(tag)
        kind = TAG_KINDS.index(parsed.kind) if parsed.kind in TAG_KINDS else len(TAG_KINDS)
        return (instances.index(parsed.instance), kind, index)

    return [tag for _, tag in sorted(enumerate(tags), key=key)]


#: The longest file or folder name :func:`safe_path_part` makes (file systems refuse names over 255 bytes).
MAX_PART = 120


def safe_path_part(text: str) -> str:
    """One tag or run-name component as a file or folder name that stays inside its folder.

    Every character but ASCII letters, digits, ``.``, ``_`` and ``-`` becomes ``_`` (a run of them, one ``_``): so
    ``/``, ``\\``, newlines, NUL bytes and the undecodable bytes of a name that is not UTF-8 (``surrogateescape``)
    are gone; a name of dots only (``.``, ``..``) or an empty one becomes ``_``; a name longer than
    :data:`MAX_PART` is cut, with a checksum of the whole kept so that two long names stay apart. Layer names keep
    their dots.

    Example::

        >>> [safe_path_part(text) for text in ("features.8", "..", "a\\nb\\x00c", "run\\udcff")]
        ['features.8', '_', 'a_b_c', 'run_']
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    if not safe.strip("."):
        return "_"
    if len(safe) > MAX_PART:
        digest = zlib.crc32(text.encode("utf-8", "surrogatepass")) & 0xFFFFFFFF
        safe = f"{safe[: MAX_PART - 9]}_{digest:08x}"
    return safe


def path_parts(name: str) -> list[str]:
    """A tag or run name as safe folder names, one per ``/`` (or ``\\``) component, never leaving the folder they
    are joined to: the one rule of CNNSee's PNG and MLflow writers, ``cnnsee export`` and ``cnnsee report``.

    Example::

        >>> path_parts("cnnsee/gradcam/../../../etc/passwd")
        ['cnnsee', 'gradcam', '_', '_', '_', 'etc', 'passwd']
        >>> path_parts("/absolute/path")
        ['_', 'absolute', 'path']
    """
    return [safe_path_part(part) for part in re.split(r"[/\\]", name)]
