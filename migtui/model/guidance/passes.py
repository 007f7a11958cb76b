"""Reading a migration's history pass by pass, and judging each pass.

`_make_pass` builds a pre-copy pass from its samples, putting back when its dirty-log sync
happened; `_judge_step` is the not-converging state machine, run on each pass on what was
known when it began (the memo runs it on completed passes, the analysis on the current one)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median

from migtui.model.guidance.dirtying import Period, _Dirtying, _fit, _run_out
from migtui.model.guidance.tunables import (
    ENTER_MARGIN, EVIDENCE_DOWNTIME, EVIDENCE_PASS, EVIDENCE_PASSES_LEFT, FLAT_PASSES, FLAT_PASSES_SHORT,
    FLOOR_FACTOR, FLOOR_PASSES,
    FLAT_RATIO, FLAT_RATIO_SHORT, LEAVE_PASSES, LEAVE_RATIO, NEW_LOW, PAGE_HEADER, RECENT, WINDOW_S,
)
from migtui.model.history import HistoryPoint


def _evolve(obj, **changes):
    """dataclasses.replace for a frozen dataclass whose __init__ only stores its fields (no
    __post_init__, no slots): a copy of its __dict__. replace() rebuilds the object through
    fields() and __init__, ~10x the cost, and the judge steps call it several times a pass."""
    assert changes.keys() <= obj.__dict__.keys(), changes.keys() - obj.__dict__.keys()
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__, **changes)
    return new


@dataclass
class _Pass:
    number: int
    points: list[HistoryPoint]
    start_time: float  # estimated time of the dirty-log sync that began it
    start_remaining: float | None  # remaining right after that sync (estimated)
    drains: list[float] = field(default_factory=list)  # in-pass remaining drop rates, bytes/s
    wire: list[float] = field(default_factory=list)  # the same, from the bytes sent (any interval)
    throughput: float | None = None  # wire bytes/s during it

    @property
    def drain(self) -> float | None:
        if self.drains:
            return median(self.drains[-RECENT:])
        return median(self.wire[-RECENT:]) if self.wire else None

    @property
    def later_drain(self) -> float | None:
        # Pass 1's drain includes zero pages (a few wire bytes each): not a guide for later passes.
        return self.drain if self.number >= 2 else None


def _wire_drain(a: HistoryPoint, b: HistoryPoint, page: float) -> float | None:
    """Pages sent between two samples, from the bytes sent: what a pass drains even when
    passes come and go between samples. XBZRLE pages cost their encoded size; after pass 1
    the rest are whole pages (header included)."""
    dt = b.time - a.time
    if dt <= 0 or a.transferred is None or b.transferred is None or b.transferred < a.transferred:
        return None
    sent = b.transferred - a.transferred
    pages = 0.0
    if None not in (a.xbzrle_pages, b.xbzrle_pages, a.xbzrle_bytes, b.xbzrle_bytes):
        xp = max(0.0, b.xbzrle_pages - a.xbzrle_pages)  # type: ignore[operator]
        xb = max(0.0, b.xbzrle_bytes - a.xbzrle_bytes)  # type: ignore[operator]
        pages, sent = xp, max(0.0, sent - xb - xp * PAGE_HEADER)
    pages += sent / (page + PAGE_HEADER)
    return pages * page / dt


def _make_pass(number: int, pts: list[HistoryPoint], ahead: HistoryPoint | None, prev: _Pass | None,
               limit_ms: float, page: float, fallback_tp: float | None) -> _Pass:
    """Pass `number` from its samples; `ahead` is the sample before them (in pass 2 or
    later, else None), `prev` the pass before."""
    drains, wire = [], []
    for a, b in zip(pts, pts[1:]):
        dt = b.time - a.time
        if dt > 0 and a.remaining is not None and b.remaining is not None and b.remaining <= a.remaining:
            drains.append((a.remaining - b.remaining) / dt)
    if number >= 2:
        for a, b in zip([ahead] + pts, pts):
            if a is not None and (w := _wire_drain(a, b, page)) is not None:
                wire.append(w)
    tps = [x.throughput_bps for x in pts if x.throughput_bps and x.throughput_bps >= 1]
    p = _Pass(number, pts, pts[0].time, pts[0].remaining, drains, wire, median(tps) if tps else None)
    if prev is None:
        return p
    # The first sample of a pass comes up to one poll after the sync: put back what the
    # pass had already sent, from when the previous pass should have reached the threshold.
    a, b = prev.points[-1], pts[0]
    tp = p.throughput or prev.throughput or fallback_tp
    drain = p.drain or prev.later_drain or tp
    if not drain or b.time <= a.time or a.remaining is None or b.remaining is None:
        return p
    jump = p.number - prev.number
    if jump == 1:
        threshold = (tp or 0.0) * limit_ms / 1000
        sync = a.time + max(0.0, a.remaining - threshold) / (prev.drain or drain)
    else:  # short passes came and went between the samples: assume equal lengths
        sync = a.time + (b.time - a.time) * (jump - 1) / jump
    sync = min(max(sync, a.time), b.time)
    p.start_time = sync
    p.start_remaining = b.remaining + drain * (b.time - sync)
    return p


@dataclass(frozen=True)
class _Judge:
    """The verdict state machine after some passes: small, so a provisional step is cheap."""

    state: bool = False  # not converging
    better: int = 0  # passes in a row that say it converges after all
    starts: tuple[float, ...] = ()  # the last three pass starts (passes >= 2)
    best: float | None = None
    flat: int = 0  # pass starts since a clear new low
    drain_known: float | None = None  # the drain of the latest pass >= 2 that measured one
    recent: tuple[Period, ...] = ()  # the last three dirty-rate periods
    longest: Period | None = None
    shortest: Period | None = None
    value: float | None = None  # the dirty rate last reported
    since: float | None = None  # when its period began
    since_pass: int = 1
    last_start: float | None = None  # when the latest judged pass began
    floor_run: int = 0  # passes in a row whose dirtying in one send window alone was over the slack
    floor_bytes: float | None = None  # the least of them: bytes one window dirtied, at least

    @property
    def model(self) -> _Dirtying | None:
        if not self.recent or self.longest is None or self.shortest is None:
            return None
        return _fit(self.recent, self.longest, self.shortest)


def _one_reply_says_stuck(p: _Pass, limit_ms: float, tp: float | None) -> bool:
    """What a single reply at a pass start shows: QEMU counting pass 3 or later, its own
    expected-downtime far over the limit, and the guest dirtying at least what is sent.
    Pass starts then cannot shrink (each pass re-sends what the one before it dirtied), so
    it is not converging at these settings. XBZRLE (pages cheaper than the wire), and
    throttling (auto-converge, the dirty limit) are ruled out by the caller or here.

    QEMU counts a page once per sync period, so a guest that rewrites its whole working set
    every pass shows just under what the pass sent (page headers, the sync's own time),
    however often it rewrites it: a little under the throughput counts too when, shrinking
    by that ratio a pass at best, the passes would take more than EVIDENCE_PASSES_LEFT."""
    first = p.points[0]
    d, expected = first.dirty_bytes_per_s, first.expected_downtime_ms
    if first.passes is None or first.passes < EVIDENCE_PASS or not d or expected is None or not tp:
        return False
    if first.xbzrle_pages or expected < EVIDENCE_DOWNTIME * limit_ms:
        return False
    if d >= tp:
        return True
    shrink = d / tp
    return shrink >= FLAT_RATIO and math.log(expected / max(limit_ms, 1.0)) > EVIDENCE_PASSES_LEFT * -math.log(shrink)


def _window_floor(j: _Judge, p: _Pass, r0: float, limit_ms: float, tp: float | None) -> tuple[int, float | None]:
    """Each pass measures the guest: it began with what the pass before it dirtied, in that
    pass's length T. A guest dirties no less per second in a shorter span (distinct pages
    saturate), so one send window dirties at least r0 x min(1, window / T). A pass lasts at
    least a window, so if that is over the slack (what a switch-over can take on top of a
    finished pass), no pass ends under the threshold: evidence that comes pass by pass,
    however short the passes are, before QEMU has measured a second dirty-rate period.
    Returns (passes in a row that showed it, the least bytes they showed)."""
    if j.last_start is None or not tp or p.number < 3:
        return 0, None  # pass 2 began with what pass 1 dirtied, over however long pass 1 took
    length = p.start_time - j.last_start
    if length <= 0:
        return 0, None
    drain = p.drain or j.drain_known or tp
    slack = min(tp * limit_ms / 1000, drain * WINDOW_S)
    floor = r0 * min(1.0, WINDOW_S / length)
    if floor >= FLOOR_FACTOR * slack:
        return j.floor_run + 1, floor if j.floor_bytes is None or not j.floor_run else min(floor, j.floor_bytes)
    return 0, None


def _judge_step(j: _Judge, p: _Pass, current: bool, limit_ms: float, start: float,
                fallback_tp: float | None, steady: bool = True) -> _Judge:
    """Judge one pass on what was known when it began.

    The dirtying model is run forward from the pass's excess over the threshold. Not
    converging is entered when that never fits even at a slightly lower dirty rate, and
    left when it fits even at a slightly higher one and either the pass start is clearly
    below the two before or the guest dirties well under the drain. Before two dirty-rate
    periods can be fitted, one reply's own figures may enter it (`steady`: nothing
    throttles the guest); leaving still takes the model.
    """
    if p.number < 2 or p.start_remaining is None:
        return _evolve(j, drain_known=p.later_drain or j.drain_known)
    # QEMU recomputes dirty-pages-rate at a sync a second or more after the last time,
    # over the passes since: a new value closes a period, and so does a sync well over a
    # second later (a steady guest can report the same value again).
    d = p.points[0].dirty_bytes_per_s
    since = j.since if j.since is not None else start
    if d and (d != j.value or p.start_time - since >= 1.5):
        length = p.start_time - since
        if length > 0:
            period = (length / max(1, p.number - j.since_pass), d)
            j = _evolve(j, recent=(j.recent + (period,))[-3:],
                        longest=max(j.longest or period, period), shortest=min(j.shortest or period, period))
        j = _evolve(j, value=d, since=p.start_time, since_pass=p.number)
    r0 = p.start_remaining
    if j.best is None or r0 < j.best * NEW_LOW:
        best, flat = r0, 0
    else:
        best, flat = min(j.best, r0), j.flat + 1
    before = j.drain_known
    shrinking = len(j.starts) >= 2 and r0 < NEW_LOW * min(j.starts[-2:])
    tp = p.throughput or fallback_tp
    floor_run, floor_bytes = _window_floor(j, p, r0, limit_ms, tp)
    j = _evolve(j, starts=(j.starts + (r0,))[-3:], best=best, flat=flat, drain_known=p.drain or before,
                last_start=p.start_time, floor_run=floor_run, floor_bytes=floor_bytes)
    model = j.model
    if not j.state and steady and floor_run >= FLOOR_PASSES:
        return _evolve(j, state=True)
    if not j.state and len(j.recent) < 2 and steady and _one_reply_says_stuck(p, limit_ms, tp):
        return _evolve(j, state=True)
    if model is None or len(j.recent) < 2 or not tp or (current and len(p.points) < 2 and before is not None):
        # Not before two dirty-rate periods (one cannot tell a working set from a steady
        # rate); and the current pass once its own drain is measured (XBZRLE warming up,
        # a new bandwidth).
        return j
    drains = [x for x in (p.drain, before) if x] or [tp]
    thr = tp * limit_ms / 1000
    state = j.state
    if not state:
        drain = max(drains)
        slack = min(thr, drain * WINDOW_S)
        state = r0 > thr and (
            _run_out(r0 - (thr - slack), drain, model.scaled(ENTER_MARGIN), thr) is None
            # Passes of equal length hide a working set (QEMU's rate then equals the drain):
            # a long run of pass starts without a new low says it instead.
            or (flat >= FLAT_PASSES and model.dirtied(1.0) / drain >= FLAT_RATIO)
            or (flat >= FLAT_PASSES_SHORT and model.dirtied(1.0) / drain >= FLAT_RATIO_SHORT)
        )
    else:
        # Leaving: even at the lower of the drains seen and a slightly higher dirty rate,
        # on two passes in a row (timing jitter makes single passes look better).
        drain = min(drains)
        slack = min(thr, drain * WINDOW_S)
        fits = r0 <= thr or _run_out(r0 - (thr - slack), drain, model.scaled(1 / ENTER_MARGIN), thr) is not None
        better = j.better + 1 if fits and (shrinking or model.dirtied(1.0) / drain < LEAVE_RATIO) else 0
        if better >= LEAVE_PASSES:
            state, better = False, 0
        if better != j.better:
            j = _evolve(j, better=better)
    return _evolve(j, state=state, better=0) if state != j.state else j
