"""Bounded per-VM history: what the graphs draw. Fixed length, so memory stays flat."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterator

__all__ = ["HistoryPoint", "History", "PassMark"]


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One sample's worth of graphable numbers. None = QEMU did not report it."""

    time: float
    status: str
    transferred: float | None  # ram + disk, bytes
    remaining: float | None
    ram_transferred: float | None
    ram_remaining: float | None
    disk_transferred: float | None
    disk_remaining: float | None
    throughput_bps: float | None
    dirty_bytes_per_s: float | None
    expected_downtime_ms: float | None
    passes: int | None
    xbzrle_cache_miss_rate: float | None
    xbzrle_overflow: float | None
    xbzrle_encoding_rate: float | None
    xbzrle_pages: float | None
    xbzrle_bytes: float | None


@dataclass(frozen=True, slots=True)
class PassMark:
    """A MIGRATION_PASS event (or a dirty-sync-count step): a new pass over RAM began."""

    time: float
    number: int


class History:
    def __init__(self, maxlen: int) -> None:
        self.points: deque[HistoryPoint] = deque(maxlen=maxlen)
        self.passes: deque[PassMark] = deque(maxlen=maxlen)

    @property
    def maxlen(self) -> int:
        return self.points.maxlen or 0

    def append(self, point: HistoryPoint) -> None:
        self.points.append(point)

    def mark_pass(self, mark: PassMark) -> None:
        if self.passes and self.passes[-1].number == mark.number:
            return  # the event and the counter report the same pass
        self.passes.append(mark)

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[HistoryPoint]:
        return iter(self.points)

    def clear(self) -> None:
        self.points.clear()
        self.passes.clear()
