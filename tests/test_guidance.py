"""Operator guidance (migtui.model.guidance): verdicts, ETA bands, advice.

Two kinds of test. Unit tests feed hand-built query-migrate histories into a
MigrationTracker. The scenario table drives the simulator's pure pre-copy model
(fake clock, fixed seed), samples it every 0.5 s of simulated time as the console
would, and checks the guidance against what the simulator then really does.
`scenario_table()` prints the results as Markdown for the README.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest

from migtui.backend.qmp.dialect import Dialect
from migtui.model.requests import ParamChange
from migtui.model import MigrationTracker, parse_query_migrate
from migtui.model.derived import HostLessons
from migtui.model.endpoint import parse_endpoint
from migtui.model.vm import VMState
from migtui.model.guidance import ADVICE_KINDS, VERDICTS, Advice, Assessment, advise, assess, follow_up, take_advice
from migtui.model.guidance.analysis import _analyse
from migtui.model.guidance.prior import learned_by
from migtui.model.guidance.tunables import PAUSED_RATE
from migtui.sim.dialects import query_migrate_14, query_migrate_72
from migtui.sim.model import FINISHED, DirtyRateProbe, Guest, Knobs, Migration

MiB = 2**20
GiB = 2**30
PAGE = 4096
T0 = 1000.0  # wall-clock time of the first sample


# -- hand-built histories ------------------------------------------------------------------


def reply(status: str, **ram: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"status": status}
    top = {k: ram.pop(k) for k in ("total-time", "downtime", "error-desc", "xbzrle-cache") if k in ram}
    out.update(top)
    if ram:
        out["ram"] = {"page-size": PAGE, **ram}
    return out


@dataclass
class Run:
    """A pre-copy migration laid out pass by pass, sampled every `step` seconds.

    Pass 1 sends all of `total`; pass k >= 2 starts with starts[k-2] bytes, during which
    QEMU reports dirty rate rates[k-2]. Each pass drains at `tp` until what is left fits
    in tp x limit, when the next pass begins (or, if its start fits, it completes).
    """

    starts: list[float]
    rates: list[float]
    total: float = 2 * GiB
    tp: float = 128 * MiB
    limit_ms: float = 300
    step: float = 0.5
    xbzrle: dict[str, Any] | None = None

    @property
    def threshold(self) -> float:
        return self.tp * self.limit_ms / 1000

    def timeline(self) -> list[tuple[float, int, float, float]]:
        """(start time, pass number, start remaining, reported dirty rate) per pass."""
        out, t = [], 0.0
        for n, (start, rate) in enumerate(zip([self.total] + self.starts, [0.0] + self.rates), 1):
            out.append((t, n, start, rate))
            t += max(0.0, start - self.threshold) / self.tp
        out.append((t, len(out) + 1, 0.0, 0.0))  # the end
        return out

    def replies(self, until: float | None = None) -> list[tuple[float, dict[str, Any]]]:
        line = self.timeline()
        end = line[-1][0]
        out, i = [], 1
        while True:
            t = i * self.step
            i += 1
            if until is not None and t > until:
                break
            if t >= end:
                if self.starts and self.starts[-1] <= self.threshold:
                    out.append((t, reply("completed", transferred=int(self.tp * end), remaining=0,
                                         total=int(self.total), **{"total-time": int(end * 1000), "downtime": 25})))
                break
            begin, n, start, rate = max(x for x in line if x[0] <= t)
            ram: dict[str, Any] = dict(
                transferred=int(self.tp * t), remaining=int(start - self.tp * (t - begin)), total=int(self.total),
                **{"dirty-sync-count": n, "dirty-pages-rate": int(rate / PAGE), "total-time": int(t * 1000),
                   "mbps": self.tp * 8 / 1e6})
            if self.xbzrle is not None:
                ram["xbzrle-cache"] = dict(self.xbzrle)
            out.append((t, reply("active", **ram)))
        return out


def tracker_for(run: Run, until: float | None = None, bandwidth: float | None = None) -> MigrationTracker:
    tracker = MigrationTracker()
    tracker.parameters["max-bandwidth"] = run.tp if bandwidth is None else bandwidth
    tracker.parameters["downtime-limit"] = run.limit_ms
    for t, r in run.replies(until):
        tracker.add(parse_query_migrate(r, T0 + t))
    return tracker


def feed(tracker: MigrationTracker, t: float, r: dict[str, Any]) -> Assessment:
    tracker.add(parse_query_migrate(r, T0 + t))
    return assess(tracker)


CONVERGING = Run(starts=[400 * MiB, 120 * MiB, 36 * MiB], rates=[25 * MiB, 30 * MiB, 30 * MiB])
# The guest re-dirties 600 MiB a pass, as fast as it is sent: it never gets under 38.4 MiB.
STUCK = Run(starts=[600 * MiB] * 12, rates=[136 * MiB] * 12)


def verdicts_by_pass(run: Run) -> dict[int, set[str]]:
    tracker = MigrationTracker()
    tracker.parameters.update({"max-bandwidth": run.tp, "downtime-limit": run.limit_ms})
    out: dict[int, set[str]] = {}
    for t, r in run.replies():
        a = feed(tracker, t, r)
        out.setdefault(r["ram"].get("dirty-sync-count", 0), set()).add(a.verdict)
    return out


def one_line_with_numbers(why: str) -> None:
    assert why and "\n" not in why and len(why) <= 160, why
    assert any(ch.isdigit() for ch in why), why


# -- verdicts ------------------------------------------------------------------------------


def test_converging_history_has_an_eta_and_numbers():
    tracker = tracker_for(CONVERGING, until=17.0)  # pass 2 under way
    a = assess(tracker)
    assert a.verdict == "converging"
    one_line_with_numbers(a.why)
    assert "pass 2" in a.why and "MiB/s" in a.why
    assert a.eta_s is not None and a.eta_low_s <= a.eta_s <= a.eta_high_s
    real_end = CONVERGING.timeline()[-1][0]
    assert a.eta_s == pytest.approx(real_end - 17.0, rel=0.3)
    assert a.implied_downtime_ms == pytest.approx(assess(tracker).implied_downtime_ms)
    remaining = tracker.derived.remaining_bytes
    assert a.implied_downtime_ms == pytest.approx(remaining / (128 * MiB) * 1000, rel=0.01)


def test_first_pass_says_qemu_has_no_dirty_rate_yet():
    tracker = tracker_for(CONVERGING, until=6.0)
    a = assess(tracker)
    assert a.verdict == "deciding"
    one_line_with_numbers(a.why)
    assert "pass 1" in a.why and "no dirty rate" in a.why
    left = tracker.derived.remaining_bytes
    rest = (left - CONVERGING.threshold) / (128 * MiB)
    # The low end is this pass alone; the point adds an allowance for later passes.
    assert a.eta_low_s == pytest.approx(rest, rel=0.02)
    assert a.eta_low_s < a.eta_s < a.eta_high_s


def test_not_converging_is_decided_by_pass_5_and_stays():
    seen = verdicts_by_pass(STUCK)
    assert seen[5] == {"not-converging"}
    assert all(seen[n] == {"not-converging"} for n in range(5, 14)), seen
    a = assess(tracker_for(STUCK, until=60.0))
    assert a.verdict == "not-converging" and a.eta_s is None and a.eta_low_s is None
    one_line_with_numbers(a.why)
    assert "dirtying 136 MiB/s against 128 MiB/s" in a.why
    assert "38.4 MiB" in a.why  # what it would take at this limit


def test_stalled_needs_three_samples_and_five_seconds():
    tracker = MigrationTracker()
    ram = dict(total=GiB, remaining=700 * MiB, **{"dirty-sync-count": 1})
    for i, sent in enumerate([100, 200, 300]):
        feed(tracker, i, reply("active", transferred=sent * MiB, **ram))
    verdicts = [feed(tracker, 3 + i, reply("active", transferred=300 * MiB, **ram)).verdict for i in range(6)]
    # Flat for 1, 2, 3, 4 s: not yet (pass 1, nothing known: deciding); 5 s and 6 s (5 and 6 samples): stalled.
    assert verdicts[:4] == ["deciding"] * 4 and verdicts[4:] == ["stalled"] * 2
    a = assess(tracker)
    one_line_with_numbers(a.why)
    assert "6.0s" in a.why and "300 MiB" in a.why and a.eta_s is None
    # Sending again: no longer stalled.
    assert feed(tracker, 10, reply("active", transferred=400 * MiB, **ram)).verdict == "deciding"


def test_a_stall_longer_than_the_samples_guidance_keeps_says_how_long():
    tracker = MigrationTracker()
    ram = dict(total=GiB, remaining=700 * MiB, **{"dirty-sync-count": 1})
    feed(tracker, 0, reply("active", transferred=100 * MiB, **ram))
    for i in range(1, 601):  # ten minutes at 1 s without a byte sent, each sample looked at
        a = feed(tracker, i, reply("active", transferred=200 * MiB, **ram))
    assert a.verdict == "stalled"
    assert "nothing sent for 9m59s (599 samples)" in a.why, a.why


def test_stalled_with_a_slow_poll_still_needs_three_samples():
    tracker = MigrationTracker()
    ram = dict(total=GiB, remaining=700 * MiB, **{"dirty-sync-count": 1})
    feed(tracker, 0, reply("active", transferred=100 * MiB, **ram))
    feed(tracker, 10, reply("active", transferred=200 * MiB, **ram))
    assert feed(tracker, 20, reply("active", transferred=200 * MiB, **ram)).verdict != "stalled"
    assert feed(tracker, 30, reply("active", transferred=200 * MiB, **ram)).verdict != "stalled"
    assert feed(tracker, 40, reply("active", transferred=200 * MiB, **ram)).verdict == "stalled"


@pytest.mark.parametrize("status", ["device", "pre-switchover"])
def test_stopped_for_switch_over(status):
    tracker = tracker_for(CONVERGING, until=17.0)
    a = feed(tracker, 17.5, reply(status, transferred=int(17.5 * 128 * MiB), remaining=20 * MiB, total=2 * GiB,
                                  **{"dirty-sync-count": 5}))
    assert a.verdict == "switching-over"
    one_line_with_numbers(a.why)
    if status == "pre-switchover":
        assert a.eta_s is None and "migrate-continue" in a.why
    else:
        # The guest is paused and QEMU sends the rest without max-bandwidth's limit: at the
        # assumed link speed with nothing known, at worst at the throughput so far.
        assert a.eta_s == pytest.approx(20 * MiB / PAUSED_RATE, rel=0.05)
        assert a.eta_high_s == pytest.approx(20 / 128, rel=0.05)


def test_switching_over_when_what_is_left_fits():
    # Pass 3 of a guest that barely dirties: once what is left fits, it switches over.
    run = Run(starts=[400 * MiB, 120 * MiB, 30 * MiB], rates=[2 * MiB, 1 * MiB, 1 * MiB])
    tracker = tracker_for(run, until=19.0)
    assert assess(tracker).verdict == "converging"
    a = feed(tracker, 19.1, reply("active", transferred=int(19.1 * 128 * MiB), remaining=30 * MiB, total=2 * GiB,
                                  **{"dirty-sync-count": 3, "dirty-pages-rate": 256, "total-time": 19_100}))
    assert a.verdict == "switching-over"
    one_line_with_numbers(a.why)
    assert "30.0 MiB left fits in the 300ms downtime limit" in a.why
    # What is left goes with the guest paused, not held to max-bandwidth (the band's far end).
    assert a.eta_s < a.eta_high_s and a.eta_high_s >= 30 / 128 * 0.95


def test_dipping_under_the_threshold_at_a_pass_end_is_not_a_switch_over():
    # QEMU syncs first: a guest dirtying 136 MiB/s brings hundreds of MiB back.
    for until in (17.0, 45.0):  # before and after not-converging is decided
        tracker = tracker_for(STUCK, until=until)
        before = assess(tracker).verdict
        ram = {"dirty-sync-count": tracker.derived.passes, "dirty-pages-rate": 136 * 256,
               "total-time": int((until + 0.1) * 1000)}
        a = feed(tracker, until + 0.1, reply("active", transferred=int((until + 0.1) * 128 * MiB),
                                             remaining=30 * MiB, total=2 * GiB, **ram))
        assert a.verdict == before != "switching-over"


@pytest.mark.parametrize(
    "r, verdict, fragment",
    [
        (reply("completed", transferred=GiB, remaining=0, total=GiB, **{"total-time": 12_000, "downtime": 45}),
         "completed", "12s with 45ms"),
        ({"status": "failed", "error-desc": "Unable to write to socket:\nBroken pipe"}, "failed", "Broken pipe"),
        ({"status": "cancelled"}, "cancelled", "cancelled"),
        ({"status": "cancelling", "total-time": 3000}, "cancelled", "being cancelled"),
        ({"status": "none"}, "idle", "no migration"),
        ({}, "idle", "no migration"),
        ({"status": "setup"}, "setup", "setting up"),
        (reply("postcopy-active", transferred=GiB, remaining=300 * MiB, total=2 * GiB), "post-copy", "300 MiB"),
        (reply("postcopy-paused", transferred=GiB, remaining=300 * MiB, total=2 * GiB), "post-copy", "paused"),
    ],
)
def test_statuses_map_to_verdicts(r, verdict, fragment):
    tracker = MigrationTracker()
    tracker.parameters["max-bandwidth"] = 128 * MiB
    if r.get("status", "none").startswith("postcopy"):
        feed(tracker, 0, reply("active", transferred=GiB - 64 * MiB, remaining=400 * MiB, total=2 * GiB))
    a = feed(tracker, 0.5, r)
    assert a.verdict == verdict and a.verdict in VERDICTS
    assert fragment in a.why and "\n" not in a.why
    if verdict == "completed":
        assert a.eta_s == 0
    if r.get("status") == "postcopy-active":
        assert a.eta_s == pytest.approx(300 / 128, rel=0.01)  # nothing is dirtied any more
    if r.get("status") == "postcopy-paused":
        assert a.eta_s is None


def test_no_sample_yet_is_idle():
    assert assess(MigrationTracker()).verdict == "idle"


def test_to_json_uses_hyphenated_keys():
    data = assess(tracker_for(CONVERGING, until=17.0)).to_json()
    assert list(data) == ["verdict", "why", "eta-s", "eta-low-s", "eta-high-s", "implied-downtime-ms",
                          "fitted-dirty-bytes-per-s"]
    assert data["verdict"] == "converging" and isinstance(data["eta-s"], float)


def test_a_new_migration_starts_afresh():
    tracker = tracker_for(STUCK, until=60.0)
    assert assess(tracker).verdict == "not-converging"
    feed(tracker, 61, {"status": "cancelled"})
    for t, r in CONVERGING.replies(until=17.0):
        a = feed(tracker, 100 + t, r)
    assert a.verdict == "converging" and a.eta_s is not None


def test_legacy_replies_without_a_pass_counter():
    # QEMU 1.4 has no dirty-sync-count: passes show as remaining growing again.
    tracker = MigrationTracker()
    tracker.parameters.update({"max-bandwidth": STUCK.tp, "downtime-limit": STUCK.limit_ms})
    for t, r in STUCK.replies(until=50):
        del r["ram"]["dirty-sync-count"]
        a = feed(tracker, t, r)
    assert a.verdict == "not-converging"


# -- advice --------------------------------------------------------------------------------

PARAMS = {"max-bandwidth": 128 * MiB, "downtime-limit": 300, "xbzrle-cache-size": 64 * MiB}


def test_no_advice_while_converging_fine():
    tracker = tracker_for(CONVERGING, until=17.0)
    assert advise(tracker, PARAMS, {"postcopy-ram": True, "auto-converge": False, "multifd": False}) == []


def test_advice_numbers_for_a_stuck_migration():
    tracker = tracker_for(STUCK, until=45.0)
    caps = {"postcopy-ram": True, "auto-converge": False, "multifd": False, "xbzrle": False}
    advice = advise(tracker, PARAMS, caps)
    by_kind = {a.kind: a for a in advice}
    assert all(a.kind in ADVICE_KINDS for a in advice)
    # Pass starts hold 600 MiB; at 128 MiB/s that is 4.69 s. The model, at the pessimistic end
    # of its band (pass starts and dirtying 10% higher), gets under from 5.16 s: 5.3 s on the ladder.
    assert qmp_of(by_kind["downtime"]) == ("migrate-set-parameters", {"downtime-limit": 5300})
    assert "5300ms" in by_kind["downtime"].text and "600 MiB" in by_kind["downtime"].text
    # The guest dirties 136 MiB/s, and passes of one length (4.4 s) cannot show whether it rewrites
    # all 600 MiB in any pass: the bandwidth must work for both readings, one that fits a pass
    # start (10% more) in the 300 ms limit: 2300 MiB/s.
    assert qmp_of(by_kind["bandwidth"]) == ("migrate-set-parameters", {"max-bandwidth": 2300 * MiB})
    assert "2.2 GiB/s" in by_kind["bandwidth"].text and "136 MiB/s" in by_kind["bandwidth"].text
    assert "rewrites all 600 MiB" in by_kind["bandwidth"].text
    assert qmp_of(by_kind["postcopy"]) == ("migrate-start-postcopy", {})
    assert not any(a.needs_restart for a in advice if a.now)
    for kind in ("auto-converge", "multifd", "xbzrle-cache"):
        assert qmp_of(by_kind[kind]) is None and by_kind[kind].needs_restart
    # Most likely to help first: post-copy always finishes; a 5.9 s pause rarely suits.
    assert [a.kind for a in advice][:3] == ["postcopy", "bandwidth", "downtime"]
    assert [a.kind for a in advice][-1] == "multifd"


@pytest.mark.parametrize("start, stop", [(330.0, 2450.0), (1.0, 99.0), (134e6, 64 * 134e6), (2440.0, 2450.0),
                                         (5000.0, 2450.0)])
def test_advice_candidates_never_pass_their_stop(start, stop):
    """The ladder rounds each candidate up to two significant digits, which passed a stop that has
    more (2440 under 2450 gave 2500): the advice, as the autopilot, only ever offers up to it."""
    from migtui.model.guidance.advice import _ladder

    rungs = _ladder(start, stop)
    assert rungs[-1] == stop and max(rungs) == stop, rungs[-3:]
    assert all(a < b for a, b in zip(rungs, rungs[1:])), rungs
    assert start >= stop or rungs[0] >= start



def test_postcopy_only_when_enabled_before_the_start():
    tracker = tracker_for(STUCK, until=45.0)
    advice = advise(tracker, PARAMS, {"postcopy-ram": False})
    post = [a for a in advice if a.kind == "postcopy"]
    assert post and qmp_of(post[0]) is None and post[0].needs_restart
    assert not [a for a in advise(tracker, PARAMS, {}) if a.kind == "postcopy"]


def test_legacy_commands_take_seconds():
    tracker = tracker_for(STUCK, until=45.0)
    advice = {a.kind: a for a in advise(tracker, {"xbzrle-cache-size": 64 * MiB}, {"xbzrle": False}, modern=False)}
    assert qmp_of(advice["downtime"], False) == ("migrate_set_downtime", {"value": 5.3})
    assert qmp_of(advice["bandwidth"], False) == ("migrate_set_speed", {"value": 2300 * MiB})


def test_xbzrle_cache_advice_is_a_power_of_two_over_the_working_set():
    cache = {"cache-size": 32 * MiB, "bytes": 1, "pages": 1000, "cache-miss": 3000,
             "cache-miss-rate": 0.75, "encoding-rate": 9.0, "overflow": 0}
    run = Run(starts=STUCK.starts, rates=STUCK.rates, xbzrle=cache)
    tracker = tracker_for(run, until=45.0)
    params = dict(PARAMS, **{"xbzrle-cache-size": 32 * MiB})
    xb = [a for a in advise(tracker, params, {"xbzrle": True}) if a.kind == "xbzrle-cache"][0]
    # 600 MiB dirtied a pass (153600 pages) against 8192 pages: 660 MiB rounds up to 1 GiB.
    assert qmp_of(xb) == ("migrate-set-parameters", {"xbzrle-cache-size": GiB}) and not xb.needs_restart
    assert "153600 pages" in xb.text and "8192 pages" in xb.text and "75%" in xb.text and "1.0 GiB" in xb.text
    legacy = [a for a in advise(tracker, params, {"xbzrle": True}, modern=False) if a.kind == "xbzrle-cache"][0]
    assert qmp_of(legacy, False) == ("migrate-set-cache-size", {"value": GiB})


def test_downtime_advice_is_capped_at_qemus_maximum():
    # 40 GiB a pass at 16 MiB/s would need 3200 s: QEMU takes at most 2000 s.
    run = Run(starts=[40 * GiB] * 6, rates=[17 * MiB] * 6, total=64 * GiB, tp=16 * MiB, step=60)
    tracker = tracker_for(run, until=run.timeline()[4][0] + 100)
    down = [a for a in advise(tracker, {"downtime-limit": 300, "max-bandwidth": 16 * MiB}, {})
            if a.kind == "downtime"]
    # Even the maximum is not enough: said plainly, with nothing to send.
    assert down and qmp_of(down[0]) is None and not down[0].needs_restart
    assert "maximum" in down[0].text and "not enough" in down[0].text


def test_stalled_legacy_zero_speed_advice():
    tracker = MigrationTracker()
    ram = dict(total=GiB, remaining=700 * MiB)
    for i in range(8):
        feed(tracker, i, reply("active", transferred=300 * MiB, **ram))
    assert assess(tracker).verdict == "stalled"
    [adv] = advise(tracker, {"max-bandwidth": 0}, {}, modern=False)
    assert qmp_of(adv, False) == ("migrate_set_speed", {"value": 32 * MiB})


def test_advice_to_json():
    adv = Advice("downtime", "raise the downtime limit to 850ms", ParamChange({"downtime-limit": 850}), False)
    assert adv.to_json() == {"kind": "downtime", "text": "raise the downtime limit to 850ms",
                             "set": {"downtime-limit": 850}, "postcopy-now": False, "needs-restart": False}


# Every command the QMP backend's dialect may pick for advice, modern and legacy.
_ADVICE_COMMANDS = frozenset({"migrate-set-parameters", "migrate-set-cache-size", "migrate_set_speed",
                              "migrate_set_downtime", "migrate-start-postcopy"})


def qmp_of(advice: Advice, modern: bool = True):
    """What the QMP backend sends for this advice, now: a QEMU 7.2 or 1.4 dialect's command."""
    if advice.postcopy_now:
        return ("migrate-start-postcopy", {})
    if advice.change is None:
        return None
    commands = _ADVICE_COMMANDS if modern else _ADVICE_COMMANDS - {"migrate-set-parameters"}
    dialect = Dialect((7, 2, 0) if modern else (1, 4, 0), commands, None, frozenset())
    [command] = dialect.set_parameters(advice.change.parameters)
    return command


