"""``cnnsee report`` and ``cnnsee export`` on the logs of real (tiny) fits: every tag and step, escaped, exported;
CNNSee's scalars charted; PNG folders and MLflow stores read like event files; damaged event files reported."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny import (
    CHART_SCALARS,
    EVIL,
    EVIL_TAG,
    RUNS,
    TinyClassifier,
    make_loaders,
    read_images,
    review_logs,
    trainer_kwargs,
)
from torch.utils.tensorboard import SummaryWriter

from lightning_cnnsee import CNNSee, cli
from lightning_cnnsee.review import (
    ChecksumError,
    CutRecord,
    Frame,
    NothingToReview,
    Run,
    export_images,
    find_run_dirs,
    iter_records,
    load_runs,
    render_report,
    write_report,
)
from lightning_cnnsee.review.records import write_record

# CNNSee's scalars, logged into the fits' folders by hand: {run: {tag: [(step, value), ...]}}


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
        run: {
            tag: sorted(set(steps)) for tag, steps in read_images(str(logs / run)).items() if tag.startswith("cnnsee/")
        }
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
        for run, frames in zip(RUNS, entry["frames"], strict=True):
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
    runs = report[report.index('<section id="runs">') :]
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
    with pytest.raises(NothingToReview, match=r"found instead: image tags \[.samples.\]"):
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
    assert re.search(
        r'<figure class="cell stale" data-run="1"><figcaption><span class="run">logs/version_1</span> '
        r'<span class="at">step 6</span>',
        page,
    )


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


# ---------------------------------------------------------------------------------------------------- scalar charts
SVG = "{http://www.w3.org/2000/svg}"


def page_charts(page: str) -> list[tuple[dict, ET.Element]]:
    """Each chart of the page: its entry in the data block and its parsed ``<svg>``, in page order."""
    svgs = [ET.fromstring(svg) for svg in re.findall(r'<svg class="chart".*?</svg>', page, re.S)]
    charts = page_data(page)["charts"]
    assert len(svgs) == len(charts)
    return list(zip(charts, svgs, strict=True))


def event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """CNNSee's scalars of one run, read with TensorBoard's own reader."""
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
        if tag.startswith("cnnsee/")
    }


def polyline_points(element: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, pair.split(","))) for pair in element.get("points").split()]


def test_a_layers_charts_stand_beside_its_images_and_the_others_in_sections_of_their_own(report):
    sections = re.findall(r'<section class="(tag|charts)"[^>]*>.*?<h2>(.*?)</h2>(.*?)</section>', report, re.S)
    charts_in = {heading: re.findall(r"<figcaption>([^<]*)</figcaption><svg", body) for _, heading, body in sections}
    image_tags = [heading for kind, heading, _ in sections if kind == "tag"]
    beside = {tag: titles for tag, titles in charts_in.items() if tag in image_tags and titles}
    assert beside, charts_in
    for tag, titles in beside.items():
        layer = tag.split("/", 2)[2]
        assert all(f" · {layer}" in title for title in titles), (tag, titles)
    assert "overhead" in charts_in["cnnsee/overhead"]  # no layer: a section of its own
    placed = [title for titles in charts_in.values() for title in titles]
    assert sorted(placed) == sorted(entry["title"] for entry in page_data(report)["charts"])  # each chart once


def test_the_report_draws_a_chart_per_layer_and_metric_with_a_line_per_series(logs, report):
    charts = {entry["title"]: (entry, svg) for entry, svg in page_charts(report)}
    lines = {
        title: [
            (RUNS[series["run"]], series["name"], *zip(*series["points"], strict=True)) for series in entry["series"]
        ]
        for title, (entry, _) in charts.items()
    }

    def logged(run: str, tag: str) -> tuple:
        steps, values = zip(*CHART_SCALARS[run][tag], strict=True)
        return steps, pytest.approx(values)  # float32 in the event file

    assert lines["faithfulness · features.3 · deletion"] == [
        (run, name, *logged(run, "cnnsee/faithfulness/features.3/" + name))
        for run in RUNS
        for name in ("deletion", "deletion_random")
    ]
    assert lines["drift · features.3"] == [
        (RUNS[0], name, *logged(RUNS[0], "cnnsee/drift/features.3/" + name)) for name in ("vs_start", "vs_previous")
    ]
    assert lines["overhead"] == [(RUNS[0], "overhead", *logged(RUNS[0], "cnnsee/overhead"))]
    # every CNNSee scalar TensorBoard reads is in exactly one line, point for point
    in_charts = sorted(
        (run, series["name"], len(series["points"]))
        for entry, _ in charts.values()
        for series in entry["series"]
        for run in [RUNS[series["run"]]]
    )
    from_tensorboard = sorted(
        (run, tag.rsplit("/", 1)[-1], len(points)) for run in RUNS for tag, points in event_scalars(logs / run).items()
    )
    assert in_charts == from_tensorboard

    for title, (entry, svg) in charts.items():
        polylines = list(svg.iter(f"{SVG}polyline"))
        assert len(polylines) == len(entry["series"]), title
        for polyline, series in zip(polylines, entry["series"], strict=True):
            points = polyline_points(polyline)
            assert len(points) == len(series["points"]), title
            steps, values = zip(*series["points"], strict=True)
            xs, ys = zip(*points, strict=True)
            # x grows with the step; y goes up (smaller) as the value grows
            assert sorted(xs) == list(xs) and len(set(xs)) == len(xs)
            order = sorted(range(len(values)), key=lambda i: values[i])
            assert [ys[i] for i in order] == sorted(ys, reverse=True)
        texts = [text.text for text in svg.iter(f"{SVG}text")]
        assert "step" in texts  # x axis label
        legend = next(group for group in svg.iter(f"{SVG}g") if group.get("class") == "legend")
        assert len(list(legend.iter(f"{SVG}text"))) == len(entry["series"])
    assert "share of training time" in [text.text for text in charts["overhead"][1].iter(f"{SVG}text")]
    assert '<a href="#charts-0">cnnsee/faithfulness (charts)</a>' in report


def test_a_page_of_scalars_only_shows_its_charts_without_a_step_slider(tmp_path):
    run = Run("only-scalars", tmp_path, scalars={"cnnsee/overhead": [(0, 0.05), (10, 0.04)], "loss": [(0, 1.0)]})
    page = render_report([run])
    ((entry, svg),) = page_charts(page)
    assert entry["title"] == "overhead" and len(polyline_points(next(svg.iter(f"{SVG}polyline")))) == 2
    assert 'id="all-steps"' not in page and page_data(page)["tags"] == []


# -------------------------------------------------------------------------------------------- PNG folders, MLflow
def png(color: str, size: tuple[int, int] = (12, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def write_png_folder_run(folder: Path) -> dict[str, dict[int, bytes]]:
    """A run as CNNSee writes it with a CSVLogger: ``cnnsee/<kind>/<layer>/step_N.png``, ``cnnsee/scalars.csv``, and
    the logger's ``hparams.yaml`` and ``metrics.csv``. Returns ``{tag: {step: PNG bytes}}``."""
    images = {
        "cnnsee/gradcam/features.3": {0: png("red"), 6: png("blue")},
        "cnnsee/classes": {6: png("green", (20, 10))},
    }
    for tag, frames in images.items():
        (folder / tag).mkdir(parents=True)
        for step, data in frames.items():
            (folder / tag / f"step_{step:08d}.png").write_bytes(data)
    with open(folder / "cnnsee" / "scalars.csv", "w", newline="") as handle:
        rows = [
            ("tag", "step", "value"),
            ("cnnsee/drift/features.3/vs_start", 0, 0.0),
            ("cnnsee/drift/features.3/vs_start", 6, 0.25),
            ("cnnsee/overhead", 6, 0.04),
            ("broken", "x", "y"),
        ]
        csv.writer(handle).writerows(rows)
    (folder / "hparams.yaml").write_text("lr: 0.1\nmodel:\n  width: 16\n")
    (folder / "metrics.csv").write_text("epoch,step,val_loss\n0,5,1.25\n1,11,0.75\n")
    return images


