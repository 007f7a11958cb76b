"""Benchmark support: a synthetic hour of migration history and the redraw-cost probe.

benchmarks/fig_render.py (figure 5) and tests/test_graphs.py call these; the console never does.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Literal

from migtui.model.history import HistoryPoint, PassMark
from migtui.ui.widgets.graphs.scale import _GIB, _MIB
from migtui.ui.widgets.graphs.widgets import GRAPH_CLASSES

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