# -- simulator scenarios --------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    ram: int
    dirty: float  # bytes/s, random writes over the working set
    ws: int
    bandwidth: int
    downtime_ms: int
    xbzrle_cache: int = 0  # 0: XBZRLE off
    zero: float = 0.5  # share of zero pages
    legacy: bool = False  # QEMU 1.4's replies (no dirty-sync-count)
    disk: int = 0  # block migration of a disk this big first
    auto_converge: bool = False
    marginal: bool = False  # dirtying within ~10% of what it takes: no quick decision expected
    note: str = ""


# (name, RAM, dirty rate, working set, bandwidth, downtime limit, XBZRLE cache, ...)
SCENARIOS = [
    Scenario("quiet", 2 * GiB, 8 * MiB, 64 * MiB, 128 * MiB, 300),
    Scenario("moderate", 4 * GiB, 48 * MiB, 512 * MiB, 128 * MiB, 300),
    Scenario("busy", 4 * GiB, 96 * MiB, GiB, 128 * MiB, 300, zero=0.3),
    Scenario("near-bandwidth", 4 * GiB, 110 * MiB, GiB, 128 * MiB, 300, zero=0.3),
    Scenario("fast-link", 8 * GiB, 300 * MiB, 2 * GiB, GiB, 300, zero=0.2),
    Scenario("slow-link", GiB, 4 * MiB, 32 * MiB, 16 * MiB, 300),
    Scenario("xbzrle-big-cache", 2 * GiB, 160 * MiB, 200 * MiB, 128 * MiB, 300, xbzrle_cache=256 * MiB),
    Scenario("seed-1.4-ok", GiB, 4 * MiB, 64 * MiB, 32 * MiB, 30, legacy=True),
    Scenario("block+ram", GiB, 16 * MiB, 128 * MiB, 128 * MiB, 300, disk=2 * GiB),
    Scenario("auto-converge", 2 * GiB, 180 * MiB, 512 * MiB, 128 * MiB, 300, auto_converge=True,
             note="not converging until the throttle bites"),
    Scenario("over-bandwidth", 4 * GiB, 200 * MiB, GiB, 128 * MiB, 300),
    Scenario("marginal", 2 * GiB, 150 * MiB, 256 * MiB, 128 * MiB, 300),
    Scenario("hot-small-ws", 2 * GiB, 400 * MiB, 24 * MiB, 128 * MiB, 300,
             note="24 MiB fits the threshold, but 100 ms of dirtying does not"),
    Scenario("long-downtime", 2 * GiB, 200 * MiB, 256 * MiB, 128 * MiB, 2000),
    Scenario("xbzrle-small-cache", 2 * GiB, 160 * MiB, 200 * MiB, 128 * MiB, 300, xbzrle_cache=32 * MiB,
             marginal=True, note="160 MiB/s dirtied against ~150 MiB/s of pages sent"),
    Scenario("legacy-defaults", GiB, 64 * MiB, 128 * MiB, 32 * MiB, 30),
    Scenario("seed-1.4-stuck", GiB, 64 * MiB, 128 * MiB, 32 * MiB, 30, legacy=True),
]
HORIZON = 180.0  # simulated seconds: what has not completed by then does not converge
STEP = 0.5
JUDGED_AT = 30.0