def test_a_png_folder_run_is_reported_and_exported_like_an_event_file_run(tmp_path, capsys):
    images = write_png_folder_run(tmp_path / "csv" / "version_0")
    assert cli.main(["report", str(tmp_path / "csv"), "-o", str(tmp_path / "report.html")]) == 0
    warning = capsys.readouterr().err
    assert "warning" in warning and "scalars.csv: 1 row(s)" in warning  # the broken row, said
    page = (tmp_path / "report.html").read_text()
    data = page_data(page)
    assert data["runs"] == ["version_0"]
    assert {entry["tag"]: [step for step, _ in entry["frames"][0]] for entry in data["tags"]} == {
        tag: sorted(frames) for tag, frames in images.items()
    }
    embedded = dict(re.findall(r'<img src="data:image/png;base64,([^"]+)" data-image="(\d+)"', page))
    by_index = {int(index): base64.b64decode(uri) for uri, index in embedded.items()}
    by_index.update({i: base64.b64decode(uri.split(",", 1)[1]) for i, uri in enumerate(data["images"]) if uri})
    for entry in data["tags"]:
        for step, index in entry["frames"][0]:
            assert by_index[index] == images[entry["tag"]][step]
    assert re.search(r"<tr><th>lr</th><td data-run=\"0\">0.1</td></tr>", page)
    assert "<th>model.width</th>" in page and '<th>val_loss</th><td data-run="0">0.75 (step 11)</td>' in page
    titles = [entry["title"] for entry, _ in page_charts(page)]
    assert titles == ["drift · features.3", "overhead"]

    summary = export_images(tmp_path / "csv", tmp_path / "out")
    for tag, frames in images.items():
        for step, data in frames.items():
            assert (tmp_path / "out" / "version_0" / tag / f"step_{step:08d}.png").read_bytes() == data
    assert summary.pngs == 3 and summary.gifs == 2 and summary.problems


