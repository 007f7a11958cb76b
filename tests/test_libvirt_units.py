"""libvirt's job statistics and tuning units against QMP's, at both ends (no libvirt needed)."""

import pytest

from migtui.backend.libvirt.units import (
    JOB_BOUNDED, JOB_COMPLETED, JOB_FAILED, JOB_NONE, MiB, bandwidth_from_libvirt, bandwidth_to_libvirt,
    dirty_rate_from_libvirt, sample_from_job_stats,
)
from migtui.model.sample import parse_query_migrate

# What jobStats() showed for the lab domain at 30 MiB/s and 1 ms (docs/libvirt.md).
RUNNING = {"type": JOB_BOUNDED, "time_elapsed": 12000, "memory_total": 256 * MiB, "memory_processed": 300 * MiB,
           "memory_remaining": 40 * MiB, "memory_dirty_rate": 7700, "memory_page_size": 4096,
           "memory_iteration": 6, "memory_bps": 31_000_000, "downtime": 3260, "setup_time": 4,
           "compression_cache": 64 * MiB, "compression_cache_misses": 10}


def test_a_running_job_reads_as_query_migrate_in_qmps_units():
    sample = sample_from_job_stats(RUNNING, 1.0)
    assert sample.status == "active" and sample.in_flight and sample.time == 1.0 and sample.problems == ()
    ram = sample.section("ram")
    assert ram["transferred"] == 300 * MiB and ram["remaining"] == 40 * MiB and ram["total"] == 256 * MiB
    assert ram["dirty-pages-rate"] == 7700 and ram["page-size"] == 4096  # pages/s on both sides
    assert ram["mbps"] == pytest.approx(248.0)  # 31 MB/s is 248 megabits/s
    assert ram["dirty-sync-count"] == 6
    assert sample.get(None, "expected-downtime") == 3260 and sample.get(None, "downtime") is None
    assert sample.get(None, "total-time") == 12000 and sample.get(None, "setup-time") == 4
    assert sample.info["xbzrle-cache"] == {"cache-size": 64 * MiB, "cache-miss": 10}


def test_the_sample_is_what_parse_query_migrate_makes_of_the_same_reply():
    reply = {"status": "active", "total-time": 12000, "setup-time": 4, "expected-downtime": 3260,
             "ram": {"total": 256 * MiB, "transferred": 300 * MiB, "remaining": 40 * MiB, "dirty-pages-rate": 7700,
                     "page-size": 4096, "dirty-sync-count": 6, "mbps": 248.0},
             "xbzrle-cache": {"cache-size": 64 * MiB, "cache-miss": 10}}
    assert sample_from_job_stats(RUNNING, 5.0) == parse_query_migrate(reply, 5.0)


def test_numbers_libvirt_should_not_send_are_dropped_and_named_in_qmps_words():
    sample = sample_from_job_stats({**RUNNING, "memory_remaining": -1, "memory_bps": float("nan"),
                                    "memory_total": "lots", "time_elapsed": 2**64, "downtime": True}, 1.0)
    ram = sample.section("ram")
    assert "remaining" not in ram and "mbps" not in ram and "total" not in ram and ram["transferred"] == 300 * MiB
    assert sample.get(None, "total-time") is None and sample.get(None, "expected-downtime") is None
    assert sorted(sample.problems) == ["expected-downtime is bool, not a number", "ram.mbps is not finite",
                                       "ram.remaining is negative", "ram.total is str, not a number",
                                       "total-time is absurdly large"]


def test_a_finished_job_carries_the_actual_downtime_or_the_error():
    done = sample_from_job_stats({**RUNNING, "type": JOB_COMPLETED, "downtime": 42}, 1.0)
    assert done.status == "completed" and done.info["downtime"] == 42 and "expected-downtime" not in done.info
    failed = sample_from_job_stats({"type": JOB_FAILED, "errmsg": "Unable to write to socket"}, 1.0)
    assert failed.status == "failed" and failed.error_desc == "Unable to write to socket"
    none = sample_from_job_stats({"type": JOB_NONE}, 1.0)
    assert none.status == "none" and none.info == {"status": "none"} and not none.in_flight


def test_post_copy_is_the_domains_word_not_the_jobs():
    assert sample_from_job_stats(RUNNING, 1.0, postcopy=True).status == "postcopy-active"
    # The stream broke in post-copy: the job runs on, paused, with the memory split across both hosts.
    assert sample_from_job_stats(RUNNING, 1.0, postcopy=True, postcopy_failed=True).status == "postcopy-paused"
    # A finished job is finished, whatever the domain's state said.
    assert sample_from_job_stats({**RUNNING, "type": JOB_COMPLETED}, 1.0, postcopy_failed=True).status == "completed"


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
