"""Writers: the images CNNSee logs come back from the event file pixel for pixel."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from lightning_cnnsee.sinks.writers import (
    Png,
    PngWriter,
    TensorBoardImageWriter,
    to_uint8_hwc,
    use_fast_checksums,
)


def test_tensorboard_image_writer_stores_the_exact_pixels_under_tag_and_step(tmp_path):
    image = torch.rand(3, 21, 34, generator=torch.Generator().manual_seed(0))
    writer = SummaryWriter(str(tmp_path))
    fast = TensorBoardImageWriter(writer)
    fast.add_image("cnnsee/classes", image, 7)
    fast.add_scalar("cnnsee/wall_time_s", 0.5, 7)
    writer.close()

    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    [stored] = events.Images("cnnsee/classes")
    assert (stored.step, stored.width, stored.height) == (7, 34, 21)
    decoded = np.asarray(Image.open(io.BytesIO(stored.encoded_image_string)))
    assert np.array_equal(decoded, to_uint8_hwc(image))
    assert [s.value for s in events.Scalars("cnnsee/wall_time_s")] == [0.5]


def test_tensorboard_image_writer_hands_other_writers_their_own_add_image():
    calls = []

    class OtherWriter:
        def add_image(self, tag, image, step):
            calls.append((tag, tuple(image.shape), step))

    TensorBoardImageWriter(OtherWriter()).add_image("t", torch.zeros(3, 2, 2), 3)
    assert calls == [("t", (3, 2, 2), 3)]


def test_tensorboard_image_writer_hands_other_writers_the_png_pixels_with_their_layout():
    calls = []

    class TensorBoardXLike:
        def add_image(self, tag, image, step, dataformats="CHW"):
            calls.append((tag, image, step, dataformats))

    image = torch.rand(1, 3, 5, generator=torch.Generator().manual_seed(2))
    TensorBoardImageWriter(TensorBoardXLike()).add_png("t", Png.encode(image), 4)
    [(tag, pixels, step, dataformats)] = calls
    assert (tag, step, dataformats) == ("t", 4, "HW")
    assert np.array_equal(pixels, to_uint8_hwc(image))


def test_png_holds_the_bytes_of_its_pixels():
    image = torch.rand(3, 6, 10, generator=torch.Generator().manual_seed(3))
    png = Png.encode(image)
    assert (png.channels, png.height, png.width) == (3, 6, 10)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.data))), png.pixels)


def test_png_writer_keeps_every_tag_inside_its_folder(tmp_path):
    root = tmp_path / "cnnsee"
    path = PngWriter(str(root)).add_image("../../escape/./x", torch.rand(3, 2, 2), 1)
    assert path == str(root / "_" / "_" / "escape" / "_" / "x" / "step_00000001.png")


def test_png_writer_files_hold_the_exact_pixels(tmp_path):
    image = torch.rand(3, 9, 5, generator=torch.Generator().manual_seed(1))
    path = PngWriter(str(tmp_path), strip_prefix="cnnsee/").add_image("cnnsee/filters/features.0", image, 12)
    assert path.endswith("filters/features.0/step_00000012.png")
    assert np.array_equal(np.asarray(Image.open(path)), to_uint8_hwc(image))


def test_fast_checksums_write_records_that_tensorboard_reads_and_verifies(tmp_path):
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    writer = SummaryWriter(str(tmp_path))
    assert use_fast_checksums(writer)
    for step in range(3):
        writer.add_scalar("loss", 1.0 / (step + 1), step)
        TensorBoardImageWriter(writer).add_image("cnnsee/classes", torch.rand(3, 40, 60), step)
    writer.close()
    [path] = list(tmp_path.glob("events.out.tfevents.*"))
    reader = PyRecordReader_New(str(path))  # checks both CRCs of every record, in Python
    records = 0
    while True:
        try:
            reader.GetNext()
        except Exception as end:  # OutOfRangeError at the end; a bad checksum would be DataLossError
            assert type(end).__name__ == "OutOfRangeError", end
            break
        records += 1
    assert records == 1 + 3 + 3  # the file version event, 3 scalars, 3 images


def python_checksums(monkeypatch) -> list[int]:
    """Count the records TensorBoard's pure-Python ``RecordWriter.write`` checksums (two CRCs a record)."""
    import tensorboard.summary.writer.record_writer as record_writer

    calls = []
    in_python = record_writer.masked_crc32c
    monkeypatch.setattr(record_writer, "masked_crc32c", lambda data: calls.append(len(data)) or in_python(data))
    return calls


def test_with_fast_checksums_no_record_is_checksummed_in_python(tmp_path, monkeypatch):
    calls = python_checksums(monkeypatch)
    plain = SummaryWriter(str(tmp_path / "plain"))
    plain.add_scalar("loss", 1.0, 0)
    plain.flush()
    assert calls, "the counter sees TensorBoard's own checksums: the test can tell the two apart"
    plain.close()
    calls.clear()
    writer = SummaryWriter(str(tmp_path / "fast"))
    fast = TensorBoardImageWriter(writer)
    for step in range(3):
        fast.add_image("cnnsee/classes", torch.rand(3, 40, 60), step)
        writer.add_scalar("loss", 1.0 / (step + 1), step)
    writer.close()
    assert len(calls) <= 2  # at most the file's version event, written on opening; not the 6 records (12 CRCs)


def test_a_closed_summary_writer_gets_fast_checksums_again_on_its_next_file(tmp_path, monkeypatch):
    writer = SummaryWriter(str(tmp_path))
    fast = TensorBoardImageWriter(writer)
    fast.add_image("a", torch.rand(3, 4, 4), 0)
    writer.close()
    calls = python_checksums(monkeypatch)
    fast.add_image("a", torch.rand(3, 4, 4), 1)  # SummaryWriter opens a second event file
    writer.close()
    assert calls[2:] == []  # the new file's version event is written on opening, before CNNSee's image
    assert len(calls) <= 2
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
