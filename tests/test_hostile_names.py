"""Hostile names (``..``, absolute paths, newlines, NUL bytes, markup, names that are not UTF-8) never write outside the
folder asked for, never reach the page unescaped and never end the review in a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from lightning_cnnsee.review import export_images, write_report
from lightning_cnnsee.sinks.writers import PngWriter
from lightning_cnnsee.vocabulary.tags import path_parts, safe_path_part

HOSTILE = [
    "..",
    ".",
    "../../../../etc/passwd",
    "cnnsee/gradcam/../../../../escaped",
    "/absolute/path",
    "C:\\windows\\..\\..\\x",
    "line\nbreak",
    "nul\x00byte",
    os.fsdecode(b"not-utf8-\xff\xfe"),
    "",
    "x" * 1000,
]


def inside(root: str, parts: list[str]) -> bool:
    """Whether ``root`` joined with ``parts`` is ``root`` or below it, as the file system resolves it."""
    root = os.path.realpath(root)
    joined = os.path.realpath(os.path.join(root, *parts))
    return os.path.commonpath([root, joined]) == root and joined != root


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_path_parts_of_a_hostile_name_stay_inside_the_folder_and_can_be_created(tmp_path, name):
    parts = path_parts(name)
    assert inside(str(tmp_path), parts), parts
    for part in parts:
        assert part not in (".", "..", "") and "/" not in part and "\\" not in part and "\x00" not in part
        assert "\n" not in part and len(part.encode("utf-8")) <= 255
    os.makedirs(tmp_path.joinpath(*parts))  # a name the file system takes


def test_long_names_stay_apart_once_cut():
    assert safe_path_part("a" * 500 + "1") != safe_path_part("a" * 500 + "2")


def test_the_png_writer_keeps_a_hostile_tag_inside_its_folder(tmp_path):
    root = tmp_path / "logs" / "cnnsee"
    path = PngWriter(str(root)).add_image("cnnsee/gradcam/../../../../escaped", torch.rand(3, 4, 4), 1)
    assert os.path.commonpath([str(root), os.path.realpath(path)]) == str(root)


def _event_log(folder, tag: str) -> None:
    writer = SummaryWriter(str(folder))
    writer.add_image(tag, torch.rand(3, 8, 8), 0)
    writer.add_scalar("cnnsee/overhead", 0.01, 0)
    writer.close()


def test_export_writes_nothing_outside_its_folder_for_a_tag_with_several_parent_steps(tmp_path):
    _event_log(tmp_path / "logs" / "run", "cnnsee/gradcam/../../../../../../escaped")
    out = tmp_path / "deep" / "out"
    summary = export_images(tmp_path / "logs", out, progress=False)
    assert summary.pngs == 1
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents and "logs" not in p.parts]
    assert outside == []
    assert all(out in path.resolve().parents for path in summary.paths)


def _non_utf8_run(tmp_path) -> bytes:
    _event_log(tmp_path / "made", "cnnsee/gradcam/la\nyer<script>alert(1)</script>")
    target = os.fsencode(tmp_path / "logs") + b"/run\xff<b>"
    os.makedirs(os.fsencode(tmp_path / "logs"))
    os.rename(os.fsencode(tmp_path / "made"), target)
    return target


def test_report_of_a_run_folder_whose_name_is_not_utf8_shows_replacement_characters(tmp_path):
    _non_utf8_run(tmp_path)
    summary = write_report(tmp_path / "logs", tmp_path / "report.html", progress=False)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert summary.runs == 1
    assert "run\ufffd&lt;b&gt;" in page
    assert "<b>" not in page.replace("<b>run", "")  # the name's markup is escaped
    assert "<script>alert" not in page and "\\u003cscript\\u003ealert" in page


def test_cnnsee_report_and_export_print_no_traceback_for_a_name_not_utf8(tmp_path):
    _non_utf8_run(tmp_path)
    environment = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    for command in (["report", str(tmp_path / "logs"), "-o", str(tmp_path / "r.html")], ["export"]):
        if command == ["export"]:
            command = ["export", str(tmp_path / "logs"), "-o", str(tmp_path / "out")]
        done = subprocess.run(
            [sys.executable, "-m", "lightning_cnnsee.cli", *command], capture_output=True, env=environment, timeout=120
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert b"Traceback" not in done.stderr
    exported = [p for p in (tmp_path / "out").rglob("*.png")]
    assert len(exported) == 1 and (tmp_path / "out") in exported[0].parents


def test_report_escapes_hyper_parameters_config_values_texts_and_chart_titles(tmp_path):
    _event_log(tmp_path / "logs" / "run", "cnnsee/gradcam/features")
    with SummaryWriter(str(tmp_path / "logs" / "run")) as writer:
        writer.add_scalar("cnnsee/faithfulness/<img src=x onerror=alert(3)>/avg_drop", 0.5, 0)
        writer.add_text("note", "<script>alert(4)</script>")
    (tmp_path / "logs" / "run" / "config.yaml").write_text(
        "trainer:\n  callbacks:\n  - class_path: lightning_cnnsee.CNNSee\n    init_args:\n"
        "      class_names: ['<script>alert(5)</script>']\n"
    )
    (tmp_path / "logs" / "run" / "hparams.yaml").write_text(
        "'<img src=x onerror=alert(1)>': '<script>alert(2)</script>'\nname: \"a\\nb\"\n"
    )
    write_report(tmp_path / "logs", tmp_path / "report.html", progress=False)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "<script>alert(2)" not in page
    assert "<script>alert(4)" not in page and "<script>alert(5)" not in page
    assert "alert(3)" in page and "alert(4)" in page  # the names are there, escaped
    assert "&lt;img src=x onerror=alert(1)&gt;" in page or "\\u003cimg src=x" in page