@dataclass
class Outcome:
    scenario: Scenario
    converges: bool
    finish: float | None  # simulated seconds
    verdict: str  # at JUDGED_AT, or at the last sample before completion
    decided_pass: int | None  # the pass at which not-converging was first said
    decided_t: float | None
    pass2_t: float | None  # the first sample in pass 2 or later
    left_not_converging: bool  # said not-converging, then something else while still running
    t50: float | None  # the first sample with progress >= 50%
    eta50: float | None
    band50: tuple[float | None, float | None]
    t_first: float | None  # the first sample after QEMU reports a dirty rate (pass 2)
    eta_first: float | None
    t_known: float | None  # the first sample with the dirty rate measured twice
    eta_known: float | None
    assessments: int

    @property
    def truth(self) -> str:
        return "converges" if self.converges else "does not converge"

    def error(self, t: float | None, eta: float | None) -> float | None:
        if self.finish is None or t is None or eta is None:
            return None
        return (eta - (self.finish - t)) / (self.finish - t)


PRIORS = ("none", "pre-flight", "again")
"""What the console knew before the migration: nothing; a pre-flight calc-dirty-rate (the
simulator's answer, as the start dialog's Check gets it); or the same guest's previous
migration, watched by the same tracker (the VM migrated before, e.g. there and back)."""


def _migration(sc: Scenario, seed: int) -> tuple[Migration, Knobs]:
    guest = Guest(ram=sc.ram, dirty_rate=sc.dirty, working_set=sc.ws, zero_fraction=sc.zero, disk=sc.disk)
    knobs = Knobs(max_bandwidth=sc.bandwidth, downtime_limit=sc.downtime_ms / 1000, xbzrle=bool(sc.xbzrle_cache),
                  xbzrle_cache_size=sc.xbzrle_cache or 64 * MiB, auto_converge=sc.auto_converge,
                  zero_bandwidth_unlimited=not sc.legacy, seed_expected_downtime=sc.legacy)
    return Migration(guest, knobs, start=0.0, rng=random.Random(seed), blk=bool(sc.disk)), knobs


def _new_tracker(sc: Scenario) -> MigrationTracker:
    tracker = MigrationTracker()
    # The settings the backend keeps on the tracker: max_bandwidth and downtime_limit_ms follow.
    tracker.capabilities = {"auto-converge": sc.auto_converge, "xbzrle": bool(sc.xbzrle_cache)}
    tracker.parameters = {"max-bandwidth": sc.bandwidth, "downtime-limit": sc.downtime_ms}
    return tracker


def run_scenario(sc: Scenario, prior: str = "none") -> Outcome:
    tracker = _new_tracker(sc)
    offset = 0.0
    if prior == "pre-flight":
        probe = DirtyRateProbe(start=0.0, calc_time=1.0)
        probe.status(1.0, Guest(ram=sc.ram, dirty_rate=sc.dirty, working_set=sc.ws))
        tracker.dirty_rate_prior = probe.result_mb * MiB
    elif prior == "again":
        # The guest's previous migration, to completion or cancelled at the horizon.
        m, knobs = _migration(sc, seed=1)
        query = query_migrate_14 if sc.legacy else query_migrate_72
        t = 0.0
        while t < HORIZON and m.status not in FINISHED:
            t += STEP
            m.advance(t)
            tracker.add(parse_query_migrate(query(m, t, xbzrle=knobs.xbzrle, cache_size=knobs.xbzrle_cache_size),
                                            T0 + t))
            assess(tracker)
        if m.status not in FINISHED:
            m.cancel(t)
            tracker.add(parse_query_migrate(query(m, t, xbzrle=knobs.xbzrle, cache_size=knobs.xbzrle_cache_size),
                                            T0 + t))
            assess(tracker)
        offset = t + 60.0
    m, knobs = _migration(sc, seed=0)
    query = query_migrate_14 if sc.legacy else query_migrate_72
    # (time, assessment, progress, pass, dirty-rate periods measured) per sample while it runs
    samples: list[tuple[float, Assessment, float | None, int | None, int]] = []
    t, n = 0.0, 0
    while t < HORIZON:
        n += 1
        t = n * STEP
        m.advance(t)
        reply = query(m, t, xbzrle=knobs.xbzrle, cache_size=knobs.xbzrle_cache_size)
        tracker.add(parse_query_migrate(reply, T0 + offset + t))
        a = assess(tracker)
        if m.status in FINISHED:
            break
        inside = _analyse(tracker)
        samples.append((t, a, tracker.derived.progress, inside.pass_number, len(inside.judge.recent)))
    finish = m.start + m.total_time_ms / 1000 if m.status == "completed" else None
    judged = [x for x in samples if x[0] <= JUDGED_AT] or samples[:1]
    stuck = next((x for x in samples if x[1].verdict == "not-converging"), None)
    left = stuck is not None and any(x[1].verdict != "not-converging" for x in samples if x[0] > stuck[0])
    at50 = next((x for x in samples if x[2] is not None and x[2] >= 0.5), None)
    pass2 = next((x[0] for x in samples if (x[3] or 0) >= 2), None)
    # The ETA stops being a guess once the dirty rate has been measured twice (over periods
    # of different lengths); judge it there, if the migration still has a second to go.
    end = finish if finish is not None else HORIZON
    first = next((x for x in samples if x[4] >= 1 and end - x[0] >= 1.0), None)
    known = next((x for x in samples if x[4] >= 2 and end - x[0] >= 1.0), None)
    return Outcome(
        sc, finish is not None, finish, judged[-1][1].verdict if judged else "idle",
        stuck[3] if stuck else None, stuck[0] if stuck else None, pass2, left,
        at50[0] if at50 else None, at50[1].eta_s if at50 else None,
        (at50[1].eta_low_s, at50[1].eta_high_s) if at50 else (None, None),
        first[0] if first else None, first[1].eta_s if first else None,
        known[0] if known else None, known[1].eta_s if known else None, n)


_OUTCOMES: dict[tuple[str, str], Outcome] = {}


