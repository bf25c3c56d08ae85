"""One self-contained HTML page to review CNNSee logs: a step slider per tag, runs side by side, hyper-parameters.

The page needs nothing but itself: images are embedded as base64 ``data:`` URIs, CSS and JavaScript are inline,
nothing is fetched. Each tag (``cnnsee/gradcam/<layer>``, ...) gets a section with one column per run and a slider
over the steps of all runs; a run without an image at the chosen step shows its latest earlier one, marked. A slider
at the top moves every tag at once and can play the steps as an animation. A table compares the runs'
hyper-parameters, CNNSee options (from ``LightningCLI``'s ``config.yaml``) and last scalar values, marking the rows
that differ (the rows where all runs agree show on request). The page opens at the last step; without JavaScript it
still shows that step.

Text from the logs (tags, run names, hyper-parameters) is escaped with ``html.escape`` in the page; the data the
script reads is in a ``<script type="application/json">`` block with ``<``, ``>`` and ``&`` escaped, and the script
writes text with ``textContent`` only. Each distinct picture is embedded once: the ones the page opens with in
their ``<img>``, the others in the data block (the same picture at several steps only once).

Example::

    >>> from lightning_cnnsee.review import write_report
    >>> summary = write_report("runs", "report.html")  # doctest: +SKIP
    >>> summary.runs, summary.tags, summary.frames  # doctest: +SKIP
    (2, 8, 160)
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_cnnsee.review.logs import Frame, Run, evenly_spaced, format_value, load_runs, progress_bar, tag_order


@dataclass
class ReportSummary:
    """What :func:`write_report` wrote."""

    path: Path
    runs: int
    tags: int
    frames: int
    size_bytes: int


def write_report(
    logdir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    max_steps: int | None = None,
    title: str | None = None,
    progress: bool | None = None,
) -> ReportSummary:
    """Read the runs under ``logdir`` and write the review page to ``output``.

    Args:
        logdir: the log folder (a run's folder or any folder above runs).
        output: the HTML file to write (its folder is created).
        max_steps: at most this many steps per tag and run, evenly spaced, first and last kept (``None``: all).
        title: the page title (default: the log folder).
        progress: show progress bars on stderr (``None``: only when stderr is a terminal).

    Raises:
        NothingToReview: no runs with CNNSee images under ``logdir``.
    """
    runs = load_runs(logdir, progress=progress)
    if max_steps is not None:
        for run in runs:
            run.images = {tag: evenly_spaced(frames, max_steps) for tag, frames in run.images.items()}
    page = render_report(runs, title=title or str(logdir), progress=progress)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    tags = {tag for run in runs for tag in run.images}
    return ReportSummary(path, len(runs), len(tags), sum(run.frame_count for run in runs), path.stat().st_size)


def data_uri(frame: Frame) -> str:
    return f"data:{frame.mime};base64,{base64.b64encode(frame.data).decode('ascii')}"


def script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``</script>``, ``<!--`` or ``&`` can appear in it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_report(runs: list[Run], *, title: str = "CNNSee", progress: bool | None = None) -> str:
    """The review page for ``runs`` as one HTML string."""
    esc = html.escape
    tags = tag_order(tag for run in runs for tag in run.images)
    images: list[str] = []
    image_index: dict[str, int] = {}  # the same picture logged at several steps is embedded once
    total = sum(run.frame_count for run in runs)
    bar = progress_bar(None, progress, total=total, desc="embedding images", unit="image")

    def embed(frame: Frame) -> int:
        bar.update(1)
        digest = hashlib.sha1(frame.data).hexdigest()
        if digest not in image_index:
            image_index[digest] = len(images)
            images.append(data_uri(frame))
        return image_index[digest]

    tag_data, sections, inline = [], [], set()
    for number, tag in enumerate(tags):
        per_run: list[list[list[int]] | None] = []
        for run in runs:
            frames = run.images.get(tag)
            per_run.append(None if not frames else [[frame.step, embed(frame)] for frame in frames])
        steps = sorted({step for frames in per_run if frames for step, _ in frames})
        tag_data.append({"tag": tag, "steps": steps, "frames": per_run})
        sections.append(_tag_section(number, tag, steps, per_run, runs, images))
        inline.update(frames[-1][1] for frames in per_run if frames)
    bar.close()
    all_steps = sorted({step for entry in tag_data for step in entry["steps"]})
    # The images the page opens with are in their <img src>; the script takes them from there, so the data holds
    # null for them instead of a second copy.
    listed = [None if index in inline else uri for index, uri in enumerate(images)]
    data = {"runs": [run.name for run in runs], "tags": tag_data, "steps": all_steps, "images": listed}
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    frame_count = sum(run.frame_count for run in runs)
    toc = "".join(f'<li><a href="#tag-{i}">{esc(tag)}</a></li>' for i, tag in enumerate(tags))
    run_toggles = "".join(
        f'<label class="run-toggle"><input type="checkbox" data-run="{i}" checked> {esc(run.name)}</label>'
        for i, run in enumerate(runs)
    )
    last = len(all_steps) - 1
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>CNNSee report: {esc(title)}</title>",
        f"<style>{_CSS}</style></head>",
        '<body class="size-fit">',
        "<header>",
        f'<h1>CNNSee report <span class="title">{esc(title)}</span></h1>',
        f'<p class="sub">{len(runs)} run{"s" * (len(runs) != 1)}, {len(tags)} tags, {frame_count} images '
        f"({len(all_steps)} steps) &middot; generated {esc(generated)}</p>",
        '<div class="toolbar">',
        f'<label>all tags <input type="range" id="all-steps" min="0" max="{last}" value="{last}" '
        f'aria-label="step of every tag"></label>',
        f'<output id="all-step" class="step-label">step {all_steps[-1]}</output>',
        '<button type="button" id="play" aria-pressed="false">&#9654; play</button>',
        '<label>size <select id="size"><option value="fit">fit</option><option value="1">1&times;</option>'
        '<option value="2">2&times;</option><option value="4">4&times;</option></select></label>',
        f'<span class="runs">runs {run_toggles}</span>' if len(runs) > 1 else "",
        "</div></header>",
        "<main>",
        "<noscript><p>JavaScript is off: the page shows the last step only.</p></noscript>",
        f'<nav><h2>Tags</h2><ul>{toc}</ul></nav>',
        _runs_table(runs),
        *sections,
        "</main>",
        f'<script type="application/json" id="cnnsee-data">{script_json(data)}</script>',
        f"<script>{_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part)


def _tag_section(
    number: int, tag: str, steps: list[int], per_run: list[list[list[int]] | None], runs: list[Run], images: list[str]
) -> str:
    esc = html.escape
    last = len(steps) - 1
    cells = []
    for index, (run, frames) in enumerate(zip(runs, per_run)):
        if not frames:
            cells.append(
                f'<figure class="cell" data-run="{index}" data-empty="1"><figcaption><span class="run">'
                f'{esc(run.name)}</span></figcaption><p class="missing">no image for this tag</p></figure>'
            )
            continue
        step, image = frames[-1]
        frame = next(f for f in run.images[tag] if f.step == step)
        stale = step != steps[-1]
        cells.append(
            f'<figure class="cell{" stale" * stale}" data-run="{index}"><figcaption><span class="run">'
            f'{esc(run.name)}</span> <span class="at">step {step}</span></figcaption>'
            f'<img src="{images[image]}" data-image="{image}" data-step="{step}" width="{frame.width}" '
            f'height="{frame.height}" alt="{esc(tag)}, {esc(run.name)}"></figure>'
        )
    return (
        f'<section class="tag" id="tag-{number}" data-tag="{number}">'
        f'<div class="tag-head"><h2>{esc(tag)}</h2>'
        f'<input type="range" class="step-slider" min="0" max="{last}" value="{last}" '
        f'aria-label="step of {esc(tag)}"{" disabled" * (last == 0)}>'
        f'<output class="step-label">step {steps[-1]}</output>'
        f'<span class="step-count">{last + 1}/{len(steps)}</span></div>'
        f'<div class="cells">{"".join(cells)}</div></section>'
    )


def _runs_table(runs: list[Run]) -> str:
    """Hyper-parameters, CNNSee options, last scalars and texts of every run, one column each; differing rows
    marked."""
    esc = html.escape
    groups = [
        ("hyper-parameters", [{k: format_value(v) for k, v in run.hparams.items()} for run in runs]),
        ("CNNSee options (config.yaml)", [{k: format_value(v) for k, v in run.cnnsee_options.items()} for run in runs]),
        ("last scalar values", [{k: f"{v:.6g} (step {s})" for k, (s, v) in run.scalars.items()} for run in runs]),
        ("text", [dict(run.text) for run in runs]),
    ]
    header = "".join(f'<th data-run="{i}">{esc(run.name)}</th>' for i, run in enumerate(runs))
    several = len(runs) > 1
    rows, hidden = [], 0
    for label, values in groups:
        keys = sorted({key for per_run in values for key in per_run})
        if not keys:
            continue
        group_rows, all_same = [], True
        for key in keys:
            cells = [per_run.get(key) for per_run in values]
            # with several runs, a row where all agree is hidden until asked for; scalars always show
            comparable = several and label != "last scalar values"
            differs, same = comparable and len(set(cells)) > 1, comparable and len(set(cells)) == 1
            all_same = all_same and same
            hidden += same
            row = "".join(
                f'<td data-run="{i}">{"&mdash;" if cell is None else esc(cell)}</td>' for i, cell in enumerate(cells)
            )
            mark = ' class="differs"' if differs else ' class="same"' if same else ""
            group_rows.append(f"<tr{mark}><th>{esc(key)}</th>{row}</tr>")
        mark = ' class="group same"' if all_same else ' class="group"'
        rows.append(f'<tr{mark}><th colspan="{len(runs) + 1}">{esc(label)}</th></tr>')
        rows.extend(group_rows)
    if not rows:
        rows.append(f'<tr><td colspan="{len(runs) + 1}" class="missing">no hyper-parameters logged</td></tr>')
    toggle = (
        f'<label class="show-same"><input type="checkbox" id="show-same"> show the rows where all runs agree '
        f"({hidden})</label>" if hidden else ""
    )
    configs = "".join(
        f"<details><summary>config.yaml of {esc(run.name)}</summary><pre>{esc(run.config)}</pre></details>"
        for run in runs
        if run.config
    )
    folders = "".join(f"<li><b>{esc(run.name)}</b>: {esc(str(run.path))}</li>" for run in runs)
    return (
        f'<section id="runs"><h2>Runs</h2>{toggle}'
        f'<div class="table-wrap"><table><thead><tr><th></th>{header}</tr></thead><tbody>{"".join(rows)}'
        f"</tbody></table></div>{configs}"
        f'<details><summary>folders</summary><ul class="folders">{folders}</ul></details></section>'
    )


_CSS = """
:root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --accent: #2f6fde; --bg: #f5f6f8; --warn: #b54708; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line);
         padding: 10px 20px 8px; }
