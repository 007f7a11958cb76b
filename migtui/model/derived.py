"""Values migtui computes from samples: progress, throughput, dirty rate, elapsed, ETA.

QEMU gives counters; an operator needs rates and a finish time. All of it is
computed here, from consecutive samples of one migration, with no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migtui.model.history import History, HistoryPoint, PassMark
from migtui.model.sample import DEFAULT_PAGE_SIZE, MigrationSample, counter
from migtui.model.units import format_bytes

__all__ = ["Derived", "HostLessons", "MigrationTracker"]


@dataclass(frozen=True, slots=True)
class Derived:
    progress: float | None = None  # 0..1
    progress_note: str | None = None  # why progress went down, when it did
    throughput_bps: float | None = None  # bytes/s, from `transferred` deltas
    dirty_bytes_per_s: float | None = None  # dirty-pages-rate x page-size
    elapsed_s: float | None = None
    eta_s: float | None = None
    remaining_bytes: float | None = None  # ram + disk
    passes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "progress": None if self.progress is None else round(self.progress, 4),
            "progress-note": self.progress_note,
            "throughput-bps": None if self.throughput_bps is None else round(self.throughput_bps),
            "dirty-bytes-per-s": None if self.dirty_bytes_per_s is None else round(self.dirty_bytes_per_s),
            "elapsed-s": self.elapsed_s,
            "eta-s": None if self.eta_s is None else round(self.eta_s, 1),
            "remaining-bytes": self.remaining_bytes,
            "passes": self.passes,
        }


# The stop-and-copies a host's speed is taken over: one alone can be a few MB in a few ms,
# whose fixed costs make it look several times faster than the next 100 MB will go.
HOST_STOP_COPIES = 8


@dataclass(slots=True)
class HostLessons:
    """What migrations from one source host showed that holds for every VM there, shared by
    their trackers: a VM's first migration from a host has nothing of its own to go on, and a
    VM that moved here brought figures of the host it left."""

    # bytes/s the host's recent stop-and-copies went at (downtime-bytes over downtime, summed over
    # the last HOST_STOP_COPIES): QEMU lifts max-bandwidth once the guest is paused, so the host's
    # CPU and link set it, not the guest.
    paused_rate: float | None = None
    _stop_copies: dict[object, tuple[float, float]] = field(default_factory=dict)

    def stop_copied(self, migration: object, sent: float, seconds: float) -> None:
        """A completed migration's stop-and-copy (`migration` names it: its replies repeat)."""
        if sent <= 0 or seconds <= 0:
            return
        self._stop_copies.pop(migration, None)
        self._stop_copies[migration] = (sent, seconds)
        while len(self._stop_copies) > HOST_STOP_COPIES:
            del self._stop_copies[next(iter(self._stop_copies))]
        values = self._stop_copies.values()
        self.paused_rate = sum(b for b, _ in values) / sum(t for _, t in values)


