"""Guidance's tunables: the thresholds and margins of the verdict, the ETA and the advice,
QEMU's defaults, and the migration statuses each reads.

The figures were set against the lab's guests and the simulator; the comments say what each
one trades. `_number` reads a QEMU figure that may be absent or not a number."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

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
# ... or, pass by pass, a guest dirtying in one send window at least this many times the slack
# (a pass lasts at least a window), on this many passes in a row: it cannot get under.
FLOOR_FACTOR = 2.0
FLOOR_PASSES = 3
# Pass 1 has no dirty rate yet (QEMU reports it from the second sync): assume the guest
# dirties this share of the throughput for the point ETA, and RATIO_HIGH for the band's
# pessimistic end.
FIRST_PASS_RATIO = 0.2
FIRST_PASS_RATIO_HIGH = 0.8
# Before any RAM page is sent (block migration's disk phase) nothing says how much of it
# is zero pages (nearly free to send): the point ETA takes the middle of "all" and "none".
UNKNOWN_ZERO_SHARE = 0.5
ZERO_PAGE_WIRE = PAGE_HEADER + 1  # a zero page goes out as its header and one byte
# QEMU lifts max-bandwidth for the stop-and-copy (migration_completion: no rate limit), so what is
# left at the switch-over goes as fast as the host and the link can send with the guest paused. The
# guest's last migration says how fast that was (downtime-bytes / downtime); with nothing known,
# assume a 10 Gbit/s link that one migration thread fills (never slower than the throughput so far).
# The band's pessimistic end keeps max-bandwidth, as QEMU's own expected-downtime does.
PAUSED_RATE = 2**30
# A pre-flight calc-dirty-rate samples pages and under-counts a guest that rewrites its
# working set in tight loops (see preflight.SAMPLING_MARGIN): the band's pessimistic end.
PRIOR_MARGIN = 1.5
# Auto-converge's defaults (QEMU 7.2): cpu-throttle-initial/-increment, max-cpu-throttle, and
# throttle-trigger-threshold (% of the bytes sent in a sync period that, dirtied twice, throttles).
THROTTLE_DEFAULTS = MappingProxyType({"cpu-throttle-initial": 20.0, "cpu-throttle-increment": 10.0,
                                       "max-cpu-throttle": 99.0, "throttle-trigger-threshold": 50.0})
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


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
