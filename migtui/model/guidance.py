"""Operator guidance: what a migration is doing, when it will end, and what would help.

Pure: computed from a MigrationTracker's history, with no I/O. (A memo keyed weakly
on the tracker keeps the per-pass work done for earlier calls, so a call costs only
the samples added since; the results are those of a fresh computation.)

The model is QEMU's pre-copy loop. Each pass sends the pages in the dirty bitmap while
the guest dirties pages again. Between 100 ms send windows QEMU checks whether what
is left fits in ``bandwidth x downtime-limit`` (the threshold); if so it syncs the
dirty log, and if it still fits, stops the guest and sends the rest: the switch-over.
So what the next pass must send beyond the threshold is what the guest dirtied during
this one:

    excess(n+1) = dirtied(T(n)),   T(n) = excess(n) / drain

where *drain* is how fast ``remaining`` falls inside a pass (zero pages and XBZRLE
pages cost far fewer wire bytes than 4 KiB, so drain is not the wire *throughput*).
``dirtied(T)`` counts each page once: a guest rewriting a bounded working set W
dirties ``W (1 - exp(-rate T / W))`` distinct bytes in T seconds, so QEMU's
dirty-pages-rate (distinct pages per sync period) is lower for longer periods. Two
periods of different lengths give both the rate and W. Iterating the recurrence says
whether the passes get under the threshold (converging, and when) or settle at a floor
above it (not converging). When the threshold is more than a window's sending, a pass
lasts at least one 100 ms window, so a guest that dirties more than the slack in 100 ms
never converges, however small its working set.

Pass 1 has no dirty rate (QEMU reports one from the second sync), so its ETA is a guess
with a wide band; the first reading, over all of pass 1, cannot tell a working set from
a steady rate, so until the second reading the ETA assumes a middling working set.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from dataclasses import dataclass, field, replace
from functools import lru_cache
from statistics import median
from typing import Any, Mapping

from migtui.model.derived import MigrationTracker
from migtui.model.history import HistoryPoint
from migtui.model.sample import DEFAULT_PAGE_SIZE, FINISHED_STATUSES, MigrationSample
from migtui.model.units import DOWNTIME_MAX_MS, format_bytes, format_duration, format_ms, format_rate

__all__ = ["VERDICTS", "ADVICE_KINDS", "Assessment", "Advice", "assess", "advise"]

VERDICTS = (
    "idle", "setup", "converging", "not-converging", "stalled", "switching-over",
    "post-copy", "completed", "failed", "cancelled",
)
ADVICE_KINDS = ("downtime", "bandwidth", "postcopy", "xbzrle-cache", "auto-converge", "multifd")

# -- tunables ----------------------------------------------------------------------------
STALL_SAMPLES = 3  # samples without `transferred` growing ...
STALL_SECONDS = 5.0  # ... spanning at least this long: stalled
WINDOW_S = 0.1  # QEMU sends in 100 ms windows (BUFFER_DELAY) and checks the threshold between them
PAGE_HEADER = 8  # bytes QEMU puts before each page on the wire
# Not-converging is entered when the passes cannot fit even at a 5% lower dirty rate,
# and left when they fit even at a 5% higher one: the rate jitters pass to pass.
ENTER_MARGIN = 0.95
LEAVE_RATIO = 0.85  # ... and to leave, dirtying under this share of the drain, or
NEW_LOW = 0.9  # ... a pass start below this share of the two before,
LEAVE_PASSES = 2  # ... on this many passes in a row
FLAT_PASSES = 8  # ... or this many pass starts without a new low, while dirtying
FLAT_RATIO = 0.9  # ... at least this share of the drain
FLAT_PASSES_SHORT, FLAT_RATIO_SHORT = 3, 0.97  # ... or fewer passes, dirtying all but as fast as it drains
FIT_SPAN = 1.5  # two dirty-rate periods this different in length reveal a working set
# Pass 1 has no dirty rate yet (QEMU reports it from the second sync): assume the guest
# dirties this share of the throughput for the point ETA, and RATIO_HIGH for the band's
# pessimistic end.
FIRST_PASS_RATIO = 0.2
FIRST_PASS_RATIO_HIGH = 0.8
FIRST_PERIOD_SATURATION = 0.63  # 1 - 1/e: pass 1 lasted about one working-set time constant
FIRST_PERIOD_SATURATION_HIGH = 0.9  # the band's pessimistic end
BAND_MIN = 0.1  # the ETA band is at least +-10%: per-pass dirty rates jitter that much
MAX_RUN_PASSES = 2000  # passes looked ahead before calling it not converging
MARGIN = 1.25  # advice margin over the measured need
MAX_POINTS = 3000  # history points read back on a first look at a migration
TAIL = 256  # recent samples kept for rates and stall detection
RECENT = 8  # samples behind a "recent" rate
DEFAULT_DOWNTIME_MS = 300.0  # QEMU 2.4+ default
LEGACY_DOWNTIME_MS = 30.0  # the seed's default (30 ms)
DEFAULT_BANDWIDTH = 128 * 2**20  # QEMU 7.2 default max-bandwidth, bytes/s
LEGACY_BANDWIDTH = 32 * 2**20  # the seed's MAX_THROTTLE
_PRECOPY = frozenset({"active"})
_POSTCOPY = frozenset({"postcopy-active", "postcopy-paused", "postcopy-recover", "postcopy-recover-setup"})
_SENDING = frozenset({"active", "postcopy-active"})


# -- results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Assessment:
    verdict: str
    why: str  # one line, with the numbers behind the verdict
    eta_s: float | None  # None when it will not finish at the current settings
    eta_low_s: float | None
    eta_high_s: float | None  # None when the pessimistic rates would not converge
    implied_downtime_ms: float | None  # remaining / throughput: the limit that would switch over now

    def to_json(self) -> dict[str, Any]:
        def r(v: float | None, nd: int = 1) -> float | None:
            return None if v is None else round(v, nd)

        return {
            "verdict": self.verdict,
            "why": self.why,
            "eta-s": r(self.eta_s),
            "eta-low-s": r(self.eta_low_s),
            "eta-high-s": r(self.eta_high_s),
            "implied-downtime-ms": r(self.implied_downtime_ms, 0),
        }


@dataclass(frozen=True)
class Advice:
    kind: str  # one of ADVICE_KINDS
    text: str  # concrete, with numbers
    command: tuple[str, dict[str, Any]] | None  # the QMP that applies it now, in QEMU's units
    needs_restart: bool  # only helps the next migration (capabilities are fixed while one runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "command": None if self.command is None else {"execute": self.command[0], "arguments": self.command[1]},
            "needs-restart": self.needs_restart,
        }


# -- the dirtying model -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dirtying:
    """Distinct bytes a guest dirties in T seconds: rate x T, saturating at its working set."""

    rate: float  # bytes/s over short periods
    working_set: float | None  # bytes; None when no saturation has been seen

    def dirtied(self, seconds: float) -> float:
        if self.working_set is None:
            return self.rate * seconds
        return self.working_set * -math.expm1(-self.rate * seconds / self.working_set)

    def scaled(self, factor: float) -> _Dirtying:
        return _Dirtying(self.rate * factor, self.working_set)


Period = tuple[float, float]  # (mean pass length s, QEMU's dirty rate bytes/s)


@lru_cache(maxsize=8192)
def _fit(recent: tuple[Period, ...], longest: Period, shortest: Period) -> _Dirtying:
    """The model from the last three dirty-rate periods and the longest and shortest seen.

    The partner of the latest period is whichever of those differs most in length from
    it; a shorter period dirtying faster reveals the working set.
    """
    t_b, d_b = recent[-1]
    rates = sorted(d for _, d in recent)
    typical = _Dirtying(rates[len(rates) // 2], None)  # per-pass rates jitter: the median
    if len(recent) == 1 and longest == shortest:
        return _first_period(t_b, d_b, FIRST_PERIOD_SATURATION)
    t_a, d_a = max((longest, shortest), key=lambda p: abs(math.log(p[0] / t_b)))
    if abs(math.log(t_a / t_b)) < math.log(FIT_SPAN):
        return typical
    (t_long, d_long), (t_short, d_short) = sorted(((t_a, d_a), (t_b, d_b)), reverse=True)
    big, small = d_long * t_long, d_short * t_short
    if d_short <= d_long * 1.05 or small >= big:
        return typical  # shorter periods do not dirty faster: no working set seen

    def gap(w: float) -> float:
        return math.log1p(-big / w) / t_long - math.log1p(-small / w) / t_short

    lo, hi = big * (1 + 1e-9), big * 1e4
    if gap(hi) < 0:
        return typical
    if gap(lo) > 0:
        w = big  # the long period dirtied the whole working set: it is that size
    else:
        for _ in range(48):
            mid = math.sqrt(lo * hi)
            if gap(mid) < 0:
                lo = mid
            else:
                hi = mid
        w = math.sqrt(lo * hi)
    each = sorted(-w * math.log1p(-min(d * t, w * 0.999) / w) / t for t, d in recent)
    return _Dirtying(each[len(each) // 2], w)


def _first_period(seconds: float, rate: float, share: float) -> _Dirtying:
    """One period, over pass 1, cannot tell a working set from a steady rate: assume the
    pass dirtied `share` of a working set (guests mostly rewrite the same pages)."""
    w = rate * seconds / share
    return _Dirtying(-w * math.log1p(-share) / seconds, w)


@lru_cache(maxsize=16384)
def _run_out(excess: float, drain: float, model: _Dirtying, threshold: float) -> tuple[float, int] | None:
    """(seconds, passes) to send `excess`, then what the guest dirties meanwhile, and so on,
    until what a pass leaves behind fits under the threshold; None when that never happens.

    `excess` is what a pass must send before the next check finds it under the threshold.
    QEMU checks between 100 ms windows: with a threshold above a window's sending, a pass
    ends up to a window's sending under it (the slack the next pass's dirtying can use)
    and lasts at least a window; with a smaller one, the bitmap empties within a window
    and the pass ends there. The map excess -> dirtied(pass length) is monotonic, so once
    a pass leaves more than it started with, the passes never get under the threshold.
    """
    t, passes = 0.0, 0
    if not (drain > 0 and math.isfinite(drain) and math.isfinite(excess) and math.isfinite(model.rate)):
        return None
    window = drain * WINDOW_S
    slack = min(threshold, window)
    windowed = threshold > window  # passes last at least one window
    ratio = model.rate / drain
    for _ in range(400):
        if excess <= slack:
            return t, passes
        seconds = excess / drain
        linear = model.working_set is None or model.rate * seconds < 0.01 * model.working_set
        if linear and (seconds > WINDOW_S or not windowed):
            if ratio >= 0.999:
                return None
            floor = max(slack, window if windowed else 0.0)  # a geometric series down to there
            if floor <= 0 or ratio <= 0:
                return None
            n = max(1, math.ceil(math.log(floor / excess) / math.log(ratio)))
            passes += n
            if passes > MAX_RUN_PASSES:
                return None
            t += excess * (1 - ratio**n) / (drain * (1 - ratio))
            excess *= ratio**n
            continue
        nxt = model.dirtied(max(seconds, WINDOW_S) if windowed else seconds)
        t += seconds
        passes += 1
        if nxt <= slack:
            return t, passes
        if nxt >= excess * 0.999 or passes > MAX_RUN_PASSES:
            return None
        excess = nxt
    return None


def _fixed_point(model: _Dirtying, drain: float, threshold: float) -> float | None:
    """Where pass starts settle above the leftover when not converging: E = dirtied(E / drain)."""
    if model.working_set is None:
        return None
    windowed = threshold > drain * WINDOW_S
    e = model.working_set
    for _ in range(200):
        nxt = model.dirtied(max(e / drain, WINDOW_S) if windowed else e / drain)
        if abs(nxt - e) < 1e-3 * e:
            break
        e = nxt
    return e


# -- reading the history, pass by pass ----------------------------------------------------------
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

    @property
    def model(self) -> _Dirtying | None:
        if not self.recent or self.longest is None or self.shortest is None:
            return None
        return _fit(self.recent, self.longest, self.shortest)


def _judge_step(j: _Judge, p: _Pass, current: bool, limit_ms: float, start: float,
                fallback_tp: float | None) -> _Judge:
    """Judge one pass on what was known when it began.

    The dirtying model is run forward from the pass's excess over the threshold. Not
    converging is entered when that never fits even at a slightly lower dirty rate, and
    left when it fits even at a slightly higher one and either the pass start is clearly
    below the two before or the guest dirties well under the drain.
    """
    if p.number < 2 or p.start_remaining is None:
        return replace(j, drain_known=p.later_drain or j.drain_known)
    # QEMU recomputes dirty-pages-rate at a sync a second or more after the last time,
    # over the passes since: a new value closes a period, and so does a sync well over a
    # second later (a steady guest can report the same value again).
    d = p.points[0].dirty_bytes_per_s
    since = j.since if j.since is not None else start
    if d and (d != j.value or p.start_time - since >= 1.5):
        length = p.start_time - since
        if length > 0:
            period = (length / max(1, p.number - j.since_pass), d)
            j = replace(j, recent=(j.recent + (period,))[-3:],
                        longest=max(j.longest or period, period), shortest=min(j.shortest or period, period))
        j = replace(j, value=d, since=p.start_time, since_pass=p.number)
    r0 = p.start_remaining
    if j.best is None or r0 < j.best * NEW_LOW:
        best, flat = r0, 0
    else:
        best, flat = min(j.best, r0), j.flat + 1
    before = j.drain_known
    shrinking = len(j.starts) >= 2 and r0 < NEW_LOW * min(j.starts[-2:])
    j = replace(j, starts=(j.starts + (r0,))[-3:], best=best, flat=flat, drain_known=p.drain or before)
    model = j.model
    tp = p.throughput or fallback_tp
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
            j = replace(j, better=better)
    return replace(j, state=state, better=0) if state != j.state else j


@dataclass
class _Memo:
    """What earlier calls worked out about one tracker's current migration."""

    last: HistoryPoint  # the latest sample consumed
    start: float  # when it began (QEMU's clock via total-time, else the first sample)
    page: float
    limit_ms: float
    prev: HistoryPoint | None = None  # the latest pre-copy sample consumed
    prev_number: int = 0  # its pass
    done: list[_Pass] = field(default_factory=list)  # completed passes
    judge: _Judge = field(default_factory=_Judge)  # after them
    cur: list[HistoryPoint] = field(default_factory=list)  # samples of the pass in progress
    cur_number: int = 0
    cur_ahead: HistoryPoint | None = None
    tail: deque[HistoryPoint] = field(default_factory=lambda: deque(maxlen=TAIL))
    dirty: float | None = None  # QEMU's latest dirty rate (pass >= 2)
    drains: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))  # completed passes >= 2

    def consume(self, p: HistoryPoint) -> None:
        self.tail.append(p)
        self.last = p
        if p.status not in _PRECOPY or p.remaining is None:
            self.prev = None
            return
        if p.passes is not None:
            number = p.passes
        else:
            # QEMU before 2.x has no dirty-sync-count: a sync shows as remaining growing.
            number = max(1, self.prev_number)
            if self.prev is not None and self.prev.remaining is not None and p.remaining > self.prev.remaining:
                number += 1
        if number >= 2 and p.dirty_bytes_per_s:
            self.dirty = p.dirty_bytes_per_s
        if self.cur and self.cur_number != number:
            prev = self.done[-1] if self.done else None
            done = _make_pass(self.cur_number, self.cur, self.cur_ahead, prev, self.limit_ms, self.page, None)
            self.judge = _judge_step(self.judge, done, False, self.limit_ms, self.start, None)
            self.done.append(done)
            if done.number >= 2:
                self.drains.extend((done.drains or done.wire)[-RECENT:])
            self.cur = []
        if not self.cur:
            self.cur_number = number
            self.cur_ahead = self.prev if self.prev_number >= 2 else None
        self.cur.append(p)
        self.prev, self.prev_number = p, number


