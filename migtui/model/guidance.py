"""Operator guidance: what a migration is doing, when it will end, and what would help.

Pure: computed from a MigrationTracker's history, with no I/O. (A memo keyed weakly
on the tracker keeps the per-pass work done for earlier calls, so a call costs only
the samples added since; the results are those of a fresh computation, except that what
a tracker's previous migration showed is kept only if it was assessed while it ran.)

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

Pass 1 has no dirty rate (QEMU reports one from the second sync). Its own rest is known
from the pages sent so far (zero pages cost a few wire bytes; block migration sends the
disk first); the passes after it need the guest's dirtying from elsewhere: a pre-flight
calc-dirty-rate the backend puts on the tracker (``tracker.dirty_rate_prior``), or what
this tracker saw of the guest's previous migration (its fitted dirtying, unthrottled, and
the share of its RAM that was zero pages). With neither, the ETA guesses the guest dirties
a fifth of what is sent, with a wide band. With auto-converge on (``tracker.capabilities``,
or QEMU reporting a throttle) the passes ahead are run with QEMU's throttling rule. The
first reading, over all of pass 1, cannot tell a working set from a steady rate, so until
the second reading the ETA assumes a middling working set (or the previous migration's).
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
from migtui.model.requests import ParamChange
from migtui.model.sample import DEFAULT_PAGE_SIZE, FINISHED_STATUSES, MigrationSample
from migtui.model.units import DOWNTIME_MAX_MS, format_bytes, format_duration, format_ms, format_rate

__all__ = ["VERDICTS", "ADVICE_KINDS", "Assessment", "Advice", "AdviceTaken", "FollowUp", "assess", "advise",
           "take_advice", "follow_up", "unreachable"]

# `deciding`: in flight, and the evidence cannot yet say whether it converges (pass 1 with
# nothing known of the guest, or the rates and the passes disagree). Never `converging` then.
# `unreachable`: QEMU went away or stopped answering; the last verdict is history, not news.
VERDICTS = (
    "idle", "setup", "deciding", "converging", "not-converging", "stalled", "switching-over",
    "post-copy", "completed", "failed", "cancelled", "unreachable",
)
# "nothing-to-tune": said plainly when no parameter the model trusts would finish it now.
ADVICE_KINDS = ("downtime", "bandwidth", "postcopy", "xbzrle-cache", "auto-converge", "multifd", "nothing-to-tune")

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
SAME_BYTES = 0.95  # ... and if the shorter dirtied this share of the longer's bytes, it covered it all
COVERED = 0.95  # ... taken as dirtying this share of the working set in the shorter period
# One reply shows a migration is not converging, before two dirty-rate periods can be
# fitted: from this dirty-sync-count, QEMU's expected-downtime this many times the limit
# while the guest dirties at least what is sent (so the pass starts cannot shrink).
EVIDENCE_PASS = 3
EVIDENCE_DOWNTIME = 2.0
# ... or dirtying at least FLAT_RATIO of what is sent, when pass starts shrinking by that
# ratio (at best) would need more than this many passes to bring expected-downtime under.
EVIDENCE_PASSES_LEFT = 30
# Pass 1 has no dirty rate yet (QEMU reports it from the second sync): assume the guest
# dirties this share of the throughput for the point ETA, and RATIO_HIGH for the band's
# pessimistic end.
FIRST_PASS_RATIO = 0.2
FIRST_PASS_RATIO_HIGH = 0.8
# Before any RAM page is sent (block migration's disk phase) nothing says how much of it
# is zero pages (nearly free to send): the point ETA takes the middle of "all" and "none".
UNKNOWN_ZERO_SHARE = 0.5
ZERO_PAGE_WIRE = PAGE_HEADER + 1  # a zero page goes out as its header and one byte
# A pre-flight calc-dirty-rate samples pages and under-counts a guest that rewrites its
# working set in tight loops (see preflight.SAMPLING_MARGIN): the band's pessimistic end.
PRIOR_MARGIN = 1.5
# Auto-converge's defaults (QEMU 7.2): cpu-throttle-initial/-increment, max-cpu-throttle, and
# throttle-trigger-threshold (% of the bytes sent in a sync period that, dirtied twice, throttles).
THROTTLE_DEFAULTS = {"cpu-throttle-initial": 20.0, "cpu-throttle-increment": 10.0, "max-cpu-throttle": 99.0,
                     "throttle-trigger-threshold": 50.0}
FIRST_PERIOD_SATURATION = 0.63  # 1 - 1/e: pass 1 lasted about one working-set time constant
FIRST_PERIOD_SATURATION_HIGH = 0.9  # the band's pessimistic end
BAND_MIN = 0.1  # the ETA band is at least +-10%: per-pass dirty rates jitter that much
KEEP_PASSES = 4  # completed passes a memo keeps (the analysis reads the last two)
MAX_RUN_PASSES = 2000  # passes looked ahead before calling it not converging
ADVICE_WITHIN_S = 60.0  # advice must be predicted to finish the migration this soon
MAX_POINTS = 3000  # history points read back on a first look at a migration
RECENT = 8  # samples behind a "recent" rate
TAIL = 4 * RECENT  # recent samples kept for rates (a stall is followed by the memo, however long)
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
    # The model's dirty rate over short periods, when it is not QEMU's dirty-pages-rate (which is
    # over whole sync periods, and what `dirty-bytes-per-s` shows): one name, one figure.
    fitted_dirty_bytes_per_s: float | None = None

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
            "fitted-dirty-bytes-per-s": r(self.fitted_dirty_bytes_per_s, 0),
        }


@dataclass(frozen=True)
class Advice:
    kind: str  # one of ADVICE_KINDS
    text: str  # concrete, with numbers
    change: ParamChange | None  # what applies it now (QEMU's names and units); the backend sends it
    needs_restart: bool  # only helps the next migration (capabilities are fixed while one runs)
    postcopy_now: bool = False  # applied by switching this migration to post-copy, not by a parameter

    @property
    def now(self) -> bool:
        """Whether it can be applied to the running migration."""
        return self.change is not None or self.postcopy_now

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "set": None if self.change is None else self.change.to_json(),
            "postcopy-now": self.postcopy_now,
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
    if d_short <= d_long * 1.05:
        return typical  # shorter periods do not dirty faster: no working set seen
    if small >= big * SAME_BYTES:
        # Both periods dirtied the same bytes: a working set that even the shorter one covers
        # whole (a guest sweeping its memory). It is rewritten at least that fast; how much
        # faster no period shows, so take the pessimistic end: shorter passes gain nothing.
        w = max(big, small)
        return _Dirtying(-w * math.log1p(-COVERED) / t_short, w)

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
    # Passes last at least one window: with a threshold above a window's sending because QEMU
    # checks between windows; below it because each pass still costs a dirty-log sync and the
    # next check (a Linux guest at 16 MiB/s and 1 ms levelled off at 1-3 MiB a pass, not 16 KiB).
    windowed = True
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
    windowed = True  # as in _run_out: a pass lasts at least a window
    e = model.working_set
    for _ in range(200):
        nxt = model.dirtied(max(e / drain, WINDOW_S) if windowed else e / drain)
        if abs(nxt - e) < 1e-3 * e:
            break
        e = nxt
    return e


@dataclass(frozen=True)
class _Throttle:
    """Auto-converge, as QEMU 7.2 runs it: at a dirty-log sync a second or more after the
    last such check, a period that dirtied more than `trigger` of the bytes it sent counts
    as high; every second high period starts the throttle at `initial` % of vCPU time, or
    raises it by `increment`, up to `maximum`. A throttled guest dirties that much less."""

    pct: float = 0.0  # now
    initial: float = 20.0
    increment: float = 10.0
    maximum: float = 99.0
    trigger: float = 0.5

    def step(self, pct: float) -> float:
        return self.initial if pct <= 0 else min(self.maximum, pct + self.increment)


@lru_cache(maxsize=4096)
def _run_out_throttled(excess: float, drain: float, base: _Dirtying, threshold: float, th: _Throttle,
                       period: tuple[float, float, float, int] = (0.0, 0.0, 0.0, 0)) -> tuple[float, int] | None:
    """_run_out with auto-converge slowing the guest as the passes go: pass by pass, from
    the unthrottled dirtying `base`. `period` is (seconds, bytes dirtied, bytes sent, high
    periods) since QEMU's last check, e.g. pass 1 that has not been checked yet."""
    if not (drain > 0 and math.isfinite(drain) and math.isfinite(excess) and math.isfinite(base.rate)):
        return None
    window = drain * WINDOW_S
    slack = min(threshold, window)
    windowed = True  # as in _run_out: a pass lasts at least a window
    pct = th.pct
    per_t, per_dirty, per_sent, high = period
    t, passes = 0.0, 0
    for _ in range(MAX_RUN_PASSES):
        if excess <= slack:
            return t, passes
        seconds = excess / drain
        lasted = max(seconds, WINDOW_S) if windowed else seconds
        nxt = base.scaled(1 - pct / 100).dirtied(lasted)
        t += seconds
        passes += 1
        per_t, per_dirty, per_sent = per_t + lasted, per_dirty + nxt, per_sent + excess
        before = pct
        if per_t >= 1.0:
            if per_dirty > th.trigger * per_sent:
                high += 1
                if high >= 2:
                    high, pct = 0, th.step(pct)
            per_t = per_dirty = per_sent = 0.0
        if nxt <= slack:
            return t, passes
        if nxt >= excess * 0.999 and before >= th.maximum:
            return None  # throttled all it can be, and still not shrinking
        excess = nxt
    return None


