"""TFRecord framing, the container of TensorBoard's event files, read and written with checksums in C.

Each record is ``uint64 length``, ``uint32 masked CRC-32C of those 8 bytes``, ``length`` bytes of data (one serialized
``Event``), ``uint32 masked CRC-32C of the data``; all little-endian. TensorBoard's own reader, without TensorFlow,
computes the CRC-32C in pure Python (about 9 MB/s); ``google-crc32c`` does it in C.

A damaged file is read up to the damage, as TensorBoard's reader does (``DataLossError``: it keeps what it read
before and ignores the rest of the file); unlike TensorBoard, which says so only in a debug log, :func:`iter_records`
then raises a :class:`DamagedFile` naming the file, what is wrong and where, so that the review can tell the user:
:class:`EmptyFile` (0 bytes), :class:`NotAnEventFile` (the first record's header fails its check),
:class:`ChecksumError` (a later record fails its check), :class:`CutRecord` (the file ends in the middle of a
record: still being written, or cut).

Example::

    >>> import io, tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "events.out.tfevents.0.host"
    >>> with path.open("wb") as handle:
    ...     write_record(handle, b"first"); write_record(handle, b"second")
    >>> [(offset, bytes(data)) for offset, data in iter_records(path)]
    [(12, b'first'), (33, b'second')]
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

__all__ = ["ChecksumError", "FOOTER", "HEADER", "MASK_DELTA", "iter_records", "masked_crc32c", "write_record"]

HEADER = struct.Struct("<QI")  # length, masked CRC-32C of the length
FOOTER = struct.Struct("<I")  # masked CRC-32C of the data
MASK_DELTA = 0xA282EAD8


class DamagedFile(ValueError):
    """An event file that cannot be read to its end; the records before the damage have been read. ``path``: the
    file; ``offset``: where the damage starts (bytes)."""

    path: str
    offset: int


class EmptyFile(DamagedFile):
    """An event file of 0 bytes (a writer that never wrote, or a copy that failed)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path, self.offset = os.fspath(path), 0
        super().__init__(f"{self.path}: is empty (0 bytes): nothing in it to read")


class CutRecord(DamagedFile):
    """An event file ending in the middle of a record: ``have`` of the record's ``need`` bytes are there."""

    def __init__(self, path: str | os.PathLike[str], offset: int, have: int, need: int, records: int) -> None:
        self.path, self.offset, self.have, self.need = os.fspath(path), offset, have, need
        super().__init__(
            f"{self.path}: ends mid-record: still being written, or cut (the record at byte {offset} has {have} of "
            f"its {need} bytes); the {records} record(s) before it are read"
        )


class ChecksumError(DamagedFile):
    """A record of an event file failed its CRC-32C check: the file is read no further.

    Attributes:
        path: the event file.
        offset: where the failing record starts in it (bytes).
        part: ``"length"`` (the record's header) or ``"data"``.
    """

    def __init__(self, path: str | os.PathLike[str], offset: int, part: str) -> None:
        self.path, self.offset, self.part = os.fspath(path), offset, part
        super().__init__(
            f"{self.path}: the record at byte {offset} failed its CRC-32C check ({part}); the rest of this file is "
            "skipped, as TensorBoard does"
        )


class NotAnEventFile(ChecksumError):
    """A file named as an event file whose first bytes are not a TFRecord header."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, 0, "length")
        ValueError.__init__(
            self, f"{self.path}: is not an event file (its first 12 bytes are not a record header); skipped"
        )


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC-32C of ``data`` (``lightning_cnnsee.sinks.writers.masked_crc32c``, without torch).

    Example::

        >>> hex(masked_crc32c(b"cnnsee"))
        '0x73d6bf3f'
    """
    crc = google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def write_record(handle: BinaryIO, data: bytes) -> None:
    """Append one record holding ``data`` to an open binary file."""
    header = struct.pack("<Q", len(data))
    handle.write(header + FOOTER.pack(masked_crc32c(header)) + data + FOOTER.pack(masked_crc32c(data)))


def iter_records(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """Each record of the file at ``path`` as ``(offset of its data in the file, data)``, checksums verified.

    The file is read sequentially; only the current record is held. Once the records before the damage have been
    yielded, raises a :class:`DamagedFile`: :class:`EmptyFile`, :class:`NotAnEventFile`, :class:`ChecksumError` or
    :class:`CutRecord`.
    """
    with open(path, "rb", buffering=chunk_bytes) as handle:
        offset, records = 0, 0
        while True:
            header = handle.read(HEADER.size)
            if not header:
                if offset == 0:
                    raise EmptyFile(path)
                return
            if len(header) < HEADER.size:
                raise CutRecord(path, offset, len(header), HEADER.size, records)
            length, length_crc = HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                raise NotAnEventFile(path) if offset == 0 else ChecksumError(path, offset, "length")
            data = handle.read(length)
            footer = handle.read(FOOTER.size)
            if len(data) < length or len(footer) < FOOTER.size:
                need = HEADER.size + length + FOOTER.size
                raise CutRecord(path, offset, HEADER.size + len(data) + len(footer), need, records)
            if masked_crc32c(data) != FOOTER.unpack(footer)[0]:
                raise ChecksumError(path, offset, "data")
            yield offset + HEADER.size, data
            records += 1
            offset += HEADER.size + length + FOOTER.size
