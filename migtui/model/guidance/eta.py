"""When a pre-copy migration should switch over, as a point and a band.

Pass 1, before QEMU reports a dirty rate, from what it has sent and a prior (or a guess);
later passes by running the fitted dirtying model forward, at both ends of its band."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median

from migtui.model.guidance.analysis import _Analysis
from migtui.model.guidance.dirtying import _Dirtying, _first_period, _run
from migtui.model.guidance.passes import _Pass
from migtui.model.guidance.prior import _Prior
from migtui.model.guidance.tunables import (
    BAND_MIN, FIRST_PASS_RATIO, FIRST_PASS_RATIO_HIGH, FIRST_PERIOD_SATURATION_HIGH, PAGE_HEADER, PAUSED_RATE,
    PRIOR_MARGIN, RECENT, UNKNOWN_ZERO_SHARE, ZERO_PAGE_WIRE,
)


@dataclass(frozen=True)
class _Eta:
    eta: float | None
    low: float | None = None
    high: float | None = None
    first_pass: bool = False
    passes: int | None = None  # more passes expected after this one
    basis: _Prior | None = None  # pass 1: the prior behind the later passes, if any


def _stop_copy(a: _Analysis, left: float) -> tuple[float, float, float]:
    """Seconds to send `left` bytes once the guest is paused, (point, optimistic, pessimistic):
    QEMU sends them without max-bandwidth's limit, as fast as the guest's last stop-and-copy
    went, or (nothing known) PAUSED_RATE; at worst at the throughput so far."""
    tp = a.throughput or 0.0
    if left <= 0 or tp <= 0:
        return 0.0, 0.0, 0.0
    known = a.paused_rate
    rate = max(tp, known or PAUSED_RATE)
    if known:
        return left / rate, left / (rate * (1 + BAND_MIN)), left / max(tp, rate * (1 - BAND_MIN))
    return left / rate, left / rate, left / tp


def _wire_of(a: _Analysis, left: float, zero_share: float | None) -> float:
    """Wire bytes to send `left` bytes of RAM: the RAM's zero pages not sent yet (the share
    known of it, less the zero pages QEMU has sent) go as a header each, the rest whole pages.
    Every zero page left is pass 1's (later passes send pages the guest wrote)."""
    if zero_share is None or left <= 0:
        return left
    total, sent = a.last.get("ram", "total"), a.last.get("ram", "duplicate")
    if not total or sent is None:
        return left
    zero_left = min(left, max(0.0, zero_share * total - sent * a.page))
    return (left - zero_left) * (a.page + PAGE_HEADER) / a.page + zero_left * ZERO_PAGE_WIRE / a.page


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
    zmap = prior.zero_map if prior is not None else None
    end_data = 1.0  # share of what pass 1 leaves for the switch-over that holds data
    end_left = min(remaining, leftover)  # what pass 1 leaves for its closing sync

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
    elif zmap and ram_total and ram <= ram_total:
        # The pre-flight read pages across RAM in address order, the order pass 1 sends them
        # (what is left of pass 1 is the top of RAM): the data between here and where pass 1
        # ends goes at the wire rate, zero pages nearly free; what it leaves is the top's mix.
        here, end = 1 - ram / ram_total, 1 - min(ram, leftover) / ram_total
        # QEMU's rate limit counts wire bytes, which zero pages hardly use: a send window that
        # crosses the threshold inside a run of zero pages goes on to its end before the check
        # that closes pass 1, which then leaves only the RAM above the run.
        end = _zero_run_end(zmap, end)
        end_left = min(end_left, (1 - end) * ram_total)
        data = _data_share(zmap, here, end)
        end_data = _data_share(zmap, end, 1.0)
        rest = rest_low = rest_high = (end - here) * ram_total * (data * full + (1 - data) * zero_cost) / tp
    elif known_z is not None and normal is not None and ram_total:
        # The last migration said how many pages hold data: those left go at the wire rate,
        # the zero pages (often all together at the top) nearly free.
        data_left = min(ram, max(0.0, (1 - known_z) * ram_total - normal * page))
        rest = rest_low = rest_high = ((data_left * full + (ram - data_left) * zero_cost) / tp) * ending
        end_data = data_left / ram if ram > 0 else 1.0
    elif a.zero_share is not None and tp:
        # The pages ahead in the mix of all pass 1 has sent, zero pages nearly free (not the
        # latest samples' pace: zero pages come in runs, a Linux guest's untouched RAM in one
        # that can be half of it). Nothing says what the mix ahead is: the band spans from
        # all zero pages to none.
        rest, rest_low, rest_high = ram_time(a.zero_share), ram_time(1.0), ram_time(0.0)
        end_data = 1 - a.zero_share
    else:
        # Pages per second so far, zero pages included: the rest has the same mix.
        rest = rest_low = rest_high = max(0.0, remaining - leftover) / (_ram_drain(cur) or drain)
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
    slack = thr - leftover

    def later(model: _Dirtying, rest: float, end: int = 0) -> float | None:
        """The passes after pass 1 and the stop-and-copy (`end`: its point, optimistic or
        pessimistic speed). Pass 1's sync adds what it dirtied to what it left: if that fits
        under the threshold, it switches over there."""
        pass1 = elapsed + rest
        model = bounded(model)
        first = model.dirtied(pass1)
        high = 0
        if th is not None and pass1 >= 1.0 and first > th.trigger * pass1 * tp:
            high = 1  # QEMU's check at the sync that ends pass 1
        out = _run(max(0.0, first - (leftover - end_left)), later_drain, model, thr, th, (0.0, 0.0, 0.0, high),
                   a.dirty_cap)
        if out is None:
            return None
        # What the stop-and-copy sends: pass 1's last pages (their zero pages nearly free) and
        # what the guest dirtied, or after more passes, about a threshold of dirtied pages.
        at_switch = end_left * end_data + first if out[1] == 0 else thr - slack / 2
        return rest + out[0] + _stop_copy(a, at_switch)[end]

    if prior is None or prior.model is None:
        def guess(ratio: float, rest: float, end: int = 0) -> float | None:
            return later(_Dirtying(ratio * later_drain, None), rest, end)

        low = rest_low + _stop_copy(a, end_left * end_data)[1]
        return _Eta(guess(FIRST_PASS_RATIO, rest), low, guess(FIRST_PASS_RATIO_HIGH, rest_high, 2), True)
    model, optimist, pessimist = spans(prior.model, prior.period)
    eta = later(model, rest)
    low = later(optimist.scaled(1 - BAND_MIN), rest_low, 1)
    margin = (1 + BAND_MIN) * (PRIOR_MARGIN if prior.source == "the pre-flight's" else 1.0)
    high = later(pessimist.scaled(margin), rest_high, 2)
    if eta is not None:
        low = min(low if low is not None else eta, eta * (1 - BAND_MIN))
        high = None if high is None else max(high, eta * (1 + BAND_MIN))
    else:
        low = rest_low if low is None else low
    return _Eta(eta, low, high, True, basis=prior)