def _throttle_for(tracker: MigrationTracker, last: MigrationSample) -> _Throttle | None:
    """Auto-converge's state when it is on: from the capability and parameters the backend
    puts on the tracker, or from QEMU reporting a cpu-throttle-percentage (only once it
    throttles)."""
    caps = tracker.capabilities
    params = tracker.parameters
    pct = last.get(None, "cpu-throttle-percentage")
    on = isinstance(caps, Mapping) and caps.get("auto-converge") is True
    if not on and pct is None:
        return None
    values = dict(THROTTLE_DEFAULTS)
    if isinstance(params, Mapping):
        for key in values:
            v = _number(params.get(key))
            if v is not None and 0 < v <= 100:
                values[key] = v
    return _Throttle(min(99.0, pct or 0.0), values["cpu-throttle-initial"], values["cpu-throttle-increment"],
                     values["max-cpu-throttle"], values["throttle-trigger-threshold"] / 100)


def _run(excess: float, drain: float, model: _Dirtying, threshold: float, th: _Throttle | None,
         period: tuple[float, float, float, int] = (0.0, 0.0, 0.0, 0)) -> tuple[float, int] | None:
    """The passes after this one: with auto-converge, from the unthrottled guest (`model` is
    what the guest dirties at the current throttle)."""
    if th is None:
        return _run_out(excess, drain, model, threshold)
    base = model.scaled(1 / max(0.01, 1 - th.pct / 100))
    return _run_out_throttled(excess, drain, base, threshold, th, period)