def outcome(sc: Scenario, prior: str = "none") -> Outcome:
    if (sc.name, prior) not in _OUTCOMES:
        _OUTCOMES[sc.name, prior] = run_scenario(sc, prior)
    return _OUTCOMES[sc.name, prior]


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}s"


def _fmt_err(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.0f}%"


def _setup(sc: Scenario) -> str:
    parts = [f"{sc.ram // GiB} GiB RAM", f"dirty {sc.dirty / MiB:.0f} MiB/s over {sc.ws / MiB:.0f} MiB",
             f"{sc.bandwidth / MiB:.0f} MiB/s", f"{sc.downtime_ms} ms"]
    if sc.xbzrle_cache:
        parts.append(f"XBZRLE {sc.xbzrle_cache // MiB} MiB")
    if sc.disk:
        parts.append(f"+{sc.disk // GiB} GiB disk")
    if sc.legacy:
        parts.append("QEMU 1.4 replies")
    if sc.auto_converge:
        parts.append("auto-converge")
    return ", ".join(parts)


def scenario_table() -> str:
    """The scenario results as a Markdown table (for the README)."""
    rows = [
        "| scenario | setup | truth (finish) | verdict | not-converging from | real at 50% progress "
        "| ETA at 50%, nothing known [band], error | after a pre-flight [band], error "
        "| on its next migration [band], error | ETA at 1st dirty rate: real, error | at 2nd: real, error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def at(o: Outcome, t: float | None, eta: float | None) -> str:
        if o.finish is None or t is None:
            return "-"
        return f"{_fmt_s(eta) if eta is not None else 'none'}: {_fmt_s(o.finish - t)}, {_fmt_err(o.error(t, eta))}"

    def at50(o: Outcome) -> str:
        if o.finish is None or o.t50 is None:
            return "-"
        high = _fmt_s(o.band50[1]) if o.band50[1] is not None else "?"
        eta = _fmt_s(o.eta50) if o.eta50 is not None else "none"
        return f"{eta} [{_fmt_s(o.band50[0])}–{high}], {_fmt_err(o.error(o.t50, o.eta50))}"

    for sc in SCENARIOS:
        o = outcome(sc)
        decided = "-" if o.decided_t is None else f"pass {o.decided_pass} ({o.decided_t:.1f}s)"
        truth = f"converges ({o.finish:.1f}s)" if o.finish is not None else "does not converge"
        real50 = _fmt_s(o.finish - o.t50) if o.finish is not None and o.t50 is not None else "-"
        rows.append(
            f"| {sc.name} | {_setup(sc)} | {truth} | {o.verdict} | {decided} | {real50} "
            f"| {at50(o)} | {at50(outcome(sc, 'pre-flight'))} | {at50(outcome(sc, 'again'))} "
            f"| {at(o, o.t_first, o.eta_first)} | {at(o, o.t_known, o.eta_known)} |"
        )
    return "\n".join(rows)


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda sc: sc.name)
def test_scenario_verdict_matches_the_simulator(sc):
    o = outcome(sc)
    if sc.name in DECIDING_WHEN_JUDGED:
        assert o.verdict == "deciding", o
    elif o.converges:
        assert o.verdict in ("converging", "switching-over"), o
        if not sc.auto_converge:  # the throttle changes the guest as it goes
            assert o.decided_t is None, f"said not-converging at {o.decided_t}s"
    else:
        assert o.verdict == "not-converging", o
        assert not o.left_not_converging, "flapped"
        # Decided within 5 passes, or within 5 s of pass 2 when passes are sub-second;
        # a marginal case by the time it is judged.
        assert o.decided_pass is not None and o.decided_t is not None and o.pass2_t is not None, o
        if sc.marginal:
            assert o.decided_t <= JUDGED_AT, o
        else:
            assert o.decided_pass <= 5 or o.decided_t - o.pass2_t <= 5, o


# Where the verdict when judged (at 30 s, or the last sample before completing) is still
# `deciding`, and why: the evidence could not yet say, and the verdict does not claim it.
DECIDING_WHEN_JUDGED = {
    "slow-link": "still in pass 1 at 30 s (1 GiB at 16 MiB/s): QEMU has reported no dirty rate",
    "xbzrle-big-cache": "160 MiB/s dirtied against 128 MiB/s: only XBZRLE's savings, not yet measured "
                        "over two periods, let it finish (it completes at 9.5 s, in pass 3)",
}

# The scenarios the simulator completes (see the table); the others have no ETA to check.
CONVERGING_NAMES = {"quiet", "moderate", "busy", "near-bandwidth", "fast-link", "slow-link",
                    "xbzrle-big-cache", "seed-1.4-ok", "block+ram"}
ETA50_NAMES = CONVERGING_NAMES | {"auto-converge"}  # completes, after a not-converging spell

# The ETA at 50% progress is to be within 30% of the real finish. Where it is not, and why
# (the README says the same); the test fails if one of these starts to hit, or another misses.
MISSES_AT_50 = {
    ("quiet", "none"): "nothing known of the dirty rate: the guess (a fifth of what is sent) is 25x this guest's",
    ("busy", "none"): "nothing known: the guest dirties three quarters of what is sent, not a fifth",
    ("near-bandwidth", "none"): "nothing known: the guest dirties 86% of what is sent, not a fifth",
    ("block+ram", "none"): "nothing known of the RAM's zero pages before the disk is sent, nor of the dirty rate",
    ("auto-converge", "none"): "nothing known: the guest dirties more than is sent until the throttle bites",
    ("near-bandwidth", "pre-flight"): "one 1-second calc-dirty-rate cannot size the 1 GiB working set "
                                      "(taken as 560 MiB, the log-middle of 110 MiB and 2.8 GiB of data)",
    ("xbzrle-big-cache", "pre-flight"): "no ETA: pass 1 cannot know what XBZRLE will save, and 160 MiB/s of "
                                        "dirtying against 128 MiB/s of bandwidth does not converge without it",
    ("xbzrle-big-cache", "again"): "no ETA: as after a pre-flight (the last migration's XBZRLE savings are not "
                                   "carried over)",
}


@pytest.mark.parametrize("sc", [sc for sc in SCENARIOS if sc.name in CONVERGING_NAMES], ids=lambda sc: sc.name)
def test_scenario_eta(sc):
    o = outcome(sc)
    assert o.converges, o
    real50 = o.finish - o.t50
    # At 50% progress every scenario is still in pass 1, when QEMU reports no dirty rate:
    # with nothing else known the ETA is a guess, but the band holds the real finish.
    low, high = o.band50
    assert low <= real50 and (high is None or real50 <= high), o
    # Once the dirty rate is measured: within 30% (or 1 s: the samples are 0.5 s apart).
    if o.t_known is None:
        return  # it finished within a second of measuring it
    real = o.finish - o.t_known
    assert o.eta_known is not None, o
    assert abs(o.eta_known - real) <= max(0.3 * real, 1.0), o


@pytest.mark.parametrize("prior", PRIORS)
def test_eta_at_50_percent_within_30_percent(prior):
    report = {}
    for sc in SCENARIOS:
        if sc.name not in ETA50_NAMES:
            continue
        o = outcome(sc, prior)
        assert o.converges and o.t50 is not None, o
        err = o.error(o.t50, o.eta50)
        report[sc.name] = (err is not None and abs(err) <= 0.3, _fmt_err(err))
    expected = {name: (name, prior) not in MISSES_AT_50 for name in report}
    assert {name: hit for name, (hit, _) in report.items()} == expected, report


def test_a_prior_narrows_the_band_at_50_percent():
    for sc in SCENARIOS:
        if sc.name not in ETA50_NAMES:
            continue
        none, again = outcome(sc), outcome(sc, "again")
        if again.eta50 is None or (sc.name, "again") in MISSES_AT_50:
            continue
        real50 = again.finish - again.t50
        low, high = again.band50
        assert low <= real50 <= high, (sc.name, again)
        if none.band50[1] is None:
            # With nothing known the pessimistic end never converges: an open band. The prior closes it.
            assert high is not None, sc.name
        else:
            assert high - low < none.band50[1] - none.band50[0], sc.name


def test_print_scenario_table(capsys):
    table = scenario_table()
    print(table)
    assert table.count("\n") == len(SCENARIOS) + 1


# -- what is known before pass 2 -------------------------------------------------------------


def test_a_pre_flight_rate_replaces_the_guess_in_pass_1():
    guessed = assess(tracker_for(CONVERGING, until=6.0))
    tracker = MigrationTracker()
    tracker.dirty_rate_prior = 30 * MiB  # what the backend puts there after a pre-flight
    tracker.parameters.update({"max-bandwidth": CONVERGING.tp, "downtime-limit": CONVERGING.limit_ms})
    for t, r in CONVERGING.replies(until=6.0):
        tracker.add(parse_query_migrate(r, T0 + t))
    a = assess(tracker)
    assert a.verdict == "converging" and "pass 1" in a.why and "pre-flight" in a.why and "30.0 MiB/s" in a.why
    one_line_with_numbers(a.why)
    assert a.eta_low_s <= a.eta_s <= a.eta_high_s
    assert a.eta_high_s - a.eta_low_s < guessed.eta_high_s - guessed.eta_low_s
    # A guest that dirties faster than what is sent: no ETA yet, and the why says so.
    tracker.dirty_rate_prior = 500 * MiB
    tracker.add(parse_query_migrate(CONVERGING.replies(until=6.5)[-1][1], T0 + 6.5))
    a = assess(tracker)
    # The prior is evidence against, not proof: deciding, never converging.
    assert a.verdict == "deciding" and a.eta_s is None and "would not get under" in a.why


@pytest.mark.parametrize("prior", [None, "x", -5, float("nan"), float("inf"), 0, (1.0,), ((0, 5e6),),
                                   [(1, 5e6), (4, 3e6)], [(1, "x"), None, (2, float("nan"))], {"a": 1}, 2**70])
@pytest.mark.parametrize("caps", [None, {"auto-converge": True}, {"auto-converge": "yes"}, ["auto-converge"]])
def test_odd_plumbing_on_the_tracker_is_survived(prior, caps):
    tracker = MigrationTracker()
    tracker.dirty_rate_prior, tracker.capabilities = prior, caps
    tracker.parameters = {"cpu-throttle-initial": "x", "max-cpu-throttle": 1000, "throttle-trigger-threshold": 0}
    tracker.parameters.update({"max-bandwidth": CONVERGING.tp, "downtime-limit": CONVERGING.limit_ms})
    for t, r in CONVERGING.replies(until=25.0):
        tracker.add(parse_query_migrate(r, T0 + t))
        a = assess(tracker)
        assert a.verdict in VERDICTS and len(a.why) <= 160
        if a.eta_s is not None and a.eta_low_s is not None:
            assert a.eta_low_s <= a.eta_s + 1e-9


