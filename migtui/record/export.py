"""A recording's time series as CSV (pure: no Textual). The dashboard as SVG is the
console's: migtui.ui.export, which also runs `migtui export`."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, TextIO

from migtui.model.derived import MigrationTracker
from migtui.model.units import InputError
from migtui.record.replay import Recording, load_recording

__all__ = ["CSV_COLUMNS", "csv_rows", "export_csv"]

CSV_COLUMNS = (
    "time", "elapsed-s", "status",
    "ram-transferred", "ram-remaining", "ram-total",
    "disk-transferred", "disk-remaining", "disk-total",
    "throughput-bps", "dirty-bytes-per-s", "expected-downtime-ms", "passes", "progress",
    "xbzrle-cache-size", "xbzrle-bytes", "xbzrle-pages", "xbzrle-cache-miss", "xbzrle-cache-miss-rate",
    "xbzrle-encoding-rate", "xbzrle-overflow",
)
# column -> (query-migrate section, key)
_COUNTERS = {
    "ram-transferred": ("ram", "transferred"), "ram-remaining": ("ram", "remaining"), "ram-total": ("ram", "total"),
    "disk-transferred": ("disk", "transferred"), "disk-remaining": ("disk", "remaining"),
    "disk-total": ("disk", "total"), "expected-downtime-ms": (None, "expected-downtime"),
    "xbzrle-cache-size": ("xbzrle-cache", "cache-size"), "xbzrle-bytes": ("xbzrle-cache", "bytes"),
    "xbzrle-pages": ("xbzrle-cache", "pages"), "xbzrle-cache-miss": ("xbzrle-cache", "cache-miss"),
    "xbzrle-cache-miss-rate": ("xbzrle-cache", "cache-miss-rate"),
    "xbzrle-encoding-rate": ("xbzrle-cache", "encoding-rate"), "xbzrle-overflow": ("xbzrle-cache", "overflow"),
}


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(round(t * 1000)) % 1000:03d}Z"


def csv_rows(recording: Recording) -> list[dict[str, Any]]:
    """One row per sample. Throughput and dirty rate are computed as the replay dashboard computes them."""
    tracker = MigrationTracker(history_len=16)
    limit = recording.header.get("parameters", {}) if isinstance(recording.header.get("parameters"), dict) else {}
    tracker.parameters = {"downtime-limit": limit.get("downtime-limit")}
    first = recording.samples[0].time if recording.samples else 0.0
    rows = []
    for sample in recording.samples:
        d = tracker.add(sample)
        row: dict[str, Any] = {
            "time": _iso(sample.time),
            "elapsed-s": round(sample.time - first, 3),
            "status": sample.status,
            "throughput-bps": None if d.throughput_bps is None else round(d.throughput_bps),
            "dirty-bytes-per-s": None if d.dirty_bytes_per_s is None else round(d.dirty_bytes_per_s),
            "passes": d.passes,
            "progress": None if d.progress is None else round(d.progress, 4),
        }
        for column, (section, key) in _COUNTERS.items():
            row[column] = sample.get(section, key)
        rows.append(row)
    return rows


def export_csv(recording: Recording, out: Path | str | TextIO) -> int:
    """Write the time series (a header row, then one row per sample); returns the number of rows."""
    rows = csv_rows(recording)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in CSV_COLUMNS})
    text = buffer.getvalue()
    if isinstance(out, (str, Path)):
        Path(out).write_text(text)
    else:
        out.write(text)
    return len(rows)