# -- what is known before QEMU reports a dirty rate ---------------------------------------------
@dataclass(frozen=True)
class _Prior:
    """The guest's dirtying as known before this migration measured it."""

    model: _Dirtying | None  # None: only the zero share is known
    zero_share: float | None  # share of RAM that went out as zero pages last time
    source: str  # for the why line: "the pre-flight's" or "the last migration's"
    measured_ws: bool = False  # the model's working set was measured (two periods)
    period: float = 1.0  # seconds the rate was measured over, when the working set was not


# What each tracker's earlier migrations showed (the dirtying fitted once QEMU had measured
# it twice, and pass 1's zero pages): the prior for its next migration.
_LEARNED: weakref.WeakKeyDictionary[MigrationTracker, _Prior] = weakref.WeakKeyDictionary()


def _plumbed_prior(tracker: MigrationTracker) -> _Dirtying | None:
    """A dirty rate measured before this migration, put on the tracker by the backend as
    `dirty_rate_prior`: bytes/s (calc-dirty-rate over about a second), or a sequence of
    (calc-time seconds, bytes/s) pairs; measurements over periods of different lengths
    reveal a working set, as QEMU's own periods do."""
    raw = tracker.dirty_rate_prior
    periods: list[Period] = []
    if _number(raw) is not None:
        periods.append((1.0, float(raw)))
    elif isinstance(raw, (list, tuple)):
        if len(raw) == 2 and all(_number(x) is not None for x in raw):
            raw = [raw]
        for item in raw:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                secs, rate = _number(item[0]), _number(item[1])
                if secs is not None and rate is not None and secs > 0 and math.isfinite(rate):
                    periods.append((float(secs), float(rate)))
    periods = [p for p in periods if p[1] >= 0 and math.isfinite(p[1])][-3:]
    if not periods:
        return None
    if any(rate == 0 for _, rate in periods):
        return _Dirtying(0.0, None)
    if len(periods) == 1:
        return _Dirtying(periods[0][1], None)
    return _fit(tuple(periods), max(periods), min(periods))


def _plumbed_period(tracker: MigrationTracker) -> float:
    raw = tracker.dirty_rate_prior
    if isinstance(raw, (list, tuple)) and raw:
        item = raw[-1] if isinstance(raw[-1], (list, tuple)) else raw
        secs = _number(item[0]) if len(item) == 2 else None
        if secs is not None and secs > 0:
            return float(secs)
    return 1.0


