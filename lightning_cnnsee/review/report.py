"""One self-contained HTML page to review CNNSee logs: a step slider per tag, runs side by side, scalar charts.

The page needs nothing but itself: images are embedded as base64 ``data:`` URIs, the CSS and JavaScript
(``assets/report.css``, ``assets/report.js``) are inline, the charts are inline SVG; nothing is fetched. Each image
tag (``cnnsee/gradcam/<layer>``, ...) gets a section with one column per run and a slider over the steps of all
runs; a run without an image at the chosen step shows its latest earlier one, marked. A slider at the top moves every
tag at once and can play the steps as an animation. CNNSee's scalars are drawn as line charts (:mod:`.charts`): a
layer's or method's faithfulness and drift under its images, the others (overhead) in sections of their own. A table
compares the runs' hyper-parameters, CNNSee options (from ``LightningCLI``'s
``config.yaml``) and last scalar values, marking the rows that differ (the rows where all runs agree show on
request). The page opens at the last step; without JavaScript it still shows that step and every chart.

Text from the logs (tags, run names, hyper-parameters) is escaped with ``html.escape`` in the page; the data the
script reads is in a ``<script type="application/json">`` block with ``<``, ``>`` and ``&`` escaped, and the script
writes text with ``textContent`` only. Each distinct picture is embedded once: the ones the page opens with in
their ``<img>``, the others in the data block (the same picture at several steps only once).

The page is written as it is made: one image's bytes are in memory at a time (read from the log file where the
reader found it), so a report of gigabytes of logs needs a few tens of megabytes.

Example::

    >>> from lightning_cnnsee.review import write_report
    >>> summary = write_report("runs", "report.html")  # doctest: +SKIP
    >>> summary.runs, summary.tags, summary.frames  # doctest: +SKIP
    (2, 8, 160)
"""

from __future__ import annotations

import base64
import datetime
import functools
import html
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lightning_cnnsee.review.charts import Chart, chart_svg, charts_of
from lightning_cnnsee.review.logs import load_runs, progress_bar
from lightning_cnnsee.review.runs import Frame, Run, evenly_spaced, format_value
from lightning_cnnsee.vocabulary.names import REPLACE, readable
from lightning_cnnsee.vocabulary.tags import PREFIX, parse_tag, tag_order

__all__ = ["ReportPage", "ReportSummary", "asset", "data_uri_parts", "render_report", "script_json", "write_report"]


@dataclass
class ReportSummary:
    """What :func:`write_report` wrote; ``problems``: what could not be read (also listed in the page)."""

    path: Path
    runs: int
    tags: int
    frames: int
    size_bytes: int
    charts: int = 0
    problems: list[str] = field(default_factory=list)


def write_report(
    logdir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    max_steps: int | None = None,
    title: str | None = None,
    progress: bool | None = None,
) -> ReportSummary:
    """Read the runs under ``logdir`` and write the review page to ``output``.

    The page is written to ``output.part`` as it is made, then renamed: a failure leaves no half page.

    Args:
        logdir: the log folder (a run's folder or any folder above runs).
        output: the HTML file to write (its folder is created).
        max_steps: at most this many steps per tag and run, evenly spaced, first and last kept (``None``: all).
        title: the page title (default: the log folder).
        progress: show progress bars on stderr (``None``: only when stderr is a terminal).

    Raises:
        NothingToReview: no runs with CNNSee images or scalars under ``logdir``.
    """
    runs = load_runs(logdir, progress=progress)
    if max_steps is not None:
        for run in runs:
            run.images = {tag: evenly_spaced(frames, max_steps) for tag, frames in run.images.items()}
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    page = ReportPage(runs, title=readable(title or os.fsdecode(logdir)), progress=progress)
    try:
        with partial.open("w", encoding="utf-8", errors=REPLACE) as handle:  # a name not UTF-8: U+FFFD, no traceback
            for part in page.parts():
                handle.write(part)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    tags = {tag for run in runs for tag in run.images}
    problems = [problem for run in runs for problem in run.problems]
    return ReportSummary(
        path,
        len(runs),
        len(tags),
        sum(run.frame_count for run in runs),
        path.stat().st_size,
        len(page.charts),
        problems,
    )