h1 { font-size: 18px; margin: 0; }
h1 .title { font-weight: 400; color: var(--muted); font-size: 14px; margin-left: 8px; overflow-wrap: anywhere; }
.sub { color: var(--muted); margin: 0; font-size: 12px; }
.toolbar { display: flex; flex-wrap: wrap; gap: 6px 18px; align-items: center; margin-top: 6px; }
.toolbar label { display: inline-flex; align-items: center; gap: 6px; }
.runs { display: inline-flex; flex-wrap: wrap; gap: 4px 12px; color: var(--muted); }
.run-toggle { color: var(--fg); }
button, select { font: inherit; padding: 2px 10px; border: 1px solid var(--line); border-radius: 6px;
                 background: #fff; cursor: pointer; }
button[aria-pressed="true"] { background: var(--accent); color: #fff; border-color: var(--accent); }
main { padding: 4px 20px 40px; }
section, nav { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
               margin: 12px 0; }
nav h2, #runs h2 { font-size: 15px; margin: 0 0 6px; }
nav ul { columns: 3 260px; margin: 0; padding-left: 18px; font-family: ui-monospace, Menlo, Consolas, monospace;
         font-size: 12.5px; }
nav a { color: var(--accent); text-decoration: none; overflow-wrap: anywhere; }
.tag { scroll-margin-top: 110px; }
.tag-head { display: flex; flex-wrap: wrap; align-items: center; gap: 4px 14px; margin-bottom: 8px; }
.tag-head h2 { font-size: 14.5px; margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace;
               overflow-wrap: anywhere; }
input[type=range] { width: min(420px, 60vw); accent-color: var(--accent); }
.step-label { font-variant-numeric: tabular-nums; font-weight: 600; min-width: 6.5em; }
.step-count { color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
.cells { display: flex; gap: 14px; align-items: flex-start; }
.cell { flex: 1 1 0; min-width: 0; margin: 0; overflow-x: auto; }
.cell figcaption { font-size: 12px; color: var(--muted); margin-bottom: 3px; display: flex; gap: 10px; }
.cell .run { font-weight: 600; color: var(--fg); overflow-wrap: anywhere; }
.cell .at { font-variant-numeric: tabular-nums; }
.cell.stale .at { color: var(--warn); }
.cell img { display: block; max-width: 100%; height: auto; background: #000; }
body.size-zoom .cell img { max-width: none; image-rendering: pixelated; }
.hidden { display: none !important; }
.missing { color: var(--muted); font-style: italic; margin: 4px 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { text-align: left; padding: 2px 12px 2px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 500; white-space: nowrap; }
td { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; overflow-wrap: anywhere;
     max-width: 48ch; }
tr.group th { padding-top: 8px; font-weight: 600; color: var(--muted); }
body:not(.show-same) tr.same { display: none; }
.show-same { display: block; color: var(--muted); font-size: 12.5px; margin-bottom: 4px; }
tr.differs th::after { content: " \\2260"; color: var(--accent); }
tr.differs td { background: #eef4ff; }
details { margin-top: 8px; font-size: 12.5px; }
summary { cursor: pointer; color: var(--muted); }
details pre { max-height: 320px; overflow: auto; background: var(--bg); padding: 8px; font-size: 12px; }
.folders { margin: 4px 0; padding-left: 18px; overflow-wrap: anywhere; }
"""

_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("cnnsee-data").textContent);
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.tag"));
  var zoom = 0;
  document.querySelectorAll(".cell img").forEach(function (img) {
    var index = Number(img.dataset.image);
    if (data.images[index] === null) { data.images[index] = img.getAttribute("src"); }
  });

  // The latest frame at or before `step`, else the run's first frame: frames are [step, image index], by step.
  function frameAt(frames, step) {
    var found = frames[0];
    for (var i = 0; i < frames.length && frames[i][0] <= step; i++) { found = frames[i]; }
    return found;
  }

  function sizeImage(img) {
    img.style.width = zoom ? (img.naturalWidth * zoom) + "px" : "";
  }

  function showTag(section, index) {
    var tag = data.tags[Number(section.dataset.tag)];
    var step = tag.steps[index];
    section.querySelector(".step-label").textContent = "step " + step;
    section.querySelector(".step-count").textContent = (index + 1) + "/" + tag.steps.length;
    section.querySelectorAll(".cell").forEach(function (cell) {
      var frames = tag.frames[Number(cell.dataset.run)];
      if (!frames) { return; }
      var frame = frameAt(frames, step);
      var img = cell.querySelector("img");
      if (img.dataset.image !== String(frame[1])) {
        img.src = data.images[frame[1]];
        img.dataset.image = String(frame[1]);
      }
      img.dataset.step = String(frame[0]);
      var stale = frame[0] !== step;
      var at = cell.querySelector(".at");
      at.textContent = "step " + frame[0];
      at.title = stale ? "no image at step " + step + " in this run: showing step " + frame[0] : "";
      cell.classList.toggle("stale", stale);
    });
  }

  sections.forEach(function (section) {
    var slider = section.querySelector("input.step-slider");
    slider.addEventListener("input", function () { showTag(section, Number(slider.value)); });
  });

  // One slider for every tag: each tag goes to its latest step at or before the chosen one.
  var all = document.getElementById("all-steps");
  var allLabel = document.getElementById("all-step");
  function showAll(index) {
    var step = data.steps[index];
    allLabel.textContent = "step " + step;
    sections.forEach(function (section) {
      var steps = data.tags[Number(section.dataset.tag)].steps;
      var pick = 0;
      for (var i = 0; i < steps.length && steps[i] <= step; i++) { pick = i; }
      var slider = section.querySelector("input.step-slider");
      slider.value = String(pick);
      showTag(section, pick);
    });
  }
  all.addEventListener("input", function () { showAll(Number(all.value)); });

  var play = document.getElementById("play");
  var timer = null;
  function stop() {
    clearInterval(timer);
    timer = null;
    play.setAttribute("aria-pressed", "false");
    play.textContent = "\\u25b6 play";
  }
  play.addEventListener("click", function () {
    if (timer !== null) { stop(); return; }
    if (Number(all.value) >= data.steps.length - 1) { all.value = "0"; showAll(0); }
    play.setAttribute("aria-pressed", "true");
    play.textContent = "\\u275a\\u275a pause";
    timer = setInterval(function () {
      var next = Number(all.value) + 1;
      if (next >= data.steps.length) { stop(); return; }
      all.value = String(next);
      showAll(next);
    }, 700);
  });

  document.querySelectorAll("input[type=checkbox][data-run]").forEach(function (box) {
    box.addEventListener("change", function () {
      document.querySelectorAll("[data-run='" + box.dataset.run + "']").forEach(function (element) {
        if (element !== box) { element.classList.toggle("hidden", !box.checked); }
      });
    });
  });

  var showSame = document.getElementById("show-same");
  if (showSame) {
    showSame.addEventListener("change", function () { document.body.classList.toggle("show-same", showSame.checked); });
  }

  var size = document.getElementById("size");
  size.addEventListener("change", function () {
    zoom = size.value === "fit" ? 0 : Number(size.value);
    document.body.classList.toggle("size-zoom", zoom > 0);
    document.querySelectorAll(".cell img").forEach(sizeImage);
  });
  document.querySelectorAll(".cell img").forEach(function (img) {
    img.addEventListener("load", function () { sizeImage(img); });
  });
})();
"""