_MEMOS: weakref.WeakKeyDictionary[MigrationTracker, _Memo] = weakref.WeakKeyDictionary()


def _new_points(tracker: MigrationTracker, memo: _Memo | None) -> tuple[list[HistoryPoint], bool]:
    """The samples of the latest migration not yet consumed (oldest first), and whether
    they continue the memo's migration (False: start afresh from them)."""
    out: list[HistoryPoint] = []
    transferred: float | None = None
    passes: int | None = None
    for p in reversed(tracker.history.points):
        if memo is not None and p is memo.last:
            out.reverse()
            return out, True
        if out:
            if p.status in FINISHED_STATUSES:
                break  # the end of the previous migration
            if p.transferred is not None and transferred is not None and p.transferred > transferred:
                break  # counters restart with each migration
            if p.passes is not None and passes is not None and p.passes > passes:
                break
        out.append(p)
        if p.transferred is not None:
            transferred = p.transferred
        if p.passes is not None:
            passes = p.passes
        if p.status == "setup" or len(out) >= MAX_POINTS:
            break
    out.reverse()
    return out, False


def _memo_for(tracker: MigrationTracker) -> _Memo | None:
    last = tracker.last
    limit_ms = float(tracker.downtime_limit_ms) if tracker.downtime_limit_ms else DEFAULT_DOWNTIME_MS
    memo = _MEMOS.get(tracker)
    if memo is not None and memo.limit_ms != limit_ms:
        memo = None  # a new downtime limit: judge the passes again against it
    new, continues = _new_points(tracker, memo)
    if memo is not None and continues:
        # A new migration may follow the old one's last sample.
        for i, p in enumerate(new):
            if _starts_migration(memo.last if i == 0 else new[i - 1], p):
                new, continues = new[i:], False
                break
    if memo is None or not continues:
        if not new:
            _MEMOS.pop(tracker, None)
            return None
        total_ms = last.get(None, "total-time") if last is not None else None
        start = new[0].time
        if last is not None and last.in_flight and total_ms is not None:
            start = min(start, last.time - total_ms / 1000)
        page = (last.get("ram", "page-size") if last is not None else None) or DEFAULT_PAGE_SIZE
        memo = _Memo(last=new[0], start=start, page=page, limit_ms=limit_ms)
        _MEMOS[tracker] = memo
    for p in new:
        memo.consume(p)
    return memo


