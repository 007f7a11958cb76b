"""Bounded per-VM history: what the graphs draw and the guidance reads.

Memory is fixed per VM whatever the migration's length. The newest points are kept at
full resolution (the pass in progress, the graph's right edge); older ones go to an
archive that halves its resolution each time it fills, so a whole migration, however
long, stays in view at a coarser step. A graph is at most a few hundred columns wide,
so an hour at 0.5 s (7200 samples) never needed more than that.

Points are stored packed, one `bytes` per point (struct of float64, NaN for None):
~180 B instead of ~480 B for a dataclass and its float objects, and nothing for the
garbage collector to walk (a fleet of 1000 VMs with an hour each made full collections
take seconds). HistoryPoint objects are made on demand when read.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from collections import deque
from itertools import repeat
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Iterator, Sequence

__all__ = ["HistoryPoint", "History", "PassMark", "FULL_RESOLUTION", "ARCHIVE_POINTS", "PASS_MARKS"]

# The newest points kept at full resolution: two minutes at the in-flight poll rate.
FULL_RESOLUTION = 240
# The thinned archive of everything older: an hour of samples fits at a 10-20 s step.
ARCHIVE_POINTS = 360
# Pass marks kept: past this, every other one goes (a graph cannot show more lines than columns).
PASS_MARKS = 360


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
    # Position in its History (-1: not from one). Points are made afresh on each read, so
    # readers that resume where they stopped compare seq, not identity.
    seq: int = -1


@dataclass(frozen=True, slots=True)
class PassMark:
    """A MIGRATION_PASS event (or a dirty-sync-count step): a new pass over RAM began."""

    time: float
    number: int


_NUMBERS = tuple(f.name for f in fields(HistoryPoint) if f.name not in ("status", "seq"))
_PASSES = _NUMBERS.index("passes")
# seq, status code, then every number (NaN = None).
_PACKED = struct.Struct(f"<qB{len(_NUMBERS)}d")
_NAN = float("nan")

_numbers_of = attrgetter(*_NUMBERS)


class _Statuses:
    """QEMU's statuses, coded in one byte: each in the order a history first sees it, so a
    status QEMU adds later gets the next code. One per history: the model keeps no tables
    that grow across VMs."""

    __slots__ = ("codes", "names")

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.names: list[str] = []  # only ever appended to: a code, once given, stays

    def code(self, status: str) -> int:
        code = self.codes.get(status)
        if code is None:
            if len(self.names) >= 255:
                return self.code("unknown")
            code = self.codes[status] = len(self.names)
            self.names.append(status)
        return code


def _pack(seq: int, point: HistoryPoint, statuses: _Statuses) -> bytes:
    return _PACKED.pack(seq, statuses.code(point.status), *[_NAN if v is None else v for v in _numbers_of(point)])


def _unpack(packed: bytes, names: Sequence[str]) -> HistoryPoint:
    seq, code, *numbers = _PACKED.unpack(packed)
    values = [None if v != v else v for v in numbers]  # NaN is the only value unequal to itself
    passes = values[_PASSES]
    if passes is not None:
        values[_PASSES] = int(passes)
    return HistoryPoint(values[0], names[code], *values[1:], seq=seq)


class _Points(Sequence[HistoryPoint]):
    """A read-only view, oldest first; points are unpacked only as they are read."""

    __slots__ = ("_packed", "_names")

    def __init__(self, packed: list[bytes], names: Sequence[str]) -> None:
        self._packed = packed
        self._names = names

    def __len__(self) -> int:
        return len(self._packed)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [_unpack(p, self._names) for p in self._packed[index]]
        return _unpack(self._packed[index], self._names)

    def __iter__(self) -> Iterator[HistoryPoint]:
        return map(_unpack, self._packed, repeat(self._names))

    def __reversed__(self) -> Iterator[HistoryPoint]:
        return map(_unpack, reversed(self._packed), repeat(self._names))


class History:
    """Fixed-size history of one VM: `maxlen` bounds it, and memory stays flat past it.

    With maxlen up to FULL_RESOLUTION it is a plain ring (the oldest drop out). Above it,
    the newest FULL_RESOLUTION points are exact and an archive of at most ARCHIVE_POINTS
    keeps every `stride`-th older point, doubling the stride (and dropping every other
    archived point) whenever it fills.
    """

    def __init__(self, maxlen: int) -> None:
        self._maxlen = max(1, int(maxlen))
        self._recent: deque[bytes] = deque(maxlen=min(self._maxlen, FULL_RESOLUTION))
        self._archive_cap = min(max(0, self._maxlen - FULL_RESOLUTION), ARCHIVE_POINTS)
        self._archive: list[bytes] = []
        self._archive_seqs: list[int] = []
        self._stride = 1
        self._seq = 0  # points ever appended; never reset, so a seq is never reused
        self._statuses = _Statuses()  # never reset either: packed points hold its codes
        # Pass marks as two arrays: a non-converging hour has over a thousand of them.
        self._pass_times = array("d")
        self._pass_numbers = array("d")  # floats: QEMU's counter is any JSON integer
        self._marks_cap = min(self._maxlen, PASS_MARKS)

    @property
    def maxlen(self) -> int:
        return self._maxlen

    @property
    def stride(self) -> int:
        """Samples per archived point (1 until the archive first fills)."""
        return self._stride

    def append(self, point: HistoryPoint) -> None:
        seq = self._seq
        self._seq += 1
        packed = _pack(seq, point, self._statuses)
        self._recent.append(packed)
        if self._archive_cap and seq % self._stride == 0:
            self._archive.append(packed)
            self._archive_seqs.append(seq)
            if len(self._archive) >= self._archive_cap:
                self._thin()

    def _thin(self) -> None:
        self._stride *= 2
        keep = [i for i, s in enumerate(self._archive_seqs) if s % self._stride == 0]
        self._archive = [self._archive[i] for i in keep]
        self._archive_seqs = [self._archive_seqs[i] for i in keep]

    def _older(self) -> int:
        """How many archived points are older than the exact ones (the rest are among them)."""
        if not self._recent:
            return 0
        return bisect_left(self._archive_seqs, self._seq - len(self._recent))

    def _packed(self) -> list[bytes]:
        # Archived points older than the exact ones, then the exact ones.
        return self._archive[: self._older()] + list(self._recent)

    @property
    def points(self) -> _Points:
        """Every point held, oldest first (a snapshot: later appends do not show in it)."""
        return _Points(self._packed(), self._statuses.names)

    def last(self) -> HistoryPoint | None:
        return _unpack(self._recent[-1], self._statuses.names) if self._recent else None

    @property
    def passes(self) -> list[PassMark]:
        """The pass marks held, oldest first."""
        return [PassMark(t, int(n)) for t, n in zip(self._pass_times, self._pass_numbers)]

    def mark_pass(self, mark: PassMark) -> None:
        numbers = self._pass_numbers
        if numbers and numbers[-1] == mark.number:
            return  # the event and the counter report the same pass
        self._pass_times.append(mark.time)
        numbers.append(mark.number)
        if len(numbers) > self._marks_cap:
            if self._archive_cap:  # a long history: keep marks over all of it, every other one
                self._pass_times = self._pass_times[::-1][::2][::-1]
                self._pass_numbers = numbers[::-1][::2][::-1]
            else:  # a short ring: the oldest drop out, as its points do
                del self._pass_times[0]
                del numbers[0]

    def __len__(self) -> int:
        return self._older() + len(self._recent)

    def __iter__(self) -> Iterator[HistoryPoint]:
        return iter(self.points)

    def clear(self) -> None:
        self._recent.clear()
        self._archive.clear()
        self._archive_seqs.clear()
        self._stride = 1
        del self._pass_times[:]
        del self._pass_numbers[:]
