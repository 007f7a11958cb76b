"""libvirt's job statistics and tuning calls, in QMP's names and units: the libvirt backend's one
conversion boundary, pure (it needs no libvirt to run, so every conversion is tested both ways).

libvirt's job statistics (virDomainGetJobStats) against QMP's query-migrate:

| libvirt                    | unit                         | query-migrate               |
|----------------------------|------------------------------|-----------------------------|
| memory_processed/remaining/total | bytes                  | ram.transferred/remaining/total |
| memory_dirty_rate          | pages/s (x memory_page_size) | ram.dirty-pages-rate (pages/s) |
| memory_bps                 | bytes/s                      | ram.mbps (megabits/s)       |
| memory_iteration           | passes                       | ram.dirty-sync-count        |
| downtime (job running)     | ms, expected                 | expected-downtime           |
| downtime (job completed)   | ms, actual                   | downtime                    |
| time_elapsed, setup_time   | ms                           | total-time, setup-time      |
| compression_*              | bytes, pages                 | xbzrle-cache.*              |
| auto_converge_throttle     | percent                      | cpu-throttle-percentage     |

The pre-flight's dirty rate (virDomainStartDirtyRateCalc, then the domain statistics'
dirtyrate.megabytes_per_second) is QEMU's calc-dirty-rate figure, MiB/s.

Tuning: virDomainMigrateSetMaxSpeed takes MiB/s (QMP's max-bandwidth is bytes/s),
virDomainMigrateSetMaxDowntime ms (as downtime-limit), virDomainMigrateSetCompressionCache
bytes (as xbzrle-cache-size).
"""

from __future__ import annotations

from typing import Any, Mapping

from migtui.model.sample import _ABSURD, MigrationSample, _bad_number

__all__ = [
    "JOB_NONE", "JOB_BOUNDED", "JOB_UNBOUNDED", "JOB_COMPLETED", "JOB_FAILED", "JOB_CANCELLED",
    "sample_from_job_stats", "bandwidth_to_libvirt", "bandwidth_from_libvirt", "dirty_rate_from_libvirt", "MiB",
]

MiB = 2**20
# virDomainJobType
JOB_NONE, JOB_BOUNDED, JOB_UNBOUNDED, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED = range(6)
_FINISHED = {JOB_COMPLETED: "completed", JOB_FAILED: "failed", JOB_CANCELLED: "cancelled"}

# libvirt name -> (query-migrate section or None for the top level, QMP name)
_SAME_UNITS = {
    "memory_processed": ("ram", "transferred"),
    "memory_remaining": ("ram", "remaining"),
    "memory_total": ("ram", "total"),
    "memory_constant": ("ram", "duplicate"),
    "memory_normal": ("ram", "normal"),
    "memory_normal_bytes": ("ram", "normal-bytes"),
    "memory_dirty_rate": ("ram", "dirty-pages-rate"),  # pages/s on both sides
    "memory_iteration": ("ram", "dirty-sync-count"),
    "memory_page_size": ("ram", "page-size"),
    "memory_postcopy_requests": ("ram", "postcopy-requests"),
    "disk_processed": ("disk", "transferred"),
    "disk_remaining": ("disk", "remaining"),
    "disk_total": ("disk", "total"),
    "compression_cache": ("xbzrle-cache", "cache-size"),
    "compression_bytes": ("xbzrle-cache", "bytes"),
    "compression_pages": ("xbzrle-cache", "pages"),
    "compression_cache_misses": ("xbzrle-cache", "cache-miss"),
    "compression_overflow": ("xbzrle-cache", "overflow"),
    "time_elapsed": (None, "total-time"),
    "setup_time": (None, "setup-time"),
    "auto_converge_throttle": (None, "cpu-throttle-percentage"),
}


def sample_from_job_stats(stats: Mapping[str, Any], when: float, postcopy: bool = False,
                          postcopy_failed: bool = False) -> MigrationSample:
    """virDomainGetJobStats' dict as the model's sample at `when`, in query-migrate's names and
    units, checked as parse_query_migrate checks a reply (a number it cannot trust is dropped,
    and `problems` says why) in one pass: no reply is built to be parsed again (figure 8).

    `postcopy`: the domain runs (or is paused) in post-copy (libvirt says so in the domain's
    state reason, not in the job); `postcopy_failed`: its stream broke there (postcopy-paused).
    No job: status "none", as QEMU says it.
    """
    job = stats.get("type", JOB_NONE)
    if job in _FINISHED:
        status = _FINISHED[job]
    elif job in (JOB_BOUNDED, JOB_UNBOUNDED):
        status = "postcopy-paused" if postcopy_failed else "postcopy-active" if postcopy else "active"
    else:
        return MigrationSample(when, "none", {"status": "none"})
    ram: dict[str, Any] = {}
    info: dict[str, Any] = {"status": status, "ram": ram}
    problems: list[str] = []
    same = _SAME_UNITS
    for name, value in stats.items():
        where = same.get(name)
        if where is None:
            if name == "memory_bps":
                where, value = ("ram", "mbps"), value * 8 / 1e6 if _good(value) else value  # bytes/s -> megabits/s
            elif name == "downtime":
                # While the job runs, libvirt's downtime is QEMU's expected-downtime; once it completed, the actual one.
                where = (None, "downtime" if status == "completed" else "expected-downtime")
            else:
                continue
        section, qmp = where
        if not _good(value):
            why = _bad_number(value)
            if why:
                problems.append(f"{qmp if section is None else section + '.' + qmp} {why}")
                continue
        if section is None:
            info[qmp] = value
        elif section == "ram":
            ram[qmp] = value
        else:
            info.setdefault(section, {})[qmp] = value
    if status == "failed" and isinstance(stats.get("errmsg"), str):
        info["error-desc"] = stats["errmsg"]
    return MigrationSample(when, status, info, tuple(problems))


def _good(value: Any) -> bool:
    """The usual counter, checked in one step (NaN fails the comparison); else _bad_number says."""
    kind = type(value)
    return (kind is int or kind is float) and 0 <= value < _ABSURD


def bandwidth_to_libvirt(bytes_per_s: int) -> int:
    """max-bandwidth (bytes/s) -> virDomainMigrateSetMaxSpeed's MiB/s, rounded up: never slower
    than asked; 0 (no limit in QMP) is refused before, as libvirt reads 0 as its default."""
    if bytes_per_s <= 0:
        raise ValueError("libvirt takes a bandwidth of at least 1 MiB/s")
    return -(-int(bytes_per_s) // MiB)


def bandwidth_from_libvirt(mib_per_s: int) -> int:
    """virDomainMigrateGetMaxSpeed's MiB/s -> max-bandwidth in bytes/s."""
    return int(mib_per_s) * MiB


def dirty_rate_from_libvirt(mib_per_s: float) -> float:
    """dirtyrate.megabytes_per_second (MiB/s, as QEMU's calc-dirty-rate) -> bytes/s."""
    return float(mib_per_s) * MiB
