"""The dashboard's graph widgets: throughput against dirty rate, RAM, disk and XBZRLE."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MethodType
from typing import Any, ClassVar

import plotext._utility as _plotext_utility
from plotext._dict import themes as _plotext_themes
from textual import events
from textual.color import Color as TextualColor
from textual.color import ColorParseError
from textual.strip import Strip
from textual_plotext import PlotextPlot

from migtui.model.history import HistoryPoint, PassMark
from migtui.model.units import format_bytes, format_rate
from migtui.ui.widgets.graphs.paint import _fast_set_matrices, _paint
from migtui.ui.widgets.graphs.scale import (
    _MIB,
    _NO,
    _PASS_STEPS,
    PlotColor,
    _byte_unit,
    _compact,
    _Content,
    _latest,
    _peak,
    _scaled,
    _Series,
    _time_axis,
    _value_axis,
    _Window,
)
from migtui.ui.widgets.graphs.strips import _matrix_strips, _Strips

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


def _with_fallbacks(mapping: Mapping[str, Any]) -> dict[str, Any]:
    given = dict(mapping)
    for key, general in _FALLBACKS.items():
        if key not in given and general in given:
            given[key] = given[general]
    return given


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
            unlimited = format_rate(limit) == "unlimited"
            title += " · no bandwidth limit" if unlimited else \
                f" · limit {format_rate(limit)}" + ("" if draw_limit else " (off scale)")
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
