"""Pure pre-copy (and post-copy) migration model, after the seed's buffered_file_thread.

No asyncio and no wall clock here: every entry point takes ``now``, a simulated time in
seconds, and the model advances lazily from its last position to it.  A VM that nobody
looks at costs nothing; a VM looked at after an hour is advanced in a few closed-form
chunks rather than 36 000 separate 100 ms windows.

The rules, in the seed's terms:

- Data goes out in 100 ms windows (BUFFER_DELAY), each capped at bandwidth / 10.
- Block migration (``blk``) sends the disk before any RAM.
- Pass 1 (the bulk stage) sends every page; zero pages count as ``duplicate`` and cost
  a few bytes on the wire.  Meanwhile the guest dirties random pages of its working set
  at its dirty rate.  When a window opens (or the bitmap empties inside one) with at
  most ``bandwidth * downtime-limit`` bytes of pages still to send, the dirty log is
  synced (a new pass, ``dirty-sync-count`` + 1); if what is pending is still under that
  threshold, the VM stops and the rest goes out unthrottled at link speed: that is the
  downtime.  So it converges when the dirty rate is below the bandwidth, and passes
  keep climbing when it is above.
- XBZRLE: pages re-sent from pass 3 on hit the cache with probability
  ``min(1, cache / working set)``; pass 2 only fills the cache (all misses).
- Post-copy (7.2): after ``migrate-start-postcopy`` the source stops, the destination
  runs, and what is left is sent without further dirtying.

Random draws (setup time, a per-pass jitter of the dirty rate) come from the ``rng``
handed in, so a seed fixes a run, and they are drawn per pass, not per window, so the
result does not depend on how often the model is looked at.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

PAGE = 4096
WINDOW = 0.1  # seconds: the seed's BUFFER_DELAY
PAGE_HEADER = 8  # per-page header on the wire
ZERO_PAGE_WIRE = PAGE_HEADER + 1  # a zero page is sent as header + fill byte
DEVICE_STATE = 64 * 1024  # bytes of device state sent during downtime
SWITCH_OVERHEAD = 0.001  # seconds of fixed cost to stop and hand over
LINK_BANDWIDTH = 1_250_000_000  # bytes/s (10 Gbit/s): unthrottled sends and "unlimited"
TEN_KB = 10000  # the seed will not estimate downtime from fewer bytes than this

# Statuses in which a migration is still running (QEMU's migration_is_running()).
RUNNING = frozenset({"setup", "active", "postcopy-active", "postcopy-paused",
                     "postcopy-recover", "pre-switchover", "device", "cancelling"})
FINISHED = frozenset({"completed", "failed", "cancelled"})


@dataclass
class Guest:
    """What the guest looks like to migration.  Mutable: demos change it live."""

    ram: int = 512 * 2**20
    dirty_rate: float = 0.0  # bytes/s written to random pages of the working set
    working_set: int = 64 * 2**20
    zero_fraction: float = 0.5  # share of RAM that is zero pages in the bulk stage
    page_change: float = 0.05  # share of a re-dirtied page that changed (XBZRLE size)
    disk: int = 0  # bytes of writable drives, sent first by block migration
    running: bool = True  # a paused guest dirties nothing
    vcpus: int = 1
    kvm: bool = False  # query-kvm's enabled
    dirty_ring: bool = False  # KVM with -accel kvm,dirty-ring-size=N: what the dirty limit needs

    @property
    def pages(self) -> int:
        return max(1, self.ram // PAGE)

    @property
    def ws_pages(self) -> int:
        return min(self.pages, self.working_set // PAGE)


@dataclass
class Knobs:
    """The controls a migration reads live, in SI units (bytes/s, seconds)."""

    max_bandwidth: int = 128 * 2**20
    downtime_limit: float = 0.3
    zero_bandwidth_unlimited: bool = True  # 7.2: 0 = no limit; the seed: 0 = stalled
    seed_expected_downtime: bool = False  # seed: dirty rate / bw; 7.2: remaining / bw
    xbzrle: bool = False
    xbzrle_cache_size: int = 64 * 2**20
    auto_converge: bool = False
    throttle_initial: int = 20
    throttle_increment: int = 10
    throttle_max: int = 99
    throttle_trigger: int = 50  # percent of transferred bytes
    postcopy_ram: bool = False
    max_postcopy_bandwidth: int = 0
    dirty_limit: bool = False
    vcpu_dirty_limit: int = 1  # MB/s (2**20 bytes) per vCPU
    pause_before_switchover: bool = False
    link_bandwidth: int = LINK_BANDWIDTH
    device_in_every_switchover: bool = False  # 10.0: `device` whenever the source stops

    def bandwidth(self, postcopy: bool = False) -> float:
        limit = self.max_postcopy_bandwidth if postcopy else self.max_bandwidth
        if limit == 0:
            return self.link_bandwidth if (postcopy or self.zero_bandwidth_unlimited) else 0.0
        return float(min(limit, self.link_bandwidth))


@dataclass(frozen=True)
class ModelEvent:
    """Something observable happened at simulated time ``t``.

    kinds: "status" (value: new status), "pass" (value: dirty-sync-count),
    "stop" (source VM stopped for switch-over), "resume" (source VM runs again after a
    failed or cancelled switch-over), "dest-resume" (post-copy: the destination runs).
    """

    t: float
    kind: str
    value: Any = None


@dataclass
class Counters:
    transferred: float = 0.0
    duplicate: float = 0.0
    normal: float = 0.0
    precopy_bytes: float = 0.0
    downtime_bytes: float = 0.0
    postcopy_bytes: float = 0.0
    postcopy_requests: float = 0.0
    disk_transferred: float = 0.0
    xbzrle_bytes: float = 0.0
    xbzrle_pages: float = 0.0
    xbzrle_miss: float = 0.0
    xbzrle_overflow: float = 0.0


class Migration:
    """One outgoing migration.  Drive it with :meth:`advance`; read its attributes."""

    def __init__(self, guest: Guest, knobs: Knobs, *, start: float, rng: random.Random,
                 blk: bool = False) -> None:
        self.guest = guest
        self.knobs = knobs
        self.rng = rng
        self.start = start
        self.t = start  # window boundary the model has been advanced to
        self.status = "setup"
        self.error_desc: str | None = None
        self.blk = blk and guest.disk > 0
        self.setup_end = start + rng.uniform(0.003, 0.012)
        self.c = Counters()
        self.passes = 0  # dirty-sync-count
        self.remaining = float(guest.pages)  # pages in the bitmap not yet sent
        self.bulk_zero = guest.pages * self._zero_share()  # zero pages still in the bitmap
        self.dirty = 0.0  # distinct pages dirtied since the last sync
        self.disk_left = float(guest.disk) if self.blk else 0.0
        self.dirty_pages_rate = 0.0  # pages/s, updated at syncs at most once a second
        self.expected_downtime_ms = knobs.downtime_limit * 1000  # the seed's first guess
        self.mbps = 0.0
        self.pages_per_second = 0.0
        self.throttle = 0  # cpu-throttle-percentage
        self.dirty_quota: float | None = None  # bytes/s the dirty limit holds the guest to, once in service
        self.cache_miss_rate = 0.0
        self.encoding_rate = 0.0
        self.downtime_ms: float | None = None
        self.total_time_ms: float | None = None
        self.stopped_at: float | None = None  # when the source stopped for switch-over
        self.done_at: float | None = None  # when the unthrottled final send ends
        self.postcopy_at: float | None = None  # migrate-start-postcopy was sent then
        self._dirty_t = start  # dirtying has been applied up to here
        self._rate_factor = 1.0
        self._period_start = start
        self._period_dirty = 0.0
        self._pass_sent = 0.0  # bytes sent in the current pass (auto-converge trigger)
        self._high_dirty = 0
        self._pass_x = Counters()  # xbzrle counters at the last sync, for the rates
        self._events: list[ModelEvent] = [ModelEvent(start, "status", "setup")]

    # -- reading -----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.status in RUNNING

    @property
    def setup_time_ms(self) -> float:
        return (self.setup_end - self.start) * 1000

    def total_time(self, now: float) -> float:
        """total-time in ms: running time so far, or the final figure."""
        if self.total_time_ms is not None:
            return self.total_time_ms
        return max(0.0, now - self.start) * 1000

    @property
    def remaining_bytes(self) -> int:
        return math.ceil(self.remaining - 1e-9) * PAGE

    def drain_events(self) -> list[ModelEvent]:
        events, self._events = self._events, []
        return events

    # -- driving -----------------------------------------------------------------
    def advance(self, now: float) -> list[ModelEvent]:
        """Bring the model up to ``now`` and return the events that happened."""
        if self.status == "setup":
            if now < self.setup_end:
                return self.drain_events()
            self.t = self._dirty_t = self._period_start = self.setup_end
            self._sync(self.t)  # the first bitmap sync happens before "active"
            self._set_status(self.t, "active")
        while self._transferring() and self.t + WINDOW <= now + 1e-9:
            if self.postcopy_at is not None and self.t >= self.postcopy_at - 1e-9 \
                    and self.status == "active":
                self._enter_postcopy(self.t)
            steady = self._steady_windows(int((now - self.t) / WINDOW + 1e-9))
            if steady >= 2:
                self._windows(steady)
            else:
                self._window()
        if self.done_at is not None and now >= self.done_at and self.status in ("active", "device"):
            self._complete(self.done_at)
        return self.drain_events()

    def settle(self, now: float) -> list[ModelEvent]:
        """Advance, and apply dirtying up to ``now``: call before changing the guest."""
        self.advance(now)
        self._dirty_to(now)
        return self.drain_events()

    def cancel(self, now: float) -> list[ModelEvent]:
        self.advance(now)
        if self.running:
            self._set_status(now, "cancelling")
            self._finish(now, "cancelled")
        return self.drain_events()

    def fail(self, now: float, desc: str) -> list[ModelEvent]:
        self.advance(now)
        if self.running:
            self.error_desc = desc
            self._finish(now, "failed")
        return self.drain_events()

    def start_postcopy(self, now: float) -> list[ModelEvent]:
        """Takes effect at the next window, as QEMU does it in the migration thread."""
        self.advance(now)
        if self.postcopy_at is None:
            self.postcopy_at = now
        return self.drain_events()

    def pause_postcopy(self, now: float, desc: str = "Postcopy migration is paused by the user") -> list[ModelEvent]:
        """The stream broke (or migrate-pause): nothing is sent until a resume; `desc` is
        why, as 10.0 reports it in error-desc."""
        self.advance(now)
        if self.status in ("postcopy-active", "postcopy-recover"):
            self.error_desc = desc
            self._set_status(now, "postcopy-paused")
        return self.drain_events()

    def resume_postcopy(self, now: float, recover_setup: bool = False,
                        refused: str | None = None) -> list[ModelEvent]:
        """migrate with resume: through postcopy-recover (10.0 first says postcopy-recover-setup)
        back to postcopy-active; with `refused` (nothing listens there), back to postcopy-paused
        with that reason."""
        self.advance(now)
        if self.status == "postcopy-paused":
            if recover_setup:
                self._set_status(now, "postcopy-recover-setup")
            if refused is not None:
                if recover_setup:  # 7.2 stays paused and says nothing
                    self.error_desc = refused
                    self._set_status(now, "postcopy-paused")
                return self.drain_events()
            self.error_desc = None
            self._set_status(now, "postcopy-recover")
            self._set_status(now, "postcopy-active")
            self.t = now  # nothing was sent while paused
        return self.drain_events()

    def continue_switchover(self, now: float) -> list[ModelEvent]:
        """migrate-continue from pre-switchover: send the rest, then complete."""
        self.advance(now)
        if self.status == "pre-switchover":
            self._set_status(now, "device")
            self.done_at = now + self._final_send_time()
        return self.advance(now)

    def set_guest_running(self, now: float, running: bool) -> list[ModelEvent]:
        events = self.settle(now)
        self.guest.running = running
        return events

    # -- internals -----------------------------------------------------------------
    def _transferring(self) -> bool:
        return (self.status == "active" and self.stopped_at is None) \
            or self.status == "postcopy-active"

    def _set_status(self, t: float, status: str) -> None:
        self.status = status
        self._events.append(ModelEvent(t, "status", status))

    def _zero_share(self) -> float:
        zero_pages = min(self.guest.zero_fraction * self.guest.pages,
                         self.guest.pages - self.guest.ws_pages)
        return max(0.0, zero_pages) / self.guest.pages

    def _threshold_pages(self) -> float:
        return self.knobs.bandwidth() * self.knobs.downtime_limit / PAGE

    def _dirty_pages_per_s(self) -> float:
        if not self.guest.running or self.stopped_at is not None:
            return 0.0
        rate = self.guest.dirty_rate * self._rate_factor * (1 - self.throttle / 100)
        if self.dirty_quota is not None:
            rate = min(rate, self.dirty_quota)
        return max(0.0, rate) / PAGE

    def _dirty_to(self, t: float) -> None:
        """Random writes over the working set: distinct dirty pages saturate at its size."""
        dt, self._dirty_t = t - self._dirty_t, max(t, self._dirty_t)
        ws = self.guest.ws_pages
        rate = self._dirty_pages_per_s()
        if ws <= 0 or rate <= 0 or dt <= 0:
            return
        before = self.dirty
        self.dirty = ws - (ws - min(self.dirty, ws)) * math.exp(-rate * dt / ws)
        self._period_dirty += self.dirty - before

    def _xbzrle_on(self, phase: str) -> bool:
        return self.knobs.xbzrle and self.passes >= 2 and phase != "postcopy"

    def _xbzrle_hit(self) -> float:
        """Pass 2 only fills the cache; later, a page is still cached if the cache holds the set."""
        if self.passes <= 2:
            return 0.0
        ws = self.guest.ws_pages
        return 1.0 if ws == 0 else min(1.0, (self.knobs.xbzrle_cache_size // PAGE) / ws)

    def _overflow_share(self) -> float:
        # An encoding bigger than the page overflows; that starts when ~40% of it changed.
        return min(1.0, max(0.0, (self.guest.page_change - 0.4) / 0.4))

    def _encoded_size(self) -> float:
        return max(16.0, self.guest.page_change * PAGE * 1.5)

    def _page_mix(self, phase: str) -> tuple[float, float, float, float]:
        """Shares of the pages sent now: (zero, normal, encoded, wire bytes per page).

        Zero pages only exist in the bulk stage: what the guest dirties is never zero."""
        zero = min(1.0, self.bulk_zero / self.remaining) if self.remaining > 0 else 0.0
        encoded = 0.0
        if self._xbzrle_on(phase):
            encoded = (1 - zero) * self._xbzrle_hit() * (1 - self._overflow_share())
        normal = 1 - zero - encoded
        wire = (zero * ZERO_PAGE_WIRE + normal * (PAGE + PAGE_HEADER)
                + encoded * (self._encoded_size() + PAGE_HEADER))
        return zero, normal, encoded, wire

    def _send_pages(self, pages: float, phase: str) -> tuple[float, float]:
        """Send ``pages`` from the bitmap; returns (pages, wire bytes)."""
        pages = min(pages, self.remaining)
        zero, normal, encoded, wire = self._page_mix(phase)
        c = self.c
        c.duplicate += pages * zero
        c.normal += pages * normal
        if self._xbzrle_on(phase):
            hit = self._xbzrle_hit()
            c.xbzrle_miss += pages * (1 - zero) * (1 - hit)
            c.xbzrle_overflow += pages * (1 - zero) * hit * self._overflow_share()
            c.xbzrle_pages += pages * encoded
            c.xbzrle_bytes += pages * encoded * self._encoded_size()
        self.bulk_zero = max(0.0, self.bulk_zero - pages * zero)
        self.remaining = max(0.0, self.remaining - pages)
        nbytes = pages * wire
        c.transferred += nbytes
        if phase == "precopy":
            c.precopy_bytes += nbytes
        elif phase == "postcopy":
            c.postcopy_bytes += nbytes
            c.postcopy_requests += pages * 0.02  # the destination faults on a few pages
        else:
            c.downtime_bytes += nbytes
        self._pass_sent += nbytes
        return pages, nbytes

    def _steady_windows(self, n: int) -> int:
        """How many of the next ``n`` windows are plain: no sync, no phase change in them.

        Conservative: each of them starts above the threshold and ends with data left."""
        if n < 2 or self.postcopy_at is not None and self.status == "active":
            return 0
        post = self.status == "postcopy-active"
        budget = self.knobs.bandwidth(post) * WINDOW
        if not post and self.remaining <= self._threshold_pages():
            return 0
        if budget <= 0:
            return n
        if self.disk_left > 0:
            return min(n, int(self.disk_left // budget) - 1)
        per_window = budget / self._page_mix("postcopy" if post else "precopy")[3]
        k = int(self.remaining // per_window) - 1
        if not post:
            k = min(k, int((self.remaining - self._threshold_pages()) // per_window))
        return max(0, min(n, k))

    def _windows(self, n: int) -> None:
        """``n`` identical plain windows at once (see _steady_windows)."""
        phase = "postcopy" if self.status == "postcopy-active" else "precopy"
        budget = self.knobs.bandwidth(phase == "postcopy") * WINDOW
        pages = sent = 0.0
        if budget > 0 and self.disk_left > 0:
            self.disk_left = max(0.0, self.disk_left - budget * n)
            self.c.disk_transferred += budget * n
            sent = budget * n
        elif budget > 0:
            pages, sent = self._send_pages(n * budget / self._page_mix(phase)[3], phase)
        self.t += n * WINDOW
        self._dirty_to(self.t)
        self._measure(sent / n, pages / n)

    def _window(self) -> None:
        """One 100 ms window, as the seed's loop runs it.

        The pending check (and the bitmap sync it may do) happens when the window opens
        and again whenever the bitmap empties before the window's budget is spent."""
        phase = "postcopy" if self.status == "postcopy-active" else "precopy"
        bw = self.knobs.bandwidth(phase == "postcopy")
        budget, start = bw * WINDOW, self.t
        sent = pages_sent = 0.0
        if self.disk_left > 0 and budget > 0:
            chunk = min(budget, self.disk_left)
            self.disk_left -= chunk
            self.c.disk_transferred += chunk
            sent += chunk
        completed_at: float | None = None
        for _ in range(1000):  # integer-page syncs end this; the bound is a safety net
            if self.disk_left > 0 or not self._transferring():
                break
            now = start + (sent / bw if bw else 0.0)
            if phase == "postcopy":
                if self.remaining <= 1e-9:
                    completed_at = now
                    break
            elif self.remaining <= self._threshold_pages():
                self._dirty_to(now)
                self._sync(now)
                if self.remaining <= self._threshold_pages():
                    self._switchover(now)
                    break
            if budget - sent <= 1e-6:
                break
            pages, nbytes = self._send_pages((budget - sent) / self._page_mix(phase)[3], phase)
            pages_sent += pages
            sent += nbytes
        self.t = start + WINDOW
        self._dirty_to(self.t)
        self._measure(sent, pages_sent)
        if completed_at is not None:
            self._complete(completed_at)

    def _measure(self, sent: float, pages: float) -> None:
        """Per-window bandwidth figures, as migration_update_counters() does."""
        self.mbps = sent * 8 / WINDOW / 1e6
        self.pages_per_second = pages / WINDOW
        bw_per_ms = sent / (WINDOW * 1000)
        if self.dirty_pages_rate and sent > TEN_KB:
            if self.knobs.seed_expected_downtime:
                self.expected_downtime_ms = self.dirty_pages_rate * PAGE / bw_per_ms
            else:
                self.expected_downtime_ms = self.remaining * PAGE / bw_per_ms

    def _sync(self, t: float) -> None:
        """migration_bitmap_sync(): fold the dirty log into the bitmap, start a pass.

        Whole pages only: a fraction of a dirtied page is no page at all."""
        self.passes += 1
        self.remaining = min(float(self.guest.pages), self.remaining + math.floor(self.dirty))
        if t - self._period_start >= 1.0:
            self.dirty_pages_rate = self._period_dirty / (t - self._period_start)
            self._period_start, self._period_dirty = t, 0.0
        if (self.knobs.auto_converge or self.knobs.dirty_limit) and self.passes > 2:
            self._maybe_throttle()
        self._xbzrle_rates()
        self.dirty = 0.0
        self._pass_sent = 0.0
        self._rate_factor = self.rng.uniform(0.9, 1.1)
        self._events.append(ModelEvent(t, "pass", self.passes))

    def dirty_limit_times_us(self) -> tuple[float, float] | None:
        """(dirty-limit-throttle-time-per-round, dirty-limit-ring-full-time) in microseconds while
        the dirty limit holds the guest: a 4096-entry ring fills in ring / rate; held to the quota,
        each vCPU sleeps what takes it from its own rate down to the quota."""
        if self.dirty_quota is None or not self.running:
            return None
        per_vcpu = max(1.0, self.guest.dirty_rate * self._rate_factor / self.guest.vcpus)
        quota = max(1.0, self.dirty_quota / self.guest.vcpus)
        ring = 4096 * PAGE
        full = ring / min(per_vcpu, quota) * 1e6
        return max(0.0, ring / quota - ring / per_vcpu) * 1e6, full

    def _maybe_throttle(self) -> None:
        """Auto-converge: dirtying outpacing transfer twice in a row raises the throttle."""
        if self.dirty * PAGE > self._pass_sent * self.knobs.throttle_trigger / 100:
            self._high_dirty += 1
            if self._high_dirty >= 2:
                self._high_dirty = 0
                if self.knobs.dirty_limit:
                    # The dirty limit instead: every vCPU held to vcpu-dirty-limit, taken afresh each time.
                    self.dirty_quota = self.guest.vcpus * self.knobs.vcpu_dirty_limit * 2**20
                    return
                self.throttle = (self.knobs.throttle_initial if self.throttle == 0 else
                                 min(self.knobs.throttle_max,
                                     self.throttle + self.knobs.throttle_increment))

    def _xbzrle_rates(self) -> None:
        c, p = self.c, self._pass_x
        tried = (c.xbzrle_pages - p.xbzrle_pages) + (c.xbzrle_miss - p.xbzrle_miss)
        if tried > 0:
            self.cache_miss_rate = (c.xbzrle_miss - p.xbzrle_miss) / tried
        if c.xbzrle_bytes > p.xbzrle_bytes:
            self.encoding_rate = ((c.xbzrle_pages - p.xbzrle_pages) * PAGE
                                  / (c.xbzrle_bytes - p.xbzrle_bytes))
        self._pass_x = Counters(xbzrle_pages=c.xbzrle_pages, xbzrle_miss=c.xbzrle_miss,
                                xbzrle_bytes=c.xbzrle_bytes)

    def _final_send_time(self) -> float:
        wire = self.remaining * self._page_mix("downtime")[3] + DEVICE_STATE
        return SWITCH_OVERHEAD + wire / self.knobs.link_bandwidth

    def _switchover(self, t: float) -> None:
        """Pending is under the threshold: stop the VM, final sync, send the rest unthrottled."""
        self.stopped_at = t
        self._events.append(ModelEvent(t, "stop"))
        self._sync(t)
        if self.knobs.pause_before_switchover:
            self._set_status(t, "pre-switchover")
            return
        if self.knobs.device_in_every_switchover:
            self._set_status(t, "device")
        self.done_at = t + self._final_send_time()

    def _enter_postcopy(self, t: float) -> None:
        self._dirty_to(t)
        self.stopped_at = t
        if self.knobs.device_in_every_switchover:
            # 10.0: the source stops, sends its device state, then post-copy starts.
            self._events.append(ModelEvent(t, "stop"))
            self._set_status(t, "device")
            self._set_status(t, "postcopy-active")
        else:
            self._set_status(t, "postcopy-active")
            self._events.append(ModelEvent(t, "stop"))
        self._sync(t)
        self.downtime_ms = (SWITCH_OVERHEAD + DEVICE_STATE / self.knobs.link_bandwidth) * 1000
        self._events.append(ModelEvent(t + self.downtime_ms / 1000, "dest-resume"))

    def _complete(self, t: float) -> None:
        if self.remaining > 0:
            self._send_pages(self.remaining, "downtime")
        self.remaining = 0.0
        if self.downtime_ms is None:
            assert self.stopped_at is not None
            self.downtime_ms = (t - self.stopped_at) * 1000
        self.total_time_ms = (t - self.start) * 1000
        self.done_at = None
        self._set_status(t, "completed")

    def _finish(self, t: float, status: str) -> None:
        """failed/cancelled: a source stopped for switch-over runs again."""
        self.total_time_ms = (t - self.start) * 1000
        if self.stopped_at is not None and self.status != "postcopy-active":
            self._events.append(ModelEvent(t, "resume"))
        self.stopped_at = self.done_at = None
        self._set_status(t, status)


@dataclass
class DirtyRateProbe:
    """calc-dirty-rate / query-dirty-rate (7.2): measures the guest's dirty rate."""

    start: float
    calc_time: float
    sample_pages: int = 512
    mode: str = "page-sampling"
    result_mb: float | None = None

    def status(self, now: float, guest: Guest) -> str:
        if now < self.start + self.calc_time:
            return "measuring"
        if self.result_mb is None:
            self.result_mb = guest.dirty_rate / 2**20 if guest.running else 0.0
        return "measured"
