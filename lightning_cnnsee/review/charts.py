"""Line charts of CNNSee's scalars, as inline SVG: one chart per layer or method and metric, one line per series.

CNNSee's scalar tags and the chart each goes to (``<instance>/`` after ``cnnsee/`` for a named callback):

- ``cnnsee/faithfulness/<layer or method>/<metric>`` and its reference ``<metric>_random`` (or ``_baseline``,
  ``_reference``): one chart per layer or method and metric, a line for each;
- ``cnnsee/localization/<layer or method>/energy_inside``, ``pointing_game`` and the reference ``object_area``: one
  chart per layer or method; ``spot_area``, ``spot_edge`` and ``spot_agreement``: another;
- ``cnnsee/drift/<layer or method>/vs_start`` and ``vs_previous``: one chart per layer or method, a line for each;
- ``cnnsee/overhead`` and ``cnnsee/wall_time_s``: one chart each.

Any other ``cnnsee/`` scalar ``.../<group>/<series>`` is charted the drift way. With several runs each run has its
colour and each series its dash; with one run each series has its colour and a reference series is dashed. The x
axis is the step; points that are not finite numbers are left out. Drawn in Python: the page fetches nothing and
needs no script to show them.

Example::

    >>> from pathlib import Path
    >>> from lightning_cnnsee.review.runs import Run
    >>> run = Run("a", Path("."), scalars={"cnnsee/drift/features.8/vs_start": [(0, 0.0), (6, 0.4)],
    ...                                  "cnnsee/drift/features.8/vs_previous": [(6, 0.4)]})
    >>> [(chart.title, [series.name for series in chart.series]) for chart in charts_of([run])]
    [('drift · features.8', ['vs_start', 'vs_previous'])]
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from lightning_cnnsee.review.runs import Run
from lightning_cnnsee.vocabulary.tags import TAG_KINDS, is_cnnsee_tag, parse_tag, tag_order

__all__ = [
    "BOTTOM",
    "Chart",
    "DASHES",
    "LEFT",
    "LEGEND_ROW",
    "MAX_MARKERS",
    "PALETTE",
    "PLOT_HEIGHT",
    "REFERENCE_SUFFIXES",
    "RIGHT",
    "Series",
    "TOP",
    "WIDTH",
    "Y_LABELS",
    "chart_key",
    "chart_svg",
    "charts_of",
    "nice_ticks",
]

REFERENCE_SUFFIXES = ("_random", "_baseline", "_reference")
PALETTE = ("#2f6fde", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#0c8599", "#b08800", "#5f3dc4")
DASHES = ("", "6 4", "2 3", "9 3 2 3")
Y_LABELS = {"localization": "share", "drift": "drift", "overhead": "share of training time", "wall_time_s": "seconds"}
WIDTH, PLOT_HEIGHT = 460, 200
LEFT, RIGHT, TOP, BOTTOM = 62, 16, 12, 40
LEGEND_ROW = 16
MAX_MARKERS = 60  # series with at most this many points get a dot (with a tooltip) per point


@dataclass
class Series:
    """One line: a run's values of one tag."""

    run: int
    name: str
    tag: str
    points: list[tuple[int, float]]
    reference: bool = False


@dataclass
class Chart:
    """One chart: the series of one (instance, kind, layer or method, metric)."""

    instance: str
    kind: str
    subject: str
    metric: str
    series: list[Series] = field(default_factory=list)

    @property
    def title(self) -> str:
        metric = self.metric if self.metric != self.kind else ""
        return " · ".join(part for part in (self.instance, self.kind, self.subject, metric) if part)

    @property
    def y_label(self) -> str:
        return Y_LABELS.get(self.kind) or self.metric or self.kind or "value"

    def data(self) -> dict[str, Any]:
        """The chart as JSON-ready data (the page's data block holds it beside the SVG)."""
        return {
            "title": self.title,
            "kind": self.kind,
            "subject": self.subject,
            "metric": self.metric,
            "series": [
                {"run": s.run, "name": s.name, "tag": s.tag, "points": [list(p) for p in s.points]} for s in self.series
            ],
        }


def _reference_base(metric: str) -> tuple[str, bool]:
    for suffix in REFERENCE_SUFFIXES:
        if metric.endswith(suffix) and len(metric) > len(suffix):
            return metric[: -len(suffix)], True
    return metric, False