def _starts_migration(before: HistoryPoint, p: HistoryPoint) -> bool:
    if before.status in FINISHED_STATUSES or p.status == "setup":
        return True
    if p.transferred is not None and before.transferred is not None and p.transferred < before.transferred:
        return True
    return p.passes is not None and before.passes is not None and p.passes < before.passes


@dataclass
class _Analysis:
    """Everything assess() and advise() share, for one call."""

    last: MigrationSample
    points: list[HistoryPoint]  # the latest samples of the current migration, oldest first
    passes: list[_Pass]  # pre-copy passes, oldest first; the last may be in progress
    judge: _Judge  # the verdict state machine, including the pass in progress
    throughput: float | None  # wire bytes/s, recent median
    throughputs: list[float]
    limit_ms: float
    remaining: float | None
    dirty: float | None  # bytes/s: QEMU's latest dirty rate (pass >= 2)
    drain: float | None  # bytes/s of remaining per second in passes >= 2
    drains: list[float]

    @property
    def model(self) -> _Dirtying | None:
        return self.judge.model

    @property
    def dirtying(self) -> float | None:
        """The dirty rate to show: over short periods once a working set is measured (QEMU's
        own figure, over long passes, understates it), else QEMU's."""
        model = self.model
        if model is not None and model.working_set is not None and len(self.judge.recent) >= 2:
            return max(model.rate, self.dirty or 0.0)
        return self.dirty

    @property
    def not_converging(self) -> bool:
        return self.judge.state

    @property
    def threshold(self) -> float | None:
        return None if self.throughput is None else self.throughput * self.limit_ms / 1000

    @property
    def slack(self) -> float:
        """What the last pass may dirty and still switch over: QEMU checks the threshold
        between 100 ms windows, so a pass ends up to a window's sending under it."""
        return min(self.threshold or 0.0, (self.drain or self.throughput or 0.0) * WINDOW_S)

    @property
    def pass_number(self) -> int | None:
        return self.passes[-1].number if self.passes else None

    @property
    def floor(self) -> float | None:
        if self.model is None or not self.drain:
            return None
        e = _fixed_point(self.model, self.drain, self.threshold or 0.0)
        return None if e is None else e + (self.threshold or 0.0) - self.slack


