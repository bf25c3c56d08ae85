"""``cnnsee report`` and ``cnnsee export`` on the logs of real (tiny) fits: every tag and step, escaped, exported."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from lightning_cnnsee import CNNSee, cli
from lightning_cnnsee.review import Frame, NothingToReview, Run, export_images, load_runs, render_report, write_report
from tiny import TinyClassifier, make_loaders, read_images, trainer_kwargs

EVIL = "</script><script>alert(1)</script>"
EVIL_TAG = "cnnsee/<script>alert(1)</script>"
RUNS = ["logs/version_0", "logs/version_1"]


_BUILT: dict[Path, Path] = {}  # the session's base temp folder -> the logs built in it


def review_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real fits with CNNSee under one folder (built once per test session, shared with test_browser.py).

    ``logs/version_0``: 2 epochs (CNNSee at steps 0, 6, 12), hyper-parameters ``lr=0.1`` and ``note=EVIL``, and an
    extra image under the tag ``EVIL_TAG`` at steps 0 and 12. ``logs/version_1``: 1 epoch (steps 0, 6), ``lr=0.05``.
    """
    session = tmp_path_factory.getbasetemp()
    if session in _BUILT:
        return _BUILT[session]
    root = tmp_path_factory.mktemp("review_logs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for epochs, hparams in [(2, {"lr": 0.1, "note": EVIL}), (1, {"lr": 0.05, "note": "plain"})]:
            pl.seed_everything(epochs, verbose=False)
            logger = pl.loggers.TensorBoardLogger(str(root), name="logs")
            logger.log_hyperparams(hparams)
            train, val = make_loaders()
            callback = CNNSee(ascent_steps=3, num_samples=4, max_overhead=None)
            trainer = pl.Trainer(**trainer_kwargs(root, max_epochs=epochs, logger=logger, callbacks=[callback]))
            trainer.fit(TinyClassifier(), train, val)
        with SummaryWriter(str(root / RUNS[0])) as writer:
            for step, value in [(0, 0.2), (12, 0.9)]:
                writer.add_image(EVIL_TAG, torch.full((3, 5, 7), value), step)
    finally:
        torch.set_num_threads(threads)
    _BUILT[session] = root
    return root


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    return review_logs(tmp_path_factory)


@pytest.fixture(scope="module")
def report(logs, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert cli.main(["report", str(logs), "-o", str(path)]) == 0
    return path.read_text(encoding="utf-8")


def page_data(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="cnnsee-data">(.*?)</script>', page, re.S)
    assert match
    return json.loads(match.group(1))


def expected_steps(logs: Path) -> dict[str, dict[str, list[int]]]:
    """``{run: {tag: steps}}`` of the CNNSee images, read straight from the event files."""
    return {
        run: {tag: sorted(set(steps)) for tag, steps in read_images(str(logs / run)).items() if tag.startswith("cnnsee/")}
        for run in RUNS
    }


def test_the_fits_logged_what_the_review_tests_expect(logs):
    steps = expected_steps(logs)
    assert steps["logs/version_0"]["cnnsee/classes"] == [0, 6, 12]
    assert steps["logs/version_1"]["cnnsee/classes"] == [0, 6]
    assert steps["logs/version_0"][EVIL_TAG] == [0, 12]
    assert len(steps["logs/version_1"]) >= 4  # gradcam, filters, classes, activations


def test_the_report_holds_every_tag_and_step_of_every_run(logs, report):
    data = page_data(report)
    expected = expected_steps(logs)
    assert data["runs"] == RUNS
    assert {entry["tag"] for entry in data["tags"]} == set(expected["logs/version_0"]) | set(expected["logs/version_1"])
    for entry in data["tags"]:
        for run, frames in zip(RUNS, entry["frames"]):
            want = expected[run].get(entry["tag"])
            assert (None if frames is None else [step for step, _ in frames]) == want, (run, entry["tag"])
        assert entry["steps"] == sorted({s for run in RUNS for s in expected[run].get(entry["tag"], [])})
        assert html.escape(entry["tag"]) in report  # a section heading per tag
    assert data["steps"] == [0, 6, 12]


def test_the_report_embeds_the_logged_images_and_fetches_nothing(logs, report):
    data = page_data(report)
    accumulator = EventAccumulator(str(logs / RUNS[0]), size_guidance={"images": 0})
    accumulator.Reload()
    first, last = accumulator.Images("cnnsee/classes")[0], accumulator.Images("cnnsee/classes")[-1]
    entry = next(entry for entry in data["tags"] if entry["tag"] == "cnnsee/classes")
    (step, index), *_, (last_step, last_index) = entry["frames"][0]
    # an earlier step: in the page's data block
    assert step == first.step == 0 and data["images"][index].startswith("data:image/png;base64,")
    png = base64.b64decode(data["images"][index].split(",", 1)[1])
    assert png == first.encoded_image_string
    assert Image.open(io.BytesIO(png)).size == (first.width, first.height) and first.width > 20
    # the last step: in the <img> the page opens with (so it shows without JavaScript), not a second time in the data
    match = re.search(rf'<img src="data:image/png;base64,([^"]+)" data-image="{last_index}" data-step="12"', report)
    assert last_step == last.step == 12 and match and data["images"][last_index] is None
    assert base64.b64decode(match.group(1)) == last.encoded_image_string
    # every picture embedded exactly once
    inline = re.findall(r'<img src="data:image/png;base64,[^"]+" data-image="(\d+)"', report)
    listed = [uri for uri in data["images"] if uri is not None]
    assert len(set(inline)) + len(listed) == len(data["images"]) and len(set(listed)) == len(listed)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", report)
    assert "url(" not in report and "@import" not in report


def test_the_report_shows_each_runs_hyperparameters_side_by_side(report):
    runs = report[report.index('<section id="runs">'):]
    runs = runs[: runs.index("</section>")]
    assert re.search(r'<tr class="differs"><th>lr</th><td data-run="0">0.1</td><td data-run="1">0.05</td></tr>', runs)
    assert "<th>note</th>" in runs and ">plain</td>" in runs
    assert "val_loss" in runs  # last scalar values


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict] = []
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts.append(dict(attrs))

    def handle_data(self, data):
        self.texts.append(data)


def test_text_from_the_logs_is_escaped_in_the_page_and_in_its_data(report):
    parser = _Elements()
    parser.feed(report)
    assert [script.get("type") for script in parser.scripts] == ["application/json", None]  # no injected script
    assert "<script>alert(1)" not in report
    assert html.escape(EVIL) in report  # the hyper-parameter, shown as text
    assert html.escape(EVIL_TAG) in report  # the tag, in its section heading
    assert EVIL_TAG in [entry["tag"] for entry in page_data(report)["tags"]]  # unchanged in the data
    assert "\\u003cscript\\u003e" in report  # inside the JSON data, '<' is escaped


def test_runs_without_cnnsee_images_are_left_out_and_the_logdir_may_be_one_run(logs, tmp_path):
    shutil.copytree(logs / RUNS[1], tmp_path / "mixed" / "with_cnnsee")
    with SummaryWriter(str(tmp_path / "mixed" / "without")) as writer:
        writer.add_scalar("loss", 1.0, 0)
    assert [run.name for run in load_runs(tmp_path / "mixed")] == ["with_cnnsee"]
    assert [run.name for run in load_runs(logs / RUNS[1])] == ["version_1"]
    assert [run.name for run in load_runs(logs)] == RUNS


def test_max_steps_keeps_the_first_and_the_last_step(logs, tmp_path):
    path = tmp_path / "short.html"
    summary = write_report(logs, path, max_steps=2)
    data = page_data(path.read_text())
    for entry in data["tags"]:
        for frames in entry["frames"]:
            if frames:
                assert len(frames) <= 2 and frames[0][0] == 0
    classes = next(entry for entry in data["tags"] if entry["tag"] == "cnnsee/classes")
    assert [step for step, _ in classes["frames"][0]] == [0, 12]
    assert summary.runs == 2 and summary.size_bytes == path.stat().st_size


def test_export_writes_each_logged_png_and_a_gif_per_tag_with_a_frame_per_step(logs, tmp_path, capsys):
    assert cli.main(["export", str(logs), "-o", str(tmp_path / "out")]) == 0
    assert "PNG files" in capsys.readouterr().out
    for run, tags in expected_steps(logs).items():
        accumulator = EventAccumulator(str(logs / run), size_guidance={"images": 0})
        accumulator.Reload()
        for tag, steps in tags.items():
            if tag == EVIL_TAG:
                continue
            folder = tmp_path / "out" / run / tag
            assert sorted(path.name for path in folder.iterdir()) == [f"step_{step:08d}.png" for step in steps]
            last = accumulator.Images(tag)[-1]
            assert (folder / f"step_{last.step:08d}.png").read_bytes() == last.encoded_image_string
            gif = Image.open(folder.with_name(folder.name + ".gif"))
            assert gif.n_frames == len(steps)
            assert gif.width >= last.width and gif.height > last.height
    # "cnnsee/<script>alert(1)</script>": each part between slashes made file-safe
    evil = tmp_path / "out" / RUNS[0] / "cnnsee" / "_script_alert_1_"
    assert sorted(path.name for path in evil.iterdir()) == ["script_", "script_.gif"]
    assert sorted(path.name for path in (evil / "script_").iterdir()) == ["step_00000000.png", "step_00000012.png"]
    assert Image.open(evil / "script_.gif").n_frames == 2


def test_export_without_gifs_writes_only_pngs(logs, tmp_path):
    summary = export_images(logs / RUNS[1], tmp_path, gif=False)
    assert summary.gifs == 0 and summary.pngs == sum(len(s) for s in expected_steps(logs)[RUNS[1]].values())
    assert not list(tmp_path.rglob("*.gif"))


def _empty_folder(tmp_path: Path) -> Path:
    (tmp_path / "empty" / "version_0").mkdir(parents=True)
    return tmp_path / "empty"


def _folder_without_cnnsee(tmp_path: Path) -> Path:
    with SummaryWriter(str(tmp_path / "plain" / "version_0")) as writer:
        writer.add_scalar("loss", 1.0, 0)
        writer.add_image("samples", torch.rand(3, 4, 4), 0)
    return tmp_path / "plain"


@pytest.mark.parametrize("command", ["report", "export"])
@pytest.mark.parametrize(
    "make_folder, message",
    [
        (lambda tmp_path: tmp_path / "missing", "does not exist"),
        (lambda tmp_path: tmp_path / "file.txt", "is not a folder"),
        (_empty_folder, "no TensorBoard event files"),
        (_folder_without_cnnsee, "no CNNSee images (image tags starting with 'cnnsee/') in the 1 run(s)"),
    ],
    ids=["missing", "a file", "empty", "no cnnsee images"],
)
def test_nothing_to_review_exits_non_zero_with_a_message_saying_why(command, make_folder, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("not a log")
    folder = make_folder(tmp_path)
    assert cli.main([command, str(folder), "-o", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"cnnsee {command}: ") and message in captured.err
    assert str(folder) in captured.err
    assert not (tmp_path / "out").exists()


def test_the_message_for_a_log_without_cnnsee_lists_the_image_tags_it_has(tmp_path):
    with pytest.raises(NothingToReview, match=r"image tags found: \['samples'\]"):
        load_runs(_folder_without_cnnsee(tmp_path))


def test_progress_bars_go_to_stderr_when_asked(logs, tmp_path, capsys):
    assert cli.main(["report", str(logs / RUNS[1]), "-o", str(tmp_path / "r.html"), "--progress"]) == 0
    captured = capsys.readouterr()
    assert "reading runs" in captured.err and "embedding images" in captured.err
    assert "reading runs" not in captured.out and "Wrote" in captured.out


def test_render_report_on_hand_made_runs_marks_a_run_without_the_current_step(logs):
    runs = load_runs(logs)
    page = render_report(runs, title="a <b>title</b>")
    assert "a &lt;b&gt;title&lt;/b&gt;" in page and "<b>title" not in page
    # version_1 has no step 12: at the last step its cells show step 6, marked stale
    assert re.search(r'<figure class="cell stale" data-run="1"><figcaption><span class="run">logs/version_1</span> '
                     r'<span class="at">step 6</span>', page)


def test_with_several_runs_the_rows_where_all_agree_are_marked_to_hide_and_the_others_as_differing(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(buffer, "PNG")
    frame = Frame(0, buffer.getvalue(), 4, 3)
    runs = [
        Run("a", tmp_path, images={"cnnsee/classes": [frame]}, hparams={"lr": 0.1, "width": 16}),
        Run("b", tmp_path, images={"cnnsee/classes": [frame]}, hparams={"lr": 0.2, "width": 16}),
    ]
    page = render_report(runs)
    assert '<tr class="differs"><th>lr</th><td data-run="0">0.1</td><td data-run="1">0.2</td></tr>' in page
    assert '<tr class="same"><th>width</th>' in page and "show the rows where all runs agree (1)" in page
    single = render_report(runs[:1])
    assert "<tr><th>width</th>" in single and 'id="show-same"' not in single  # one run: every row shows