def test_the_next_migration_of_a_guest_starts_from_what_the_last_one_showed():
    sc = next(sc for sc in SCENARIOS if sc.name == "busy")
    o = outcome(sc, "again")
    assert o.eta50 is not None and abs(o.error(o.t50, o.eta50)) <= 0.3
    # Only what the tracker watched: a tracker that saw nothing has nothing to go on.
    assert outcome(sc).band50 != o.band50


def test_what_the_last_migration_showed_survives_new_settings_for_the_next():
    # The start sets the next migration's downtime limit before QEMU reports it: the lesson of
    # the one that ended is kept all the same (its passes judged again against the new limit).
    tracker = MigrationTracker()
    tracker.parameters.update({"max-bandwidth": CONVERGING.tp, "downtime-limit": CONVERGING.limit_ms})
    for t, r in CONVERGING.replies():
        tracker.add(parse_query_migrate(r, T0 + t))
        assess(tracker)
    assert assess(tracker).verdict == "completed"
    tracker.parameters["downtime-limit"] = 2 * CONVERGING.limit_ms
    assess(tracker)
    for t, r in CONVERGING.replies(until=2.0):
        tracker.add(parse_query_migrate(r, T0 + 100 + t))
    a = assess(tracker)
    assert learned_by(tracker) is not None and learned_by(tracker).model is not None
    assert "the last migration's" in a.why, a.why


def completed_with_stop_and_copy(tracker: MigrationTracker, sent: float, downtime_ms: float) -> MigrationTracker:
    """The tracker after watching CONVERGING complete, its stop-and-copy `sent` bytes in `downtime_ms`."""
    tracker.parameters.update({"max-bandwidth": CONVERGING.tp, "downtime-limit": CONVERGING.limit_ms})
    for t, r in CONVERGING.replies():
        if r["status"] == "completed":
            r["ram"]["downtime-bytes"], r["downtime"] = sent, downtime_ms
        tracker.add(parse_query_migrate(r, T0 + t))
    assert assess(tracker).verdict == "completed"
    return tracker


def test_the_stop_and_copy_goes_at_the_speed_the_guests_last_one_went():
    # QEMU sends what is left at the switch-over without max-bandwidth's limit: the last
    # migration's downtime-bytes over its downtime says how fast, here 400 MiB/s.
    tracker = completed_with_stop_and_copy(MigrationTracker(), 100 * MiB, 250)
    for t, r in CONVERGING.replies(until=17.0):
        tracker.add(parse_query_migrate(r, T0 + 100 + t))
    a = feed(tracker, 117.5, reply("device", transferred=int(17.5 * 128 * MiB), remaining=20 * MiB, total=2 * GiB,
                                   **{"dirty-sync-count": 5}))
    assert a.verdict == "switching-over"
    assert a.eta_s == pytest.approx(20 / 400, rel=0.05)
    assert a.eta_low_s <= a.eta_s <= a.eta_high_s < 20 / 128
    # A tracker that saw nothing assumes a 10 Gbit/s link; at worst the throughput so far.
    fresh = tracker_for(CONVERGING, until=17.0)
    b = feed(fresh, 17.5, reply("device", transferred=int(17.5 * 128 * MiB), remaining=20 * MiB, total=2 * GiB,
                                **{"dirty-sync-count": 5}))
    assert b.eta_s == pytest.approx(20 * MiB / PAUSED_RATE, rel=0.05) and b.eta_high_s == pytest.approx(20 / 128, rel=0.05)


def test_another_vms_stop_and_copy_from_the_same_host_times_this_ones():
    # The stop-and-copy goes at the host's speed (its CPU, its link), so a VM's first migration
    # from a host where another VM's completed knows it; a tracker of another host does not.
    here, there = HostLessons(), HostLessons()
    other = MigrationTracker()
    other.host_lessons = here
    completed_with_stop_and_copy(other, 100 * MiB, 250)
    assert here.paused_rate == pytest.approx(400 * MiB)

    def switching_over(lessons):
        tracker = tracker_for(CONVERGING, until=17.0)
        tracker.host_lessons = lessons
        return feed(tracker, 17.5, reply("device", transferred=int(17.5 * 128 * MiB), remaining=20 * MiB,
                                         total=2 * GiB, **{"dirty-sync-count": 5}))

    # As the console watches: QEMU 7.2's first reply after the end has every time 0, the next
    # has downtime; the VM learns from that one as it comes, whether or not anyone looks.
    watched = HostLessons()
    vm = VMState(endpoint=parse_endpoint("web=unix:/run/web.qmp"), name="web")
    vm.tracker.host_lessons = watched
    vm.tracker.parameters.update({"max-bandwidth": CONVERGING.tp, "downtime-limit": CONVERGING.limit_ms})
    replies = list(CONVERGING.replies())
    t_end, end = replies[-1]
    for t, r in replies[:-1]:
        vm.observe(parse_query_migrate(r, T0 + t))
    vm.observe(parse_query_migrate({**end, "downtime": 0, "total-time": 0}, T0 + t_end))
    assert watched.paused_rate is None
    end["ram"]["downtime-bytes"], end["downtime"] = 100 * MiB, 500
    vm.observe(parse_query_migrate(end, T0 + t_end + 0.01))
    vm.observe(parse_query_migrate(end, T0 + t_end + 0.02))  # the same reply again counts once
    assert watched.paused_rate == pytest.approx(200 * MiB)
    # A tiny stop-and-copy (its fixed costs make it look fast) hardly moves the host's figure.
    watched.stop_copied("another", 3 * MiB, 0.002)
    assert watched.paused_rate == pytest.approx(103 * MiB / 0.502)

    assert switching_over(here).eta_s == pytest.approx(20 / 400, rel=0.05)
    assert switching_over(there).eta_s == pytest.approx(20 * MiB / PAUSED_RATE, rel=0.05)
    assert there.paused_rate is None


def test_the_pre_flights_zero_pages_in_address_order_time_the_rest_of_pass_1():
    # Pass 1 sends RAM in address order; the pre-flight read which pages are zero, and here
    # the top half of this 2 GiB guest is: pass 1's last 1 GiB goes nearly free (8 s less).
    def at_4s(zmap):
        tracker = MigrationTracker()
        tracker.parameters.update({"max-bandwidth": CONVERGING.tp, "downtime-limit": CONVERGING.limit_ms})
        tracker.dirty_rate_prior = 25 * MiB
        tracker.zero_pages_prior = zmap
        for t, r in CONVERGING.replies(until=4.0):
            tracker.add(parse_query_migrate(r, T0 + t))
        return assess(tracker)

    data, top_zero = at_4s((False,) * 512), at_4s((False,) * 256 + (True,) * 256)
    assert data.verdict == top_zero.verdict == "converging"
    assert top_zero.eta_s < data.eta_s - 6, (top_zero.eta_s, data.eta_s)
    # A sample cut short (None: not read) says the same from the pages it did read.
    partial = at_4s(tuple(None if i % 4 else i >= 256 for i in range(512)))
    assert partial.eta_s == pytest.approx(top_zero.eta_s, rel=0.05)


