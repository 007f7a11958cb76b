"""One call's reading of a migration, shared by the verdict, the ETA and the advice:
the passes, the judge including the pass in progress, throughput, drain and dirtying."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from migtui.model.derived import MigrationTracker
from migtui.model.guidance.dirtying import _Dirtying, _Throttle, _dirty_cap_for, _fixed_point, _throttle_for
from migtui.model.guidance.memo import _memo_for
from migtui.model.guidance.passes import _Judge, _Pass, _judge_step, _make_pass
from migtui.model.guidance.prior import _Prior, _prior_for, learned_by
from migtui.model.guidance.tunables import DEFAULT_DOWNTIME_MS, RECENT, WINDOW_S, _SENDING
from migtui.model.history import HistoryPoint
from migtui.model.sample import DEFAULT_PAGE_SIZE, MigrationSample
from migtui.model.units import format_rate


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
    dirty_cap: float | None = None  # bytes/s the dirty limit lets the guest dirty, when on
    flat: tuple[int, float] | None = None  # samples since `transferred` last grew, and since when
    paused_rate: float | None = None  # bytes/s the guest's last stop-and-copy went at, when known

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
                     _dirty_cap_for(tracker), None if memo.flat_level is None else (memo.flat_count, memo.flat_since),
                     _paused_rate_for(tracker))


def _paused_rate_for(tracker: MigrationTracker) -> float | None:
    """How fast this migration's stop-and-copy should go: as the source host's latest did (any
    VM's: the host's CPU and link set it), else as this guest's last one did (maybe elsewhere)."""
    host = tracker.host_lessons
    if host is not None and host.paused_rate:
        return host.paused_rate
    learned = learned_by(tracker)
    return learned.paused_rate if learned is not None else None


def _pass_load(a: _Analysis) -> float | None:
    """What a pass start holds now: the latest two, or what is left if more. Pass starts are
    estimated back from the first sample of each pass; none can hold more than the RAM (and
    disk) being migrated, which short passes between samples could otherwise suggest."""
    load = max(a.judge.starts[-2:] + ((a.remaining,) if a.remaining is not None else ()), default=None)
    total = (a.last.get("ram", "total") or 0.0) + (a.last.get("disk", "total") or 0.0)
    return min(load, total) if load is not None and total > 0 else load
