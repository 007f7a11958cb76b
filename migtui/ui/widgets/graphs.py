"""Live migration graphs: plotext charts of one VM's History.

Each graph is a textual-plotext PlotextPlot, with two changes that make an
hour of history (7200 points) cheap enough to redraw on every sample:

* plotext draws the frame (title, axes, ticks, tick labels); the lines, pass
  marks and legend are painted straight into plotext's character matrix with
  the same half-block ("hd") markers plotext uses. plotext's own line path
  costs about 10 ms per series at 200x60; this one well under 1 ms.
* the matrix becomes Strips directly. PlotextPlot.render() has plotext write an
  ANSI string and parses it back with Text.from_ansi, which alone costs more
  than the plot, and it does so on every render; here a build happens only
  when data, size, theme or colours changed.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from types import MethodType
from typing import Any, ClassVar, Literal, Union

import plotext._utility as _plotext_utility
from plotext._dict import hd_codes as _HD_CODES
from plotext._dict import themes as _plotext_themes
from rich.color import Color as RichColor
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.color import Color as TextualColor
from textual.color import ColorParseError
from textual.strip import Strip
from textual_plotext import PlotextPlot

from migtui.model.history import HistoryPoint, PassMark
from migtui.model.units import format_bytes, format_rate

__all__ = [
    "MigrationGraph",
    "ThroughputGraph",
    "RamGraph",
    "DiskGraph",
    "XbzrleGraph",
    "GRAPH_CLASSES",
    "DEFAULT_COLORS",
    "PlotColor",
    "downsample",
    "synthetic_history",
    "redraw_cost",
]

PlotColor = Union[str, int, tuple[int, int, int]]
"""A plotext colour name ("red", "orange+"), a 256-colour index or an RGB tuple."""

Reduce = Literal["max", "min", "first", "last"]
Side = Literal["left", "right"]

# Mid-tone colours: readable on a dark and on a light canvas. The keys match the
# [plot] tables of themes/*.toml; "overflow", "encoding", "pages", "bytes" and
# "pass" are extra (a theme's "other" and "bandwidth" fill overflow and pass).
DEFAULT_COLORS: dict[str, PlotColor] = {
    "throughput": (0, 150, 210),
    "dirty": (220, 70, 50),
    "bandwidth": (140, 140, 140),  # the max-bandwidth line
    "transferred": (40, 170, 80),
    "remaining": (210, 140, 0),
    "miss": (220, 70, 50),
    "overflow": (180, 90, 200),
    "encoding": (0, 150, 210),
    "pages": (40, 170, 80),
    "bytes": (210, 140, 0),
    "pass": (140, 140, 140),  # MIGRATION_PASS marks
}
_FALLBACKS = {"overflow": "other", "pass": "bandwidth"}

_MIB = 2**20
_GIB = 2**30
_NO = "default"  # plotext's "no colour / no style"
_PASS_STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400)


# --------------------------------------------------------------------------- downsampling


def _bucket_bounds(n: int, width: int) -> list[tuple[int, int]] | None:
    """[start, end) ranges so n values fit in width columns; None when they already fit.

    Buckets are aligned on the newest value, so the last column is always "now"
    and the partial bucket, if any, is the oldest one.
    """
    if width <= 0:
        return []
    if n <= width:
        return None
    k = -(-n // width)  # ceil: each bucket holds k values, the first may hold fewer
    m = -(-n // k)
    first = n - (m - 1) * k
    return [(0, first)] + [(first + i * k, first + (i + 1) * k) for i in range(m - 1)]


def _pick(values: Sequence[float | None], how: Literal["max", "min"], a: int, b: int) -> float | None:
    chunk = values[a:b]
    try:
        return max(chunk) if how == "max" else min(chunk)  # the common case, at C speed
    except TypeError:  # a None among numbers
        present = [v for v in chunk if v is not None]
        return (max(present) if how == "max" else min(present)) if present else None


def _reduce(values: Sequence[float | None], bounds: list[tuple[int, int]] | None, how: Reduce) -> list[float | None]:
    if bounds is None:
        return list(values)
    if how == "max" or how == "min":
        return [_pick(values, how, a, b) for a, b in bounds]
    out: list[float | None] = []
    for a, b in bounds:  # a level takes the newest (or oldest) value its bucket reported
        value = values[b - 1] if how == "last" else values[a]
        if value is None:
            chunk = values[a:b]
            value = next((v for v in (reversed(chunk) if how == "last" else chunk) if v is not None), None)
        out.append(value)
    return out


def downsample(values: Sequence[float | None], width: int, how: Reduce = "max") -> list[float | None]:
    """Reduce values to at most width buckets, about one per plot column.

    "max" (for rates) keeps each bucket's largest value, so a short spike still
    shows; "last"/"first" keep a bucket's newest/oldest value (for levels and
    times). None (QEMU did not report) is skipped; a bucket of nothing but None
    stays None, a gap in the line. Up to width values are returned as they are.
    """
    seq = values if isinstance(values, (list, tuple)) else list(values)
    return _reduce(seq, _bucket_bounds(len(seq), width), how)


# --------------------------------------------------------------------------- small helpers


def _peak(*series: Iterable[float | None]) -> float:
    return max((v for s in series for v in s if v is not None), default=0.0)


def _latest(values: Sequence[float | None]) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


def _scaled(values: Iterable[float | None], divisor: float) -> list[float | None]:
    return [None if v is None else v / divisor for v in values]


def _byte_unit(peak: float) -> tuple[float, str]:
    """MiB normally; KiB for a trickle and GiB for big guests, so tick labels stay short."""
    if peak < _MIB:
        return 1024.0, "KiB"
    if peak >= 10 * _GIB:
        return float(_GIB), "GiB"
    return float(_MIB), "MiB"


def _nice_step(raw: float) -> float:
    base = 10.0 ** math.floor(math.log10(raw))
    return next((m * base for m in (1, 2, 2.5, 5) if raw <= m * base * (1 + 1e-9)), 10 * base)


def _value_ticks(peak: float, intervals: int) -> tuple[float, list[float], list[str]]:
    """0 .. a round top at or above peak, in about `intervals` steps, with short labels."""
    if peak <= 0 or not math.isfinite(peak):
        peak = 1.0
    step = _nice_step(peak / max(1, intervals))
    count = max(1, math.ceil(peak / step - 1e-9))
    ticks = [i * step for i in range(count + 1)]
    mantissa = round(step / 10 ** math.floor(math.log10(step)), 6)
    decimals = max(0, -math.floor(math.log10(step)) + (1 if mantissa == 2.5 else 0))
    return ticks[-1], ticks, [f"{t:.{decimals}f}" for t in ticks]


def _time_label(seconds: float) -> str:
    s = int(round(seconds))
    if s == 0:
        return "now"
    if s % 3600 == 0:
        return f"-{s // 3600}h"
    if s % 60 == 0:
        return f"-{s // 60}m"
    if s > 60:
        return f"-{s // 60}m{s % 60:02d}"
    return f"-{s}s"


def _time_axis(span: float, columns: int) -> tuple[float, list[float], list[str]]:
    """Left limit and ticks now, -step, -2*step ...: relative time reads at a glance, epoch does not.

    The left limit is rounded out to a fifth of a tick step, so the frame stays
    the same (and is reused) for many samples instead of changing with each one.
    """
    wanted = max(1, columns // 9)  # labels are up to 6 wide, plus breathing space
    step = next((s for s in _TIME_STEPS if span / s <= wanted), _TIME_STEPS[-1])
    quantum = step / 5
    left = max(quantum, math.ceil(span / quantum - 1e-9) * quantum)
    ticks = [-i * step for i in range(int(left // step) + 1)]
    return -left, ticks, [_time_label(-t) for t in ticks]


def _compact(value: float) -> str:
    """1234567 -> '1.2M': a legend has no room for raw counters."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.3g}"