def test_the_review_reads_what_cnnsee_writes_with_a_csv_logger(tmp_path):
    pl.seed_everything(0, verbose=False)
    logger = pl.loggers.CSVLogger(str(tmp_path), name="csv")
    logger.log_hyperparams({"lr": 0.1})
    train, val = make_loaders()
    callback = CNNSee(ascent_steps=3, num_samples=4, max_overhead=None)
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, max_epochs=1, logger=logger, callbacks=[callback]))
    trainer.fit(TinyClassifier(), train, val)
    folder = tmp_path / "csv" / "version_0" / "cnnsee"
    written = {
        "/".join(path.parent.relative_to(folder.parent).parts): sorted(
            int(p.stem[5:]) for p in path.parent.glob("step_*.png")
        )
        for path in folder.rglob("step_*.png")
    }
    assert written  # the fit wrote PNG files, no event files
    (run,) = load_runs(tmp_path / "csv")
    assert run.name == "version_0" and {tag: [f.step for f in frames] for tag, frames in run.images.items()} == written
    assert run.hparams["lr"] == 0.1 and not run.problems
    if (folder / "scalars.csv").exists():
        with open(folder / "scalars.csv", newline="") as handle:
            assert {row["tag"] for row in csv.DictReader(handle)} <= set(run.scalars)


def mlflow_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch
    return mlflow.MlflowClient(tracking_uri="file:" + str(tmp_path / "mlruns"))


