"""Every damaged event file is named, in the page and on stderr, with what is wrong and where; what was intact before
the damage is still shown; a folder holding only damaged files says so instead of asking about the callbacks."""

from __future__ import annotations

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from lightning_cnnsee import cli
from lightning_cnnsee.review import NothingToReview, iter_records, load_runs


def _run(folder, steps=5):
    with SummaryWriter(str(folder)) as writer:
        for step in range(steps):
            writer.add_image("cnnsee/classes", torch.full((3, 6, 8), step / steps), step)
    (path,) = folder.glob("*tfevents*")
    return path


def _report(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "logs"), "-o", str(tmp_path / "report.html")]) == 0
    return (tmp_path / "report.html").read_text(encoding="utf-8"), capsys.readouterr().err


def test_a_file_cut_mid_record_is_named_and_the_records_before_it_are_shown(tmp_path, capsys):
    path = _run(tmp_path / "logs" / "run")
    offset, data = list(iter_records(path))[-1]  # the last image: step 4
    path.write_bytes(path.read_bytes()[: offset + len(data) // 2])
    (run,) = load_runs(tmp_path / "logs")
    assert [frame.step for frame in run.images["cnnsee/classes"]] == [0, 1, 2, 3]
    (problem,) = run.problems
    assert problem.startswith(f"{path}: ends mid-record: still being written, or cut (the record at byte {offset - 12}")
    page, err = _report(tmp_path, capsys)
    assert "ends mid-record: still being written, or cut" in page and str(path) in page
    assert f"cnnsee report: warning: {path}: ends mid-record" in err


@pytest.mark.parametrize(
    "content, said",
    [(b"", "is empty (0 bytes)"), (b"this is a text file, not a TFRecord\n" * 3, "is not an event file")],
    ids=["empty", "not-an-event-file"],
)
def test_an_empty_or_foreign_event_file_beside_a_good_run_is_named(tmp_path, capsys, content, said):
    _run(tmp_path / "logs" / "good")
    bad = tmp_path / "logs" / "bad" / "events.out.tfevents.123.host"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(content)
    runs = load_runs(tmp_path / "logs")
    assert [run.name for run in runs] == ["good"]
    assert [problem for run in runs for problem in run.problems] == [f"{bad}: {said}" + _rest(said)]
    page, err = _report(tmp_path, capsys)
    assert said in page and str(bad) in page and f"{bad}: {said}" in err


def _rest(said: str) -> str:
    if said.startswith("is empty"):
        return ": nothing in it to read"
    return " (its first 12 bytes are not a record header); skipped"


def test_a_folder_with_only_damaged_files_says_what_it_found_instead_of_asking_about_the_callbacks(tmp_path):
    folder = tmp_path / "logs" / "run"
    folder.mkdir(parents=True)
    (folder / "events.out.tfevents.1.host").write_bytes(b"")
    (folder / "events.out.tfevents.2.host").write_bytes(b"garbage" * 10)
    with pytest.raises(NothingToReview) as raised:
        load_runs(tmp_path / "logs")
    message = str(raised.value)
    assert "found instead: 2 file(s) that cannot be read" in message
    assert (
        "events.out.tfevents.1.host: is empty" in message and "events.out.tfevents.2.host: is not an event" in message
    )
    assert "Was CNNSee in the trainer's callbacks?" not in message


def test_a_damaged_event_file_beside_a_good_one_in_the_same_run_keeps_the_good_ones_images(tmp_path):
    path = _run(tmp_path / "logs" / "run", steps=3)
    cut = path.with_name(path.name + ".2")
    cut.write_bytes(path.read_bytes()[:-5])
    (run,) = load_runs(tmp_path / "logs")
    assert [frame.step for frame in run.images["cnnsee/classes"]] == [0, 1, 2]
    assert len(run.problems) == 1 and str(cut) in run.problems[0] and "ends mid-record" in run.problems[0]