def _analyse(tracker: MigrationTracker) -> _Analysis | None:
    last = tracker.last
    if last is None:
        return None
    memo = _memo_for(tracker) if (last.in_flight or last.finished) else None
    if memo is None:
        return _Analysis(last, [], [], _Judge(), None, [], DEFAULT_DOWNTIME_MS, None, None, None, [])
    points = list(memo.tail)
    throughputs = [p.throughput_bps for p in points[-4 * RECENT:]
                   if p.status in _SENDING and p.throughput_bps and p.throughput_bps >= 1]
    throughput = median(throughputs[-RECENT:]) if throughputs else None
    if throughput is None and tracker.max_bandwidth:
        throughput = float(tracker.max_bandwidth)
    passes = list(memo.done)
    judge = memo.judge
    drains = list(memo.drains)
    if memo.cur:
        prev = memo.done[-1] if memo.done else None
        cur = _make_pass(memo.cur_number, memo.cur, memo.cur_ahead, prev, memo.limit_ms, memo.page, throughput)
        judge = _judge_step(judge, cur, True, memo.limit_ms, memo.start, throughput)
        passes.append(cur)
        if cur.number >= 2:
            drains = (drains + (cur.drains or cur.wire))[-RECENT:]
    later = bool(passes) and passes[-1].number >= 2
    drain = median(drains) if drains else (throughput if later else None)
    return _Analysis(last, points, passes, judge, throughput, throughputs, memo.limit_ms,
                     points[-1].remaining if points else None, memo.dirty, drain, drains)