def _prior_for(tracker: MigrationTracker) -> _Prior | None:
    learned = _LEARNED.get(tracker)
    measured = _plumbed_prior(tracker)
    if measured is None:
        return learned
    if measured.working_set is None and learned is not None and learned.model is not None \
            and learned.measured_ws and learned.model.working_set is not None and measured.rate > 0:
        # A fresh rate, and the working set the last migration showed.
        measured = _Dirtying(measured.rate, learned.model.working_set)
    return _Prior(measured, learned.zero_share if learned is not None else None, "the pre-flight's",
                  measured.working_set is not None, _plumbed_period(tracker))


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
    if not j.state and len(j.recent) < 2 and steady and _one_reply_says_stuck(p, limit_ms, tp):
        return replace(j, state=True)
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
    # The latest completed passes (what is judged is in `judge`): a non-converging hour has
    # a thousand passes, and they held every sample.
    done: deque[_Pass] = field(default_factory=lambda: deque(maxlen=KEEP_PASSES))
    judge: _Judge = field(default_factory=_Judge)  # after them
    cur: list[HistoryPoint] = field(default_factory=list)  # samples of the pass in progress
    cur_number: int = 0
    cur_ahead: HistoryPoint | None = None
    tail: deque[HistoryPoint] = field(default_factory=lambda: deque(maxlen=TAIL))
    dirty: float | None = None  # QEMU's latest dirty rate (pass >= 2)
    drains: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))  # completed passes >= 2
    zero_share: float | None = None  # share of the pages pass 1 sent that were zero pages
    pass1_done: bool = False  # zero_share is over all of pass 1
    throttle_pct: float = 0.0  # auto-converge's latest cpu-throttle-percentage
    free: _Judge | None = None  # the judge at the latest sample before auto-converge throttled
    # The run of samples in which `transferred` has not grown: its level, first time, length.
    flat_level: float | None = None
    flat_since: float = 0.0
    flat_count: int = 0
    steady: bool = True  # nothing sends pages cheaper than the wire or slows the guest: one reply can judge

    def note(self, last: MigrationSample) -> None:
        """What the latest reply (of this migration) says beyond the history points."""
        dup, normal = last.get("ram", "duplicate"), last.get("ram", "normal")
        total = last.get("ram", "total")
        if dup is not None and normal is not None and dup + normal > 0:
            if (self.cur_number >= 2 or last.status == "completed") and total:
                if not self.pass1_done:
                    # The first look after pass 1: it has sent every page, and its zero pages
                    # are the RAM's (pass 1 often ends in a run of them). Only then: data the
                    # guest writes later can be zero too (freed pages, a counter wrapping).
                    self.pass1_done = True
                    self.zero_share = min(1.0, dup * self.page / total)
            elif last.status in _PRECOPY:
                self.zero_share = dup / (dup + normal)  # so far
        pct = last.get(None, "cpu-throttle-percentage")
        if last.in_flight:
            self.throttle_pct = min(99.0, pct or 0.0)

    def lesson(self) -> _Prior | None:
        """What this migration says about the guest's next one."""
        judge, pct = self.judge, self.throttle_pct
        if self.free is not None and self.free.model is not None:
            judge, pct = self.free, 0.0  # periods at different throttles fit no one guest
        model = judge.model
        if model is not None:
            model = model.scaled(1 / max(0.01, 1 - pct / 100))
        if model is None and self.zero_share is None:
            return None
        # One period (pass 1 only) gives the rate but not the working set: the model still
        # says what a pass 1 as long dirties, which is what the next migration needs most.
        return _Prior(model, self.zero_share, "the last migration's", len(judge.recent) >= 2)

    def consume(self, p: HistoryPoint) -> None:
        self.tail.append(p)
        self.last = p
        sent = p.transferred
        if p.status not in _SENDING or sent is None:
            self.flat_level = None
        elif self.flat_level is None or sent > self.flat_level or sent < self.flat_level:
            self.flat_level, self.flat_since, self.flat_count = sent, p.time, 0  # it grew (or restarted)
        else:
            self.flat_count += 1
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
            self.judge = _judge_step(self.judge, done, False, self.limit_ms, self.start, None,
                                     self.steady and not self.throttle_pct)
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
        if memo is not None and (p is memo.last or (p.seq >= 0 and p.seq == memo.last.seq)):
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
    if memo is not None and not continues and new:
        lesson = memo.lesson()  # a new migration: keep what the last one showed
        if lesson is not None:
            before = _LEARNED.get(tracker)
            if lesson.model is None and before is not None and before.model is not None:
                # A look that saw only the end (a reply that looks like a new migration,
                # e.g. its disk figures dropped at completion) keeps the dirtying seen before.
                lesson = replace(before, zero_share=lesson.zero_share if lesson.zero_share is not None
                                 else before.zero_share)
            _LEARNED[tracker] = lesson
    if memo is None or not continues:
        if not new:
            _MEMOS.pop(tracker, None)
            return None
        total_ms = last.get(None, "total-time") if last is not None else None
        start = new[0].time
        if last is not None and last.in_flight and total_ms is not None:
            start = min(start, last.time - total_ms / 1000)
        page = (last.get("ram", "page-size") if last is not None else None) or DEFAULT_PAGE_SIZE
        caps = tracker.capabilities if isinstance(tracker.capabilities, Mapping) else {}
        # XBZRLE and compression send pages for less than the wire figure, so the dirty rate
        # against the throughput says nothing alone; auto-converge and the dirty limit slow the guest.
        steady = not any(caps.get(c) for c in ("auto-converge", "dirty-limit", "xbzrle", "compress")) and \
            not (last is not None and last.get(None, "cpu-throttle-percentage"))
        memo = _Memo(last=new[0], start=start, page=page, limit_ms=limit_ms, steady=steady)
        _MEMOS[tracker] = memo
    for p in new:
        memo.consume(p)
    if last is not None and (last.in_flight or last.finished):
        memo.note(last)
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
    start: float | None = None  # when the migration began (QEMU's clock)
    page: float = DEFAULT_PAGE_SIZE
    zero_share: float | None = None  # of the pages pass 1 has sent so far
    prior: _Prior | None = None
    throttle: _Throttle | None = None  # auto-converge, when on
    flat: tuple[int, float] | None = None  # samples since `transferred` last grew, and since when

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
    def fitted(self) -> float | None:
        """`dirtying` when it is the model's figure rather than QEMU's."""
        d = self.dirtying
        return d if d is not None and d != self.dirty else None

    def dirtying_text(self) -> str:
        """The dirty rate for a why line, named for what it is."""
        fitted = self.fitted
        if fitted is not None and self.dirty:
            return f"dirtying {format_rate(fitted)} in short periods (QEMU: {format_rate(self.dirty)})"
        return f"dirtying {format_rate(self.dirtying)}"

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
        judge = _judge_step(judge, cur, True, memo.limit_ms, memo.start, throughput,
                            memo.steady and not memo.throttle_pct)
        passes.append(cur)
        if cur.number >= 2:
            drains = (drains + (cur.drains or cur.wire))[-RECENT:]
    later = bool(passes) and passes[-1].number >= 2
    drain = median(drains) if drains else (throughput if later else None)
    if not memo.throttle_pct:
        memo.free = judge  # for the next migration's prior: the guest unthrottled
    prior = _prior_for(tracker) if passes and passes[-1].number < 3 else None
    return _Analysis(last, points, passes, judge, throughput, throughputs, memo.limit_ms,
                     points[-1].remaining if points else None, memo.dirty, drain, drains,
                     memo.start, memo.page, memo.zero_share, prior, _throttle_for(tracker, last),
                     None if memo.flat_level is None else (memo.flat_count, memo.flat_since))


# -- ETA ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Eta:
    eta: float | None
    low: float | None = None
    high: float | None = None
    first_pass: bool = False
    passes: int | None = None  # more passes expected after this one
    basis: _Prior | None = None  # pass 1: the prior behind the later passes, if any