def test_an_mlflow_store_is_read_run_by_run_with_its_name_params_and_metrics(tmp_path, monkeypatch):
    client = mlflow_client(tmp_path, monkeypatch)
    experiment = client.create_experiment("shapes")
    logged = {}
    for name, lr, values in [("silent-fox", "0.1", [0.6, 0.4]), ("loud-owl", "0.05", [0.5, 0.45])]:
        run_id = client.create_run(experiment, run_name=name).info.run_id
        client.log_param(run_id, "lr", lr)
        for step, value in zip((0, 6), values, strict=True):
            client.log_metric(run_id, "cnnsee/faithfulness/features.3/deletion", value, step=step)
            path = tmp_path / "upload" / f"step_{step:08d}.png"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(png("red" if step else "blue"))
            client.log_artifact(run_id, str(path), artifact_path="cnnsee/gradcam/features.3")
        client.set_terminated(run_id)
        logged[f"{experiment}/{run_id}"] = (name, lr, values)
    runs = load_runs(tmp_path / "mlruns")
    assert sorted(run.name for run in runs) == sorted(logged)  # named by the MLflow run's folder
    for run in runs:
        name, lr, values = logged[run.name]
        assert run.hparams["mlflow.run_name"] == name and run.hparams["lr"] == lr
        assert run.scalars["cnnsee/faithfulness/features.3/deletion"] == [(0, values[0]), (6, values[1])]
        artifacts = run.path / "artifacts" / "cnnsee" / "gradcam" / "features.3"
        assert [(f.step, f.data) for f in run.images["cnnsee/gradcam/features.3"]] == [
            (step, (artifacts / f"step_{step:08d}.png").read_bytes()) for step in (0, 6)
        ]
    page_path = tmp_path / "report.html"
    assert cli.main(["report", str(tmp_path / "mlruns"), "-o", str(page_path)]) == 0
    page = page_path.read_text()
    assert "<th>mlflow.run_name</th>" in page and "silent-fox" in page
    ((entry, svg),) = page_charts(page)
    assert len(entry["series"]) == 2 and all(len(s["points"]) == 2 for s in entry["series"])
    summary = export_images(tmp_path / "mlruns", tmp_path / "out", gif=False)
    assert summary.pngs == 4


def test_a_log_folder_named_cnnsee_and_the_cnnsee_folder_itself_are_read(tmp_path):
    folder = tmp_path / "cnnsee" / "version_0" / "cnnsee" / "layercam" / "gradcam" / "cnnsee"  # a layer named cnnsee
    folder.mkdir(parents=True)
    (folder / "step_00000003.png").write_bytes(png("red"))
    assert find_run_dirs(tmp_path / "cnnsee") == [tmp_path / "cnnsee" / "version_0"]
    for logdir in (tmp_path, tmp_path / "cnnsee" / "version_0" / "cnnsee"):
        (run,) = load_runs(logdir)
        assert list(run.images) == ["cnnsee/layercam/gradcam/cnnsee"] and run.path == tmp_path / "cnnsee" / "version_0"
    assert load_runs(tmp_path / "cnnsee" / "version_0" / "cnnsee")[0].name == "version_0"


def test_the_export_is_itself_a_log_folder_that_the_report_reads(logs, tmp_path):
    export_images(logs, tmp_path / "out", gif=False)
    original = {run.name: run for run in load_runs(logs)}
    exported = {run.name: run for run in load_runs(tmp_path / "out")}
    assert sorted(exported) == RUNS
    for name, run in exported.items():
        tags = [tag for tag in original[name].images if tag != EVIL_TAG]  # its path parts were made file-safe
        assert [tag for tag in run.images if tag in tags] == tags
        for tag in tags:
            assert [(f.step, f.data) for f in run.images[tag]] == [(f.step, f.data) for f in original[name].images[tag]]


# --------------------------------------------------------------------------------------- reading event files
def test_frames_hold_where_each_image_lies_in_its_event_file_not_the_image(logs):
    accumulator = EventAccumulator(str(logs / RUNS[1]), size_guidance={"images": 0})
    accumulator.Reload()
    (run,) = load_runs(logs / RUNS[1])
    for tag, frames in run.images.items():
        for frame, event in zip(frames, accumulator.Images(tag), strict=True):
            assert frame.source is not None and "tfevents" in Path(frame.source.path).name
            assert frame.source.length == len(event.encoded_image_string) and frame._data is None
            assert frame.data == event.encoded_image_string
            assert (frame.step, frame.width, frame.height) == (event.step, event.width, event.height)


def _image_steps(folder: Path) -> list[int]:
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0})
    accumulator.Reload()
    return [event.step for event in accumulator.Images("cnnsee/classes")]