# -- ETA ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Eta:
    eta: float | None
    low: float | None = None
    high: float | None = None
    first_pass: bool = False
    passes: int | None = None  # more passes expected after this one


def _precopy_eta(a: _Analysis) -> _Eta:
    """When a pre-copy migration should switch over; eta None when it will not converge."""
    cur = a.passes[-1] if a.passes else None
    remaining, tp = a.remaining, a.throughput
    if cur is None or remaining is None or not tp:
        return _Eta(None)
    thr, slack = a.threshold or 0.0, a.slack
    leftover = thr - slack
    prev = a.passes[-2] if len(a.passes) > 1 else None
    rest_drain = cur.drain or (prev.later_drain if prev else None) or a.drain or tp
    rest = max(0.0, remaining - leftover) / rest_drain
    pass_time = max(0.0, a.points[-1].time - cur.start_time) + rest
    if a.model is None:
        # Pass 1: QEMU has no dirty rate yet. Later passes send only what the guest
        # re-dirties, at the wire rate (no zero pages): assume a share of it.
        def guess(ratio: float) -> float | None:
            out = _run_out(ratio * tp * pass_time, tp, _Dirtying(ratio * tp, None), thr)
            return None if out is None else rest + out[0]

        return _Eta(guess(FIRST_PASS_RATIO), rest, guess(FIRST_PASS_RATIO_HIGH), True)
    drain = cur.later_drain or a.drain or tp  # the latest: XBZRLE warms up, bandwidth changes

    def one(drain: float, model: _Dirtying) -> tuple[float, int] | None:
        out = _run_out(model.dirtied(pass_time), drain, model, thr)
        return None if out is None else (rest + out[0], out[1])

    mid = one(drain, a.model)
    if mid is None:
        return _Eta(None)
    eta = mid[0]
    low_model, high_model = a.model.scaled(1 - BAND_MIN), a.model.scaled(1 + BAND_MIN)
    j = a.judge
    if len(j.recent) == 1 and j.longest == j.shortest:
        # From pass 1 alone: from no working set at all to one nearly all dirtied.
        (t1, d1), = j.recent
        low_model = _Dirtying(d1 * (1 - BAND_MIN), None)
        high_model = _first_period(t1, d1 * (1 + BAND_MIN), FIRST_PERIOD_SATURATION_HIGH)
    low_run = one(max(a.drains or [drain]), low_model)
    high_run = one(min(a.drains or [drain]), high_model)
    low = min(eta * (1 - BAND_MIN), low_run[0] if low_run else eta)
    high = None if high_run is None else max(eta * (1 + BAND_MIN), high_run[0])
    return _Eta(eta, low, high, False, mid[1])


# -- the verdict -------------------------------------------------------------------------------
def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def _stall(a: _Analysis) -> tuple[int, float] | None:
    """(samples, seconds) without `transferred` growing, when that is a stall."""
    pts = a.points
    if not pts or pts[-1].status not in _SENDING or pts[-1].transferred is None:
        return None
    last = pts[-1]
    count, since = 0, last.time
    for p in reversed(pts[:-1]):
        if p.status not in _SENDING or p.transferred is None or p.transferred < last.transferred:
            break  # it grew between p and the sample after it
        count += 1
        since = p.time
    seconds = last.time - since
    if count >= STALL_SAMPLES and seconds >= STALL_SECONDS:
        return count, seconds
    return None