def test_the_stop_and_copy_sends_the_zero_pages_pass_1_left_nearly_free():
    # Switching over with 200 MiB left: the pre-flight says half the RAM (1 GiB) is zero pages
    # and QEMU has sent 800 MiB of them, so what is left can all be zero pages, a header each:
    # the stop-and-copy is next to nothing. Not known: all of it is taken as data.
    def switching(zmap, sent_zero):
        tracker = tracker_for(CONVERGING, until=17.0)
        tracker.zero_pages_prior = zmap
        return feed(tracker, 17.5, reply("device", transferred=int(17.5 * 128 * MiB), remaining=200 * MiB,
                                         total=2 * GiB, duplicate=sent_zero // PAGE, **{"dirty-sync-count": 5}))

    half = (False, True) * 256
    unknown = switching(None, 800 * MiB)
    assert unknown.eta_s == pytest.approx(200 * MiB / PAUSED_RATE, rel=0.05)
    assert switching(half, 800 * MiB).eta_s < unknown.eta_s * 0.05
    # Where QEMU has sent them all, what is left is data whatever the map said.
    assert switching(half, 1024 * MiB).eta_s == pytest.approx(unknown.eta_s, rel=0.02)


def test_a_threshold_crossed_in_a_run_of_zero_pages_ends_pass_1_past_the_run():
    # A 2 s limit at 128 MiB/s: a 256 MiB threshold, the top 1/8 of this 2 GiB guest. RAM from
    # 13/16 to 15/16 is zero pages (a fresh Linux guest's untouched RAM, its initramfs above):
    # the send window crossing the threshold there runs on to the run's end (QEMU's rate limit
    # counts wire bytes), so pass 1 leaves only the top 128 MiB and switches over with them and
    # what it dirtied, here at this host's 128 MiB/s. Ending at the threshold instead, it would
    # leave ~250 MiB, which with its dirtying takes one more pass and a longer stop-and-copy.
    run = Run(starts=[30 * MiB], rates=[2 * MiB], limit_ms=2000)
    tracker = MigrationTracker()
    tracker.parameters.update({"max-bandwidth": run.tp, "downtime-limit": run.limit_ms})
    tracker.dirty_rate_prior = 2 * MiB
    tracker.zero_pages_prior = (False,) * 416 + (True,) * 64 + (False,) * 32
    tracker.host_lessons = HostLessons(paused_rate=128 * MiB)
    for t, r in run.replies(until=4.0):
        tracker.add(parse_query_migrate(r, T0 + t))
    a = assess(tracker)
    assert a.verdict == "converging"
    rest = 1152 / 128  # pass 1's data from 1/4 (sent by 4 s) to 13/16; its zero pages nearly free
    assert rest + 128 / 128 < a.eta_s < rest + (128 + 30) / 128, a.eta_s


# Passes of about one send window each at 64 MiB/s and 1 ms (a 66 KiB threshold), each
# starting with ~10 MiB: QEMU's dirty rate stays the same, so its second period would close
# only 1.5 s after pass 2, some ten passes on.
SHORT_STUCK = Run(starts=[27 * MiB] + [10 * MiB] * 14, rates=[4 * MiB] * 15, total=GiB, tp=64 * MiB, limit_ms=1,
                  step=0.05)


def test_short_passes_that_each_dirty_more_in_a_window_than_the_threshold_are_not_converging_by_pass_5():
    tracker = MigrationTracker()
    tracker.parameters.update({"max-bandwidth": SHORT_STUCK.tp, "downtime-limit": SHORT_STUCK.limit_ms})
    seen: list[tuple[int, str]] = []
    for t, r in SHORT_STUCK.replies():
        a = feed(tracker, t, r)
        seen.append((r["ram"]["dirty-sync-count"], a.verdict))
    first = next(n for n, v in seen if v == "not-converging")
    assert first <= 5, seen
    assert all(v == "not-converging" for n, v in seen if n > first), "flipped"
    assert len(_analyse(tracker).judge.recent) < 2 or first < 10  # before QEMU's second period could say so
    why = assess(tracker).why
    one_line_with_numbers(why)
    assert "send window" in why and "1ms" in why


def test_short_passes_that_shrink_are_never_called_not_converging():
    # The same link and short passes, at 30 ms (a 1.9 MiB threshold): two of them in a row
    # dirty more than twice that in a window (the third does not), and they shrink.
    run = Run(starts=[27 * MiB, 12 * MiB, 8 * MiB, 6 * MiB, 3 * MiB, 2.5 * MiB, 1.5 * MiB], rates=[4 * MiB] * 7,
              total=GiB, tp=64 * MiB, limit_ms=30, step=0.02)
    verdicts = {v for vs in verdicts_by_pass(run).values() for v in vs}
    assert "not-converging" not in verdicts and "completed" in verdicts, verdicts


# -- the memo does not change results --------------------------------------------------------


def test_each_tracker_owns_its_memo_and_what_it_learned():
    """Two trackers fed the same next migration: only the one that watched the guest's last
    migration starts from it, and assessing one leaves the other's memo alone."""
    sc = next(sc for sc in SCENARIOS if sc.name == "busy")
    watched, fresh = _new_tracker(sc), _new_tracker(sc)
    m, _ = _migration(sc, seed=1)
    t = 0.0
    while t < HORIZON and m.status not in FINISHED:
        t += STEP
        m.advance(t)
        watched.add(parse_query_migrate(query_migrate_72(m, t, xbzrle=False, cache_size=0), T0 + t))
        assess(watched)
    assert watched.memo is not None and fresh.memo is None and fresh.learned is None
    m, _ = _migration(sc, seed=0)
    offset = t + 60.0
    for n in range(1, 4):  # pass 1 of the next migration, assessed on both, in turn
        m.advance(n * STEP)
        sample = parse_query_migrate(query_migrate_72(m, n * STEP, xbzrle=False, cache_size=0), T0 + offset + n * STEP)
        watched.add(sample)
        fresh.add(sample)
        on_watched = assess(watched)
        memo = watched.memo
        on_fresh = assess(fresh)
        assert watched.memo is memo and fresh.memo is not memo
    assert watched.learned is not None and fresh.learned is None
    assert "the last migration's" in on_watched.why, on_watched.why
    assert "guesses" in on_fresh.why, on_fresh.why


def test_incremental_and_fresh_assessments_agree():
    sc = Scenario("check", 2 * GiB, 150 * MiB, 256 * MiB, 128 * MiB, 300, xbzrle_cache=64 * MiB)
    guest = Guest(ram=sc.ram, dirty_rate=sc.dirty, working_set=sc.ws)
    knobs = Knobs(xbzrle=True, xbzrle_cache_size=sc.xbzrle_cache)
    m = Migration(guest, knobs, start=0.0, rng=random.Random(1))
    live = MigrationTracker()
    live.parameters.update({"max-bandwidth": sc.bandwidth, "downtime-limit": sc.downtime_ms})
    samples = []
    for n in range(1, 81):
        t = n * STEP
        m.advance(t)
        samples.append(parse_query_migrate(query_migrate_72(m, t, xbzrle=True, cache_size=sc.xbzrle_cache), T0 + t))
        live.add(samples[-1])
        a = assess(live)
        if n % 9 == 0:
            fresh = MigrationTracker()
            fresh.parameters.update({"max-bandwidth": sc.bandwidth, "downtime-limit": sc.downtime_ms})
            for s in samples:
                fresh.add(s)
            assert assess(fresh) == a
    # A new downtime limit re-judges the passes against it.
    live.parameters["downtime-limit"] = 5000
    assert assess(live).verdict != "not-converging"


# -- advice, applied to the simulator ---------------------------------------------------------


def _sim(sc: Scenario, **knobs: Any) -> tuple[Migration, Knobs, MigrationTracker]:
    guest = Guest(ram=sc.ram, dirty_rate=sc.dirty, working_set=sc.ws, zero_fraction=sc.zero)
    k = Knobs(max_bandwidth=sc.bandwidth, downtime_limit=sc.downtime_ms / 1000, xbzrle=bool(sc.xbzrle_cache),
              xbzrle_cache_size=sc.xbzrle_cache or 64 * MiB, zero_bandwidth_unlimited=not sc.legacy,
              seed_expected_downtime=sc.legacy, **knobs)
    tracker = MigrationTracker()
    tracker.parameters.update({"max-bandwidth": sc.bandwidth, "downtime-limit": sc.downtime_ms})
    return Migration(guest, k, start=0.0, rng=random.Random(0)), k, tracker


def _step(m: Migration, k: Knobs, tracker: MigrationTracker, t: float, legacy: bool = False) -> Assessment:
    m.advance(t)
    query = query_migrate_14 if legacy else query_migrate_72
    tracker.add(parse_query_migrate(query(m, t, xbzrle=k.xbzrle, cache_size=k.xbzrle_cache_size), T0 + t))
    return assess(tracker)


def _apply(command: tuple[str, dict[str, Any]], m: Migration, k: Knobs, tracker: MigrationTracker, t: float) -> None:
    """What the simulator's QEMU does with the command (and what the backend tells the tracker)."""
    m.settle(t)
    name, args = command
    if name in ("migrate_set_downtime", "migrate_set_speed", "migrate-set-cache-size"):
        key = {"migrate_set_downtime": "downtime-limit", "migrate_set_speed": "max-bandwidth",
               "migrate-set-cache-size": "xbzrle-cache-size"}[name]
        args = {key: args["value"] * 1000 if name == "migrate_set_downtime" else args["value"]}
    elif name == "migrate-start-postcopy":
        m.start_postcopy(t)
        return
    for key, value in args.items():
        if key == "downtime-limit":
            k.downtime_limit = value / 1000
            tracker.parameters["downtime-limit"] = value
        elif key == "max-bandwidth":
            k.max_bandwidth = value
            tracker.parameters["max-bandwidth"] = value
        elif key == "xbzrle-cache-size":
            k.xbzrle_cache_size = value


STUCK_SCENARIOS = [sc for sc in SCENARIOS if sc.name in (
    "over-bandwidth", "marginal", "hot-small-ws", "long-downtime", "xbzrle-small-cache", "legacy-defaults",
    "seed-1.4-stuck")]


@pytest.mark.parametrize("sc", STUCK_SCENARIOS, ids=lambda sc: sc.name)
def test_each_live_advice_makes_the_simulator_converge(sc):
    caps = {"xbzrle": bool(sc.xbzrle_cache), "postcopy-ram": False, "auto-converge": False, "multifd": False}
    kinds = []
    for kind in ("downtime", "bandwidth", "xbzrle-cache"):
        m, k, tracker = _sim(sc)
        t = 0.0
        for n in range(1, int(JUDGED_AT / STEP) + 1):
            t = n * STEP
            _step(m, k, tracker, t, sc.legacy)
        params = {"max-bandwidth": k.max_bandwidth, "downtime-limit": k.downtime_limit * 1000,
                  "xbzrle-cache-size": k.xbzrle_cache_size}
        live = [a for a in advise(tracker, params, caps, modern=not sc.legacy) if a.kind == kind and a.now]
        if not live:
            continue
        assert live[0].now and not live[0].needs_restart
        kinds.append(kind)
        _apply(qmp_of(live[0], not sc.legacy), m, k, tracker, t)
        for n in range(1, 61):
            a = _step(m, k, tracker, t + n * STEP, sc.legacy)
            if m.status in FINISHED:
                break
        assert m.status == "completed", (kind, live[0].text, a)
        assert a.verdict == "completed"
    assert {"downtime", "bandwidth"} <= set(kinds)


def test_postcopy_advice_then_post_copy_verdict():
    sc = next(sc for sc in SCENARIOS if sc.name == "over-bandwidth")
    m, k, tracker = _sim(sc, postcopy_ram=True)
    for n in range(1, 61):
        _step(m, k, tracker, n * STEP)
    advice = advise(tracker, {"max-bandwidth": sc.bandwidth, "downtime-limit": sc.downtime_ms},
                    {"postcopy-ram": True})
    assert advice[0].kind == "postcopy" and qmp_of(advice[0]) == ("migrate-start-postcopy", {})
    _apply(qmp_of(advice[0]), m, k, tracker, 30.0)
    seen = []
    for n in range(1, 41):
        a = _step(m, k, tracker, 30.0 + n * STEP)
        seen.append(a.verdict)
        if m.status in FINISHED:
            break
    assert seen[-1] == "completed" and "not-converging" not in seen[1:]


def test_first_look_at_a_trimmed_history_still_sees_a_stuck_migration():
    # migtui attached late (or the history wrapped): no pass 1 to compare periods against.
    sc = next(sc for sc in SCENARIOS if sc.name == "over-bandwidth")
    m, k, _ = _sim(sc)
    tracker = MigrationTracker(history_len=120)  # the last 60 s
    tracker.parameters.update({"max-bandwidth": sc.bandwidth, "downtime-limit": sc.downtime_ms})
    for n in range(1, 401):
        m.advance(n * STEP)
        tracker.add(parse_query_migrate(query_migrate_72(m, n * STEP, xbzrle=False, cache_size=0), T0 + n * STEP))
    assert assess(tracker).verdict == "not-converging"


# -- robustness ----------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_numbers = st.one_of(st.integers(min_value=0, max_value=2**63), st.floats(min_value=0, max_value=1e19),
                     st.none(), st.just("x"))
_ram = st.fixed_dictionaries({}, optional={
    key: _numbers for key in ("transferred", "remaining", "total", "dirty-pages-rate", "dirty-sync-count",
                              "page-size", "mbps")})
_replies = st.fixed_dictionaries(
    {"status": st.sampled_from(["active", "active", "active", "setup", "device", "pre-switchover", "postcopy-active",
                                "postcopy-paused", "completed", "failed", "cancelled", "cancelling", "none",
                                "colo", "wait-unplug", "bogus"])},
    optional={"ram": _ram, "total-time": _numbers, "downtime": _numbers,
              "xbzrle-cache": st.fixed_dictionaries({}, optional={
                  k: _numbers for k in ("cache-size", "pages", "bytes", "cache-miss", "cache-miss-rate")}),
              "error-desc": st.text(max_size=30)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.floats(min_value=-5, max_value=5), _replies), min_size=1, max_size=25),
       st.fixed_dictionaries({}, optional={"max-bandwidth": _numbers, "downtime-limit": _numbers,
                                           "xbzrle-cache-size": _numbers}),
       st.dictionaries(st.sampled_from(["postcopy-ram", "xbzrle", "auto-converge", "multifd"]), st.booleans()),
       st.booleans(), st.sampled_from([None, 0, 1, 300, 2_000_000]), st.sampled_from([None, 0, 1, 128 * MiB]))
