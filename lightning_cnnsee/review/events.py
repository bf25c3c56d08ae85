"""TensorBoard event files, read in one pass: CNNSee's images as places in the file, scalars as series, settings.

Each record is checked with the C CRC-32C (:mod:`.records`) and parsed as a ``tensorboard`` ``Event``; an image of a
CNNSee tag (``cnnsee/...``) is kept as a :class:`~.runs.FileRegion` of its PNG bytes inside the record, so reading
holds one image at a time, not the run. TensorBoard's ``EventAccumulator`` keeps every image in memory and checks
the records in pure Python (about 9 MB/s): `benchmarks/review.py` compares the two.

What is read, and how it differs from TensorBoard's reader:

- images (``Summary.Image``) of CNNSee tags; the other image tags are only named (for the error message when a
  log has no CNNSee images);
- scalars: ``simple_value`` (what ``SummaryWriter.add_scalar`` writes) and tensors of the ``scalars`` plugin
  (``tf.summary.scalar``);
- texts (the ``text`` plugin) and hyper-parameters (the ``hparams`` plugin's ``session_start_info``);
- at one tag and step, the value read last wins (a resumed run logs its steps again); TensorBoard's purging of
  "orphaned" steps after a ``SessionLog.START`` is not done (PyTorch's ``SummaryWriter`` never writes one);
- a damaged file (empty, not an event file, a record failing its checksum, cut mid-record) is read up to the damage,
  as in TensorBoard, and named in :attr:`.Run.problems` with what is wrong and where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_cnnsee.review.records import HEADER, DamagedFile, iter_records
from lightning_cnnsee.review.runs import FileRegion, Frame, RunLog, sniff_mime
from lightning_cnnsee.vocabulary.tags import is_cnnsee_tag

__all__ = ["EVENT_FILE_MARK", "EventReader", "is_event_file"]

EVENT_FILE_MARK = "tfevents"


def is_event_file(name: str) -> bool:
    return EVENT_FILE_MARK in name and not name.startswith(".")


class EventReader:
    """Reads the event files of one run into a :class:`~.runs.RunLog`, keeping what spans files (each tag's plugin,
    which TensorFlow writes only with a tag's first value; the last text of each tag; hparams records)."""

    def __init__(self, log: RunLog) -> None:
        from tensorboard.compat.proto import event_pb2

        self.log = log
        self._event = event_pb2.Event
        self._plugins: dict[str, str] = {}
        self._texts: dict[str, Any] = {}  # tag -> the last TensorProto
        self._hparams: list[bytes] = []

    def read(self, path: Path) -> None:
        """Every record of one event file; a failing checksum or an unreadable file becomes a problem line."""
        from google.protobuf.message import DecodeError

        try:
            for offset, data in iter_records(path):
                try:
                    event = self._event.FromString(data)
                except DecodeError:
                    start = offset - HEADER.size
                    self.log.problems.append(f"{path}: the record at byte {start} is not an Event; skipped")
                    continue
                if event.HasField("summary"):
                    self._summary(path, offset, data, int(event.step), event.summary)
        except DamagedFile as error:  # empty, not an event file, a failed checksum, cut mid-record
            self.log.problems.append(str(error))
        except OSError as error:
            self.log.problems.append(f"{path}: {error.strerror or error}")

    def _summary(self, path: Path, offset: int, data: bytes, step: int, summary: Any) -> None:
        for value in summary.value:
            tag = value.tag
            if value.HasField("metadata"):
                plugin = value.metadata.plugin_data.plugin_name
                if plugin:
                    self._plugins.setdefault(tag, plugin)
                if plugin == "hparams":
                    self._hparams.append(value.metadata.plugin_data.content)
            kind = value.WhichOneof("value")
            if kind == "image":
                if not is_cnnsee_tag(tag):
                    self.log.other_image_tags.add(tag)
                    continue
                image = value.image
                blob = image.encoded_image_string
                start = data.find(blob)  # where the PNG lies in the record: the frame keeps only that place
                region = FileRegion(str(path), offset + start, len(blob))
                self.log.add_image(
                    tag, Frame(step, None, image.width, image.height, source=region, mime=sniff_mime(blob[:8]))
                )
            elif kind == "simple_value":
                self.log.add_scalar(tag, step, value.simple_value)
            elif kind == "tensor":
                plugin = self._plugins.get(tag)
                if plugin == "scalars":
                    scalar = _scalar(value.tensor)
                    if scalar is not None:
                        self.log.add_scalar(tag, step, scalar)
                elif plugin == "text":
                    self._texts[tag] = value.tensor

    def finish(self) -> None:
        """Texts and hyper-parameters into the log, once every file is read."""
        self.log.hparams.update(_hparams(self._hparams))
        self.log.text.update(_texts(self._texts))


def _scalar(tensor: Any) -> float | None:
    from tensorboard.util import tensor_util

    try:
        return float(tensor_util.make_ndarray(tensor).item())
    except Exception:  # not a single number: not a scalar after all
        return None


def _hparams(contents: list[bytes]) -> dict[str, Any]:
    """The hyper-parameters of TensorBoard's hparams plugin (``session_start_info``), nested keys joined with ``.``,
    private ``_`` keys left out."""
    if not contents:
        return {}
    from google.protobuf.json_format import MessageToDict
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams: dict[str, Any] = {}
    for content in contents:
        try:
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
        except Exception:  # a corrupt or foreign record: skip it, keep the rest of the review
            continue
        if data.HasField("session_start_info"):
            for key, value in data.session_start_info.hparams.items():
                hparams[key.replace("/", ".")] = MessageToDict(value)
    return {key: value for key, value in hparams.items() if not key.startswith("_")}


def _texts(tensors: dict[str, Any]) -> dict[str, str]:
    """The last value of each text summary (``SummaryWriter.add_text``), named without ``/text_summary``."""
    if not tensors:
        return {}
    from tensorboard.util import tensor_util

    texts = {}
    for tag, tensor in tensors.items():
        try:
            array = tensor_util.make_ndarray(tensor)
        except Exception:  # not a readable text summary: skip it
            continue
        parts = [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in array.flat]
        name = tag[: -len("/text_summary")] if tag.endswith("/text_summary") else tag
        texts[name] = "\n".join(parts)
    return texts
