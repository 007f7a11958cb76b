"""libvirt's job statistics and tuning units against QMP's, at both ends (no libvirt needed)."""

import pytest

from migtui.backend.libvirt.units import (
    JOB_BOUNDED, JOB_COMPLETED, JOB_FAILED, JOB_NONE, MiB, bandwidth_from_libvirt, bandwidth_to_libvirt,
    dirty_rate_from_libvirt, query_migrate_from_job_stats,
)
from migtui.model.sample import parse_query_migrate

# What jobStats() showed for the lab domain at 30 MiB/s and 1 ms (docs/libvirt.md).
RUNNING = {"type": JOB_BOUNDED, "time_elapsed": 12000, "memory_total": 256 * MiB, "memory_processed": 300 * MiB,
           "memory_remaining": 40 * MiB, "memory_dirty_rate": 7700, "memory_page_size": 4096,
           "memory_iteration": 6, "memory_bps": 31_000_000, "downtime": 3260, "setup_time": 4,
           "compression_cache": 64 * MiB, "compression_cache_misses": 10}


def test_a_running_job_reads_as_query_migrate_in_qmps_units():
    reply = query_migrate_from_job_stats(RUNNING)
    assert reply["status"] == "active"
    ram = reply["ram"]
    assert ram["transferred"] == 300 * MiB and ram["remaining"] == 40 * MiB and ram["total"] == 256 * MiB
    assert ram["dirty-pages-rate"] == 7700 and ram["page-size"] == 4096  # pages/s on both sides
    assert ram["mbps"] == pytest.approx(248.0)  # 31 MB/s is 248 megabits/s
    assert ram["dirty-sync-count"] == 6
    assert reply["expected-downtime"] == 3260 and "downtime" not in reply
    assert reply["xbzrle-cache"] == {"cache-size": 64 * MiB, "cache-miss": 10}
    sample = parse_query_migrate(reply, 1.0)
    assert sample.problems == () and sample.in_flight


def test_a_finished_job_carries_the_actual_downtime_or_the_error():
    done = query_migrate_from_job_stats({**RUNNING, "type": JOB_COMPLETED, "downtime": 42})
    assert done["status"] == "completed" and done["downtime"] == 42 and "expected-downtime" not in done
    failed = query_migrate_from_job_stats({"type": JOB_FAILED, "errmsg": "Unable to write to socket"})
    assert failed["status"] == "failed" and failed["error-desc"] == "Unable to write to socket"
    assert query_migrate_from_job_stats({"type": JOB_NONE}) == {"status": "none"}
    assert query_migrate_from_job_stats(RUNNING, postcopy=True)["status"] == "postcopy-active"


@pytest.mark.parametrize("asked, mib", [(MiB, 1), (100 * MiB, 100), (100 * MiB + 1, 101), (512 * 1024, 1)])
def test_bandwidth_goes_to_libvirt_in_mib_per_s_never_slower_than_asked(asked, mib):
    assert bandwidth_to_libvirt(asked) == mib
    assert bandwidth_from_libvirt(mib) >= asked


def test_no_limit_is_refused_for_libvirt():
    with pytest.raises(ValueError, match="at least 1 MiB/s"):
        bandwidth_to_libvirt(0)


def test_the_pre_flights_dirty_rate_comes_from_libvirt_in_mib_per_s():
    assert dirty_rate_from_libvirt(0) == 0
    assert dirty_rate_from_libvirt(12) == 12 * MiB  # dirtyrate.megabytes_per_second is QEMU's MiB/s
