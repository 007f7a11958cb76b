"""The dirtying model: how many distinct bytes a guest dirties in T seconds, and the
passes that follow from it.

`_fit` finds a rate and a working set from dirty-rate periods of different lengths;
`_run_out` iterates ``excess(n+1) = dirtied(excess(n) / drain)`` until a pass fits under
the switch-over threshold (or never does); `_run_out_throttled` does the same while
auto-converge slows the guest, as QEMU 7.2 runs it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

from migtui.model.derived import MigrationTracker
from migtui.model.guidance.tunables import (
    COVERED, FIRST_PERIOD_SATURATION, FIT_SPAN, MAX_RUN_PASSES, SAME_BYTES, THROTTLE_DEFAULTS, WINDOW_S, _number,
)
from migtui.model.parameters import DIRTY_LIMIT_UNIT
from migtui.model.sample import MigrationSample


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

    def capped(self, cap: float | None) -> _Dirtying:
        """Dirtying no faster than `cap` bytes/s: QEMU's dirty limit (vCPUs x vcpu-dirty-limit)."""
        return self if cap is None or self.rate <= cap else _Dirtying(cap, self.working_set)


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


def _dirty_cap_for(tracker: MigrationTracker) -> float | None:
    """What the dirty limit lets the guest dirty, bytes/s: its vCPUs x vcpu-dirty-limit (MB/s,
    2**20 bytes), when the capability is on and both are known. QEMU applies it once two sync
    periods dirtied more than throttle-trigger-threshold of what they sent (as auto-converge's
    trigger), which a migration that does not converge reaches within seconds."""
    caps, params, vcpus = tracker.capabilities, tracker.parameters, tracker.vcpus
    if not (isinstance(caps, Mapping) and caps.get("dirty-limit") is True and isinstance(params, Mapping)):
        return None
    limit = _number(params.get("vcpu-dirty-limit"))
    if limit is None or limit < 1 or not isinstance(vcpus, int) or vcpus < 1:
        return None
    return vcpus * limit * DIRTY_LIMIT_UNIT


def _run(excess: float, drain: float, model: _Dirtying, threshold: float, th: _Throttle | None,
         period: tuple[float, float, float, int] = (0.0, 0.0, 0.0, 0),
         cap: float | None = None) -> tuple[float, int] | None:
    """The passes after this one: with auto-converge, from the unthrottled guest (`model` is
    what the guest dirties at the current throttle); with a dirty limit, dirtying at most `cap`."""
    model = model.capped(cap)
    if th is None:
        return _run_out(excess, drain, model, threshold)
    base = model.scaled(1 / max(0.01, 1 - th.pct / 100))
    return _run_out_throttled(excess, drain, base, threshold, th, period)