def _first_pass_eta(a: _Analysis, cur: _Pass, drain: float, leftover: float) -> _Eta:
    """Pass 1, before QEMU reports a dirty rate: the rest of this pass from what it has sent
    (pages, zero pages nearly free; block migration's disk first), then the passes after it
    from a prior when one is known (a pre-flight measurement, the guest's last migration),
    else from a guess that the guest dirties a share of what is sent."""
    tp = a.throughput or 0.0
    thr = a.threshold or 0.0
    last, page = a.points[-1], a.page
    full = (page + PAGE_HEADER) / page  # wire bytes per byte of a page with data
    zero_cost = ZERO_PAGE_WIRE / page
    prior = a.prior
    known_z = prior.zero_share if prior is not None else None
    remaining = a.remaining or 0.0
    disk = last.disk_remaining or 0.0
    ram = last.ram_remaining if last.ram_remaining is not None else max(0.0, remaining - disk)
    ram_total = a.last.get("ram", "total") or ram
    normal = a.last.get("ram", "normal")
    # The pass ends once what is left fits under the threshold (less a window's slack).
    ending = max(0.0, ram - leftover) / ram if ram > 0 else 0.0

    def ram_time(z: float) -> float:
        return ram * ((1 - z) * full + z * zero_cost) / tp * ending

    if disk > 0:
        # Block migration sends the disk before any RAM: nothing says yet how much of the
        # RAM is zero pages, unless the last migration did.
        t_disk = disk / tp
        z = known_z if known_z is not None else UNKNOWN_ZERO_SHARE
        rest = t_disk + ram_time(z)
        rest_low = t_disk + ram_time(known_z if known_z is not None else 1.0)
        rest_high = t_disk + ram_time(known_z if known_z is not None else 0.0)
    else:
        # Pages per second so far, zero pages included: the rest has the same mix ...
        rest = max(0.0, remaining - leftover) / (_ram_drain(cur) or drain)
        if known_z is not None and normal is not None and ram_total:
            # ... unless the last migration said how many pages hold data: those left go at
            # the wire rate, the zero pages (often all together at the top) nearly free.
            data_left = min(ram, max(0.0, (1 - known_z) * ram_total - normal * page))
            rest = ((data_left * full + (ram - data_left) * zero_cost) / tp) * ending
        rest_low = rest_high = rest
    elapsed = max(0.0, last.time - min(cur.start_time, a.start if a.start is not None else cur.start_time))
    # The later passes send only what the guest re-dirties: whole pages, at the wire rate.
    later_drain = tp / full
    z_now = known_z if known_z is not None else a.zero_share
    bound = ram_total * (1 - z_now) if z_now is not None and z_now < 1 else ram_total
    bound = max(bound, page)  # a guest cannot dirty more distinct pages than hold data

    def bounded(model: _Dirtying) -> _Dirtying:
        if model.working_set is None or model.working_set > bound:
            return _Dirtying(model.rate, bound)
        return model

    def spans(model: _Dirtying, period: float) -> tuple[_Dirtying, _Dirtying, _Dirtying]:
        """(point, optimistic, pessimistic) models for a rate measured over `period` with no
        working set: that is at least what the period dirtied and at most the pages holding
        data; with nothing else known, the middle of the two on a log scale."""
        if model.working_set is not None or model.rate <= 0:
            return model, model, model
        small = min(bound, max(page, model.rate * period))
        return (_Dirtying(model.rate, math.sqrt(small * bound)), _Dirtying(model.rate, small),
                _Dirtying(model.rate, bound))

    th = a.throttle

    def later(model: _Dirtying, rest: float) -> float | None:
        pass1 = elapsed + rest
        model = bounded(model)
        first = model.dirtied(pass1)
        high = 0
        if th is not None and pass1 >= 1.0 and first > th.trigger * pass1 * tp:
            high = 1  # QEMU's check at the sync that ends pass 1
        out = _run(first, later_drain, model, thr, th, (0.0, 0.0, 0.0, high))
        return None if out is None else rest + out[0]

    if prior is None or prior.model is None:
        def guess(ratio: float, rest: float) -> float | None:
            return later(_Dirtying(ratio * later_drain, None), rest)

        return _Eta(guess(FIRST_PASS_RATIO, rest), rest_low, guess(FIRST_PASS_RATIO_HIGH, rest_high), True)
    model, optimist, pessimist = spans(prior.model, prior.period)
    eta = later(model, rest)
    low = later(optimist.scaled(1 - BAND_MIN), rest_low)
    margin = (1 + BAND_MIN) * (PRIOR_MARGIN if prior.source == "the pre-flight's" else 1.0)
    high = later(pessimist.scaled(margin), rest_high)
    if eta is not None:
        low = min(low if low is not None else eta, eta * (1 - BAND_MIN))
        high = None if high is None else max(high, eta * (1 + BAND_MIN))
    else:
        low = rest_low if low is None else low
    return _Eta(eta, low, high, True, basis=prior)


