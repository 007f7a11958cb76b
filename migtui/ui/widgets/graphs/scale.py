"""What a graph draws, in axis units: downsampling, value and time axes, unit scaling,
the window of points in view and the content of one build. Pure: no Textual, no
plotext, so it can be reasoned about (and tested) on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal, Union

from migtui.model.history import HistoryPoint

PlotColor = Union[str, int, tuple[int, int, int]]
"""A plotext colour name ("red", "orange+"), a 256-colour index or an RGB tuple."""

Reduce = Literal["max", "min", "first", "last"]
Side = Literal["left", "right"]

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


def _value_axis(peak: float, height: int, label: str) -> _Axis:
    top, ticks, labels = _value_ticks(peak, max(2, min(6, (height - 6) // 3)))
    return _Axis((0.0, top), tuple(ticks), tuple(labels), label)


def _to_cell(value: float, lo: float, hi: float, bins: int) -> int:
    # plotext's own mapping (utility.get_matrix_data), so our marks line up with its ticks.
    return math.floor(round(0.5 + (bins - 1) * (value - lo) / (hi - lo), 8))


# --------------------------------------------------------------------------- what one build draws


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