def assess(tracker: MigrationTracker) -> Assessment:
    """The verdict on this VM's latest migration, with an ETA band and the implied downtime."""
    a = _analyse(tracker)
    if a is None:
        return Assessment("idle", "no migration yet", None, None, None, None)
    last = a.last
    status = last.status
    total_ms = last.get(None, "total-time")
    if status in ("none", "unknown") or not (last.in_flight or last.finished):
        return Assessment("idle", "no migration", None, None, None, None)
    if status == "completed":
        downtime = last.get(None, "downtime")
        took = f" in {format_duration(total_ms / 1000)}" if total_ms is not None else ""
        dt = f" with {format_ms(downtime)} of downtime" if downtime is not None else ""
        return Assessment("completed", _one_line(f"completed{took}{dt}"), 0.0, 0.0, 0.0, None)
    if status == "failed":
        desc = last.error_desc or "QEMU gave no reason"
        return Assessment("failed", _one_line(f"failed: {desc}"), None, None, None, None)
    if status in ("cancelled", "cancelling"):
        took = f" after {format_duration(total_ms / 1000)}" if total_ms is not None else ""
        word = "being cancelled" if status == "cancelling" else "cancelled"
        return Assessment("cancelled", f"{word}{took}", None, None, None, None)
    if status in ("setup", "wait-unplug"):
        why = "setting up" if status == "setup" else "waiting for devices to unplug before sending"
        return Assessment("setup", why, None, None, None, None)
    if status == "colo":
        return Assessment("completed", "migrated; now in COLO checkpointing", None, None, None, None)

    remaining, tp = a.remaining, a.throughput
    implied = remaining / tp * 1000 if remaining is not None and tp else None
    limit = format_ms(a.limit_ms)

    stall = _stall(a)
    if stall is not None:
        n, secs = stall
        sent = a.points[-1].transferred
        why = (f"nothing sent for {format_duration(secs)} ({n} samples): transferred stuck at "
               f"{format_bytes(sent)} with {format_bytes(remaining)} left; check the network, "
               "the destination and max-bandwidth")
        return Assessment("stalled", _one_line(why), None, None, None, implied)

    if status in _POSTCOPY:
        if status != "postcopy-active":
            why = f"post-copy {status.removeprefix('postcopy-')}: {format_bytes(remaining)} still on the source"
            return Assessment("post-copy", why, None, None, None, implied)
        eta = remaining / tp if remaining is not None and tp else None
        spread = a.throughputs[-RECENT:] or ([tp] if tp else [])
        low = remaining / max(spread) if eta is not None and spread else None
        high = remaining / min(spread) if eta is not None and spread else None
        why = (f"post-copy: the destination runs and pulls the last {format_bytes(remaining)} "
               f"at {format_rate(tp)}")
        return Assessment("post-copy", _one_line(why), eta, low, high, implied)

    if status == "pre-switchover":
        why = f"paused before switch-over with {format_bytes(remaining)} left: send migrate-continue to finish"
        return Assessment("switching-over", why, None, None, None, implied)
    if status == "device":
        eta = remaining / tp if remaining is not None and tp else None
        why = f"guest stopped: sending the last {format_bytes(remaining)} and device state"
        return Assessment("switching-over", _one_line(why), eta, eta, eta, implied)

    # -- active (pre-copy) --
    cur = a.passes[-1] if a.passes else None
    n = cur.number if cur else None
    thr = a.threshold
    if a.not_converging:
        return Assessment("not-converging", _one_line(_why_not_converging(a)), None, None, None, implied)
    if remaining is not None and thr is not None and remaining <= thr and cur is not None:
        # At the end of every pass remaining dips under the threshold; it switches over
        # only if what the guest dirtied since the pass began still fits after the sync.
        model = a.model or _Dirtying(FIRST_PASS_RATIO * (tp or 0.0), None)
        after_sync = remaining + model.dirtied(max(0.0, a.points[-1].time - cur.start_time))
        if after_sync <= thr:
            eta = remaining / tp if tp else None
            why = (f"{format_bytes(remaining)} left fits in the {limit} downtime limit at "
                   f"{format_rate(tp)}: switching over")
            return Assessment("switching-over", _one_line(why), eta, eta, eta, implied)
    if cur is None:  # no remaining figure from this QEMU
        eta = remaining / tp if remaining is not None and tp else None
        why = f"sending at {format_rate(tp)}; QEMU reports no remaining figure" if remaining is None else \
            f"{format_bytes(remaining)} left at {format_rate(tp)}"
        return Assessment("converging", _one_line(why), eta, eta, None if eta is None else eta, implied)
    e = _precopy_eta(a)
    if e.first_pass:
        allowance = _pct(FIRST_PASS_RATIO / (1 - FIRST_PASS_RATIO))
        why = (f"pass 1: {format_bytes(remaining)} left at {format_rate(tp)}; no dirty rate from QEMU before "
               f"pass 2, so the ETA guesses later passes add {allowance} of pass 1")
        return Assessment("converging", _one_line(why), e.eta, e.low, e.high, implied)
    rates = f"dirtying {format_rate(a.dirtying)} against {format_rate(a.drain)} sent"
    if e.eta is None:
        # The rates say it cannot get under the threshold; the passes have not shown it yet.
        why = (f"pass {n}: {rates}; {format_bytes(remaining)} left, needs {format_bytes(thr)} to switch "
               f"over at {limit}; watching whether it shrinks")
        return Assessment("converging", _one_line(why), None, None, None, implied)
    if e.passes:
        more = f"~{e.passes} more pass{'es' if e.passes > 1 else ''} to get under"
    else:
        more = "switch-over when this pass gets under"
    why = f"pass {n}: {rates}; {format_bytes(remaining)} left, {more} {format_bytes(thr)} ({limit} downtime limit)"
    return Assessment("converging", _one_line(why), e.eta, e.low, e.high, implied)


