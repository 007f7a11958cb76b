"""The verdict on a VM's latest migration (`assess`): one of VERDICTS, a one-line why with
the numbers behind it, an ETA band and the implied downtime; and `unreachable`, the verdict
once QEMU is gone or silent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migtui.model.derived import MigrationTracker
from migtui.model.guidance.analysis import _Analysis, _analyse, _pass_load
from migtui.model.guidance.dirtying import _Dirtying
from migtui.model.guidance.eta import _precopy_eta, _stop_copy, _wire_of
from migtui.model.guidance.passes import _evolve
from migtui.model.guidance.prior import _prior_for
from migtui.model.guidance.tunables import (
    FIRST_PASS_RATIO, FLOOR_PASSES, RECENT, STALL_SAMPLES, STALL_SECONDS, WINDOW_S, _POSTCOPY, _SENDING,
)
from migtui.model.units import format_bytes, format_duration, format_ms, format_rate


# `deciding`: in flight, and the evidence cannot yet say whether it converges (pass 1 with
# nothing known of the guest, or the rates and the passes disagree). Never `converging` then.
# `unreachable`: QEMU went away or stopped answering; the last verdict is history, not news.
VERDICTS = (
    "idle", "setup", "deciding", "converging", "not-converging", "stalled", "switching-over",
    "post-copy", "completed", "failed", "cancelled", "unreachable",
)


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


    def aged(self, seconds: float) -> Assessment:
        """The same verdict `seconds` later: its ETAs count down (the finish it foresaw stays put)."""
        if seconds <= 0 or self.eta_s is None and self.eta_low_s is None and self.eta_high_s is None:
            return self

        def less(eta: float | None) -> float | None:
            return None if eta is None else max(0.0, eta - seconds)

        return _evolve(self, eta_s=less(self.eta_s), eta_low_s=less(self.eta_low_s), eta_high_s=less(self.eta_high_s))


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


def _known_zero_share(tracker: MigrationTracker) -> float | None:
    """The share of the guest's RAM known to be zero pages: the pre-flight's page sample, else
    its last migration's pass 1 (None: not known)."""
    prior = _prior_for(tracker)
    return prior.zero_share if prior is not None else None


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
        left = _wire_of(a, remaining, _known_zero_share(tracker)) if remaining is not None else None
        eta, low, high = _stop_copy(a, left) if left is not None and tp else (None, None, None)
        why = f"guest stopped: sending the last {format_bytes(remaining)} and device state"
        return Assessment("switching-over", _one_line(why), eta, low, high, implied)

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
            # The rest goes with the guest paused, without max-bandwidth's limit.
            left = _wire_of(a, after_sync, _known_zero_share(tracker))
            eta, low, high = _stop_copy(a, left) if tp else (None, None, None)
            why = (f"{format_bytes(remaining)} left fits in the {limit} downtime limit at "
                   f"{format_rate(tp)}: switching over")
            return Assessment("switching-over", _one_line(why), eta, low, high, implied)
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
    j = a.judge
    if j.floor_bytes is not None and j.floor_run >= FLOOR_PASSES and (len(j.recent) < 2 or a.floor is None):
        # Decided pass by pass (see passes._window_floor): say what each pass showed.
        # (QEMU's dirty rate, over pass 1's seconds, would understate it: no rate here.)
        slack = min(thr or 0.0, (a.drain or a.throughput or 0.0) * WINDOW_S)
        return (f"each of the last {j.floor_run} passes dirtied {format_bytes(j.floor_bytes)} or more in one "
                f"{format_ms(WINDOW_S * 1000)} send window (a pass's shortest), over the {format_bytes(slack)} a "
                f"{format_ms(a.limit_ms)} switch-over allows")
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


def unreachable(last: Assessment, seen: float, state: str) -> Assessment:
    """The verdict on a migration whose QEMU is gone or silent: the last one is history.
    `state` says how (e.g. "disconnected: QEMU closed the connection"); `seen` is the last
    sample's time. No ETA: nothing is known of what happened after."""
    import time

    when = time.strftime("%H:%M:%S", time.localtime(seen))
    return Assessment("unreachable", _one_line(f"{state}; last seen {when}, then {last.verdict}: {last.why}"),
                      None, None, None, None)
