"""One `query-migrate` reply, checked, with QEMU's own field names kept.

QEMU's reply shape changed across versions (1.4 had no `mbps` or `setup-time`,
9.1 dropped `disk`), and a broken or hostile monitor can send anything. So a
sample keeps the reply as a dict under QEMU's hyphenated names, drops only the
numbers it cannot trust, and says why in `problems`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

__all__ = [
    "MigrationSample",
    "parse_query_migrate",
    "KNOWN_STATUSES",
    "IN_FLIGHT_STATUSES",
    "FINISHED_STATUSES",
    "DEFAULT_PAGE_SIZE",
]

DEFAULT_PAGE_SIZE = 4096
# Every MigrationStatus value up to QEMU 10.x.
KNOWN_STATUSES = frozenset(
    {
        "none", "setup", "cancelling", "cancelled", "active", "postcopy-active",
        "postcopy-paused", "postcopy-recover-setup", "postcopy-recover", "completed",
        "failed", "colo", "pre-switchover", "device", "wait-unplug",
    }
)
# A migration is in flight in these: poll faster, refuse a second `migrate`.
IN_FLIGHT_STATUSES = KNOWN_STATUSES - {"none", "completed", "failed", "cancelled"}
FINISHED_STATUSES = frozenset({"completed", "failed", "cancelled"})

_TOP_NUMBERS = (
    "total-time", "expected-downtime", "downtime", "setup-time",
    "cpu-throttle-percentage", "postcopy-blocktime",
    # 8.1+, while the dirty limit throttles: microseconds per dirty-ring-full round.
    "dirty-limit-throttle-time-per-round", "dirty-limit-ring-full-time",
)
_SECTIONS = ("ram", "disk", "xbzrle-cache", "compression", "vfio")
# Members QEMU defines as numbers. Unknown members are kept as they come.
_SECTION_NUMBERS = frozenset(
    {
        "transferred", "remaining", "total", "duplicate", "skipped", "normal", "normal-bytes",
        "dirty-pages-rate", "mbps", "dirty-sync-count", "postcopy-requests", "page-size",
        "multifd-bytes", "pages-per-second", "precopy-bytes", "downtime-bytes", "postcopy-bytes",
        "dirty-sync-missed-zero-copy", "cache-size", "bytes", "pages", "cache-miss",
        "cache-miss-rate", "encoding-rate", "overflow", "busy", "busy-rate",
        "compressed-size", "compression-rate",
    }
)
# Above this a counter is absurd (QEMU counters are uint64).
_ABSURD = 2**64


def _is_mapping(value: object) -> bool:
    # QMP replies are plain dicts: answer them without typing.Mapping's slow isinstance check.
    return type(value) is dict or isinstance(value, Mapping)


def _bad_number(value: object) -> str | None:
    """Why a counter cannot be trusted, or None if it can."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"is {type(value).__name__}, not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return "is not finite"
    if value < 0:
        return "is negative"
    if value >= _ABSURD:
        return "is absurdly large"
    return None


_EMPTY: Mapping[str, Any] = MappingProxyType({})  # shared by every sample: read-only


def counter(where: Mapping[str, Any], key: str) -> float | None:
    """A number from one section of a reply (see MigrationSample.section); None when absent."""
    value = where.get(key)
    kind = type(value)
    if kind is int or kind is float:
        return value
    return value if isinstance(value, (int, float)) and kind is not bool else None


@dataclass(frozen=True, slots=True)
class MigrationSample:
    """What QEMU said about its migration at `time` (wall clock, seconds)."""

    time: float
    status: str
    info: Mapping[str, Any]
    problems: tuple[str, ...] = field(default=())

    def get(self, section: str | None, key: str) -> float | None:
        """A counter by QEMU's names, e.g. get('ram', 'dirty-pages-rate'); None when absent."""
        return counter(self.section(section), key)

    def section(self, name: str | None) -> Mapping[str, Any]:
        """One section of the reply, e.g. 'ram' ({} when absent; None: the top level).

        For reading several counters of one section with counter(): one lookup, not one each."""
        where = self.info if name is None else self.info.get(name)
        return where if type(where) is dict or _is_mapping(where) else _EMPTY

    def has(self, section: str) -> bool:
        return _is_mapping(self.info.get(section))

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT_STATUSES

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def error_desc(self) -> str | None:
        desc = self.info.get("error-desc")
        return desc if isinstance(desc, str) else None


def parse_query_migrate(reply: object, time: float) -> MigrationSample:
    """Check a `query-migrate` return value. Never raises."""
    if not _is_mapping(reply):
        return MigrationSample(time, "unknown", {}, (f"query-migrate returned {type(reply).__name__}, not an object",))
    problems: list[str] = []
    info: dict[str, Any] = dict(reply)
    status = info.get("status", "none")  # QEMU 1.4 answers {} before any migration
    if not isinstance(status, str):
        problems.append(f"status is {type(status).__name__}, not a string")
        status = "unknown"
    elif status not in KNOWN_STATUSES:
        problems.append(f"unknown status {status[:40]!r}")
    for key in _TOP_NUMBERS:
        if key in info and (why := _bad_number(info[key])):
            problems.append(f"{key} {why}")
            del info[key]
    for name in _SECTIONS:
        if name not in info:
            continue
        section = info[name]
        if not _is_mapping(section):
            problems.append(f"{name} is {type(section).__name__}, not an object")
            del info[name]
            continue
        clean = dict(section)
        for key, value in section.items():
            kind = type(value)
            if (kind is int or kind is float) and 0 <= value < _ABSURD:
                continue  # the usual counter, checked in one step (NaN fails the comparison)
            is_number = isinstance(value, (int, float)) and kind is not bool
            if (is_number or key in _SECTION_NUMBERS) and (why := _bad_number(value)):
                problems.append(f"{name}.{key} {why}")
                del clean[key]
        info[name] = clean
    return MigrationSample(time, status, info, tuple(problems))
