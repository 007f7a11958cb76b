"""What would make a stuck migration finish (`advise`), and whether applied advice worked
(`take_advice`, `follow_up`).

Advice that can be applied now carries a ParamChange in QEMU's names and units; the
backend chooses the command (each QEMU version's own), never the model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from migtui.model.derived import MigrationTracker
from migtui.model.guidance.analysis import _Analysis, _analyse, _pass_load
from migtui.model.guidance.dirtying import _Dirtying, _run
from migtui.model.guidance.tunables import (
    ADVICE_WITHIN_S, BAND_MIN, COVERED, DEFAULT_BANDWIDTH, DEFAULT_DOWNTIME_MS, LEGACY_BANDWIDTH,
    LEGACY_DOWNTIME_MS, NEW_LOW, WINDOW_S, _PRECOPY, _number,
)
from migtui.model.guidance.verdict import _one_line, _pct, _stall, assess
from migtui.model.parameters import DIRTY_LIMIT_UNIT
from migtui.model.requests import ParamChange
from migtui.model.sample import DEFAULT_PAGE_SIZE
from migtui.model.units import DOWNTIME_MAX_MS, format_bytes, format_duration, format_ms, format_rate


# "nothing-to-tune": said plainly when no parameter the model trusts would finish it now.
ADVICE_KINDS = ("downtime", "bandwidth", "dirty-limit", "postcopy", "xbzrle-cache", "auto-converge", "multifd",
                "nothing-to-tune")


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
                           threshold: float, cap: float | None = None, band: float = BAND_MIN) -> bool:
    """`model` run forward at a new drain and threshold, at the pessimistic end of its band
    (pass starts and the dirty rate `band` higher): does it get under, and soon enough
    (within ADVICE_WITHIN_S, or two passes of this size where a pass alone takes longer)?
    `cap` is a dirty limit to judge (bytes/s of dirtying), instead of the one on now."""
    start = load * (1 + band)
    if model is None:
        return start <= threshold  # no model: only a pass start that fits at once is sure
    slack = min(threshold, drain * WINDOW_S)
    out = _run(max(0.0, start - (threshold - slack)), drain, model.scaled(1 + band), threshold, a.throttle,
               cap=(cap if cap is not None else a.dirty_cap))
    return out is not None and out[0] <= max(ADVICE_WITHIN_S, 2 * load / drain)


def _smallest(candidates: list[float], works) -> float | None:
    """The first candidate (ascending) that `works`: what the model says is enough."""
    for x in candidates:
        if works(x):
            return x
    return None


def _ladder(start: float, stop: float, step: float = 1.1) -> list[float]:
    """Round values from `start` up to `stop`, about `step` apart, ascending, none above `stop`
    (rounding up to two digits can pass a stop that has more: 2440 under 2450 gave 2500)."""
    out, x = [], start
    while x < stop and len(out) < 200:
        v = min(_round_up(x), stop)
        if not out or v > out[-1]:
            out.append(v)
        x *= step
    if not out or out[-1] < stop:
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


def _dirty_limit_needed(a: _Analysis, limit_ms: float, load: float, readings: list[_Dirtying | None],
                       vcpus: int, below: float) -> int | None:
    """The highest vcpu-dirty-limit (whole MB/s per vCPU, under `below`) at which the model
    predicts the passes get under: the guest then dirties at most vcpus x it. A limit caps the
    guest's dirtying whatever it was; the pessimistic band's 10% counts against the cap too."""
    tp = a.throughput
    if not tp or not load:
        return None
    drain = a.drain or tp
    threshold = tp * limit_ms / 1000
    candidates = sorted({max(1, int(x)) for x in _ladder(1.0, below)} - {int(below)}, reverse=True)
    for mb in candidates:
        if mb < below and all(_predicted_to_converge(a, m, load, drain, threshold, vcpus * mb * DIRTY_LIMIT_UNIT)
                              for m in readings):
            return mb
    return None


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
    # 2b. the dirty limit (QEMU 8.1+ on KVM): a lower vcpu-dirty-limit caps what the guest dirties,
    #     and QEMU applies it at its next throttle check. It slows only the guest's writes, not its
    #     CPUs nor its pause: where it is on, it is the lever to pull first.
    vcpus = tracker.vcpus if isinstance(tracker.vcpus, int) and tracker.vcpus > 0 else None
    limit_now = _number(parameters.get("vcpu-dirty-limit"))
    if capabilities.get("dirty-limit") and vcpus and limit_now and tp and load:
        mb = _dirty_limit_needed(a, limit_ms, load, readings, vcpus, limit_now)
        each = f"{vcpus} vCPU{'s' if vcpus > 1 else ''}"
        if mb is None and limit_now > 1:
            text = (f"even a vcpu-dirty-limit of 1 MB/s per vCPU ({each}) is not enough: about "
                    f"{format_bytes(load)} is left at each pass start against {format_rate(tp)} sent")
            scored.append((0.05, Advice("dirty-limit", text, None, False)))
        elif mb is not None:
            text = (f"lower vcpu-dirty-limit to {mb} MB/s (now {limit_now:.0f} MB/s): it caps the guest's "
                    f"dirtying at {format_rate(vcpus * mb * DIRTY_LIMIT_UNIT)} ({each}) against "
                    f"{format_rate(tp)} sent; the guest's writes slow, not its CPUs")
            scored.append((0.97, Advice("dirty-limit", text,
                                        _set("dirty-limit", text, "vcpu-dirty-limit", mb), False)))
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
    # 5. next time: the dirty limit caps the guest's writes (KVM with a dirty ring), auto-converge
    #    throttles its CPUs; multifd fills a faster link.
    if "dirty-limit" in capabilities and not capabilities.get("dirty-limit") and tracker.kvm is not False:
        rate = a.model.rate if a.model is not None else a.dirty
        mb = _dirty_limit_needed(a, limit_ms, load, readings, vcpus, rate / DIRTY_LIMIT_UNIT / vcpus) \
            if vcpus and rate else None
        at = f" at {mb} MB/s per vCPU" if mb is not None else ""
        text = (f"next time enable dirty-limit{at} (QEMU runs it on KVM with -accel kvm,dirty-ring-size=N): it "
                f"caps the guest's dirtying (about {format_rate(rate)}) instead of throttling its CPUs")
        scored.append((0.4, Advice("dirty-limit", text, None, True)))
    if "auto-converge" in capabilities and not capabilities.get("auto-converge") \
            and not capabilities.get("dirty-limit"):  # QEMU refuses the two together
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
        ways = ["a restart with " + " or ".join(k for k in ("dirty-limit", "auto-converge", "multifd", "xbzrle")
                                                 if k in capabilities and not capabilities.get(k)
                                                 and not (k == "dirty-limit" and tracker.kvm is False)
                                                 and not (k == "auto-converge" and capabilities.get("dirty-limit")))]
        if capabilities.get("postcopy-ram"):
            ways.insert(0, "post-copy now")
        elif "postcopy-ram" in capabilities:
            ways.append("post-copy (postcopy-ram from the start)")
        ways = [w for w in ways if w != "a restart with "] or ["a restart with other settings"]
        text = "no setting migtui can change now will make it converge: only " + ", or ".join(ways) + " will do"
        out.insert(0, Advice("nothing-to-tune", text, None, False))
    return out


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
