"""What earlier calls worked out about a tracker's current migration, so that a call costs
only the samples added since.

`_memo_for` consumes the samples not yet seen, notices a new migration (and keeps what the
last one showed as the prior for the next), and starts afresh when the downtime limit
changes. The results are those of a fresh computation."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Mapping

from migtui.model.derived import MigrationTracker
from migtui.model.guidance.passes import _Judge, _Pass, _judge_step, _make_pass
from migtui.model.guidance.prior import _Prior, learned_by
from migtui.model.guidance.tunables import (
    DEFAULT_DOWNTIME_MS, KEEP_PASSES, MAX_POINTS, RECENT, TAIL, _PRECOPY, _SENDING,
)
from migtui.model.history import HistoryPoint
from migtui.model.sample import DEFAULT_PAGE_SIZE, FINISHED_STATUSES, MigrationSample


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
    paused: tuple[float, float] | None = None  # the stop-and-copy's bytes and seconds (completed: downtime-bytes, downtime)

    @property
    def paused_rate(self) -> float | None:
        """bytes/s the stop-and-copy went at."""
        return None if self.paused is None else self.paused[0] / self.paused[1]

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
        if last.status == "completed":
            # QEMU lifts max-bandwidth for the stop-and-copy (migration_completion): how fast it
            # went with the guest paused is this host's and link's, and holds for the next one.
            sent, downtime = last.get("ram", "downtime-bytes"), last.get(None, "downtime")
            if sent and downtime and sent > 0 and downtime > 0:
                self.paused = (sent, downtime / 1000)
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
        if model is None and self.zero_share is None and self.paused_rate is None:
            return None
        # One period (pass 1 only) gives the rate but not the working set: the model still
        # says what a pass 1 as long dirties, which is what the next migration needs most.
        return _Prior(model, self.zero_share, "the last migration's", len(judge.recent) >= 2,
                      paused_rate=self.paused_rate)

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


def memo_of(tracker: MigrationTracker) -> _Memo | None:
    """The memo the tracker holds for guidance (its `memo`, opaque to it)."""
    memo = tracker.memo
    return memo if isinstance(memo, _Memo) else None


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
    memo = memo_of(tracker)
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
            before = learned_by(tracker)
            if lesson.model is None and before is not None and before.model is not None:
                # A look that saw only the end (a reply that looks like a new migration,
                # e.g. its disk figures dropped at completion) keeps the dirtying seen before.
                lesson = replace(before, zero_share=lesson.zero_share if lesson.zero_share is not None
                                 else before.zero_share, paused_rate=lesson.paused_rate or before.paused_rate)
            elif lesson.paused_rate is None and before is not None and before.paused_rate:
                lesson = replace(lesson, paused_rate=before.paused_rate)  # a cancelled one never paused
            tracker.learned = lesson
    if memo is None or not continues:
        if not new:
            tracker.memo = None
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
        tracker.memo = memo
    for p in new:
        memo.consume(p)
    if last is not None and (last.in_flight or last.finished):
        memo.note(last)
        if memo.paused and tracker.host_lessons is not None:
            tracker.host_lessons.stop_copied(id(memo), *memo.paused)  # the host's, for its other VMs too
    return memo


def _starts_migration(before: HistoryPoint, p: HistoryPoint) -> bool:
    if before.status in FINISHED_STATUSES or p.status == "setup":
        return True
    if p.transferred is not None and before.transferred is not None and p.transferred < before.transferred:
        return True
    return p.passes is not None and before.passes is not None and p.passes < before.passes
