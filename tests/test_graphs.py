"""Migration graphs: downsampling, painting against plotext, and drawing only when seen."""

from __future__ import annotations

import math
import re

import pytest
from textual.app import App, ComposeResult
from textual.containers import Grid
from textual_plotext.plot import Plot

from migtui.model.history import HistoryPoint, PassMark
from migtui.ui.widgets import graphs as G
from migtui.ui.widgets.graphs import paint, scale
from migtui.ui.widgets.graphs import (
    DiskGraph,
    MigrationGraph,
    RamGraph,
    ThroughputGraph,
    XbzrleGraph,
    downsample,
    synthetic_history,
)

# ------------------------------------------------------------------ downsample


def test_downsample_fits_width_and_keeps_bucket_peaks() -> None:
    values = [float(i % 10) for i in range(7200)]
    values[5003] = 1000.0  # a one-sample spike
    out = downsample(values, 200)
    assert 0 < len(out) <= 200
    assert max(v for v in out if v is not None) == 1000.0  # the spike survives
    assert all(v == 9.0 for v in out[1:] if v != 1000.0)  # every full bucket keeps its max


def test_downsample_short_input_unchanged_and_degenerate_widths() -> None:
    assert downsample([1.0, None, 3.0], 10) == [1.0, None, 3.0]
    assert downsample([], 10) == []
    assert downsample([1.0, 2.0], 0) == []
    assert len(downsample(list(map(float, range(1001))), 7)) <= 7


def test_downsample_none_is_skipped_and_all_none_bucket_is_a_gap() -> None:
    values: list[float | None] = [None] * 10 + [1.0, None, 5.0, None, 2.0] * 2
    out = downsample(values, 4)  # buckets of 5, aligned on the newest value
    assert out == [None, None, 5.0, 5.0]


def test_downsample_last_keeps_newest_reported_value() -> None:
    values: list[float | None] = [1.0, 2.0, 3.0, 4.0, 5.0, None]
    assert downsample(values, 2, how="last") == [3.0, 5.0]
    assert downsample(values, 2, how="first") == [1.0, 4.0]
    assert downsample(values, 2, how="min") == [1.0, 4.0]


def test_axis_ticks_are_round_and_time_is_relative() -> None:
    top, ticks, labels = scale._value_ticks(137.0, 4)
    assert top == 150 and labels == ["0", "50", "100", "150"]
    assert scale._value_ticks(0.3, 3)[2] == ["0.0", "0.1", "0.2", "0.3"]
    assert scale._value_ticks(0.0, 3)[0] == 1.0  # nothing yet: still a usable axis
    left, ticks, labels = scale._time_axis(3599.5, 100)
    assert left == -3600 and labels[0] == "now" and labels[-1] == "-1h"
    assert scale._time_axis(45, 100)[2][:3] == ["now", "-5s", "-10s"]


# ------------------------------------------------------------------ painting


def test_hd_painting_matches_plotext_cell_for_cell() -> None:
    xs = [float(i - 99) for i in range(100)]
    ys = [None if i % 37 == 5 else 50 + 40 * math.sin(i / 7) + (i * 7919 % 10) for i in range(100)]
    plt = Plot()
    plt.plotsize(80, 24)
    plt._set_size(80, 24)
    plt.xlim(-99, 0)
    plt.ylim(0, 100)
    plt.plot(xs, ys, marker="hd", color=(1, 2, 3))
    plt._set_sizes()
    plt._build_matrix()
    m = plt.monitor.matrix
    theirs = {(r, c): m.marker[r][c] for r in m.Rows_canvas for c in m.Cols_canvas if m.fullground[r][c] == (1, 2, 3)}
    width, height = len(m.Cols_canvas), len(m.Rows_canvas)
    cells = paint._hd_cells(paint._hd_columns(xs, (-99.0, 0.0), width), ys, (0.0, 100.0), width, height)
    ours = {}
    for key, mask in cells.items():
        row, col = divmod(key, width)
        ours[(m.Rows_canvas.start + row, m.Cols_canvas.start + col)] = paint._HD_CHARS[mask]
    assert theirs and ours == theirs


def _text(graph: MigrationGraph, width: int = 100, height: int = 30) -> str:
    return "\n".join(strip.text for strip in graph.build_strips(width, height, "textual-dark"))


def _point(t: float, **values: float | None) -> HistoryPoint:
    fields = {name: None for name in HistoryPoint.__slots__ if name not in ("time", "status")}
    fields.update(values)
    return HistoryPoint(time=t, status="active", **fields)


def test_empty_and_unreported_graphs_say_why() -> None:
    graphs = [ThroughputGraph(), RamGraph(), DiskGraph(), XbzrleGraph()]
    for graph in graphs:
        assert "waiting for samples" in _text(graph)
    ram_only = [_point(i, ram_transferred=i * 1e8, ram_remaining=1e10 - i * 1e8) for i in range(10)]
    for graph in graphs:
        graph.set_data(ram_only, [])
    assert "no block migration" in _text(graphs[2])
    assert "XBZRLE off" in _text(graphs[3])
    ram = _text(graphs[1])
    assert "transferred" in ram and "remaining" in ram
    # The first sample has no throughput yet: not a crash, an empty chart.
    assert "throughput" in _text(graphs[0])