def render_report(runs: list[Run], *, title: str = "CNNSee", progress: bool | None = None) -> str:
    """The review page for ``runs`` as one HTML string (:func:`write_report` writes it part by part instead)."""
    return "".join(ReportPage(runs, title=title, progress=progress).parts())


@functools.cache
def asset(name: str) -> str:
    """The text of ``assets/<name>`` (the page's CSS and JavaScript), shipped as package data."""
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def data_uri_parts(frame: Frame) -> Iterator[str]:
    """A frame as a ``data:`` URI, in two parts (the prefix and the base64 text)."""
    yield f"data:{frame.mime};base64,"
    yield base64.b64encode(frame.data).decode("ascii")


def script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``</script>``, ``<!--`` or ``&`` can appear in it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class ReportPage:
    """The page of ``runs``, made part by part by :meth:`parts`.

    Before the first part, each frame gets the index of its picture (frames with the same bytes share one), which
    reads every frame once; the parts then read each picture once more, when it is embedded.
    """

    def __init__(self, runs: list[Run], *, title: str = "CNNSee", progress: bool | None = None) -> None:
        self.runs, self.title, self.progress = runs, title, progress
        self.tags = tag_order(tag for run in runs for tag in run.images)
        charts = charts_of(runs)
        # a layer's or method's charts (faithfulness, drift) go beside its images; the others in sections of their own
        self.beside: dict[str, list[Chart]] = {}
        for tag in self.tags:
            parsed = parse_tag(tag)
            mine = [c for c in charts if c.subject and (c.instance, c.subject) == (parsed.instance, parsed.subject)]
            if mine:
                self.beside[tag] = mine
                charts = [c for c in charts if all(c is not chart for chart in mine)]
        self.apart = charts
        # the page's order, which the page's data follows (the script finds chart i as the i-th <svg class="chart">)
        self.charts: list[Chart] = [c for tag in self.tags for c in self.beside.get(tag, [])] + self.apart

    def _index_pictures(self) -> tuple[list[dict[str, Any]], list[Frame], set[int]]:
        """Per tag, ``{"tag", "steps", "frames": per run [[step, picture index], ...] or None}``; one frame per
        distinct picture; and the pictures the page opens with (each run's last frame of each tag)."""
        pictures: list[Frame] = []
        index_of: dict[str, int] = {}
        tag_data, inline = [], set()
        total = sum(run.frame_count for run in self.runs)
        bar = progress_bar(None, self.progress, total=total, desc="reading images", unit="image")
        for tag in self.tags:
            per_run: list[list[list[int]] | None] = []
            for run in self.runs:
                frames = run.images.get(tag)
                if not frames:
                    per_run.append(None)
                    continue
                entries = []
                for frame in frames:
                    digest = frame.digest
                    if digest not in index_of:
                        index_of[digest] = len(pictures)
                        pictures.append(frame)
                    entries.append([frame.step, index_of[digest]])
                    bar.update(1)
                per_run.append(entries)
                inline.add(entries[-1][1])
            steps = sorted({step for entries in per_run if entries for step, _ in entries})
            tag_data.append({"tag": tag, "steps": steps, "frames": per_run})
        bar.close()
        return tag_data, pictures, inline

    def parts(self) -> Iterator[str]:
        """The page, in order, as strings to write one after another: the header, a section per tag, a section per
        group of charts, then the data the page's script reads (with the pictures not shown at first)."""
        tag_data, pictures, inline = self._index_pictures()
        all_steps = sorted({step for entry in tag_data for step in entry["steps"]})
        chart_groups = self._chart_groups()
        yield self._header(all_steps, chart_groups)
        cells = sum(1 for entry in tag_data for frames in entry["frames"] if frames)
        bar = progress_bar(
            None, self.progress, total=cells + len(pictures) - len(inline), desc="embedding images", unit="image"
        )
        for number, entry in enumerate(tag_data):
            yield from self._tag_section(number, entry, pictures)
            bar.update(sum(1 for frames in entry["frames"] if frames))
        for number, (heading, charts) in enumerate(chart_groups):
            yield self._chart_section(number, heading, charts) + "\n"
        yield from self._data_script(tag_data, all_steps, pictures, inline, bar)
        bar.close()
        yield f"<script>{asset('report.js')}</script>\n</body></html>"

    def _header(self, all_steps: list[int], chart_groups: list[tuple[str, list[Chart]]]) -> str:
        """The page up to the first tag: its head, the title line, the toolbar (step slider, size, runs), the table
        of contents and the table of runs."""
        esc = html.escape
        runs = self.runs
        generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        frame_count = sum(run.frame_count for run in runs)
        toc = "".join(f'<li><a href="#tag-{i}">{esc(tag)}</a></li>' for i, tag in enumerate(self.tags))
        toc += "".join(
            f'<li><a href="#charts-{i}">{esc(heading)} (charts)</a></li>' for i, (heading, _) in enumerate(chart_groups)
        )
        run_toggles = "".join(
            f'<label class="run-toggle"><input type="checkbox" data-run="{i}" checked> {esc(run.name)}</label>'
            for i, run in enumerate(runs)
        )
        last = len(all_steps) - 1
        steps_text = f"{frame_count} images ({len(all_steps)} steps)" if all_steps else "no images"
        slider = (
            (
                f'<label>all tags <input type="range" id="all-steps" min="0" max="{last}" value="{last}" '
                f'aria-label="step of every tag"></label>'
                f'<output id="all-step" class="step-label">step {all_steps[-1]}</output>'
                '<button type="button" id="play" aria-pressed="false">&#9654; play</button>'
            )
            if all_steps
            else ""
        )
        return "\n".join(
            part
            for part in [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>CNNSee report: {esc(self.title)}</title>",
                f"<style>{asset('report.css')}</style></head>",
                '<body class="size-fit">',
                "<header>",
                f'<h1>CNNSee report <span class="title">{esc(self.title)}</span></h1>',
                f'<p class="sub">{len(runs)} run{"s" * (len(runs) != 1)}, {len(self.tags)} tags, {steps_text}, '
                f"{len(self.charts)} charts &middot; generated {esc(generated)}</p>",
                '<div class="toolbar">',
                slider,
                '<label>size <select id="size"><option value="fit">fit</option><option value="1">1&times;</option>'
                '<option value="2">2&times;</option><option value="4">4&times;</option></select></label>',
                f'<span class="runs">runs {run_toggles}</span>' if len(runs) > 1 else "",
                "</div></header>",
                "<main>",
                "<noscript><p>JavaScript is off: the page shows the last step only.</p></noscript>",
                f"<nav><h2>Tags</h2><ul>{toc}</ul></nav>",
                _runs_table(runs),
                "",
            ]
            if part
        )

    def _data_script(
        self, tag_data: list[dict[str, Any]], all_steps: list[int], pictures: list[Frame], inline: set[int], bar: Any
    ) -> Iterator[str]:
        """The JSON the page's script reads: runs, tags, steps, charts and every picture as a ``data:`` URI. The
        images the page opens with are in their ``<img src>``; the script takes them from there, so the data holds
        null for them instead of a second copy."""
        data = {
            "runs": [run.name for run in self.runs],
            "tags": tag_data,
            "steps": all_steps,
            "charts": [chart.data() for chart in self.charts],
        }
        yield f'</main>\n<script type="application/json" id="cnnsee-data">{script_json(data)[:-1]},"images":['
        for index, frame in enumerate(pictures):
            if index:
                yield ","
            if index in inline:
                yield "null"
            else:
                yield '"'
                yield from data_uri_parts(frame)
                yield '"'
                bar.update(1)
        yield "]}</script>\n"

    def _chart_groups(self) -> list[tuple[str, list[Chart]]]:
        """The charts not shown beside images, grouped by instance and kind, in order: one section each
        (``cnnsee/overhead``, ...)."""
        groups: dict[tuple[str, str], list[Chart]] = {}
        for chart in self.apart:
            groups.setdefault((chart.instance, chart.kind), []).append(chart)
        return [
            ("/".join(part for part in (PREFIX, instance, kind) if part), charts)
            for (instance, kind), charts in groups.items()
        ]

    def _chart_grid(self, charts: list[Chart]) -> str:
        esc = html.escape
        names = [run.name for run in self.runs]
        figures = "".join(
            f'<figure class="chart-figure"><figcaption>{esc(chart.title)}</figcaption>'
            f"{chart_svg(chart, names, next(i for i, c in enumerate(self.charts) if c is chart))}</figure>"
            for chart in charts
        )
        return f'<div class="chart-grid">{figures}</div>'

    def _chart_section(self, number: int, heading: str, charts: list[Chart]) -> str:
        return (
            f'<section class="charts" id="charts-{number}"><div class="tag-head"><h2>{html.escape(heading)}</h2>'
            f"</div>{self._chart_grid(charts)}</section>"
        )

    def _tag_section(self, number: int, entry: dict[str, Any], pictures: list[Frame]) -> Iterator[str]:
        esc = html.escape
        tag, steps, per_run = entry["tag"], entry["steps"], entry["frames"]
        last = len(steps) - 1
        yield (
            f'<section class="tag" id="tag-{number}" data-tag="{number}">'
            f'<div class="tag-head"><h2>{esc(tag)}</h2>'
            f'<input type="range" class="step-slider" min="0" max="{last}" value="{last}" '
            f'aria-label="step of {esc(tag)}"{" disabled" * (last == 0)}>'
            f'<output class="step-label">step {steps[-1]}</output>'
            f'<span class="step-count">{last + 1}/{len(steps)}</span></div><div class="cells">'
        )
        for index, (run, frames) in enumerate(zip(self.runs, per_run, strict=True)):
            if not frames:
                yield (
                    f'<figure class="cell" data-run="{index}" data-empty="1"><figcaption><span class="run">'
                    f'{esc(run.name)}</span></figcaption><p class="missing">no image for this tag</p></figure>'
                )
                continue
            step, image = frames[-1]
            frame = pictures[image]
            stale = step != steps[-1]
            yield (
                f'<figure class="cell{" stale" * stale}" data-run="{index}"><figcaption><span class="run">'
                f'{esc(run.name)}</span> <span class="at">step {step}</span></figcaption><img src="'
            )
            yield from data_uri_parts(frame)
            yield (
                f'" data-image="{image}" data-step="{step}" width="{frame.width}" height="{frame.height}" '
                f'alt="{esc(tag)}, {esc(run.name)}"></figure>'
            )
        yield "</div>"
        if tag in self.beside:
            yield self._chart_grid(self.beside[tag])
        yield "</section>\n"