def _sum(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


class MigrationTracker:
    """Follows one VM's migrations sample by sample, keeping a bounded history."""

    def __init__(self, history_len: int = 7200) -> None:
        self.history = History(history_len)
        self.last: MigrationSample | None = None
        self.derived = Derived()
        # The VM's migration settings, held here alone (VMState's are these): the parameters in
        # QEMU's names and modern units (downtime-limit in ms, max-bandwidth in bytes/s, whatever
        # the QEMU; before 2.4 what migtui last set) and the capabilities. The backend keeps them
        # current; they decide the switch-over, and auto-converge changes the passes ahead.
        self.parameters: dict[str, object] = {}
        self.capabilities: dict[str, bool] = {}
        # The guest's vCPUs (query-cpus-fast) and whether it runs on KVM (query-kvm): the dirty
        # limit caps each vCPU, and QEMU offers it only on KVM. None: not known.
        self.vcpus: int | None = None
        self.kvm: bool | None = None
        # A dirty rate measured before the migration (calc-dirty-rate: [(calc-time s, bytes/s)])
        # for pass 1, which has none.
        self.dirty_rate_prior: list[tuple[float, float]] | None = None
        # Pages of the guest's RAM read before the migration, evenly spaced in address order (the
        # order pass 1 sends them), True for a zero page, None for one not read (the pre-flight
        # reads a few hundred): pass 1 sends zero pages nearly free, and they come in runs.
        self.zero_pages_prior: tuple[bool | None, ...] | None = None
        # The advice the operator applied to this migration (guidance.AdviceTaken), followed up
        # by guidance.follow_up; a new migration forgets it.
        self.advice_taken: object | None = None
        # What this VM's source host showed in any VM's migration (the backend shares one per
        # host among its trackers); None: a tracker of its own, knowing no host.
        self.host_lessons: HostLessons | None = None
        # Guidance's own state for this tracker, opaque here (this module does not import it):
        # the work kept between assessments of the current migration, and what the earlier ones
        # showed of the guest (the prior for the next). Guidance starts a new memo itself when a
        # new migration starts, and keeps `learned` across migrations: `add` resets neither.
        self.memo: object | None = None
        self.learned: object | None = None
        # Wall time at which QEMU's total-time was 0 for this migration: history runs on QEMU's
        # clock (free of polling jitter, and right for a simulator running faster than real time).
        self._anchor: float | None = None

    @property
    def max_bandwidth(self) -> float | None:
        """max-bandwidth, bytes/s (None: not known)."""
        return counter(self.parameters, "max-bandwidth")

    @property
    def downtime_limit_ms(self) -> float | None:
        """downtime-limit, ms (None: not known)."""
        return counter(self.parameters, "downtime-limit")

    @property
    def started_at(self) -> float | None:
        """Wall time the latest migration started, from QEMU's total-time (None: QEMU gave none)."""
        return self._anchor

    def _same_migration(self, prev: MigrationSample | None, cur: MigrationSample) -> bool:
        if prev is None or prev.status in ("none", "unknown"):
            return False
        if prev.finished and not cur.finished:
            return False  # a new migration started after the last one ended
        if prev.in_flight and cur.finished:
            return True  # its end, whatever the counters say (7.2's first reply after it has all times 0)
        for section, key in ((None, "total-time"), ("ram", "transferred")):
            a, b = prev.get(section, key), cur.get(section, key)
            if a is not None and b is not None and b < a:
                return False  # counters restart with each migration
        return True

    def add(self, sample: MigrationSample) -> Derived:
        prev = self.last if self._same_migration(self.last, sample) else None
        if prev is None:
            self.advice_taken = None
        total_time = sample.get(None, "total-time")
        zero_end = prev is not None and prev.in_flight and sample.finished and total_time == 0
        if zero_end:
            total_time = None  # QEMU 7.2's first reply after the end: every time at zero, not the end time
        if prev is None or self._anchor is None:
            self._anchor = None if total_time is None else sample.time - total_time / 1000
        when = sample.time if self._anchor is None or total_time is None else self._anchor + total_time / 1000
        ram, disk, xbzrle = sample.section("ram"), sample.section("disk"), sample.section("xbzrle-cache")
        ram_t, ram_r = counter(ram, "transferred"), counter(ram, "remaining")
        disk_t, disk_r = counter(disk, "transferred"), counter(disk, "remaining")
        transferred = _sum(ram_t, disk_t)
        remaining = _sum(ram_r, disk_r)
        total = _sum(counter(ram, "total"), counter(disk, "total"))

        progress: float | None = None
        note: str | None = None
        if sample.status == "completed":
            progress = 1.0
        elif remaining is not None and total:
            progress = min(1.0, max(0.0, 1.0 - remaining / total))
            before = self.derived.progress if prev is not None else None
            if before is not None and progress < before - 0.001:
                prev_remaining = self.derived.remaining_bytes
                note = (
                    f"remaining grew from {format_bytes(prev_remaining)} to {format_bytes(remaining)}:"
                    " the guest dirtied pages again"
                )
            elif prev is not None and self.derived.progress_note and progress <= (before or 0):
                note = self.derived.progress_note  # still below the earlier high: keep saying why

        throughput = self._throughput(prev, sample, transferred, total_time)
        page_size = counter(ram, "page-size") or DEFAULT_PAGE_SIZE
        dirty_pages = counter(ram, "dirty-pages-rate")
        dirty = None if dirty_pages is None else dirty_pages * page_size
        passes_raw = counter(ram, "dirty-sync-count")
        passes = int(passes_raw) if passes_raw is not None else None
        if passes is not None and sample.in_flight:
            self.history.mark_pass(PassMark(when, passes))

        eta = self._eta(sample, remaining, throughput, dirty)
        self.derived = Derived(
            progress=progress,
            progress_note=note,
            throughput_bps=throughput,
            dirty_bytes_per_s=dirty,
            elapsed_s=(total_time / 1000 if total_time is not None
                       else when - self._anchor if zero_end and self._anchor is not None else None),
            eta_s=eta,
            remaining_bytes=remaining,
            passes=passes,
        )
        # Idle VMs repeat the same reply every poll: only migrations go into history.
        if sample.in_flight or (sample.finished and (self.last is None or self.last.status != sample.status)):
            self.history.append(
                HistoryPoint(
                    time=when,
                    status=sample.status,
                    transferred=transferred,
                    remaining=remaining,
                    ram_transferred=ram_t,
                    ram_remaining=ram_r,
                    disk_transferred=disk_t,
                    disk_remaining=disk_r,
                    throughput_bps=throughput,
                    dirty_bytes_per_s=dirty,
                    expected_downtime_ms=sample.get(None, "expected-downtime"),
                    passes=passes,
                    xbzrle_cache_miss_rate=counter(xbzrle, "cache-miss-rate"),
                    xbzrle_overflow=counter(xbzrle, "overflow"),
                    xbzrle_encoding_rate=counter(xbzrle, "encoding-rate"),
                    xbzrle_pages=counter(xbzrle, "pages"),
                    xbzrle_bytes=counter(xbzrle, "bytes"),
                )
            )
        self.last = sample
        return self.derived

    def _throughput(
        self,
        prev: MigrationSample | None,
        sample: MigrationSample,
        transferred: float | None,
        total_time: float | None,
    ) -> float | None:
        if sample.finished:
            # The average over the whole migration is what an operator compares.
            seconds = total_time / 1000 if total_time else 0.0
            if transferred is not None and seconds > 0:  # 5e-324 ms is 0 s in a float
                return transferred / seconds
            return None
        if prev is not None and transferred is not None:
            prev_transferred = _sum(prev.get("ram", "transferred"), prev.get("disk", "transferred"))
            prev_total_time = prev.get(None, "total-time")
            # QEMU's own clock (total-time) is free of our polling jitter; fall back to ours.
            if total_time is not None and prev_total_time is not None and total_time > prev_total_time:
                dt = (total_time - prev_total_time) / 1000
            else:
                dt = sample.time - prev.time
            if prev_transferred is not None and dt > 0:
                return max(0.0, (transferred - prev_transferred) / dt)
        mbps = sample.get("ram", "mbps")
        if mbps is not None:
            return mbps * 1_000_000 / 8  # mbps is megabits per second
        return None

    def _eta(
        self,
        sample: MigrationSample,
        remaining: float | None,
        throughput: float | None,
        dirty: float | None,
    ) -> float | None:
        if sample.status == "completed":
            return 0.0
        if not sample.in_flight or remaining is None or not throughput:
            return None
        # QEMU switches over once what is left fits in the downtime limit.
        downtime_s = (self.downtime_limit_ms or 300) / 1000
        threshold = throughput * downtime_s
        if remaining <= threshold:
            return remaining / throughput
        net = throughput - (dirty or 0.0)
        if net <= 0:
            return None  # dirtying as fast as it sends: will not finish at these settings
        return (remaining - threshold) / net + downtime_s
