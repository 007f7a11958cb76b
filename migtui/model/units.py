"""Operator values: sizes, rates and times, parsed strictly and printed briefly.

Sizes use binary suffixes (K = KiB), because QEMU's own sizes are binary.
Every refusal is one line that names the accepted forms, so a bad value is
caught before anything reaches QEMU.
"""

from __future__ import annotations

import math
import re
from types import MappingProxyType

__all__ = [
    "InputError",
    "parse_size",
    "parse_rate",
    "parse_time_ms",
    "parse_count",
    "parse_number",
    "format_bytes",
    "format_rate",
    "format_duration",
    "format_ms",
]

# QEMU takes sizes as uint64 but stores several as int64: stay below that.
SIZE_MAX = 2**63 - 1
# QEMU refuses a downtime-limit above 2000 s (MAX_MIGRATE_DOWNTIME_SECONDS).
DOWNTIME_MAX_MS = 2_000_000

_SIZE_FORMS = "a size such as 512K, 100M, 1.5G or 2T (binary: K=KiB), or plain bytes"
_RATE_FORMS = "a rate such as 100M, 100M/s, 1G/s or 125MiB/s (binary: M=MiB), or plain bytes/s"
_TIME_FORMS = "a time such as 300ms, 0.5s or 2s"

_MULTIPLIERS = MappingProxyType({"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40})
_SIZE_RE = re.compile(
    r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[KMGT]?)(?:I?B)?\s*(?P<per>/\s*S)?\s*$"
)
_TIME_RE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>MS|S)\s*$")


class InputError(ValueError):
    """A value typed by an operator that migtui will not send to QEMU."""


def _number(text: object, what: str, forms: str) -> str:
    if not isinstance(text, str):
        text = str(text)
    if not text.strip():
        raise InputError(f"{what}: empty; give {forms}")
    if text.strip().startswith("-"):
        raise InputError(f"{what}: {text.strip()!r} is negative; give {forms}")
    return text


def _parse_bytes(text: object, what: str, forms: str, allow_rate: bool) -> int:
    text = _number(text, what, forms)
    match = _SIZE_RE.match(text.upper())
    if match is None or (match["per"] and not allow_rate):
        raise InputError(f"{what}: {text.strip()!r} is not understood; give {forms}")
    value = float(match["num"]) * _MULTIPLIERS[match["unit"]]
    if not math.isfinite(value) or value > SIZE_MAX:
        raise InputError(f"{what}: {text.strip()!r} is too large; give {forms} below 8E")
    if value != int(value):
        raise InputError(f"{what}: {text.strip()!r} is not a whole number of bytes; give {forms}")
    return int(value)


def parse_size(text: object, what: str = "size") -> int:
    """'1.5G' -> 1610612736. Plain numbers are bytes."""
    return _parse_bytes(text, what, _SIZE_FORMS, allow_rate=False)


def parse_rate(text: object, what: str = "bandwidth") -> int:
    """'100M/s' or '100M' -> bytes per second. Zero is refused: it stalls a migration."""
    value = _parse_bytes(text, what, _RATE_FORMS, allow_rate=True)
    if value == 0:
        raise InputError(f"{what}: 0 would stop the migration; give {_RATE_FORMS}")
    return value


def parse_time_ms(text: object, what: str = "downtime") -> int:
    """'300ms' or '0.3s' -> 300. A unit is required: ms against s is the classic mistake."""
    text = _number(text, what, _TIME_FORMS)
    stripped = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", stripped):
        raise InputError(f"{what}: {stripped!r} has no unit; give {_TIME_FORMS}")
    match = _TIME_RE.match(stripped.upper())
    if match is None:
        raise InputError(f"{what}: {stripped!r} is not understood; give {_TIME_FORMS}")
    ms = float(match["num"]) * (1000 if match["unit"] == "S" else 1)
    if ms > DOWNTIME_MAX_MS:
        raise InputError(f"{what}: {stripped!r} is over QEMU's limit of 2000s; give {_TIME_FORMS}")
    if ms < 1:
        raise InputError(f"{what}: {stripped!r} is under 1ms; give {_TIME_FORMS}")
    return round(ms)


def parse_count(text: object, what: str, low: int, high: int) -> int:
    """A whole number in [low, high], e.g. multifd channels."""
    stripped = str(text).strip()
    if not re.fullmatch(r"\d+", stripped):
        raise InputError(f"{what}: {stripped!r} is not a whole number; give {low} to {high}")
    value = int(stripped)
    if not low <= value <= high:
        raise InputError(f"{what}: {value} is out of range; give {low} to {high}")
    return value


def parse_number(text: object, what: str, low: float, high: float, unit: str = "") -> float:
    """A plain decimal in [low, high], e.g. an interval in seconds or a speed-up factor."""
    stripped = str(text).strip()
    try:
        value = float(stripped)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also refuses nan and inf
        raise InputError(f"{what}: {stripped!r} is not understood; give {unit}from {low:g} to {high:g}")
    return value


def format_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'. None (QEMU did not say) -> '-'."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.1f} {unit}" if abs(value) < 100 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# A rate no link carries: libvirt sets QEMU's max-bandwidth to its largest value (8 EiB/s) when
# no bandwidth is given, meaning no limit.
UNLIMITED_RATE = 2**62


def format_rate(bytes_per_s: float | None) -> str:
    if bytes_per_s is None:
        return "-"
    if bytes_per_s >= UNLIMITED_RATE:
        return "unlimited"
    return f"{format_bytes(bytes_per_s)}/s"


def format_duration(seconds: float | None) -> str:
    """83 -> '1m23s'; the form an operator reads at a glance."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def format_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f}ms" if ms < 10_000 else format_duration(ms / 1000)