def _plotext_color(value: Any, fallback: PlotColor) -> PlotColor:
    """Any colour the app may hand us -> something plotext accepts (it has no hex)."""
    if isinstance(value, TextualColor):
        return value.rgb
    if isinstance(value, (tuple, list)) and len(value) == 3:
        return (int(value[0]), int(value[1]), int(value[2]))
    if isinstance(value, int) and 0 <= value <= 255:
        return value
    if isinstance(value, str):
        name = value.strip()
        if name in _plotext_utility.colors:
            return name
        try:
            return TextualColor.parse(name).rgb
        except ColorParseError:
            pass
    return fallback


def _value_axis(peak: float, height: int, label: str) -> _Axis:
    top, ticks, labels = _value_ticks(peak, max(2, min(6, (height - 6) // 3)))
    return _Axis((0.0, top), tuple(ticks), tuple(labels), label)


def _with_fallbacks(mapping: Mapping[str, Any]) -> dict[str, Any]:
    given = dict(mapping)
    for key, general in _FALLBACKS.items():
        if key not in given and general in given:
            given[key] = given[general]
    return given


def _to_cell(value: float, lo: float, hi: float, bins: int) -> int:
    # plotext's own mapping (utility.get_matrix_data), so our marks line up with its ticks.
    return math.floor(round(0.5 + (bins - 1) * (value - lo) / (hi - lo), 8))


# --------------------------------------------------------------------------- painting into plotext's matrix

# hd markers: 2x2 sub-cells per character. Bit 8 = upper left, 4 = upper right, 2 = lower left, 1 = lower right.
_HD_CHARS = [" "] * 16
for _code, _char in _HD_CODES.items():
    _HD_CHARS[_code[0] * 8 + _code[1] * 4 + _code[2] * 2 + _code[3]] = _char
_HD_LEGEND = "▞▞"  # what plotext shows for an hd series in its legend


def _hd_columns(xs: Sequence[float | None], xlim: tuple[float, float], width: int) -> list[int | None]:
    """x values -> hd sub-column (two per character), once for all series sharing them."""
    xlo, xhi = xlim
    bins = 2 * width
    if xhi == xlo:
        return [None] * len(xs)
    return [None if x is None else math.floor(round(0.5 + (bins - 1) * (x - xlo) / (xhi - xlo), 8)) for x in xs]


# Bit of a sub-cell within its character, by (row parity << 1 | column parity): the upper row is odd.
_HD_BIT = (2, 1, 8, 4)


def _hd_cells(
    pxs: Sequence[int | None], ys: Sequence[float | None], ylim: tuple[float, float], width: int, height: int
) -> dict[int, int]:
    """Rasterise a polyline into {row * width + col: 4-bit hd mask}, as plotext's plot() would.

    None breaks the line. Points are joined with the same integer steps as
    plotext's get_line, so the result matches plt.plot(..., marker="hd").
    """
    sub_w, sub_h = 2 * width, 2 * height
    ylo, yhi = ylim
    if yhi == ylo:
        return {}
    cells: dict[int, int] = {}
    get = cells.get
    bits = _HD_BIT
    x0 = y0 = -1
    joined = False
    for px, y in zip(pxs, ys):
        if px is None or y is None:
            joined = False
            continue
        py = math.floor(round(0.5 + (sub_h - 1) * (y - ylo) / (yhi - ylo), 8))
        inside = 0 <= px < sub_w and 0 <= py < sub_h
        if joined:
            steps = max(abs(px - x0), abs(py - y0))
            if steps:
                fx, fy = (px - x0) / steps, (py - y0) / steps
                if inside and 0 <= x0 < sub_w and 0 <= y0 < sub_h:
                    # The hot loop: both ends inside, so is every step. Along the
                    # longer axis a step is exactly one sub-cell (fx or fy is +-1.0),
                    # which spares an int() per step.
                    if abs(py - y0) >= abs(px - x0):
                        step = 1 if py > y0 else -1
                        for i, qy in enumerate(range(y0 + step, py + step, step), 1):
                            qx = int(x0 + i * fx)
                            key = (qy >> 1) * width + (qx >> 1)
                            cells[key] = get(key, 0) | bits[(qy & 1) << 1 | (qx & 1)]
                    else:
                        step = 1 if px > x0 else -1
                        for i, qx in enumerate(range(x0 + step, px + step, step), 1):
                            qy = int(y0 + i * fy)
                            key = (qy >> 1) * width + (qx >> 1)
                            cells[key] = get(key, 0) | bits[(qy & 1) << 1 | (qx & 1)]
                else:
                    for i in range(1, steps + 1):
                        qx, qy = int(x0 + i * fx), int(y0 + i * fy)
                        if 0 <= qx < sub_w and 0 <= qy < sub_h:
                            key = (qy >> 1) * width + (qx >> 1)
                            cells[key] = get(key, 0) | bits[(qy & 1) << 1 | (qx & 1)]
        elif inside:
            key = (py >> 1) * width + (px >> 1)
            cells[key] = get(key, 0) | bits[(py & 1) << 1 | (px & 1)]
        x0, y0, joined = px, py, True
    return cells


@dataclass
class _Series:
    ys: list[float | None]  # in axis units
    color: PlotColor
    label: str | None
    side: Side = "left"


@dataclass(frozen=True)
class _Axis:
    """A value axis as plotext draws it."""

    lim: tuple[float, float]
    ticks: tuple[float, ...]
    labels: tuple[str, ...]
    label: str


@dataclass
class _Content:
    """One build: the frame plotext draws, and what is painted inside it."""

    title: str = ""
    xlim: tuple[float, float] = (-60.0, 0.0)
    xticks: tuple[tuple[float, ...], tuple[str, ...]] = ((), ())
    axes: dict[Side, _Axis] = field(default_factory=dict)
    xs: list[float | None] = field(default_factory=list)
    series: list[_Series] = field(default_factory=list)
    hlines: list[tuple[float, PlotColor]] = field(default_factory=list)  # on the left axis
    marks: list[tuple[float, str | None]] = field(default_factory=list)  # (x, label)
    mark_color: PlotColor = _NO

    def frame_key(self) -> tuple[Any, ...]:
        """Everything plotext's part depends on: equal keys give identical frames."""
        return (self.title, self.xlim, self.xticks, tuple(sorted(self.axes.items())))


def _fast_set_matrices(matrix: Any) -> None:
    """plotext's matrix_class.set_matrices without a lambda call per cell (it was 3 ms at 200x60)."""
    cols, rows = matrix.cols, matrix.rows
    canvas, axes = matrix.canvas_color, matrix.axes_color
    c0, c1 = max(0, matrix.Cols_canvas.start), min(cols, matrix.Cols_canvas.stop)
    inside = [axes] * c0 + [canvas] * max(0, c1 - c0) + [axes] * max(0, cols - max(c0, c1))
    outside = [axes] * cols
    matrix.marker = [[" "] * cols for _ in range(rows)]
    matrix.fullground = [[_NO] * cols for _ in range(rows)]
    matrix.background = [list(inside if r in matrix.Rows_canvas else outside) for r in range(rows)]
    matrix.style = [[_NO] * cols for _ in range(rows)]


def _paint(matrix: Any, content: _Content, ticks_color: Any, ticks_style: Any) -> None:
    """Lines, pass marks and legend, in plotext's order: user lines, data, legend, text."""
    cols_c, rows_c = matrix.Cols_canvas, matrix.Rows_canvas
    c0, r0 = cols_c.start, rows_c.start
    width, height = len(cols_c), len(rows_c)
    if width <= 0 or height <= 0:
        return
    marker, fg, style = matrix.marker, matrix.fullground, matrix.style
    xlo, xhi = content.xlim

    for y, color in content.hlines:
        ylo, yhi = content.axes["left"].lim
        row = _to_cell(y, ylo, yhi, height)
        if 0 <= row < height:
            for c in range(c0, c0 + width):
                marker[r0 + row][c], fg[r0 + row][c] = "─", color

    mark_cols: list[tuple[int, str | None]] = []
    for x, label in content.marks:
        col = _to_cell(x, xlo, xhi, width)
        if 0 <= col < width:
            mark_cols.append((col, label))
            for r in range(r0, r0 + height):
                marker[r][c0 + col], fg[r][c0 + col] = "│", content.mark_color

    pxs = _hd_columns(content.xs, content.xlim, width)
    for series in content.series:
        color = series.color
        for key, mask in _hd_cells(pxs, series.ys, content.axes[series.side].lim, width, height).items():
            cy, cx = divmod(key, width)
            r, c = r0 + cy, c0 + cx
            marker[r][c], fg[r][c], style[r][c] = _HD_CHARS[mask], color, _NO

    labelled = [s for s in content.series if s.label is not None]
    if labelled:
        sides = {s.side for s in labelled}
        labels = [f" {s.label} " for s in labelled]
        longest = max(map(len, labels))
        side_width = 2 if len(sides) > 1 else 0
        if width >= side_width + 3 + longest and height >= len(labels):
            for i, (series, label) in enumerate(zip(labelled, labels)):
                r = r0 + height - 1 - i
                row_marker, row_fg, row_style = marker[r], fg[r], style[r]
                col = c0
                if side_width:  # which axis a line belongs to, when both are used
                    for ch in (" ", "<" if series.side == "left" else ">"):
                        row_marker[col], row_fg[col], row_style[col] = ch, ticks_color, ticks_style
                        col += 1
                row_marker[col], row_fg[col], row_style[col] = " ", _NO, _NO
                col += 1
                for ch in _HD_LEGEND:
                    row_marker[col], row_fg[col], row_style[col] = ch, series.color, _NO
                    col += 1
                for ch in label.ljust(longest):
                    row_marker[col], row_fg[col], row_style[col] = ch, ticks_color, ticks_style
                    col += 1

    last_label_end = -1
    for col, label in mark_cols:  # pass numbers along the bottom, where they fit
        if label is None or col <= last_label_end or col + len(label) > width:
            continue
        r = r0
        for i, ch in enumerate(label):
            marker[r][c0 + col + i], fg[r][c0 + col + i], style[r][c0 + col + i] = ch, content.mark_color, _NO
        last_label_end = col + len(label)


# --------------------------------------------------------------------------- plotext matrix -> Strips

_STYLE_CACHE: dict[tuple[Any, Any, Any], Style] = {}
_STYLE_WORDS = {"inverted": "reverse", "flash": "blink", "double-underline": "underline2"}
_INK = re.compile(r"[^ ]+")


def _rich_color(color: Any) -> RichColor | None:
    if color is None or color == _NO:
        return None
    rgb = _plotext_utility.to_rgb(color)  # plotext names and 256-colour codes -> RGB
    if isinstance(rgb, (tuple, list)) and len(rgb) == 3:
        return RichColor.from_rgb(*rgb)
    return None


def _cell_style(fg: Any, st: Any, bg: Any) -> Style:
    key = (fg, st, bg)
    style = _STYLE_CACHE.get(key)
    if style is None:
        words = [] if st in (None, _NO) else str(st).replace("+", " ").split()
        names = [_STYLE_WORDS.get(w, w) for w in words]
        attrs = {n: True for n in names if n in Style.STYLE_ATTRIBUTES}
        style = _STYLE_CACHE[key] = Style(color=_rich_color(fg), bgcolor=_rich_color(bg), **attrs)
    return style


_STYLES_BY_BG: dict[Any, dict[Any, Style]] = {}


def _row_strip(marker: list[str], fg: list[Any], st: list[Any], bg: list[Any], width: int) -> Strip:
    line = "".join(marker)
    if bg.count(bg[0]) == len(bg) and st.count(_NO) == len(st):
        # The usual row: one background, no styles. A space shows no foreground,
        # so only changes of colour between inked cells split segments, and only
        # inked cells are looked at one by one.
        b = bg[0]
        styles = _STYLES_BY_BG.get(b)
        if styles is None:
            styles = _STYLES_BY_BG[b] = {}
        segments: list[Segment] = []
        append = segments.append
        start, current = 0, None
        for match in _INK.finditer(line):
            a, e = match.span()
            run = fg[a:e]
            # One colour over the whole run (the usual case): its first cell says it all.
            for i in (a,) if run.count(run[0]) == e - a else range(a, e):
                colour = fg[i]
                if colour != current:
                    if current is not None:
                        style = styles.get(current)
                        if style is None:
                            style = styles[current] = _cell_style(current, _NO, b)
                        append(Segment(line[start:i], style))
                        start = i
                    current = colour
        current = _NO if current is None else current
        style = styles.get(current)
        if style is None:
            style = styles[current] = _cell_style(current, _NO, b)
        append(Segment(line[start:], style))
        return Strip(segments, width)
    segments = []
    start = 0
    for i in range(1, len(marker) + 1):
        if i == len(marker) or fg[i] != fg[start] or st[i] != st[start] or bg[i] != bg[start]:
            segments.append(Segment(line[start:i], _cell_style(fg[start], st[start], bg[start])))
            start = i
    return Strip(segments, width)


def _matrix_strips(matrix: Any, width: int) -> list[Strip]:
    """plotext's matrices (row 0 at the bottom) -> one Strip per line, top first."""
    strips = []
    for r in range(matrix.rows - 1, -1, -1):
        strip = _row_strip(matrix.marker[r], matrix.fullground[r], matrix.style[r], matrix.background[r], matrix.cols)
        strips.append(strip if matrix.cols == width else strip.adjust_cell_length(width))
    return strips


class _Strips:
    """Built strips as a Rich renderable, for code paths that call render()."""

    def __init__(self, strips: list[Strip]) -> None:
        self.strips = strips

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        newline = Segment.line()
        for strip in self.strips:
            yield from strip
            yield newline


# --------------------------------------------------------------------------- the window being drawn


class _Window:
    """The points in view, bucketed to the plot width; x = seconds before the newest point."""

    def __init__(self, points: list[HistoryPoint], width: int) -> None:
        self.points = points
        self.bounds = _bucket_bounds(len(points), width)
        self.start = points[0].time
        self.now = points[-1].time
        self.span = max(0.0, self.now - self.start)
        if self.bounds is None:
            self.xs: list[float | None] = [p.time - self.now for p in points]
        else:
            self.xs = [points[b - 1].time - self.now for _, b in self.bounds]

    def rate(self, attr: str) -> list[float | None]:
        """A rate: each bucket's peak, so a spike survives downsampling."""
        return _reduce(list(map(attrgetter(attr), self.points)), self.bounds, "max")

    def level(self, attr: str) -> list[float | None]:
        """A level or counter: each bucket's newest value; reads only ~one point per column."""
        if self.bounds is None:
            return list(map(attrgetter(attr), self.points))
        get = attrgetter(attr)
        out: list[float | None] = []
        for a, b in self.bounds:
            value = get(self.points[b - 1])
            if value is None:
                value = next((v for v in map(get, reversed(self.points[a:b])) if v is not None), None)
            out.append(value)
        return out


# --------------------------------------------------------------------------- widgets


class MigrationGraph(PlotextPlot):
    """Base for the dashboard graphs: data in with set_data, drawn only when seen.

    A build happens in render_line(), and only when data, size, theme or colours
    changed since the last one; `builds` counts them. A graph that is hidden when
    data arrives is marked stale and redrawn when it is shown again.
    """

    DEFAULT_CLASSES = "graph"
    TITLE: ClassVar[str] = "graph"
    UNIT: ClassVar[str] = ""

    def __init__(
        self,
        *,
        colors: Mapping[str, Any] | None = None,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's name
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._colors: dict[str, Any] = {**DEFAULT_COLORS, **_with_fallbacks(colors or {})}
        self.builds = 0
        self.stale = False
        self._points: list[HistoryPoint] = []
        self._passes: list[PassMark] = []
        self._max_bandwidth: float | None = None
        self._data_version = 0
        self._theme_version = 0
        self._built_key: tuple[Any, ...] | None = None
        self._frame_key: tuple[Any, ...] | None = None
        self._frame_cells: tuple[list[list[Any]], list[list[Any]], list[list[Any]]] = ([], [], [])
        self._strips: list[Strip] = []

    # -- public API

    # DOMNode.colors (a read-only tuple of computed CSS colours) is shadowed here:
    # for a graph, "colors" means its series colours. Textual reads .colors only
    # on LoadingIndicator, never on arbitrary widgets.
    @property
    def colors(self) -> dict[str, Any]:  # type: ignore[override]
        """Series name -> colour (plotext name, RGB tuple, "#rrggbb" or a Textual Color)."""
        return self._colors

    @colors.setter
    def colors(self, mapping: Mapping[str, Any]) -> None:
        self._colors = {**DEFAULT_COLORS, **_with_fallbacks(mapping)}
        self._request_redraw()

    def set_colors(self, mapping: Mapping[str, Any]) -> None:
        """Lay these colours over the current ones and redraw."""
        self._colors.update(_with_fallbacks(mapping))
        self._request_redraw()

    def set_data(
        self,
        points: Sequence[HistoryPoint],
        passes: Sequence[PassMark],
        max_bandwidth: float | None = None,
    ) -> None:
        """Take a new window of history; redraw now if on screen, else when next shown."""
        # Copies: the caller's deques keep growing, and a later resize must redraw what was given.
        self._points = list(points)
        self._passes = list(passes)
        self._max_bandwidth = max_bandwidth
        self._data_version += 1
        self._request_redraw()

    @property
    def is_visible_now(self) -> bool:
        """Displayed, laid out with a non-empty region, and part of the last screen update."""
        if not self.is_mounted or not self.display or self.size.area == 0:
            return False
        return self.is_on_screen

    # -- Textual plumbing

    def _request_redraw(self) -> None:
        if self.is_visible_now:
            self.stale = False
            self.refresh()
        else:
            self.stale = True

    def on_show(self, event: events.Show) -> None:
        if self.stale or self._built_key != self._wanted_key():
            self.stale = False
            self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        if self.stale:
            self.stale = False
            self.refresh()

    def _register_theme(self, app_theme_name: str) -> None:
        # textual-plotext puts each app theme in plotext's global theme table
        # once, by name: drop the entry so a theme re-registered under the same
        # name with new colours is picked up, and bump our key to rebuild.
        if self.theme == "auto":
            _plotext_themes.pop(self._get_plotext_theme_name(app_theme_name), None)
        self._theme_version += 1
        super()._register_theme(app_theme_name)

    def _wanted_key(self) -> tuple[Any, ...]:
        width, height = self.size
        theme = self._get_plotext_theme_name(self.app.theme)
        return (self._data_version, width, height, theme, self._theme_version, tuple(self._colors.items()))

    def _current_strips(self) -> list[Strip]:
        key = self._wanted_key()
        if key != self._built_key:
            self._strips = self.build_strips(key[1], key[2], key[3])
            self._built_key = key
        return self._strips

    def render_line(self, y: int) -> Strip:
        strips = self._current_strips()
        if 0 <= y < len(strips):
            return strips[y]
        return Strip.blank(self.size.width, self.visual_style.rich_style)

    def render(self) -> _Strips:
        # Textual paints us through render_line; this serves anything asking for a renderable.
        return _Strips(self._current_strips())

    # -- building

    def build_strips(self, width: int, height: int, plotext_theme: str) -> list[Strip]:
        """Draw the current data at width x height. Needs no app (the benchmark calls it)."""
        self.builds += 1
        if width <= 0 or height <= 0:
            return []
        if width < 20 or height < 6:
            content = _Content(title=self.TITLE)  # no room for axes
        else:
            content = self.draw_plot(width, height)
        # The frame (axes, ticks, title) rarely changes from one sample to the
        # next: plotext builds it only when it does, and the lines are painted
        # on a fresh copy of it.
        key = (width, height, plotext_theme, self._theme_version, content.frame_key())
        if key != self._frame_key:
            self._build_frame(content, width, height, plotext_theme)
            self._frame_key = key
        monitor = self.plt.monitor
        matrix = monitor.matrix
        marker, fullground, style = self._frame_cells
        matrix.marker = [row[:] for row in marker]
        matrix.fullground = [row[:] for row in fullground]
        matrix.style = [row[:] for row in style]
        if content.axes:
            _paint(matrix, content, monitor.ticks_color, monitor.ticks_style)
        return _matrix_strips(matrix, width)

    def _build_frame(self, content: _Content, width: int, height: int, plotext_theme: str) -> None:
        plt = self.plt
        plt.clear_figure()  # otherwise plotext keeps limits and ticks from the last build
        # textual-plotext sets both: plotsize alone does not resize a reused figure (its issue #5).
        plt.plotsize(width, height)
        plt._set_size(width, height)
        plt.theme(plotext_theme)
        plt.monitor.matrix.set_matrices = MethodType(_fast_set_matrices, plt.monitor.matrix)
        title = content.title
        room = max(1, width - 8)  # plotext silently drops a title that does not fit
        plt.title(title if len(title) <= room else title[: room - 1] + "…")
        if content.axes:
            plt.xlim(*content.xlim)
            plt.xticks(list(content.xticks[0]), list(content.xticks[1]))
            for side, axis in content.axes.items():
                plt.ylim(*axis.lim, yside=side)
                plt.yticks(list(axis.ticks), list(axis.labels), yside=side)
                plt.ylabel(axis.label, yside=side)
                # plotext draws axes only for plotted data: an unreported point is enough.
                plt.plot([content.xlim[1]], [None], yside=side)
        plt._set_sizes()  # Figure.build() minus set_canvas(): we read the matrix, not ANSI
        plt._build_matrix()
        matrix = plt.monitor.matrix
        self._frame_cells = (matrix.marker, matrix.fullground, matrix.style)

    def draw_plot(self, width: int, height: int) -> _Content:
        """Subclasses: the frame and the lines for the current data."""
        raise NotImplementedError

    def color(self, key: str) -> PlotColor:
        return _plotext_color(self._colors.get(key), DEFAULT_COLORS.get(key, _NO))

    def window(self, width: int) -> _Window | None:
        return _Window(self._points, width) if self._points else None

    def _frame(self, window: _Window | None, width: int, height: int, peak: float, unit: str) -> _Content:
        """Time axis and left value axis for the window."""
        span = window.span if window is not None and window.span > 0 else 60.0
        left, ticks, labels = _time_axis(span, width - 8)
        content = _Content(title=self.TITLE, xlim=(left, 0.0), xticks=(tuple(ticks), tuple(labels)))
        content.xs = window.xs if window is not None else []
        content.axes["left"] = _value_axis(peak, height, unit)
        if window is not None:
            self._pass_marks(content, window, width)
        return content

    def _pass_marks(self, content: _Content, window: _Window, width: int) -> None:
        """A vertical line where each MIGRATION_PASS began, numbered where there is room."""
        marks = [m for m in self._passes if window.start <= m.time <= window.now]
        if not marks or window.span <= 0:
            return
        columns = max(1, width - 10)
        # A long migration has hundreds of passes: a line in every column would
        # hide the data, so show every n-th pass (the labels say which).
        every = next((n for n in _PASS_STEPS if len(marks) / n <= columns / 6), _PASS_STEPS[-1])
        if every > 1:
            # By number, so the same passes stay marked as the window slides.
            marks = [m for m in marks if m.number % every == 0] or marks[::every]
        per_column = window.span / columns
        last_col = -math.inf
        for mark in marks:
            col = (mark.time - window.start) / per_column
            if col - last_col < 2:
                continue  # adjacent lines would read as one thick bar
            last_col = col
            content.marks.append((mark.time - window.now, f"P{mark.number}"))
        content.mark_color = self.color("pass")

    def _empty(self, width: int, height: int, message: str, title: str | None = None) -> _Content:
        """Axes with nothing on them: the graph keeps its place and says why."""
        content = self._frame(self.window(width), width, height, 1.0, self.UNIT)
        content.title = title or f"{self.TITLE} — {message}"
        return content


class ThroughputGraph(MigrationGraph):
    """Sent vs dirtied bytes/s: a migration converges only while sent stays above dirty."""

    TITLE = "throughput"
    UNIT = "MiB/s"

    def draw_plot(self, width: int, height: int) -> _Content:
        window = self.window(width)
        if window is None:
            return self._empty(width, height, "waiting for samples")
        sent = window.rate("throughput_bps")
        dirty = window.rate("dirty_bytes_per_s")
        peak = _peak(sent, dirty)
        limit = self._max_bandwidth if self._max_bandwidth and self._max_bandwidth > 0 else None
        # A limit far above the data would squash both lines flat: then it is only named in the title.
        draw_limit = limit is not None and (peak == 0 or limit <= 4 * peak)
        axis_peak = max(peak, limit if draw_limit and limit else 0.0)
        divisor, unit = (float(_MIB), "MiB/s") if axis_peak >= _MIB else (1024.0, "KiB/s")
        content = self._frame(window, width, height, axis_peak / divisor, unit)
        if draw_limit and limit is not None:
            content.hlines.append((limit / divisor, self.color("bandwidth")))
        last_sent, last_dirty = _latest(sent), _latest(dirty)
        if last_dirty is not None:
            content.series.append(_Series(_scaled(dirty, divisor), self.color("dirty"), f"dirty {format_rate(last_dirty)}"))
        if last_sent is not None:
            content.series.append(_Series(_scaled(sent, divisor), self.color("throughput"), f"sent {format_rate(last_sent)}"))
        title = "throughput vs dirty rate"
        if limit is not None:
            title += f" · limit {format_rate(limit)}" + ("" if draw_limit else " (off scale)")
        if last_sent is not None and last_dirty is not None and last_dirty >= last_sent > 0:
            title += " · dirty ≥ sent: not converging"
        content.title = title
        return content


class _TransferGraph(MigrationGraph):
    """Transferred and remaining bytes of one kind (RAM or disk)."""

    UNIT = "MiB"
    FIELDS: ClassVar[tuple[str, str]] = ("", "")
    MISSING: ClassVar[str] = "not reported"

    def draw_plot(self, width: int, height: int) -> _Content:
        window = self.window(width)
        if window is None:
            return self._empty(width, height, "waiting for samples")
        done = window.level(self.FIELDS[0])
        left = window.level(self.FIELDS[1])
        last_done, last_left = _latest(done), _latest(left)
        if last_done is None and last_left is None:
            return self._empty(width, height, self.MISSING)
        peak = _peak(done, left)
        divisor, unit = _byte_unit(peak)
        content = self._frame(window, width, height, peak / divisor, unit)
        if last_done is not None:
            content.series.append(_Series(_scaled(done, divisor), self.color("transferred"),
                                          f"transferred {format_bytes(last_done)}"))
        if last_left is not None:
            content.series.append(_Series(_scaled(left, divisor), self.color("remaining"),
                                          f"remaining {format_bytes(last_left)}"))
        return content


class RamGraph(_TransferGraph):
    TITLE = "RAM"
    FIELDS = ("ram_transferred", "ram_remaining")


class DiskGraph(_TransferGraph):
    TITLE = "disk"
    FIELDS = ("disk_transferred", "disk_remaining")
    MISSING = "no block migration"


class XbzrleGraph(MigrationGraph):
    """Cache-miss % on the left axis; the other figures as % of their own peak on the right."""

    TITLE = "XBZRLE"
    UNIT = "miss %"
    # (colour key, HistoryPoint field, how its peak is printed)
    OTHERS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("overflow", "xbzrle_overflow", "count"),
        ("encoding", "xbzrle_encoding_rate", "ratio"),
        ("pages", "xbzrle_pages", "count"),
        ("bytes", "xbzrle_bytes", "bytes"),
    )

    def draw_plot(self, width: int, height: int) -> _Content:
        window = self.window(width)
        if window is None:
            return self._empty(width, height, "waiting for samples")
        miss = window.rate("xbzrle_cache_miss_rate")
        # QEMU reports these as running totals (encoding-rate is a ratio): newest per column.
        others = [(key, window.level(attr), kind) for key, attr, kind in self.OTHERS]
        if _latest(miss) is None and all(_latest(values) is None for _, values, _ in others):
            return self._empty(width, height, "off", title="XBZRLE off")
        content = self._frame(window, width, height, 100.0, self.UNIT)
        for key, values, kind in others:
            if _latest(values) is None:
                continue
            peak = _peak(values)
            shown = format_bytes(peak) if kind == "bytes" else f"{peak:.2f}" if kind == "ratio" else _compact(peak)
            scaled = _scaled(values, peak / 100) if peak > 0 else _scaled(values, 1.0)
            content.series.append(_Series(scaled, self.color(key), f"{key} (peak {shown})", "right"))
        if any(s.side == "right" for s in content.series):
            # Mixed units (counts, bytes, a ratio): each is scaled to its own peak in view.
            content.axes["right"] = _value_axis(100.0, height, "% of peak")
        last_miss = _latest(miss)
        if last_miss is not None:
            content.series.append(_Series(_scaled(miss, 0.01), self.color("miss"), f"miss {last_miss * 100:.1f}%"))
        return content


GRAPH_CLASSES: tuple[type[MigrationGraph], ...] = (ThroughputGraph, RamGraph, DiskGraph, XbzrleGraph)


# --------------------------------------------------------------------------- benchmark support


def synthetic_history(
    points: int = 7200, step: float = 0.5, start: float = 1_700_000_000.0, pass_every: int = 40
) -> tuple[list[HistoryPoint], list[PassMark]]:
    """A plausible migration hour: wavy rates, reporting gaps, passes, disk and xbzrle figures."""
    ram_total = 16 * _GIB
    history: list[HistoryPoint] = []
    marks: list[PassMark] = []
    sent_total = 0.0
    for i in range(points):
        t = start + i * step
        gap = i % 997 in (3, 4, 5)  # QEMU skipped a few replies
        sent = 110 * _MIB + 40 * _MIB * math.sin(i / 50)
        dirty = 90 * _MIB + 60 * _MIB * math.sin(i / 170)
        sent_total += sent * step
        remaining = ram_total * (0.5 + 0.45 * math.cos(i / 400))
        number = i // pass_every + 1
        if i % pass_every == 0:
            marks.append(PassMark(t, number))
        history.append(
            HistoryPoint(
                time=t,
                status="active",
                transferred=sent_total,
                remaining=remaining,
                ram_transferred=sent_total,
                ram_remaining=remaining,
                disk_transferred=None if gap else sent_total / 4,
                disk_remaining=None if gap else remaining / 4,
                throughput_bps=None if gap else sent,
                dirty_bytes_per_s=None if gap else dirty,
                expected_downtime_ms=300.0,
                passes=number,
                xbzrle_cache_miss_rate=None if gap else 0.3 + 0.2 * math.sin(i / 80),
                xbzrle_overflow=float(i // 10),
                xbzrle_encoding_rate=1.5 + math.sin(i / 60),
                xbzrle_pages=float(i * 120),
                xbzrle_bytes=float(i * 120 * 600),
            )
        )
    return history, marks


def redraw_cost(
    width: int = 200,
    height: int = 60,
    points: int = 7200,
    runs: int = 9,
    layout: Literal["each", "grid"] = "each",
    source: Literal["history", "all"] = "history",
) -> float:
    """Median ms to set_data and fully rebuild all four graphs after one new sample.

    layout="each": every graph is width x height (the worst case);
    layout="grid": the four share width x height in a 2x2 grid, as on the dashboard.
    source="history": `points` samples go through a live session's History (which thins
    what is older than its newest points), and each run appends one sample and reads
    the history back, as the dashboard does; "all": every point is drawn (a replay of a
    long recording). Counts data copy, downsampling, plotext's frame (rebuilt only when
    axes change, as live), painting and conversion to Strips; not Textual's
    compositor. One hour at 2 samples/s is 7200 points.
    """
    from migtui.model.history import History

    if layout == "grid":
        width, height = width // 2, height // 2
    runs = max(1, runs)
    samples, marks = synthetic_history(points + runs)
    history = History(points)
    for point in samples[:points]:
        history.append(point)
    graphs = [cls() for cls in GRAPH_CLASSES]
    theme = "textual-dark"  # a full-colour theme that textual-plotext registers on import
    timings: list[float] = []
    for run in range(runs):  # the window slides by one sample per run, as it does live
        began = time.perf_counter()
        if source == "history":
            history.append(samples[points + run])
            window = list(history.points)
        else:
            window = samples[run : run + points]
        for graph in graphs:
            graph.set_data(window, marks, 128 * _MIB)
            graph.build_strips(width, height, theme)
        timings.append((time.perf_counter() - began) * 1000)
    return statistics.median(timings)