def _runs_table(runs: list[Run]) -> str:
    """Hyper-parameters, CNNSee options, last scalar values, texts and reading problems of every run, one column each;
    differing rows marked."""
    esc = html.escape
    groups = [
        ("hyper-parameters", [{k: format_value(v) for k, v in run.hparams.items()} for run in runs]),
        ("CNNSee options (config.yaml)", [{k: format_value(v) for k, v in run.cnnsee_options.items()} for run in runs]),
        (
            "last scalar values",
            [
                {k: f"{series[-1][1]:.6g} (step {series[-1][0]})" for k, series in run.scalars.items() if series}
                for run in runs
            ],
        ),
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
        f"({hidden})</label>"
        if hidden
        else ""
    )
    configs = "".join(
        f"<details><summary>config.yaml of {esc(run.name)}</summary><pre>{esc(run.config)}</pre></details>"
        for run in runs
        if run.config
    )
    problems = "".join(f"<li><b>{esc(run.name)}</b>: {esc(problem)}</li>" for run in runs for problem in run.problems)
    count = sum(len(run.problems) for run in runs)
    problems = (
        f'<details class="problems" open><summary>{count} problem{"s" * (count != 1)} reading the logs</summary>'
        f"<ul>{problems}</ul></details>"
        if problems
        else ""
    )
    folders = "".join(f"<li><b>{esc(run.name)}</b>: {esc(readable(run.path))}</li>" for run in runs)
    return (
        f'<section id="runs"><h2>Runs</h2>{problems}{toggle}'
        f'<div class="table-wrap"><table><thead><tr><th></th>{header}</tr></thead><tbody>{"".join(rows)}'
        f"</tbody></table></div>{configs}"
        f'<details><summary>folders</summary><ul class="folders">{folders}</ul></details></section>'
    )