def _ram_drain(cur: _Pass) -> float | None:
    """How fast `remaining` falls while RAM is sent: block migration's disk phase aside."""
    drains = []
    pts = cur.points
    for a, b in zip(pts, pts[1:]):
        dt = b.time - a.time
        if dt <= 0 or a.remaining is None or b.remaining is None or b.remaining > a.remaining:
            continue
        if (a.disk_remaining or 0.0) > 0 or (b.disk_remaining or 0.0) > 0:
            continue
        drains.append((a.remaining - b.remaining) / dt)
    return median(drains[-RECENT:]) if drains else None


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
        return _first_pass_eta(a, cur, rest_drain, leftover)
    drain = cur.later_drain or a.drain or tp  # the latest: XBZRLE warms up, bandwidth changes

    def one(drain: float, model: _Dirtying) -> tuple[float, int] | None:
        out = _run(model.dirtied(pass_time), drain, model, thr, a.throttle)
        return None if out is None else (rest + out[0], out[1])

    model = a.model
    j = a.judge
    single = len(j.recent) == 1 and j.longest == j.shortest
    known = a.prior.model if a.prior is not None else None
    if single and known is not None and a.prior.measured_ws and known.working_set and known.rate > 0:
        # One period cannot tell a working set from a steady rate; the guest's last
        # migration (or a pre-flight over two periods) could.
        (t1, d1), = j.recent
        w = known.working_set
        if d1 * t1 < w * 0.999:
            model = _Dirtying(-w * math.log1p(-d1 * t1 / w) / t1, w)
    mid = one(drain, model)
    if mid is None:
        return _Eta(None)
    eta = mid[0]
    low_model, high_model = model.scaled(1 - BAND_MIN), model.scaled(1 + BAND_MIN)
    if single and model is a.model:
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
    if not pts or pts[-1].status not in _SENDING or pts[-1].transferred is None or a.flat is None:
        return None
    count, since = a.flat
    seconds = pts[-1].time - since
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
        if status == "postcopy-paused":
            why = (f"post-copy paused: the stream broke and the VM's memory is split across both hosts "
                   f"({format_bytes(remaining)} still on the source); recover with R")
            return Assessment("post-copy", why, None, None, None, implied)
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
        return Assessment("not-converging", _one_line(_why_not_converging(a)), None, None, None, implied, a.fitted)
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
        head = f"pass 1: {format_bytes(remaining)} left at {format_rate(tp)}; no dirty rate from QEMU before pass 2"
        basis = e.basis
        if basis is None or basis.model is None:
            # Nothing is known of the guest: an ETA can be guessed, convergence cannot.
            allowance = _pct(FIRST_PASS_RATIO / (1 - FIRST_PASS_RATIO))
            why = f"{head}; the ETA guesses later passes add {allowance} of pass 1"
            return Assessment("deciding", _one_line(why), e.eta, e.low, e.high, implied)
        if e.eta is None:
            why = f"{head}; at {basis.source} {format_rate(basis.model.rate)} of dirtying it would not get under"
            return Assessment("deciding", _one_line(why), None, e.low, None, implied)
        why = f"{head}; later passes from {basis.source} {format_rate(basis.model.rate)} of dirtying"
        return Assessment("converging", _one_line(why), e.eta, e.low, e.high, implied)
    rates = f"{a.dirtying_text()} against {format_rate(a.drain)} sent"
    fitted = a.fitted
    if e.eta is None:
        # The rates say it cannot get under the threshold; the passes have not shown it yet.
        load = _pass_load(a)
        why = (f"pass {n}: {rates}; passes start with {format_bytes(load)}, over the {format_bytes(thr)} a "
               f"{limit} switch-over allows; watching whether they shrink")
        return Assessment("deciding", _one_line(why), None, None, None, implied, fitted)
    if e.passes:
        more = f"~{e.passes} more pass{'es' if e.passes > 1 else ''} to get under"
    else:
        more = "switch-over when this pass gets under"
    why = f"pass {n}: {rates}; {format_bytes(remaining)} left, {more} {format_bytes(thr)} ({limit} downtime limit)"
    return Assessment("converging", _one_line(why), e.eta, e.low, e.high, implied, fitted)


def _why_not_converging(a: _Analysis) -> str:
    thr = a.threshold
    dirtying = a.dirtying_text()
    rate = f"{dirtying} against {format_rate(a.throughput)} sent"
    if a.drain and a.throughput and a.drain > a.throughput * 1.2:
        rate = f"{dirtying} against {format_rate(a.drain)} of pages sent"
    flat, floor = a.judge.flat, a.floor
    if flat >= 2:
        trend = f"pass starts no smaller for {flat} passes"
    elif floor is not None:
        trend = f"pass starts level off near {format_bytes(floor)}"
    else:
        trend = "pass starts cannot shrink enough"
    expected = a.last.get(None, "expected-downtime")
    if len(a.judge.recent) < 2 and expected is not None:
        # Decided on one reply's figures (see _one_reply_says_stuck): say which.
        enough = "" if a.dirty and a.throughput and a.dirty >= a.throughput else " enough"
        return (f"{rate}; QEMU expects {format_ms(expected)} of downtime against the {format_ms(a.limit_ms)} "
                f"limit at pass {a.pass_number}: pass starts cannot shrink{enough}")
    # What is compared: what each pass starts with against the switch-over threshold (what
    # is left mid-pass dips under it at every pass end, and means nothing alone).
    need = f"each holds {format_bytes(_pass_load(a))}, over the {format_bytes(thr)} a {format_ms(a.limit_ms)} " \
           "switch-over allows"
    text = f"{rate}; {trend}: {need}"
    where = f" (pass {a.pass_number})"
    return text + where if len(text + where) <= 160 else text  # the dashboard shows the pass anyway


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


def _set(kind: str, text: str, name: str, value: Any) -> ParamChange:
    """The change an advice applies: one parameter, by QEMU's name, in QEMU's units. Which
    command sets it is the backend's (each QEMU version's own), never the model's."""
    return ParamChange({name: value}, text, advice=kind)


def _pass_load(a: _Analysis) -> float | None:
    """What a pass start holds now: the latest two, or what is left if more. Pass starts are
    estimated back from the first sample of each pass; none can hold more than the RAM (and
    disk) being migrated, which short passes between samples could otherwise suggest."""
    load = max(a.judge.starts[-2:] + ((a.remaining,) if a.remaining is not None else ()), default=None)
    total = (a.last.get("ram", "total") or 0.0) + (a.last.get("disk", "total") or 0.0)
    return min(load, total) if load is not None and total > 0 else load


def _calibrated(a: _Analysis, load: float) -> _Dirtying | None:
    """The model, scaled up until it explains the stuck passes it advises on.

    Advice is asked for because pass starts of `load` keep coming back at today's settings:
    what a pass re-dirties is at least its excess over the threshold. A model that says a
    pass that long dirties less is too hopeful by that ratio (a working set swept whole,
    rates measured over periods other than the passes), and would advise too little."""
    model = a.model
    if model is None or not a.drain or not load:
        return model
    excess = load - ((a.threshold or 0.0) - a.slack)
    if excess <= 0:
        return model
    predicted = model.dirtied(max(excess / a.drain, WINDOW_S))
    c = excess / predicted if predicted > 0 else 1.0
    if c <= 1:
        return model
    return _Dirtying(model.rate * c, None if model.working_set is None else model.working_set * c)