def _why_not_converging(a: _Analysis) -> str:
    thr, remaining = a.threshold, a.remaining
    rate = f"dirtying {format_rate(a.dirtying)} against {format_rate(a.throughput)} of bandwidth"
    if a.drain and a.throughput and a.drain > a.throughput * 1.2:
        rate = f"dirtying {format_rate(a.dirtying)} against {format_rate(a.drain)} of pages sent"
    flat, floor = a.judge.flat, a.floor
    if flat >= 2:
        trend = f"remaining has not shrunk for {flat} passes"
    elif floor is not None:
        trend = f"remaining levels off near {format_bytes(floor)}"
    else:
        trend = "remaining cannot get under the threshold"
    need = f"{format_bytes(remaining)} left, under {format_bytes(thr)} needed at {format_ms(a.limit_ms)}"
    return f"{rate}; {trend}: {need} (pass {a.pass_number})"


# -- advice ------------------------------------------------------------------------------------
def _round_up(x: float, digits: int = 2) -> float:
    """Up to `digits` significant digits: 843 -> 850, 12345 -> 13000."""
    if x <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(x)) - digits + 1)
    return math.ceil(x / scale - 1e-9) * scale


def _pow2_ceil(x: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1.0, x))))


def _pow2_floor(x: float) -> int:
    return 1 << max(0, math.floor(math.log2(max(1.0, x))))


def _set(modern: bool, name: str, value: Any) -> tuple[str, dict[str, Any]]:
    if modern:
        return "migrate-set-parameters", {name: value}
    if name == "downtime-limit":
        return "migrate_set_downtime", {"value": value / 1000}  # seconds, a float
    if name == "max-bandwidth":
        return "migrate_set_speed", {"value": value}  # bytes/s
    return "migrate-set-cache-size", {"value": value}  # xbzrle-cache-size, bytes


def _pass_load(a: _Analysis) -> float | None:
    """What a pass start holds now: the latest two, or what is left if more."""
    return max(a.judge.starts[-2:] + ((a.remaining,) if a.remaining is not None else ()), default=None)


def _bandwidth_needed(a: _Analysis, limit_ms: float, load: float) -> float | None:
    """The max-bandwidth (wire bytes/s) at which the passes get under the threshold, with a
    margin: beat the guest's short-period dirty rate, or fit a pass start in the limit."""
    tp, model = a.throughput, a.model
    if not tp:
        return None
    options = []
    if load:
        options.append(load * MARGIN / (limit_ms / 1000))
    drain = a.drain or tp
    if model is not None:
        per_wire = drain / tp  # bytes of remaining drained per wire byte (XBZRLE, headers)
        y = model.rate * MARGIN / per_wire
        for _ in range(8):  # check it with the model: a bigger threshold, faster passes
            new_drain, thr = y * per_wire, y * limit_ms / 1000
            slack = min(thr, new_drain * WINDOW_S)
            if _run_out(max(0.0, load - (thr - slack)), new_drain, model, thr) is not None:
                options.append(y)
                break
            y *= MARGIN
    return min(options) if options else None


