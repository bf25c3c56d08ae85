"""TFRecord framing, the container of TensorBoard's event files, read and written with checksums in C.

Each record is ``uint64 length``, ``uint32 masked CRC-32C of those 8 bytes``, ``length`` bytes of data (one serialized
``Event``), ``uint32 masked CRC-32C of the data``; all little-endian. TensorBoard's own reader, without TensorFlow,
computes the CRC-32C in pure Python (about 9 MB/s); ``google-crc32c`` does it in C.

A bad checksum stops the reading of that file, as TensorBoard's reader does (``DataLossError``: it keeps what it read
before and ignores the rest of the file); unlike TensorBoard, which says so only in a debug log, :func:`iter_records`
raises :class:`ChecksumError`, naming the file and the record's offset, so that the review can tell the user. A
record cut short at the end of the file (a run still being written) ends the file quietly, as in TensorBoard.

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


class ChecksumError(ValueError):
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

    The file is read sequentially; only the current record is held. Raises :class:`ChecksumError` at the first
    record whose length or data fails its checksum (the records before it have been yielded); a record cut short at
    the end of the file ends the iteration.
    """
    with open(path, "rb", buffering=chunk_bytes) as handle:
        offset = 0
        while True:
            header = handle.read(HEADER.size)
            if len(header) < HEADER.size:
                return
            length, length_crc = HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                raise ChecksumError(path, offset, "length")
            data = handle.read(length)
            footer = handle.read(FOOTER.size)
            if len(data) < length or len(footer) < FOOTER.size:
                return
            if masked_crc32c(data) != FOOTER.unpack(footer)[0]:
                raise ChecksumError(path, offset, "data")
            yield offset + HEADER.size, data
            offset += HEADER.size + length + FOOTER.size