@pytest.mark.parametrize("part", ["data", "length"])
def test_a_record_failing_its_checksum_ends_its_file_as_in_tensorboard_and_is_said(part, tmp_path, capsys):
    with SummaryWriter(str(tmp_path / "run")) as writer:
        for step in range(5):
            writer.add_image("cnnsee/classes", torch.full((3, 6, 8), step / 5), step)
    (path,) = (tmp_path / "run").glob("*tfevents*")
    records = list(iter_records(path))
    offset, data = records[3]  # the file-version record, then steps 0, 1, 2, ...: step 2
    damaged = bytearray(path.read_bytes())
    damaged[offset + len(data) // 2 if part == "data" else offset - 12] ^= 0xFF
    path.write_bytes(bytes(damaged))

    with pytest.raises(ChecksumError, match=rf"record at byte {offset - 12} failed its CRC-32C check \({part}\)"):
        list(iter_records(path))
    assert _image_steps(tmp_path / "run") == [0, 1]  # TensorBoard stops at the damaged record
    (run,) = load_runs(tmp_path / "run")
    assert [frame.step for frame in run.images["cnnsee/classes"]] == [0, 1]
    assert len(run.problems) == 1 and str(path) in run.problems[0]
    assert cli.main(["report", str(tmp_path / "run"), "-o", str(tmp_path / "report.html")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("cnnsee report: warning: ") and str(path) in err and "CRC-32C" in err
    assert "1 problem reading the logs" in (tmp_path / "report.html").read_text()


def test_a_record_cut_short_at_the_end_of_its_file_ends_it_after_the_whole_records_and_is_said(tmp_path):
    path = tmp_path / "events.out.tfevents.1.host"
    with path.open("wb") as handle:
        write_record(handle, b"whole")
        write_record(handle, b"cut short")
    path.write_bytes(path.read_bytes()[:-3])
    read = []
    with pytest.raises(CutRecord, match="ends mid-record: still being written, or cut"):
        for _, data in iter_records(path):
            read.append(bytes(data))
    assert read == [b"whole"]


def test_a_later_image_at_the_same_step_replaces_the_earlier_one(tmp_path):
    colors = {
        "red": torch.tensor([1.0, 0, 0]),
        "blue": torch.tensor([0, 0, 1.0]),
        "green": torch.tensor([0, 1.0, 0]),
        "white": torch.ones(3),
    }

    def image(color: str) -> torch.Tensor:
        return colors[color].view(3, 1, 1).expand(3, 6, 8)

    with SummaryWriter(str(tmp_path / "run"), filename_suffix=".0") as writer:
        for step, color in [(5, "red"), (5, "blue"), (7, "green")]:
            writer.add_image("cnnsee/classes", image(color), step)
    with SummaryWriter(str(tmp_path / "run"), filename_suffix=".1") as writer:  # a resumed run logs step 7 again
        writer.add_image("cnnsee/classes", image("white"), 7)
    accumulator = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0})
    accumulator.Reload()
    logged = [(event.step, event.encoded_image_string) for event in accumulator.Images("cnnsee/classes")]
    assert [step for step, _ in logged] == [5, 5, 7, 7]  # TensorBoard keeps both
    page = render_report(load_runs(tmp_path / "run"))
    data = page_data(page)
    (entry,) = data["tags"]
    (step_5, index_5), (step_7, index_7) = entry["frames"][0]
    assert (step_5, step_7) == (5, 7)
    assert base64.b64decode(data["images"][index_5].split(",", 1)[1]) == logged[1][1]  # blue, not red
    inline = re.search(rf'<img src="data:image/png;base64,([^"]+)" data-image="{index_7}"', page)
    assert base64.b64decode(inline.group(1)) == logged[3][1]  # white, not green
    colour = Image.open(io.BytesIO(logged[3][1])).convert("RGB").getpixel((0, 0))
    assert colour == (255, 255, 255)


def test_the_review_imports_no_torch(tmp_path):
    write_png_folder_run(tmp_path / "run")
    code = (
        "import sys; from lightning_cnnsee import cli; "
        f"status = cli.main(['report', {str(tmp_path / 'run')!r}, '-o', {str(tmp_path / 'r.html')!r}]); "
        f"status += cli.main(['export', {str(tmp_path / 'run')!r}, '-o', {str(tmp_path / 'out')!r}]); "
        "print(status, 'torch' in sys.modules, 'pytorch_lightning' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-3:] == ["0", "False", "False"], done.stderr