def test_guidance_survives_any_replies(seq, params, caps, modern, limit, bandwidth):
    tracker = MigrationTracker(history_len=16)
    tracker.parameters.update({"downtime-limit": limit, "max-bandwidth": bandwidth})
    t = 0.0
    for dt, r in seq:
        t += dt  # clocks can go backwards
        tracker.add(parse_query_migrate(r, t))
        a = assess(tracker)
        assert a.verdict in VERDICTS and "\n" not in a.why and len(a.why) <= 160
        if a.eta_s is not None and a.eta_low_s is not None:
            assert a.eta_low_s <= a.eta_s + 1e-9
        for adv in advise(tracker, params, caps, modern):
            assert adv.kind in ADVICE_KINDS and adv.text and (qmp_of(adv) is None) == adv.needs_restart


# -- a verdict never claims more than its evidence (issue 11, item 3) ------------------------


def one_reply(passes: int, dirty: float, tp: float, expected_ms: float, remaining: float = 30 * MiB,
              total_ms: int = 40_000, **extra: Any) -> dict[str, Any]:
    """One query-migrate reply mid-migration, as a fresh `migtui status` sees it."""
    ram = {"transferred": int(tp * total_ms / 1000), "remaining": int(remaining), "total": GiB,
           "dirty-sync-count": passes, "dirty-pages-rate": int(dirty / PAGE), "mbps": tp * 8 / 1e6,
           "total-time": total_ms, **extra}
    r = reply("active", **ram)
    r["expected-downtime"] = expected_ms
    return r


def one_shot(r: dict[str, Any], limit_ms: float, bandwidth: float, caps: dict | None = None) -> Assessment:
    tracker = MigrationTracker()
    tracker.parameters.update({"max-bandwidth": bandwidth, "downtime-limit": limit_ms})
    tracker.capabilities = caps or {}
    tracker.add(parse_query_migrate(r, T0))
    return assess(tracker)


def test_one_reply_at_pass_11_that_qemu_expects_seconds_of_downtime_for_is_not_converging():
    # The reported case: 30 MB/s, 1 ms, pass 11, expected-downtime 3425 ms, dirtying above the throughput.
    a = one_shot(one_reply(11, dirty=35 * MiB, tp=30e6, expected_ms=3425), limit_ms=1, bandwidth=30e6)
    assert a.verdict == "not-converging", a
    assert "expects 3425ms of downtime against the 1ms limit" in a.why and "pass 11" in a.why, a.why
    one_line_with_numbers(a.why)


@pytest.mark.parametrize("passes, dirty, expected_ms, caps", [
    (2, 35 * MiB, 3425, None),  # pass 2: QEMU's first dirty rate, over pass 1 only
    (11, 20 * MiB, 3425, None),  # dirtying under what is sent: pass starts can shrink
    (11, 35 * MiB, 1.5, None),  # QEMU expects little more than the limit
    (11, 35 * MiB, 3425, {"xbzrle": True}),  # XBZRLE pages cost less than the wire figure
    (11, 35 * MiB, 3425, {"auto-converge": True}),  # the throttle will slow the guest
])
def test_one_reply_without_the_evidence_is_deciding_never_converging(passes, dirty, expected_ms, caps):
    a = one_shot(one_reply(passes, dirty=dirty, tp=30e6, expected_ms=expected_ms), limit_ms=1, bandwidth=30e6,
                 caps=caps)
    assert a.verdict in ("deciding", "not-converging") if dirty > 30e6 and not caps and passes > 2 else True
    assert a.verdict != "converging" or "pass" in a.why
    if (passes, caps) != (11, None) or dirty < 30e6 or expected_ms < 2:
        assert a.verdict != "not-converging", a


def test_pass_1_with_nothing_known_is_deciding_with_an_eta():
    a = assess(tracker_for(CONVERGING, until=3.0))
    assert a.verdict == "deciding" and a.eta_s is not None and "no dirty rate" in a.why


def test_the_rates_saying_no_before_the_passes_do_is_deciding():
    # Two dirty-rate periods fitted, the model says the passes will not get under, the
    # judge (which waits for evidence over passes) has not entered not-converging yet.
    tracker = tracker_for(STUCK, until=9.0)
    seen = assess(tracker)
    assert seen.verdict in ("deciding", "not-converging"), seen
    assert all(v != "converging" for v in verdicts_by_pass(STUCK).get(3, {"?"})), verdicts_by_pass(STUCK)


def test_not_converging_says_what_is_compared_and_does_not_contradict_itself():
    a = assess(tracker_for(STUCK, until=60.0))
    assert a.verdict == "not-converging"
    # What each pass starts with, against the switch-over threshold: the start is over it.
    assert "each holds 600 MiB, over the 38.4 MiB a 300ms switch-over allows (pass " in a.why, a.why
    assert " left, under " not in a.why


def test_a_vm_that_went_away_mid_migration_is_unreachable_with_when_it_was_last_seen():
    import time as _time

    from migtui.model.endpoint import parse_endpoint
    from migtui.model.vm import Connection, VMState

    vm = VMState(parse_endpoint("src=unix:/nonexistent"), "src")
    vm.tracker = tracker_for(STUCK, until=60.0)
    vm.connection = Connection.CONNECTED
    assert vm.assessment().verdict == "not-converging"
    vm.connection, vm.reason = Connection.DISCONNECTED, "QEMU closed the connection"
    a = vm.assessment()
    seen = _time.strftime("%H:%M:%S", _time.localtime(vm.tracker.last.time))
    assert a.verdict == "unreachable" and a.eta_s is None and a.verdict in VERDICTS
    assert f"last seen {seen}, then not-converging" in a.why and "QEMU closed the connection" in a.why, a.why
    vm.connection, vm.reason = Connection.CONNECTING, None  # the session tries again: still history
    a = vm.assessment()
    assert a.verdict == "unreachable" and a.why.startswith(f"reconnecting; last seen {seen}, then not-conv"), a.why
    vm.connection = Connection.MONITOR_BUSY
    assert vm.assessment().verdict == "unreachable"
    vm.connection = Connection.CONNECTED  # back: the live verdict again
    assert vm.assessment().verdict == "not-converging"


def test_two_dirty_rates_are_never_shown_under_one_name():
    # A guest whose short periods dirty faster than QEMU's per-sync figure (a working set).
    for sc in SCENARIOS:
        if sc.name != "hot-small-ws":
            continue
        m, knobs = _migration(sc, seed=0)
        tracker = _new_tracker(sc)
        t = 0.0
        named = 0
        while t < 30:
            t += STEP
            m.advance(t)
            tracker.add(parse_query_migrate(query_migrate_72(m, t, xbzrle=False, cache_size=0), T0 + t))
            a = assess(tracker)
            qemu = tracker.derived.dirty_bytes_per_s
            fitted = a.fitted_dirty_bytes_per_s
            if fitted is not None:
                assert qemu is None or abs(fitted - qemu) > 0, (fitted, qemu)
                # The why names both when it quotes the model's figure.
                if "dirtying" in a.why:
                    assert "in short periods" in a.why and "QEMU:" in a.why, a.why
                named += 1
            elif "dirtying" in a.why:
                assert "in short periods" not in a.why
        assert named, "the scenario never showed the model's own figure"


# -- advice, applied: does the first one work, and what follows (issue 11, item 6) -----------

ADVICE_WITHIN = 60.0  # seconds after the first advice in which the migration is to complete
STUCK_NAMES = [sc.name for sc in STUCK_SCENARIOS]


@dataclass
class AdviceOutcome:
    scenario: Scenario
    applied: list[tuple[float, Advice]]  # (time, advice) in the order applied
    finish: float | None  # completion time (simulated s), None if it never completed
    told: str | None  # the plain word when nothing could be tuned
    follow_ups: list[str]

    @property
    def first_worked(self) -> bool:
        return bool(self.applied) and self.finish is not None and len(self.applied) == 1 \
            and self.finish - self.applied[0][0] <= ADVICE_WITHIN


def run_with_advice(sc: Scenario, pieces: int = 3) -> AdviceOutcome:
    """The operator's loop: when not-converging, apply the first advice that can be applied
    now; when its follow-up says it did not work, apply the next one (up to `pieces`)."""
    m, knobs, tracker = _sim(sc)
    params = {"max-bandwidth": sc.bandwidth, "downtime-limit": sc.downtime_ms,
              "xbzrle-cache-size": knobs.xbzrle_cache_size}
    caps = {"xbzrle": bool(sc.xbzrle_cache), "auto-converge": sc.auto_converge, "postcopy-ram": False,
            "multifd": False}
    applied: list[tuple[float, Advice]] = []
    follow_ups: list[str] = []
    told = None
    t, n = 0.0, 0
    while t < HORIZON + pieces * ADVICE_WITHIN:
        n += 1
        t = n * STEP
        verdict = _step(m, knobs, tracker, t, sc.legacy).verdict
        if m.status in FINISHED:
            break
        fu = follow_up(tracker, params, caps, modern=not sc.legacy)
        if fu is not None and (not follow_ups or follow_ups[-1] != fu.state):
            follow_ups.append(fu.state)
        due = (not applied and verdict == "not-converging") or (fu is not None and fu.state == "did-not-work")
        if not due:
            continue
        if len(applied) >= pieces:
            break
        advice = advise(tracker, params, caps, modern=not sc.legacy)
        now = [x for x in advice if x.now]
        if not now:
            told = advice[0].text if advice and advice[0].kind == "nothing-to-tune" else None
            break
        _apply(qmp_of(now[0], not sc.legacy), m, knobs, tracker, t)
        params.update({"max-bandwidth": knobs.max_bandwidth, "downtime-limit": knobs.downtime_limit * 1000,
                       "xbzrle-cache-size": knobs.xbzrle_cache_size})
        take_advice(tracker, now[0].kind, now[0].text)
        applied.append((t, now[0]))
    finish = m.start + m.total_time_ms / 1000 if m.status == "completed" else None
    return AdviceOutcome(sc, applied, finish, told, follow_ups)


_ADVICE: dict[str, AdviceOutcome] = {}


def advice_outcome(name: str) -> AdviceOutcome:
    if name not in _ADVICE:
        _ADVICE[name] = run_with_advice(next(sc for sc in SCENARIOS if sc.name == name))
    return _ADVICE[name]


@pytest.mark.parametrize("name", STUCK_NAMES)
def test_stuck_scenarios_converge_within_three_pieces_of_advice_or_are_told_plainly(name):
    o = advice_outcome(name)
    assert o.applied or o.told, o
    if o.finish is None:
        assert o.told and "only" in o.told, o
    else:
        assert len(o.applied) <= 3, o
        # A piece that did not work was said so before the next was applied.
        assert o.follow_ups.count("did-not-work") == len(o.applied) - 1, o.follow_ups