def chart_key(tag: str) -> tuple[tuple[str, str, str, str], str, bool]:
    """``((instance, kind, layer or method, metric), series name, is a reference series)`` of a CNNSee scalar tag.

    Example::

        >>> chart_key("cnnsee/faithfulness/features.8/deletion_random")
        (('', 'faithfulness', 'features.8', 'deletion'), 'deletion_random', True)
        >>> chart_key("cnnsee/layercam/drift/layer4/vs_start")
        (('layercam', 'drift', 'layer4', 'drift'), 'vs_start', False)
        >>> chart_key("cnnsee/localization/features.8/object_area")
        (('', 'localization', 'features.8', 'objects'), 'object_area', True)
        >>> chart_key("cnnsee/overhead")
        (('', 'overhead', '', 'overhead'), 'overhead', False)
    """
    instance, kind, rest = parse_tag(tag)  # rest: the layer or method, then the metric
    subject, _, last = rest.rpartition("/")
    if not rest:
        return (instance, kind, "", kind), kind or tag, False
    if kind == "faithfulness":
        base, reference = _reference_base(last)
        return (instance, kind, subject, base), last, reference
    if kind == "localization":  # the object measures in one chart (the object's area, a uniform map's score, dashed)
        group = "spot" if last.startswith("spot_") else "objects"
        return (instance, kind, subject, group), last, last == "object_area"
    return (instance, kind, subject, kind), last, False


def charts_of(runs: list[Run]) -> list[Chart]:
    """The charts of the CNNSee scalars of ``runs``: by instance, then kind (in
    :data:`lightning_cnnsee.vocabulary.tags.TAG_KINDS`
    order), then first seen; in each, the runs' series in run order, references after the series they go with."""
    charts: dict[tuple[str, str, str, str], Chart] = {}
    for index, run in enumerate(runs):
        for tag in tag_order(tag for tag in run.scalars if is_cnnsee_tag(tag)):
            key, name, reference = chart_key(tag)
            points = [(int(step), float(value)) for step, value in run.scalars[tag] if math.isfinite(value)]
            if not points:
                continue
            chart = charts.setdefault(key, Chart(*key))
            chart.series.append(Series(index, name, tag, points, reference))
    instances = list(dict.fromkeys(key[0] for key in charts))
    kind_rank = {kind: rank for rank, kind in enumerate(TAG_KINDS)}
    ordered = sorted(
        enumerate(charts.values()),
        key=lambda item: (instances.index(item[1].instance), kind_rank.get(item[1].kind, len(TAG_KINDS)), item[0]),
    )
    result = [chart for _, chart in ordered]
    for chart in result:
        names = list(dict.fromkeys(series.name for series in sorted(chart.series, key=lambda s: s.reference)))
        chart.series.sort(key=lambda s: (s.run, names.index(s.name)))
    return result


def nice_ticks(low: float, high: float, count: int = 5, *, whole: bool = False) -> list[float]:
    """About ``count`` round values from ``low`` to ``high`` (steps of 1, 2, 2.5 or 5 times a power of ten).

    Example::

        >>> nice_ticks(0, 1)
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        >>> nice_ticks(0, 7, whole=True)
        [0, 2, 4, 6]
    """
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if whole:
        step = max(1, round(step))
    first = math.ceil(low / step - 1e-9) * step
    ticks, index = [], 0
    while first + index * step <= high + step * 1e-9:
        value = first + index * step
        ticks.append(int(round(value)) if whole else round(value, 12))
        index += 1
    return ticks


def _label(value: float) -> str:
    return f"{value:.4g}"


def _value_range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if low == high:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    ticks = nice_ticks(low, high)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else (high - low)
    return min(low, math.floor(low / step) * step), max(high, math.ceil(high / step) * step)


def chart_svg(chart: Chart, run_names: list[str], number: int) -> str:
    """``chart`` as one ``<svg class="chart">``: axes with ticks and labels, a ``<polyline>`` per series (class
    ``series``, ``data-run``, ``data-series``), a legend below."""
    scale = _Scale.of(chart)
    several_runs = len({series.run for series in chart.series}) > 1
    names = list(dict.fromkeys(series.name for series in chart.series))
    height = TOP + PLOT_HEIGHT + BOTTOM + LEGEND_ROW * len(chart.series) + 4
    title_id = f"chart-{number}-title"
    parts = [
        f'<svg class="chart" data-chart="{number}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" aria-labelledby="{title_id}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{title_id}">{html.escape(chart.title)}</title>',
        _axes_svg(scale, chart.y_label),
    ]
    legend = []
    for row, series in enumerate(chart.series):
        position = names.index(series.name)
        colour = PALETTE[(series.run if several_runs else position) % len(PALETTE)]
        dash = DASHES[position % len(DASHES)] if several_runs else ("6 4" if series.reference else "")
        label = f"{run_names[series.run]} · {series.name}" if several_runs else series.name
        parts.append(_series_svg(series, scale, colour, dash, label))
        legend.append(_legend_row_svg(series.run, row, colour, dash, label))
    parts.append(f'<g class="legend">{"".join(legend)}</g></svg>')
    return "".join(parts)