def _readings(a: _Analysis, load: float) -> list[_Dirtying | None]:
    """Every reading of the evidence that advice must work under. Periods of one length cannot
    tell a steady rate from a working set rewritten whole in each of them (a guest sweeping
    its memory): shorter passes then dirty as much as long ones. Until periods of different
    lengths tell them apart, advice must work for both."""
    model = _calibrated(a, load)
    readings = [model]
    if model is not None and model.working_set is None and load:
        # Rewritten whole within any pass, however short (one send window): the lab guest
        # sweeps its 98 MiB in well under the shortest period QEMU measures.
        readings.append(_Dirtying(-load * math.log1p(-COVERED) / WINDOW_S, load))
    return readings


def _predicted_to_converge(a: _Analysis, model: _Dirtying | None, load: float, drain: float,
                           threshold: float) -> bool:
    """`model` run forward at a new drain and threshold, at the pessimistic end of its band
    (pass starts and the dirty rate BAND_MIN higher): does it get under, and soon enough
    (within ADVICE_WITHIN_S, or two passes of this size where a pass alone takes longer)?"""
    start = load * (1 + BAND_MIN)
    if model is None:
        return start <= threshold  # no model: only a pass start that fits at once is sure
    slack = min(threshold, drain * WINDOW_S)
    out = _run(max(0.0, start - (threshold - slack)), drain, model.scaled(1 + BAND_MIN), threshold, a.throttle)
    return out is not None and out[0] <= max(ADVICE_WITHIN_S, 2 * load / drain)


def _smallest(candidates: list[float], works) -> float | None:
    """The first candidate (ascending) that `works`: what the model says is enough."""
    for x in candidates:
        if works(x):
            return x
    return None


def _ladder(start: float, stop: float, step: float = 1.1) -> list[float]:
    """Round values from `start` up to `stop`, about `step` apart."""
    out, x = [], start
    while x < stop and len(out) < 200:
        v = _round_up(x)
        if not out or v > out[-1]:
            out.append(v)
        x *= step
    out.append(stop)
    return out


def _downtime_needed(a: _Analysis, limit_ms: float, load: float,
                     readings: list[_Dirtying | None]) -> float | None:
    """The smallest downtime limit (ms) at which the model predicts the passes get under."""
    tp = a.throughput
    if not tp or not load:
        return None
    drain = a.drain or tp
    return _smallest(_ladder(limit_ms * 1.1, float(DOWNTIME_MAX_MS)),
                     lambda ms: all(_predicted_to_converge(a, m, load, drain, tp * ms / 1000) for m in readings))


def _bandwidth_needed(a: _Analysis, limit_ms: float, load: float,
                      readings: list[_Dirtying | None]) -> float | None:
    """The smallest max-bandwidth (wire bytes/s) at which the model predicts the passes get
    under: a bigger threshold, and shorter passes in which the guest may dirty faster."""
    tp = a.throughput
    if not tp or not load:
        return None
    per_wire = (a.drain or tp) / tp  # bytes of remaining drained per wire byte (XBZRLE, headers)
    return _smallest(_ladder(tp * 1.1, tp * 64),
                     lambda y: all(_predicted_to_converge(a, m, load, y * per_wire, y * limit_ms / 1000)
                                   for m in readings))


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
            return [Advice("bandwidth", text, _set("bandwidth", text, "max-bandwidth", LEGACY_BANDWIDTH), False)]
        return []

    load = _pass_load(a) or 0.0
    capped = bool(tp and bandwidth and not unlimited and tp >= 0.8 * bandwidth)
    readings = _readings(a, load)  # every reading of the evidence the advice must work under
    # 1. downtime: the smallest limit at which the model predicts the passes get under.
    if tp and load:
        x = _downtime_needed(a, limit_ms, load, readings)
        if x is None:
            text = (f"even QEMU's maximum downtime limit ({format_ms(DOWNTIME_MAX_MS)}) is not enough: about "
                    f"{format_bytes(load)} is left at each pass start and the guest re-dirties it")
            scored.append((0.05, Advice("downtime", text, None, False)))
        elif x > limit_ms:
            score = 0.95 if x <= 1000 else 0.75 if x <= 5000 else 0.4
            text = (f"raise the downtime limit to {format_ms(x)} (now {format_ms(limit_ms)}): each pass starts "
                    f"with about {format_bytes(load)} and QEMU counts on {format_rate(tp)} to send the rest; "
                    f"the guest may pause up to that long")
            scored.append((score, Advice("downtime", text, _set("downtime", text, "downtime-limit", int(x)), False)))
    # 2. bandwidth, when the limit (not the link) holds it back.
    if tp and bandwidth and not unlimited:
        need = _bandwidth_needed(a, limit_ms, load, readings)
        if need is not None:
            y = _round_up(need / 2**20) * 2**20
            if y > bandwidth * 1.05:
                rate = a.model.rate if a.model is not None else a.dirty
                why = f"the guest dirties about {format_rate(rate)} over short periods"
                if len(readings) > 1:
                    why = (f"the guest dirties about {format_rate(rate)}, and passes of one length cannot show "
                           f"whether it rewrites all {format_bytes(load)} in any pass")
                link = "" if capped else f"; it sends only {format_rate(tp)} now, so the link may be the limit"
                text = f"raise bandwidth to {format_rate(y)} (now {format_rate(bandwidth)}): {why}{link}"
                scored.append((0.8 if capped else 0.25,
                               Advice("bandwidth", text, _set("bandwidth", text, "max-bandwidth", int(y)), False)))
    # 3. post-copy: finishes whatever the dirty rate, if enabled before the start.
    if capabilities.get("postcopy-ram"):
        secs = (a.remaining or 0.0) / tp if tp else None
        how = f" (about {format_duration(secs)} at {format_rate(tp)})" if secs is not None else ""
        text = (f"switch to post-copy now: the destination runs at once and pulls the "
                f"{format_bytes(a.remaining)} left{how}; if the network fails then, the VM is lost")
        scored.append((0.85, Advice("postcopy", text, None, False, postcopy_now=True)))
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
    out = [adv for _, adv in scored]
    if not any(adv.change is not None and adv.kind != "postcopy" for adv in out):
        # Nothing to set now that the model says would finish it: say so, first.
        ways = ["a restart with " + " or ".join(k for k in ("auto-converge", "multifd", "xbzrle")
                                                 if k in capabilities and not capabilities.get(k))]
        if capabilities.get("postcopy-ram"):
            ways.insert(0, "post-copy now")
        elif "postcopy-ram" in capabilities:
            ways.append("post-copy (postcopy-ram from the start)")
        ways = [w for w in ways if w != "a restart with "] or ["a restart with other settings"]
        text = "no setting migtui can change now will make it converge: only " + ", or ".join(ways) + " will do"
        out.insert(0, Advice("nothing-to-tune", text, None, False))
    return out


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
        return (0.6 if miss >= 0.5 else 0.4), Advice("xbzrle-cache", text, _set("xbzrle-cache", text, "xbzrle-cache-size", z), False)
    if "xbzrle" in capabilities and working:
        z = _pow2_ceil(working * 1.1)
        if cap_max:
            z = min(z, cap_max)
        text = (f"next time enable xbzrle with a cache of at least {format_bytes(z)}: the guest dirties "
                f"about {working / page:.0f} pages again and again, and small changes to them compress well")
        return 0.3, Advice("xbzrle-cache", text, None, True)
    return None