def test_the_first_advice_works_in_the_simulators_stuck_scenarios():
    worked = [name for name in STUCK_NAMES if advice_outcome(name).first_worked]
    assert set(STUCK_NAMES) - set(worked) == set(FIRST_ADVICE_MISSES), {
        name: [a.text for _, a in advice_outcome(name).applied] for name in STUCK_NAMES}


# Where the first advice did not finish the migration within 60 s, and why (the README says the same).
FIRST_ADVICE_MISSES: dict[str, str] = {}


def test_advice_that_did_not_work_is_followed_up_with_the_next_step():
    # The lab guest's case: a working set swept whole in every pass, so shorter passes dirty
    # faster. Advice taken from today's figures falls short; the follow-up says so and offers
    # the next step from fresh figures.
    tracker = tracker_for(STUCK, until=45.0)
    params = dict(PARAMS)
    [adv] = [a for a in advise(tracker, params, {}) if a.kind == "bandwidth"]
    take_advice(tracker, adv.kind, adv.text)
    assert follow_up(tracker, params, {}).state == "watching"
    # The bandwidth went up, but the guest dirtied more: still 600 MiB at each pass start.
    faster = Run(starts=[600 * MiB] * 12, rates=[200 * MiB] * 12, tp=170 * MiB)
    for t, r in faster.replies(until=30.0):
        r["ram"]["dirty-sync-count"] += 12
        r["total-time"] += 45_000
        r["ram"]["transferred"] += int(45 * 128 * MiB)
        tracker.add(parse_query_migrate(r, T0 + 45 + t))
    fu = follow_up(tracker, dict(params, **{"max-bandwidth": 170 * MiB}), {})  # it was not raised as far
    assert fu.state == "did-not-work", fu
    assert adv.text.split(":", 1)[0] in fu.text and "did not work" in fu.text and "next:" in fu.text, fu.text


def test_print_advice_table(capsys):
    rows = ["| scenario | first advice | completed within 60 s of it | advice applied | then |",
            "|---|---|---|---|---|"]
    for name in STUCK_NAMES:
        o = advice_outcome(name)
        first = o.applied[0][1].text.split(":", 1)[0] if o.applied else "-"
        done = "yes" if o.first_worked else "no"
        then = ("completed " + f"{max(0.0, o.finish - o.applied[0][0]):.0f}s after the first") if o.finish is not None \
            else (o.told or "did not complete")
        rows.append(f"| {name} | {first} | {done} | {len(o.applied)} | {then} |")
    print("\n".join(rows))
    assert len(rows) == len(STUCK_NAMES) + 2


@pytest.mark.parametrize("ratio, expected_ms, stuck", [
    # Measured on QEMU 7.2 (the lab guest at 16 MiB/s, 1 ms): it rewrites its 98 MiB many
    # times a pass, but QEMU counts each page once a period: 15.2-15.7 MiB/s against 16.0.
    (0.95, 6366, True),
    (0.98, 6121, True),
    (0.92, 4, False),  # shrinking 8% a pass it gets under in ~17 passes: could converge
    (0.85, 6366, False),  # well under what is sent: pass starts can shrink
])
def test_one_reply_dirtying_all_but_what_is_sent_is_judged_by_the_passes_it_would_take(ratio, expected_ms,
                                                                                        stuck):
    tp = 16.0 * MiB
    a = one_shot(one_reply(3, dirty=ratio * tp, tp=tp, expected_ms=expected_ms), limit_ms=1, bandwidth=16 * MiB)
    assert (a.verdict == "not-converging") == stuck, a
    assert a.verdict != "converging", a
    if stuck:
        assert a.why.endswith("at pass 3: pass starts cannot shrink enough"), a.why


def test_a_pass_start_is_never_said_to_hold_more_than_the_ram():
    # Pass starts are estimated back from each pass's first sample; short passes between
    # samples can push the estimate past the RAM (the lab showed 136 MiB of a 128 MiB guest).
    run = Run(starts=[2.4 * GiB] * 8, rates=[136 * MiB] * 8, total=2 * GiB)
    tracker = tracker_for(run, until=120.0)
    a = assess(tracker)
    assert a.verdict == "not-converging", a
    assert "each holds 2.0 GiB" in a.why, a.why
    down = [x for x in advise(tracker, PARAMS, {}) if x.kind == "downtime"]
    assert down and "about 2.0 GiB" in down[0].text, down


# -- the dirty limit (QEMU 8.1+) ---------------------------------------------------------------


def _dirty_limited(vcpus: int, limit_mb: int) -> tuple[Migration, Knobs, MigrationTracker, dict, dict]:
    """The over-bandwidth guest (200 MiB/s against 128 MiB/s) with the dirty limit on, at a limit
    that does not bite (vcpus x limit above what it dirties)."""
    sc = next(sc for sc in SCENARIOS if sc.name == "over-bandwidth")
    m, k, tracker = _sim(sc, dirty_limit=True, vcpu_dirty_limit=limit_mb)
    m.guest.vcpus = tracker.vcpus = vcpus
    caps = {"dirty-limit": True, "auto-converge": False, "xbzrle": False, "postcopy-ram": False, "multifd": False}
    tracker.capabilities = dict(caps)
    params = {"max-bandwidth": sc.bandwidth, "downtime-limit": sc.downtime_ms, "vcpu-dirty-limit": limit_mb}
    tracker.parameters.update(params)
    return m, k, tracker, params, caps


def test_a_dirty_limit_on_is_the_first_advice_and_lowering_it_makes_the_simulator_converge():
    m, k, tracker, params, caps = _dirty_limited(vcpus=4, limit_mb=100)  # 400 MiB/s allowed: no bite
    t = 0.0
    for n in range(1, int(JUDGED_AT / STEP) + 1):
        t = n * STEP
        verdict = _step(m, k, tracker, t).verdict
    assert verdict == "not-converging"
    advice = advise(tracker, params, caps)
    first = advice[0]
    assert first.kind == "dirty-limit" and first.now and not first.needs_restart, [a.text for a in advice]
    mb = first.change.parameters["vcpu-dirty-limit"]
    assert isinstance(mb, int) and 1 <= mb < 100
    assert first.text.startswith(f"lower vcpu-dirty-limit to {mb} MB/s (now 100 MB/s)")
    assert f"{4 * mb} MiB/s (4 vCPUs)" in first.text
    # QEMU's command for it: migrate-set-parameters with QEMU's name, in MB/s.
    assert qmp_of(first) == ("migrate-set-parameters", {"vcpu-dirty-limit": mb})
    k.vcpu_dirty_limit = params["vcpu-dirty-limit"] = tracker.parameters["vcpu-dirty-limit"] = mb
    for n in range(1, 121):
        a = _step(m, k, tracker, t + n * STEP)
        if m.status in FINISHED:
            break
    assert m.status == "completed", a
    assert m.dirty_quota == 4 * mb * MiB  # the simulator's QEMU held the guest to it


def test_a_dirty_limit_is_modelled_as_the_guests_dirtying_capped_at_vcpus_times_it():
    # Judged on the same passes, a lower limit predicts convergence where a higher one did not.
    from migtui.model.guidance.advice import _dirty_limit_needed, _predicted_to_converge, _readings
    from migtui.model.guidance.analysis import _pass_load

    m, k, tracker, params, caps = _dirty_limited(vcpus=2, limit_mb=200)
    for n in range(1, int(JUDGED_AT / STEP) + 1):
        _step(m, k, tracker, n * STEP)
    a = _analyse(tracker)
    assert a is not None and a.dirty_cap == 2 * 200 * MiB
    load = _pass_load(a)
    readings = _readings(a, load)
    tp = a.throughput
    mb = _dirty_limit_needed(a, 300, load, readings, 2, 200)
    assert mb is not None and mb * 2 * MiB < tp  # the cap it needs is under what is sent
    drain, thr = a.drain or tp, tp * 0.3
    assert all(_predicted_to_converge(a, r, load, drain, thr, 2 * mb * MiB) for r in readings)
    assert not all(_predicted_to_converge(a, r, load, drain, thr, 2 * 200 * MiB) for r in readings)


def test_dirty_limit_next_time_where_qemu_has_it_and_never_without_kvm():
    sc = next(sc for sc in SCENARIOS if sc.name == "over-bandwidth")
    m, k, tracker = _sim(sc)
    tracker.vcpus = 2
    for n in range(1, int(JUDGED_AT / STEP) + 1):
        _step(m, k, tracker, n * STEP)
    caps = {"dirty-limit": False, "auto-converge": False, "xbzrle": False, "postcopy-ram": False}
    params = {"max-bandwidth": sc.bandwidth, "downtime-limit": sc.downtime_ms}
    kinds = [a.kind for a in advise(tracker, params, caps) if a.needs_restart]
    assert kinds.index("dirty-limit") < kinds.index("auto-converge")  # preferred where QEMU has it
    nxt = next(a for a in advise(tracker, params, caps) if a.kind == "dirty-limit")
    assert nxt.change is None and "kvm,dirty-ring-size=N" in nxt.text and "MB/s per vCPU" in nxt.text
    tracker.kvm = False  # query-kvm: this VM runs without KVM, where QEMU refuses it
    assert "dirty-limit" not in [a.kind for a in advise(tracker, params, caps)]
    assert "dirty-limit" not in [a.kind for a in advise(tracker, params, {"auto-converge": False})]  # 7.2


def test_the_pre_flight_caps_the_measured_dirty_rate_at_the_dirty_limit():
    from migtui.model.preflight import predict

    assert not predict(200 * MiB, 128 * MiB, 300, 512 * MiB).converges
    capped = predict(200 * MiB, 128 * MiB, 300, 512 * MiB, dirty_cap=2 * 20 * MiB)
    assert capped.converges and "capped at 40.0 MiB/s by the dirty limit" in capped.sentence
    still = predict(200 * MiB, 128 * MiB, 300, 512 * MiB, dirty_cap=4 * 100 * MiB)
    assert not still.converges and "or a lower dirty limit" in still.sentence


def test_the_pre_flight_says_a_limit_under_one_windows_dirtying_cannot_converge():
    """A pass lasts at least one send window, so a guest dirtying more than the limit allows in
    one window never gets under it, however far the bandwidth exceeds its dirty rate (the real
    Linux guest at 1 ms, issue 17: the pre-flight said "converges" for all six such runs)."""
    from migtui.model.preflight import predict

    stuck = predict(12 * MiB, 36 * MiB, 1, 1024 * MiB)
    assert not stuck.converges and stuck.eta_s is None
    assert "send window" in stuck.sentence and "at least 60ms" in stuck.sentence
    assert predict(12 * MiB, 36 * MiB, 60, 1024 * MiB).converges  # the limit it names is enough