@dataclass(frozen=True)
class _Scale:
    """Where a step and a value go on a chart's plot area."""

    x_low: float
    x_high: float
    y_low: float
    y_high: float

    @classmethod
    def of(cls, chart: Chart) -> _Scale:
        steps = [step for series in chart.series for step, _ in series.points]
        x_low, x_high = min(steps), max(steps)
        if x_low == x_high:
            x_low, x_high = x_low - 1, x_high + 1
        y_low, y_high = _value_range([value for series in chart.series for _, value in series.points])
        return cls(x_low, x_high, y_low, y_high)

    def x(self, step: float) -> float:
        return LEFT + (step - self.x_low) / (self.x_high - self.x_low) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        return TOP + (1 - (value - self.y_low) / (self.y_high - self.y_low)) * PLOT_HEIGHT


def _axes_svg(scale: _Scale, y_label: str) -> str:
    """The grid, the ticks and their labels, the two axes and their names."""
    parts = ['<g class="axes">']
    for tick in nice_ticks(scale.y_low, scale.y_high):
        y = scale.y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick y" x="{LEFT - 5}" y="{y + 3.5:.1f}" text-anchor="end">{_label(tick)}</text>'
        )
    for tick in nice_ticks(scale.x_low, scale.x_high, whole=True):
        x = scale.x(tick)
        parts.append(
            f'<line class="tick-mark" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + PLOT_HEIGHT}" '
            f'y2="{TOP + PLOT_HEIGHT + 4}"/><text class="tick x" x="{x:.1f}" y="{TOP + PLOT_HEIGHT + 15}" '
            f'text-anchor="middle">{tick}</text>'
        )
    plot_width = WIDTH - LEFT - RIGHT
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + PLOT_HEIGHT}" y2="{TOP + PLOT_HEIGHT}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + PLOT_HEIGHT}"/>'
        f'<text class="axis-label x" x="{LEFT + plot_width / 2:.1f}" y="{TOP + PLOT_HEIGHT + 31}" '
        f'text-anchor="middle">step</text>'
        f'<text class="axis-label y" transform="translate(13 {TOP + PLOT_HEIGHT / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(y_label)}</text></g>'
    )
    return "".join(parts)


def _series_svg(series: Series, scale: _Scale, colour: str, dash: str, label: str) -> str:
    """One series: its line, and a marker per point with the step and value when there are few points."""
    esc = html.escape
    dash_attribute = f' stroke-dasharray="{dash}"' if dash else ""
    points = " ".join(f"{scale.x(step):.1f},{scale.y(value):.1f}" for step, value in series.points)
    parts = [
        f'<g class="series" data-run="{series.run}" data-series="{esc(series.name)}">'
        f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"{dash_attribute}>'
        f"<title>{esc(label)}</title></polyline>"
    ]
    if len(series.points) <= MAX_MARKERS:
        parts.extend(
            f'<circle cx="{scale.x(step):.1f}" cy="{scale.y(value):.1f}" r="2.4" fill="{colour}">'
            f"<title>{esc(label)}: step {step}, {value:.6g}</title></circle>"
            for step, value in series.points
        )
    parts.append("</g>")
    return "".join(parts)


def _legend_row_svg(run: int, row: int, colour: str, dash: str, label: str) -> str:
    y = TOP + PLOT_HEIGHT + BOTTOM + row * LEGEND_ROW + 8
    dash_attribute = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<g data-run="{run}"><line x1="{LEFT}" x2="{LEFT + 22}" y1="{y}" y2="{y}" stroke="{colour}" '
        f'stroke-width="2"{dash_attribute}/><text x="{LEFT + 28}" y="{y + 4}">{html.escape(label)}</text></g>'
    )