def unreachable(last: Assessment, seen: float, state: str) -> Assessment:
    """The verdict on a migration whose QEMU is gone or silent: the last one is history.
    `state` says how (e.g. "disconnected: QEMU closed the connection"); `seen` is the last
    sample's time. No ETA: nothing is known of what happened after."""
    import time

    when = time.strftime("%H:%M:%S", time.localtime(seen))
    return Assessment("unreachable", _one_line(f"{state}; last seen {when}, then {last.verdict}: {last.why}"),
                      None, None, None, None)


# -- following advice up -----------------------------------------------------------------------
FOLLOW_PASSES = 3  # passes after advice was applied before saying it did not work
FOLLOW_SECONDS = 5.0  # ... and at least this long: sub-second passes, and the throughput median (RECENT samples) catching up


@dataclass(frozen=True)
class AdviceTaken:
    """Advice the operator applied: what, and where the migration was then."""

    kind: str
    text: str
    time: float  # the latest sample's time when it was applied
    passes: int | None  # QEMU's pass count then
    load: float | None = None  # what each pass started with then (bytes)


@dataclass(frozen=True)
class FollowUp:
    state: str  # "watching", "working", "worked", "did-not-work", "ended"
    text: str  # one line


def take_advice(tracker: MigrationTracker, kind: str, text: str) -> None:
    """Note that advice of this kind was applied now, so that follow_up() can judge it
    (the backend calls it once the advice's ParamChange is applied)."""
    last = tracker.last
    a = _analyse(tracker)
    tracker.advice_taken = AdviceTaken(kind, text, last.time if last is not None else 0.0,
                                       tracker.derived.passes, _pass_load(a) if a is not None else None)


def follow_up(
    tracker: MigrationTracker,
    parameters: Mapping[str, Any],
    capabilities: Mapping[str, bool],
    modern: bool = True,
) -> FollowUp | None:
    """Did the applied advice work? Within FOLLOW_PASSES passes: worked (completed),
    working (no longer not-converging), or did not work, with the next step from fresh figures."""
    taken = tracker.advice_taken
    last = tracker.last
    if not isinstance(taken, AdviceTaken) or last is None:
        return None
    what = taken.text.split(":", 1)[0]
    since = max(0.0, last.time - taken.time)
    if last.status == "completed":
        return FollowUp("worked", _one_line(f"{what}: worked, completed {format_duration(since)} later"))
    if last.status in ("failed", "cancelled", "cancelling"):
        return FollowUp("ended", _one_line(f"{what}: the migration then {last.status.replace('cancelling', 'cancelled')}"))
    if not last.in_flight:
        return None
    verdict = assess(tracker).verdict
    passes = (tracker.derived.passes or 0) - (taken.passes or 0)
    if verdict in ("converging", "switching-over", "post-copy"):
        return FollowUp("working", _one_line(f"{what}: working, {verdict} {passes} passes later"))
    a = _analyse(tracker)
    latest = a.judge.starts[-1] if a is not None and a.judge.starts and passes >= 1 else None
    if latest is not None and taken.load and (latest < NEW_LOW * taken.load or latest <= (a.threshold or 0.0)):
        # The verdict waits for passes of evidence; the pass starts already show it.
        return FollowUp("working", _one_line(f"{what}: working, pass starts down to {format_bytes(latest)} "
                                             f"from {format_bytes(taken.load)}"))
    if verdict == "not-converging" and passes >= FOLLOW_PASSES and since >= FOLLOW_SECONDS:
        rates = f"{a.dirtying_text()} against {format_rate(a.throughput)} sent" if a is not None else ""
        fresh = [x for x in advise(tracker, parameters, capabilities, modern) if x.now or
                 x.kind == "nothing-to-tune"]
        nxt = f"; next: {fresh[0].text}" if fresh else ""
        return FollowUp("did-not-work", _one_line(f"{what}: did not work, still not converging {passes} passes "
                                                  f"later ({rates}){nxt}", 240))
    return FollowUp("watching", _one_line(f"{what}: applied, watching the next passes ({passes} so far)"))