def test_throughput_marks_passes_limit_and_divergence() -> None:
    points = [_point(i, throughput_bps=50 * 2**20, dirty_bytes_per_s=80 * 2**20) for i in range(120)]
    graph = ThroughputGraph()
    graph.set_data(points, [PassMark(30.0, 2), PassMark(90.0, 3)], max_bandwidth=100 * 2**20)
    text = _text(graph)
    assert "not converging" in text and "limit 100 MiB/s" in text
    assert "P2" in text and "P3" in text and "now" in text and "MiB/s" in text
    assert "sent 50.0 MiB/s" in text and "dirty 80.0 MiB/s" in text
    assert "1700000000" not in text  # relative time, not epoch


def test_colors_accept_hex_and_theme_fallbacks() -> None:
    graph = ThroughputGraph()
    graph.set_colors({"throughput": "#ff0000", "other": "#00ff00", "bandwidth": (1, 2, 3)})
    assert graph.color("throughput") == (255, 0, 0)
    assert graph.color("overflow") == (0, 255, 0)  # a theme's "other" colour
    assert graph.color("pass") == (1, 2, 3)  # pass marks follow the bandwidth line
    graph.colors = {"dirty": "not a colour"}
    assert graph.color("dirty") == G.DEFAULT_COLORS["dirty"]
    assert graph.color("throughput") == G.DEFAULT_COLORS["throughput"]


def test_redraw_cost_is_measurable() -> None:
    assert 0 < G.redraw_cost(60, 20, points=500, runs=1) < 5000


# ------------------------------------------------------------------ in an app


class GraphApp(App[None]):
    CSS = "Grid { grid-size: 2 2; }"

    def compose(self) -> ComposeResult:
        with Grid():
            yield ThroughputGraph(id="throughput")
            yield RamGraph(id="ram")
            yield DiskGraph(id="disk")
            yield XbzrleGraph(id="xbzrle")


def _screen_text(graph: MigrationGraph) -> str:
    return "\n".join(graph.render_line(y).text for y in range(graph.size.height))


async def test_graphs_in_app_draw_once_per_sample_and_wait_while_hidden() -> None:
    history, marks = synthetic_history(7200)
    app = GraphApp()
    async with app.run_test(size=(120, 40)) as pilot:
        graphs = list(app.query(MigrationGraph))
        assert len(graphs) == 4
        for graph in graphs:
            graph.set_data(history, marks, 128 * 2**20)
        await pilot.pause()
        throughput, ram, disk, xbzrle = graphs
        assert all(g.size.width == 60 and g.builds >= 1 and not g.stale for g in graphs)
        text = _screen_text(throughput)
        assert "throughput vs dirty rate" in text and "sent" in text and "dirty" in text
        assert "MiB/s" in text and "now" in text and "-1h" in text
        assert re.search(r"P\d+", _screen_text(ram))  # pass marks, numbered
        assert "transferred" in _screen_text(ram) and "transferred" in _screen_text(disk)
        assert "miss" in _screen_text(xbzrle) and "% of peak" in _screen_text(xbzrle)

        # Repaints without new data reuse the build.
        builds = [g.builds for g in graphs]
        for graph in graphs:
            graph.refresh()
        await pilot.pause()
        assert [g.builds for g in graphs] == builds

        # Hidden: set_data only marks it stale; shown again: exactly one rebuild.
        disk.display = False
        await pilot.pause()
        hidden_builds = disk.builds
        for _ in range(3):
            disk.set_data(history[1:], marks, None)
            throughput.set_data(history[1:], marks, None)
        await pilot.pause()
        assert disk.stale and disk.builds == hidden_builds
        assert throughput.builds == builds[0] + 1  # visible: three set_data, one frame
        disk.display = True
        await pilot.pause()
        assert not disk.stale and disk.builds == hidden_builds + 1

        # A theme change rebuilds with the theme's colours, and does not crash.
        app.theme = "textual-light"
        await pilot.pause()
        assert throughput.builds == builds[0] + 2
        assert "throughput" in _screen_text(throughput)


@pytest.mark.parametrize("size", [(1, 1), (10, 3), (19, 5), (20, 6), (25, 6), (21, 8)])
def test_tiny_sizes_do_not_crash(size: tuple[int, int]) -> None:
    history, marks = synthetic_history(100)
    # No data, the first sample (span 0), two samples at the same time, a short and a longer history.
    for points in ([], history[:1], [history[0], history[0]], history[:16], history):
        for cls in G.GRAPH_CLASSES:
            graph = cls()
            graph.set_data(points, marks[:1] if points else [], 1.0)
            strips = graph.build_strips(size[0], size[1], "textual-dark")
            assert len(strips) == size[1] and all(s.cell_length == size[0] for s in strips)