def _zero_run_end(zmap: tuple[bool | None, ...], at: float) -> float:
    """Where the run of zero pages holding fraction `at` of RAM ends (the pre-flight's pages in
    address order, page i at (i + 0.5) / n): the next page read to hold data, or the end of
    RAM; `at` itself where that page holds data or was not read."""
    n = len(zmap)
    i = max(0, math.ceil(at * n - 0.5))
    j = i
    while j < n and zmap[j] is True:
        j += 1
    return at if j == i else min(1.0, max(at, j / n))


def _data_share(zmap: tuple[bool | None, ...], lo: float, hi: float) -> float:
    """The share of pages holding data between fractions lo and hi of RAM, from the pre-flight's
    pages in address order (page i at (i + 0.5) / n; None: not read); the nearest read one when
    none inside was."""
    n = len(zmap)
    inside = [z for z in zmap[max(0, math.ceil(lo * n - 0.5)):max(0, math.ceil(hi * n - 0.5))] if z is not None]
    if not inside:
        middle = (lo + hi) / 2 * n - 0.5
        inside = [min(((abs(i - middle), z) for i, z in enumerate(zmap) if z is not None))[1]]
    return 1 - sum(inside) / len(inside)


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

    def one(drain: float, model: _Dirtying, end: int = 0) -> tuple[float, int] | None:
        """This pass's rest, the passes after it, and the stop-and-copy (`end` as in _stop_copy)."""
        out = _run(model.dirtied(pass_time), drain, model, thr, a.throttle, cap=a.dirty_cap)
        if out is None:
            return None
        if remaining <= leftover:  # this pass is done: its sync adds what it dirtied
            at_switch = min(thr, remaining + model.dirtied(pass_time))
        else:
            at_switch = thr - slack / 2
        return rest + out[0] + _stop_copy(a, at_switch)[end], out[1]

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
    low_run = one(max(a.drains or [drain]), low_model, 1)
    high_run = one(min(a.drains or [drain]), high_model, 2)
    low = min(eta * (1 - BAND_MIN), low_run[0] if low_run else eta)
    high = None if high_run is None else max(eta * (1 + BAND_MIN), high_run[0])
    return _Eta(eta, low, high, False, mid[1])
