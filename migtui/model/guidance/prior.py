"""What is known of a guest's dirtying before this migration measures it (pass 1 has no
dirty rate): a pre-flight calc-dirty-rate the backend puts on the tracker, or what the
tracker's previous migration showed."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from migtui.model.derived import MigrationTracker
from migtui.model.guidance.dirtying import Period, _Dirtying, _fit
from migtui.model.guidance.tunables import _number


@dataclass(frozen=True)
class _Prior:
    """The guest's dirtying as known before this migration measured it."""

    model: _Dirtying | None  # None: only the zero share is known
    zero_share: float | None  # share of RAM that went out as zero pages last time
    source: str  # for the why line: "the pre-flight's" or "the last migration's"
    measured_ws: bool = False  # the model's working set was measured (two periods)
    period: float = 1.0  # seconds the rate was measured over, when the working set was not
    paused_rate: float | None = None  # bytes/s of the last stop-and-copy (the guest paused, no rate limit)
    zero_map: tuple[bool | None, ...] | None = None  # the pre-flight's pages in address order, True: zero


def learned_by(tracker: MigrationTracker) -> _Prior | None:
    """What the tracker's earlier migrations showed (the dirtying fitted once QEMU had measured
    it twice, and pass 1's zero pages): the prior for its next migration. The tracker holds it
    as its `learned`, opaque to it; guidance's memo puts it there when a new migration starts."""
    learned = tracker.learned
    return learned if isinstance(learned, _Prior) else None


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


def _plumbed_zero_map(tracker: MigrationTracker) -> tuple[bool | None, ...] | None:
    raw = tracker.zero_pages_prior
    if isinstance(raw, (list, tuple)) and any(isinstance(x, bool) for x in raw) \
            and all(x is None or isinstance(x, bool) for x in raw):
        return tuple(raw)
    return None


def _prior_for(tracker: MigrationTracker) -> _Prior | None:
    learned = learned_by(tracker)
    measured = _plumbed_prior(tracker)
    zmap = _plumbed_zero_map(tracker)  # sampled now: fresher than the last migration's
    if zmap is not None:
        read = [z for z in zmap if z is not None]
        zero = sum(read) / len(read)
        if learned is None:
            learned = _Prior(None, zero, "the pre-flight's", zero_map=zmap)
        else:
            learned = replace(learned, zero_share=zero, zero_map=zmap)
    if measured is None:
        return learned
    if measured.working_set is None and learned is not None and learned.model is not None \
            and learned.measured_ws and learned.model.working_set is not None and measured.rate > 0:
        # A fresh rate, and the working set the last migration showed.
        measured = _Dirtying(measured.rate, learned.model.working_set)
    return _Prior(measured, learned.zero_share if learned is not None else None, "the pre-flight's",
                  measured.working_set is not None, _plumbed_period(tracker),
                  learned.paused_rate if learned is not None else None, zmap)