# ------------------------------------------------------------------ time axis vs painted data

_INK = set(paint._HD_CHARS) - {" "}


def _age(label: str) -> float:
    """A time-axis label -> seconds before now: "now", "-5s", "-2m", "-1m30", "-1h"."""
    if label == "now":
        return 0.0
    m = re.fullmatch(r"-(\d+)([smh])(\d\d)?", label)
    assert m, label
    return int(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]] + int(m[3] or 0)


def _axis_and_dots(lines: list[str]) -> tuple[list[tuple[int, str]], list[int]]:
    """(tick column, label) along the time axis, and the columns of the lowest painted row."""
    axis = next(i for i, line in enumerate(lines) if "└" in line)
    ticks = [i for i, ch in enumerate(lines[axis]) if ch == "┬"]
    labels = lines[axis + 1].split()
    assert len(ticks) == len(labels), (lines[axis], lines[axis + 1])
    painted = [i for i, line in enumerate(lines[:axis])
               if any(ch in _INK for ch in line) and "transferred" not in line and "remaining" not in line]
    dots = [i for i, ch in enumerate(lines[max(painted)]) if ch in _INK] if painted else []
    return list(zip(ticks, labels)), dots


def _dots_at(ages: list[float], marked: set[float]) -> list[HistoryPoint]:
    """One point per age, oldest first; only the marked ages report a value (1 B), so each is one dot.

    The newest point also reports 4 B remaining: the y axis then reaches 4 and
    the dots stay clear of the legend in the top rows.
    """
    now = 10_000.0
    return [_point(now - age, ram_transferred=1.0 if age in marked else None,
                   ram_remaining=4.0 if age == 0 else None) for age in ages]


@pytest.mark.parametrize(
    ("span", "width", "step"),
    [
        (1.0, 20, 0.5),
        (8.0, 45, 0.5),  # a short real migration on the 120x36 dashboard
        (8.1, 50, 0.5),
        (8.0, 55, 0.5),
        (30.0, 60, 1.0),
        (120.0, 100, 2.5),
        (3600.0, 200, 30.0),
    ],
)
def test_time_labels_sit_over_the_data_of_their_age(span: float, width: int, step: float) -> None:
    # Few enough points to need no downsampling: each dot is drawn at its own time.
    ages = sorted({k * step for k in range(int(span / step + 1e-9) + 1)} | {span}, reverse=True)
    graph = RamGraph()
    graph.set_data(_dots_at(ages, {0.0}), [])
    axis, dots = _axis_and_dots([s.text for s in graph.build_strips(width, 18, "textual-dark")])
    now_col, now_label = axis[-1]
    assert now_label == "now" and dots and abs(max(dots) - now_col) <= 1

    shown = {_age(label) for _, label in axis if _age(label) <= span}
    assert shown <= set(ages) and len(shown) >= (2 if span >= 8 else 1)
    graph.set_data(_dots_at(ages, shown), [])
    axis_again, dots = _axis_and_dots([s.text for s in graph.build_strips(width, 18, "textual-dark")])
    assert axis_again == axis
    for col, label in axis:
        if _age(label) <= span:
            assert any(abs(dot - col) <= 1 for dot in dots), (label, col, dots)
    assert abs(max(dots) - now_col) <= 1


async def test_short_history_on_the_dashboard_grid_lines_up() -> None:
    """16 samples 0.5 s apart, the graphs about 50 wide: as a real 8 s migration is shown."""
    ages = [i * 0.5 for i in range(15, -1, -1)]
    app = GraphApp()
    async with app.run_test(size=(100, 36)) as pilot:
        ram = app.query_one(RamGraph)
        ram.set_data(_dots_at(ages, {0.0}), [])
        await pilot.pause()
        assert 45 <= ram.size.width <= 55
        axis, _ = _axis_and_dots([ram.render_line(y).text for y in range(ram.size.height)])
        assert axis[-1][1] == "now" and axis[-1][0] >= ram.size.width - 3  # at the right end, not 40% across
        marked = {_age(label) for _, label in axis}
        assert len(marked) >= 2 and marked <= set(ages)
        ram.set_data(_dots_at(ages, marked), [])
        await pilot.pause()
        axis, dots = _axis_and_dots([ram.render_line(y).text for y in range(ram.size.height)])
        assert len(dots) == len(axis)
        for (col, label), dot in zip(axis, dots):
            assert abs(dot - col) <= 1, (label, col, dots)


def test_first_sample_is_drawn_at_now() -> None:
    graph = RamGraph()
    graph.set_data(_dots_at([0.0], {0.0}), [PassMark(10_000.0, 1)])
    axis, dots = _axis_and_dots([s.text for s in graph.build_strips(45, 16, "textual-dark")])
    assert axis[-1][1] == "now" and dots and abs(max(dots) - axis[-1][0]) <= 1