def advise(
    tracker: MigrationTracker,
    parameters: Mapping[str, Any],
    capabilities: Mapping[str, bool],
    modern: bool = True,
) -> list[Advice]:
    """What would make a stuck migration finish, most likely to help first; [] when it is fine.

    `parameters` is query-migrate-parameters' reply (QEMU's names and units),
    `capabilities` query-migrate-capabilities' as {name: state}. `modern` is False for
    QEMU before 2.4, whose commands take the downtime in seconds. Parameters can change
    during a migration, so their advice comes with the command; capabilities cannot, so
    theirs is for the next migration (command None).
    """
    a = _analyse(tracker)
    if a is None or a.last.status not in _PRECOPY:
        return []
    stalled = _stall(a) is not None
    if not a.not_converging and not stalled:
        return []
    page = a.last.get("ram", "page-size") or DEFAULT_PAGE_SIZE
    limit_ms = _number(parameters.get("downtime-limit")) or tracker.downtime_limit_ms \
        or (DEFAULT_DOWNTIME_MS if modern else LEGACY_DOWNTIME_MS)
    bandwidth = _number(parameters.get("max-bandwidth"))
    if bandwidth is None:
        bandwidth = tracker.max_bandwidth if tracker.max_bandwidth is not None else (
            DEFAULT_BANDWIDTH if modern else LEGACY_BANDWIDTH)
    unlimited = modern and bandwidth == 0  # 2.x+: 0 means no limit
    tp = a.throughput
    scored: list[tuple[float, Advice]] = []

    if stalled:
        if bandwidth == 0 and not modern:
            text = f"raise bandwidth to {format_rate(LEGACY_BANDWIDTH)}: a speed of 0 stops this QEMU from sending"
            return [Advice("bandwidth", text, _set(modern, "max-bandwidth", LEGACY_BANDWIDTH), False)]
        return []

    load = _pass_load(a) or 0.0
    capped = bool(tp and bandwidth and not unlimited and tp >= 0.8 * bandwidth)
    # 1. downtime: the limit at which a pass start fits under the threshold, with a margin.
    if tp and load:
        x = min(float(DOWNTIME_MAX_MS), _round_up(load / tp * 1000 * MARGIN))
        if x > limit_ms:
            score = 0.95 if x <= 1000 else 0.75 if x <= 5000 else 0.4
            cap = " (QEMU's maximum; not enough)" if x >= DOWNTIME_MAX_MS else ""
            text = (f"raise the downtime limit to {format_ms(x)}{cap} (now {format_ms(limit_ms)}): about "
                    f"{format_bytes(load)} is left at each pass start and QEMU counts on {format_rate(tp)} "
                    f"to send it; the guest may pause up to that long")
            scored.append((score, Advice("downtime", text, _set(modern, "downtime-limit", int(x)), False)))
    # 2. bandwidth, when the limit (not the link) holds it back.
    if tp and bandwidth and not unlimited:
        need = _bandwidth_needed(a, limit_ms, load)
        if need is not None:
            y = _round_up(need / 2**20) * 2**20
            if y > bandwidth * 1.05:
                rate = a.model.rate if a.model is not None else a.dirty
                why = f"the guest dirties about {format_rate(rate)} over short periods"
                link = "" if capped else f"; it sends only {format_rate(tp)} now, so the link may be the limit"
                text = f"raise bandwidth to {format_rate(y)} (now {format_rate(bandwidth)}): {why}{link}"
                scored.append((0.8 if capped else 0.25,
                               Advice("bandwidth", text, _set(modern, "max-bandwidth", int(y)), False)))
    # 3. post-copy: finishes whatever the dirty rate, if enabled before the start.
    if capabilities.get("postcopy-ram"):
        secs = (a.remaining or 0.0) / tp if tp else None
        how = f" (about {format_duration(secs)} at {format_rate(tp)})" if secs is not None else ""
        text = (f"switch to post-copy now: the destination runs at once and pulls the "
                f"{format_bytes(a.remaining)} left{how}; if the network fails then, the VM is lost")
        scored.append((0.85, Advice("postcopy", text, ("migrate-start-postcopy", {}), False)))
    elif "postcopy-ram" in capabilities:
        text = ("next time enable postcopy-ram on both sides: migrate-start-postcopy then finishes "
                "a migration whatever the guest dirties")
        scored.append((0.3, Advice("postcopy", text, None, True)))
    # 4. XBZRLE: a cache smaller than the pages re-sent each pass misses most of them.
    xb = _xbzrle_advice(a, parameters, capabilities, modern, page, load)
    if xb is not None:
        scored.append(xb)
    # 5. next time: auto-converge throttles the guest; multifd fills a faster link.
    if "auto-converge" in capabilities and not capabilities.get("auto-converge"):
        rate = a.model.rate if a.model is not None else a.dirty
        text = ("next time enable auto-converge: it slows the guest's vCPUs until dirtying "
                f"(about {format_rate(rate)}) falls below what is sent ({format_rate(a.drain or tp)})")
        scored.append((0.35, Advice("auto-converge", text, None, True)))
    if "multifd" in capabilities and not capabilities.get("multifd"):
        if not capped:
            text = (f"next time enable multifd: one stream sends only {format_rate(tp)}"
                    + ("" if unlimited else f" of the {format_rate(bandwidth)} allowed")
                    + "; parallel channels can fill the link")
            scored.append((0.5, Advice("multifd", text, None, True)))
        else:
            text = (f"next time enable multifd with a higher bandwidth: {format_rate(tp)} on one stream "
                    f"is all the {format_rate(bandwidth)} limit allows")
            scored.append((0.2, Advice("multifd", text, None, True)))
    scored.sort(key=lambda item: -item[0])  # stable: equal scores keep the order above
    return [adv for _, adv in scored]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _xbzrle_advice(
    a: _Analysis,
    parameters: Mapping[str, Any],
    capabilities: Mapping[str, bool],
    modern: bool,
    page: float,
    load: float,
) -> tuple[float, Advice] | None:
    """A bigger XBZRLE cache (a parameter: takes effect now) or, off, XBZRLE next time."""
    total = a.last.get("ram", "total")
    cap_max = _pow2_floor(total) if total else None  # QEMU refuses a cache bigger than RAM
    working = max(load, (a.model.working_set or 0.0) if a.model is not None else 0.0)
    if capabilities.get("xbzrle"):
        cache = _number(parameters.get("xbzrle-cache-size")) or a.last.get("xbzrle-cache", "cache-size")
        if not cache:
            return None
        miss = a.last.get("xbzrle-cache", "cache-miss-rate")
        if miss is None:  # before 2.x: only counters, since the start
            misses, hits = a.last.get("xbzrle-cache", "cache-miss"), a.last.get("xbzrle-cache", "pages")
            miss = misses / (misses + hits) if misses is not None and hits is not None and misses + hits else None
        if miss is None or miss < 0.2:
            return None
        if miss < 0.95:
            working = max(working, cache / (1 - miss))  # hits ~ cache / working set
        z = _pow2_ceil(working * 1.1)
        if cap_max:
            z = min(z, cap_max)
        if z <= cache:
            return None
        text = (f"{working / page:.0f} pages are dirtied again and again against a cache of {cache / page:.0f} "
                f"pages, cache-miss rate {_pct(miss)}: set the XBZRLE cache to {format_bytes(z)} "
                "(it fills during the next pass; keep it for next time)")
        return (0.6 if miss >= 0.5 else 0.4), Advice("xbzrle-cache", text, _set(modern, "xbzrle-cache-size", z), False)
    if "xbzrle" in capabilities and working:
        z = _pow2_ceil(working * 1.1)
        if cap_max:
            z = min(z, cap_max)
        text = (f"next time enable xbzrle with a cache of at least {format_bytes(z)}: the guest dirties "
                f"about {working / page:.0f} pages again and again, and small changes to them compress well")
        return 0.3, Advice("xbzrle-cache", text, None, True)
    return None
