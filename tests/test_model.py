"""The migration model: parsing query-migrate, derived values and history, on QEMU's field names."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migtui.model import MigrationTracker, parse_endpoint, parse_query_migrate
from migtui.model.parameters import check_uri, check_xbzrle_cache_size, parse_parameter
from migtui.model.units import InputError

MiB = 2**20


def active(t, transferred, remaining, total=512 * MiB, dirty_pages=0, passes=1, **extra):
    ram = {
        "transferred": transferred,
        "remaining": remaining,
        "total": total,
        "dirty-pages-rate": dirty_pages,
        "dirty-sync-count": passes,
        "page-size": 4096,
    }
    return parse_query_migrate(
        {"status": "active", "total-time": int(t * 1000), "expected-downtime": 300, "ram": ram, **extra}, 1000 + t
    )


# ---- endpoints ----------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, name, where",
    [
        ("unix:/run/vm1.qmp", "unix", "vm1", "/run/vm1.qmp"),
        ("/run/vm1.qmp", "unix", "vm1", "/run/vm1.qmp"),
        ("web=/run/a.sock", "unix", "web", "/run/a.sock"),
        ("tcp:127.0.0.1:4444", "tcp", "127.0.0.1:4444", ("127.0.0.1", 4444)),
        ("db=tcp:host.example:4444", "tcp", "db", ("host.example", 4444)),
        ("tcp:[::1]:4444", "tcp", "::1:4444", ("::1", 4444)),
    ],
)
def test_endpoints(text, kind, name, where):
    ep = parse_endpoint(text)
    assert (ep.kind, ep.name, ep.address) == (kind, name, where)
    assert ep.named == ("=" in text)


@pytest.mark.parametrize("text", ["", "tcp:host", "tcp:host:99999", "ssh:host", "bad name=/x", "unix:"])
def test_bad_endpoints(text):
    with pytest.raises(InputError, match="endpoint|give"):
        parse_endpoint(text)


def test_loopback_is_local():
    assert parse_endpoint("tcp:127.0.0.1:1").is_local
    assert parse_endpoint("tcp:localhost:1").is_local
    assert not parse_endpoint("tcp:10.0.0.1:1").is_local


# ---- samples ------------------------------------------------------------


def test_legacy_empty_reply_means_no_migration():
    sample = parse_query_migrate({}, 1.0)
    assert sample.status == "none" and not sample.in_flight and sample.problems == ()


def test_sample_keeps_qemu_names_and_unknown_fields():
    reply = {
        "status": "active",
        "ram": {"transferred": 10, "remaining": 5, "total": 15, "future-counter": 7},
        "xbzrle-cache": {"cache-miss-rate": 0.68, "cache-size": 32 * MiB},
        "some-new-thing": {"x": "y"},
    }
    sample = parse_query_migrate(reply, 1.0)
    assert sample.get("ram", "future-counter") == 7
    assert sample.get("xbzrle-cache", "cache-miss-rate") == 0.68
    assert sample.info["some-new-thing"] == {"x": "y"}
    assert sample.get("disk", "total") is None  # QEMU 9.1+ has no disk section
    assert sample.problems == ()


@pytest.mark.parametrize(
    "reply, problem",
    [
        ({"status": "active", "ram": {"transferred": -1}}, "ram.transferred is negative"),
        ({"status": "active", "ram": {"transferred": "10"}}, "ram.transferred is str"),
        ({"status": "active", "ram": {"remaining": 2**70}}, "absurdly large"),
        ({"status": "active", "total-time": True}, "total-time is bool"),
        ({"status": "active", "ram": []}, "ram is list"),
        ({"status": "warp-speed"}, "unknown status"),
        ({"status": 7}, "status is int"),
    ],
)
def test_broken_replies_are_flagged_not_raised(reply, problem):
    sample = parse_query_migrate(reply, 1.0)
    assert any(problem in p for p in sample.problems), sample.problems


def test_non_object_reply():
    sample = parse_query_migrate(["nope"], 1.0)
    assert sample.status == "unknown" and "not an object" in sample.problems[0]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
replies = st.dictionaries(
    st.sampled_from(["status", "ram", "disk", "xbzrle-cache", "total-time", "downtime", "expected-downtime", "x"]),
    json_values,
    max_size=6,
)


@settings(max_examples=1000)
@given(st.lists(replies | json_values, min_size=1, max_size=6))
def test_tracker_survives_any_replies(seq):
    tracker = MigrationTracker(history_len=8)
    for i, reply in enumerate(seq):
        derived = tracker.add(parse_query_migrate(reply, float(i)))
        if derived.progress is not None:
            assert 0.0 <= derived.progress <= 1.0
        assert len(tracker.history) <= 8


# ---- derived values -----------------------------------------------------


def test_throughput_from_transferred_deltas_on_qemus_clock():
    tracker = MigrationTracker()
    tracker.add(active(1.0, 100 * MiB, 412 * MiB))
    d = tracker.add(active(2.0, 200 * MiB, 312 * MiB))
    assert d.throughput_bps == pytest.approx(100 * MiB)
    assert d.elapsed_s == 2.0
    assert d.progress == pytest.approx(1 - 312 / 512)


def test_first_sample_falls_back_to_mbps_in_megabits():
    tracker = MigrationTracker()
    sample = parse_query_migrate({"status": "active", "ram": {"transferred": 1, "remaining": 1, "total": 2, "mbps": 800.0}}, 1)
    assert tracker.add(sample).throughput_bps == pytest.approx(100e6)


def test_dirty_rate_is_pages_times_page_size_defaulting_to_4096():
    tracker = MigrationTracker()
    d = tracker.add(parse_query_migrate({"status": "active", "ram": {"dirty-pages-rate": 1000}}, 1))
    assert d.dirty_bytes_per_s == 4096 * 1000
    d = tracker.add(parse_query_migrate({"status": "active", "ram": {"dirty-pages-rate": 1000, "page-size": 65536}}, 2))
    assert d.dirty_bytes_per_s == 65536 * 1000


def test_progress_going_back_says_why():
    tracker = MigrationTracker()
    tracker.add(active(1.0, 400 * MiB, 112 * MiB))
    d = tracker.add(active(2.0, 500 * MiB, 200 * MiB, dirty_pages=25000, passes=2))
    assert d.progress < 1 - 112 / 512
    assert d.progress_note and "remaining grew" in d.progress_note and "dirtied" in d.progress_note


def test_eta_when_converging_and_none_when_dirtying_faster_than_sending():
    tracker = MigrationTracker()
    tracker.parameters["downtime-limit"] = 300
    tracker.add(active(1.0, 100 * MiB, 400 * MiB))
    d = tracker.add(active(2.0, 200 * MiB, 300 * MiB, dirty_pages=(50 * MiB) // 4096, passes=2))
    # 100 MiB/s out, 50 MiB/s dirtied: net 50 MiB/s to reach the 30 MiB switch-over point.
    assert d.eta_s == pytest.approx((300 - 30) / 50 + 0.3, rel=0.01)
    d = tracker.add(active(3.0, 300 * MiB, 300 * MiB, dirty_pages=(150 * MiB) // 4096, passes=3))
    assert d.eta_s is None


def test_new_migration_resets_rates_and_history_keeps_only_migrations():
    tracker = MigrationTracker(history_len=100)
    idle = parse_query_migrate({}, 0.5)
    tracker.add(idle)
    tracker.add(idle)
    assert len(tracker.history) == 0  # an idle VM adds nothing
    tracker.add(active(1.0, 100 * MiB, 400 * MiB))
    tracker.add(parse_query_migrate({"status": "completed", "total-time": 5000, "downtime": 40,
                                     "ram": {"transferred": 600 * MiB, "remaining": 0, "total": 512 * MiB}}, 1005))
    tracker.add(parse_query_migrate({"status": "completed", "total-time": 5000, "ram": {"transferred": 600 * MiB}}, 1006))
    assert [p.status for p in tracker.history] == ["active", "completed"]
    assert tracker.derived.progress == 1.0
    assert tracker.derived.throughput_bps == pytest.approx(600 * MiB / 5)  # the average, once finished
    d = tracker.add(active(0.5, 10 * MiB, 500 * MiB))  # a new migration: counters restart
    assert d.progress_note is None
    assert d.throughput_bps is None or d.throughput_bps >= 0


def test_history_is_bounded_and_passes_are_marked():
    tracker = MigrationTracker(history_len=10)
    for i in range(50):
        tracker.add(active(i + 1.0, (i + 1) * MiB, 500 * MiB, passes=1 + i // 10))
    assert len(tracker.history) == 10
    assert [m.number for m in tracker.history.passes] == [1, 2, 3, 4, 5][-10:]


def test_an_hour_of_history_keeps_fixed_memory_the_whole_migration_and_the_newest_exactly():
    from migtui.model.history import ARCHIVE_POINTS, FULL_RESOLUTION

    tracker = MigrationTracker(history_len=7200)
    samples = 7200  # an hour at 0.5 s
    for i in range(samples):
        tracker.add(active(0.5 * (i + 1), (i + 1) * MiB, 8 * 1024 * MiB, passes=1 + i // 600))
    history = tracker.history
    points = list(history.points)
    assert len(points) == len(history) <= FULL_RESOLUTION + ARCHIVE_POINTS
    assert history.stride > 1  # the archive thinned itself
    assert points[0].time == pytest.approx(1000.5) and points[0].seq == 0  # the start is still in view
    times = [p.time for p in points]
    assert times == sorted(times) and len(set(times)) == len(times)
    # The newest points are every sample, exact.
    assert [p.seq for p in points[-FULL_RESOLUTION:]] == list(range(samples - FULL_RESOLUTION, samples))
    assert points[-1].transferred == samples * MiB and points[-1].passes == 1 + (samples - 1) // 600
    # Older points are evenly spaced: every stride-th sample.
    older = [p.seq for p in points[:-FULL_RESOLUTION]]
    assert older and all(s % history.stride == 0 for s in older)
    assert {b - a for a, b in zip(older, older[1:])} == {history.stride}
    # Reads are fresh objects; a reader resuming by seq finds where it stopped.
    assert history.last() == points[-1] and history.last() is not points[-1]


def test_a_thousand_passes_keep_bounded_marks_over_the_whole_migration():
    from migtui.model.history import PASS_MARKS, History, PassMark

    history = History(7200)
    for number in range(1, 1201):  # a pass every 3 s for an hour
        history.mark_pass(PassMark(3.0 * number, number))
        history.mark_pass(PassMark(3.0 * number + 0.1, number))  # the event and the counter: one mark
    marks = history.passes
    assert PASS_MARKS // 2 <= len(marks) <= PASS_MARKS
    numbers = [m.number for m in marks]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 1200 and numbers[0] <= 8
    assert all(m.time == 3.0 * m.number for m in marks)


def test_history_point_none_and_status_survive_storage():
    from migtui.model.history import History, HistoryPoint

    history = History(1000)
    point = HistoryPoint(time=1.5, status="postcopy-active", transferred=None, remaining=0.0, ram_transferred=2**53,
                         ram_remaining=None, disk_transferred=None, disk_remaining=None, throughput_bps=1e9,
                         dirty_bytes_per_s=None, expected_downtime_ms=None, passes=7, xbzrle_cache_miss_rate=0.25,
                         xbzrle_overflow=None, xbzrle_encoding_rate=None, xbzrle_pages=None, xbzrle_bytes=None)
    history.append(point)
    (back,) = history.points
    assert back == HistoryPoint(**{**{f: getattr(point, f) for f in point.__slots__}, "seq": 0})
    assert isinstance(back.passes, int)


def test_disk_counts_towards_progress():
    tracker = MigrationTracker()
    sample = parse_query_migrate(
        {"status": "active", "ram": {"transferred": 0, "remaining": 100, "total": 100},
         "disk": {"transferred": 50, "remaining": 50, "total": 100}}, 1)
    d = tracker.add(sample)
    assert d.progress == 0.25 and d.remaining_bytes == 150


# ---- parameters and URIs --------------------------------------------------


def test_friendly_parameter_names_map_to_qemus():
    assert parse_parameter("bandwidth", "1G") == ("max-bandwidth", 2**30)
    assert parse_parameter("downtime", "500ms") == ("downtime-limit", 500)
    assert parse_parameter("downtime-limit", "500") == ("downtime-limit", 500)
    assert parse_parameter("xbzrle-cache", "256M") == ("xbzrle-cache-size", 256 * MiB)
    current = {"cpu-throttle-initial": 20, "block-incremental": False, "tls-creds": ""}
    assert parse_parameter("cpu-throttle-initial", "40", current) == ("cpu-throttle-initial", 40)
    assert parse_parameter("block-incremental", "on", current) == ("block-incremental", True)


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("downtime", "300", "no unit"),
        ("bandwidth", "-1", "negative"),
        ("xbzrle-cache", "100M", "power of two"),
        ("xbzrle-cache", "1K", "power of two"),
        ("cpu-throttle-initial", "lots", "whole number"),
        ("block-incremental", "maybe", "on or off"),
        ("warp", "9", "unknown parameter"),
    ],
)
def test_bad_parameters(name, value, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_parameter(name, value, {"cpu-throttle-initial": 20, "block-incremental": False})


def test_xbzrle_cache_rule():
    assert check_xbzrle_cache_size(64 * MiB) == 64 * MiB


@pytest.mark.parametrize("uri, scheme", [("tcp:10.0.0.2:4444", "tcp"), ("unix:/run/m.sock", "unix"),
                                        ("exec:cat > /dev/null", "exec"), ("fd:mig", "fd")])
def test_uris(uri, scheme):
    assert check_uri(uri) == scheme


@pytest.mark.parametrize("uri", ["", "10.0.0.2:4444", "tcp:", "tcp:host", "http://x", "unix:"])
def test_bad_uris(uri):
    with pytest.raises(InputError, match="give|expected"):
        check_uri(uri)


def test_hints_for_common_refusals():
    from migtui.model.hints import hint_for

    assert "cancel" in hint_for("There's a migration process in progress")
    assert "tcp:" in hint_for("Parameter 'uri' expects a valid migration protocol")
    assert hint_for("something nobody has seen") is None


def test_an_assessment_can_be_reused_for_a_few_seconds_of_the_same_migration(monkeypatch):
    import migtui.model.guidance as guidance
    from migtui.model.vm import VMState

    calls = []
    real = guidance.assess
    monkeypatch.setattr(guidance, "assess", lambda tracker: calls.append(1) or real(tracker))
    from migtui.model.vm import Connection

    vm = VMState(endpoint=parse_endpoint("unix:/x.qmp"), name="x")
    vm.connection = Connection.CONNECTED  # as a session's VM is once it has a sample
    vm.tracker.add(active(1.0, 100 * MiB, 400 * MiB))
    first = vm.assessment()
    assert vm.assessment() is first and len(calls) == 1  # once per sample
    vm.tracker.add(active(2.0, 200 * MiB, 300 * MiB))
    assert vm.assessment(max_age=5.0) is first and len(calls) == 1  # a second old: good enough
    assert vm.assessment() is not first and len(calls) == 2  # the latest, when asked for it
    latest = vm.assessment()
    vm.tracker.add(active(9.0, 900 * MiB, 10 * MiB))
    assert vm.assessment(max_age=5.0) is not latest and len(calls) == 3  # too old
    vm.tracker.add(parse_query_migrate({"status": "completed", "total-time": 9500, "downtime": 40,
                                        "ram": {"transferred": 910 * MiB, "remaining": 0, "total": 512 * MiB}}, 1009.5))
    done = vm.assessment(max_age=5.0)
    assert done.verdict == "completed"  # a new status is never stale
    calls.clear()
    vm.tracker.add(parse_query_migrate({"status": "completed", "total-time": 9500, "downtime": 40,
                                        "ram": {"transferred": 910 * MiB, "remaining": 0, "total": 512 * MiB}}, 1100.0))
    assert vm.assessment() is done and not calls  # a finished migration QEMU repeats: nothing to redo
    vm.tracker.add(parse_query_migrate({"status": "completed", "total-time": 700, "downtime": 9,
                                        "ram": {"transferred": 90 * MiB, "remaining": 0, "total": 512 * MiB}}, 1101.0))
    assert vm.assessment() is not done and calls  # another migration completed between two polls


def test_observe_records_a_sample_and_brings_the_verdict_up_to_date(monkeypatch):
    import migtui.model.guidance as guidance
    from migtui.model.vm import Connection, VMState

    calls = []
    real = guidance.assess
    monkeypatch.setattr(guidance, "assess", lambda tracker: calls.append(1) or real(tracker))
    vm = VMState(endpoint=parse_endpoint("unix:/x.qmp"), name="x")
    vm.connection = Connection.CONNECTED
    vm.observe(parse_query_migrate({"status": "none"}, 999.0))
    assert vm.sample.status == "none" and not calls  # nothing in flight: nothing to assess
    first = active(1.0, 100 * MiB, 400 * MiB)
    vm.observe(first)
    assert vm.sample is first and vm.derived.progress is not None and len(calls) == 1
    verdict = vm.assessment()
    assert len(calls) == 1  # readers only read what observe computed
    vm.observe(active(2.0, 200 * MiB, 300 * MiB), max_age=5.0)  # a big fleet's backend: a second is fresh enough
    assert len(calls) == 1 and vm.assessment(max_age=5.0) is verdict
    vm.observe(active(3.0, 300 * MiB, 200 * MiB), assess=False)  # one of a replay's seek
    assert len(calls) == 1
    vm.refresh_assessment()  # ... which assesses once after the last
    assert len(calls) == 2 and vm.assessment() is not verdict and len(calls) == 2
    bad = parse_query_migrate({"status": "active", "ram": {"transferred": -5, "remaining": 10}}, 1004.0)
    vm.observe(bad)
    assert vm.problems == bad.problems and bad.problems  # what was wrong with the reply is kept


def test_a_big_fleet_passes_an_older_verdict_to_observe():
    from migtui.backend.api import BIG_FLEET, EAGER_ASSESS_EVERY
    from migtui.backend.qmp.backend import QMPBackend

    small = QMPBackend([parse_endpoint(f"vm{i}=unix:/run/vm{i}.qmp") for i in range(BIG_FLEET)])
    big = QMPBackend([parse_endpoint(f"vm{i}=unix:/run/vm{i}.qmp") for i in range(BIG_FLEET + 1)])
    assert small.assess_max_age() == 0.0 and big.assess_max_age() == EAGER_ASSESS_EVERY
    # Each session asks its backend as samples arrive: a fleet that grows past it is throttled.
    session = small.get("vm0")
    assert session.assess_max_age() == 0.0
    small.add(parse_endpoint("one-more=unix:/run/one-more.qmp"))
    assert session.assess_max_age() == EAGER_ASSESS_EVERY


# ---- the VM's log ---------------------------------------------------------------


def test_a_vms_settings_are_stored_once_on_its_tracker():
    from migtui.model.vm import VMState

    vm = VMState(parse_endpoint("unix:/run/vm1.qmp"), "vm1")
    vm.parameters = {"max-bandwidth": 32 * MiB, "downtime-limit": 300}
    vm.capabilities = {"auto-converge": False}
    assert vm.tracker.parameters is vm.parameters and vm.tracker.capabilities is vm.capabilities
    assert (vm.tracker.max_bandwidth, vm.tracker.downtime_limit_ms) == (32 * MiB, 300)
    # What QEMU before 2.4 cannot report back is remembered as set, in place: guidance sees it.
    vm.parameters.update({"max-bandwidth": 8 * MiB, "downtime-limit": 1500})
    vm.capabilities["auto-converge"] = True
    assert (vm.tracker.max_bandwidth, vm.tracker.downtime_limit_ms) == (8 * MiB, 1500)
    assert vm.tracker.capabilities["auto-converge"] is True
    vm.parameters = {"max-bandwidth": "fast", "downtime-limit": True}  # not numbers: not known
    assert (vm.tracker.max_bandwidth, vm.tracker.downtime_limit_ms) == (None, None)


def test_consecutive_passes_share_one_log_line_and_another_record_ends_the_run():
    from migtui.model.endpoint import parse_endpoint
    from migtui.model.vm import LOG_RECORDS, EventRecord, VMState

    vm = VMState(parse_endpoint("unix:/run/vm1.qmp"), "vm1")

    def migration_pass(t, number):
        vm.log_append(EventRecord(1000 + t, "event", "MIGRATION_PASS", f"pass={number}", (number, number)))

    vm.log_append(EventRecord(1000, "event", "MIGRATION", "status=active"))
    for number in range(4, 16):  # 12 passes, 3 s apart: a migration that does not converge
        migration_pass(3 * number, number)
    assert [(r.name, r.detail) for r in vm.log] == [("MIGRATION", "status=active"),
                                                     ("MIGRATION_PASS", "passes 4–15 in 33s")]
    assert vm.log[-1].time == 1012 and vm.log[-1].passes == (4, 15)  # the line keeps when the run began
    vm.log_append(EventRecord(1050, "action", "migrate-set-parameters", "max-bandwidth=1073741824"))
    migration_pass(51, 16)
    migration_pass(52, 17)
    assert [r.detail for r in vm.log][-3:] == ["passes 4–15 in 33s", "max-bandwidth=1073741824",
                                               "passes 16–17 in 1.0s"]
    assert vm.log_total == 16  # every record was counted, joined or not
    # A pass that does not follow the run (a new migration's first), or one without a number, starts a line.
    migration_pass(53, 1)
    vm.log_append(EventRecord(1054, "event", "MIGRATION_PASS", ""))
    assert [r.detail for r in vm.log][-3:] == ["passes 16–17 in 1.0s", "pass=1", ""]
    # A thousand passes take one record, not the whole log.
    for number in range(2, 1002):
        migration_pass(54 + number, number)
    assert len(vm.log) == 7 < LOG_RECORDS and vm.log[-1].detail == "passes 2–1001 in 16m39s"  # 999 s


def test_qemus_all_zero_reply_after_completion_is_the_same_migration_ending():
    # QEMU 7.2's first reply after completion has every time at 0: it is the end of the
    # migration in flight, not a new one starting now (the start time stays, the end is now).
    tracker = MigrationTracker()
    ram = {"transferred": 100, "remaining": 50, "total": 150}
    tracker.add(parse_query_migrate({"status": "active", "total-time": 5000, "ram": ram}, 1005.0))
    started = tracker.started_at
    assert started == pytest.approx(1000.0)
    d = tracker.add(parse_query_migrate({"status": "completed", "total-time": 0, "downtime": 0, "setup-time": 0,
                                         "ram": {"transferred": 150, "remaining": 0, "total": 150}}, 1007.0))
    assert tracker.started_at == started
    assert d.elapsed_s == pytest.approx(7.0)
    assert tracker.history.last().time == pytest.approx(1007.0)


def test_the_dirty_limit_is_qemus_mb_per_second_per_vcpu():
    from migtui.model.parameters import parse_dirty_limit

    assert parse_dirty_limit("50") == 50
    assert parse_dirty_limit("50M/s") == parse_dirty_limit("50MiB/s") == 50
    assert parse_dirty_limit("1G") == 1024
    assert parse_parameter("dirty-limit", "20", {"vcpu-dirty-limit": 1}) == ("vcpu-dirty-limit", 20)
    for bad, fragment in (("0", "out of range"), ("1.5M", "whole number of MB/s"), ("fast", "not understood"),
                          ("-3", "not understood"), ("512K", "whole number of MB/s")):
        with pytest.raises(InputError, match=fragment) as err:
            parse_dirty_limit(bad)
        assert "at least 1, e.g. 50 or 50M/s" in str(err.value) and "\n" not in str(err.value)
    # A QEMU before 8.1 has no such parameter: said here, not by QEMU.
    with pytest.raises(InputError, match=r"no vcpu-dirty-limit \(QEMU 8\.1\+"):
        parse_parameter("vcpu-dirty-limit", "20", {"max-bandwidth": 1})


def test_an_enum_parameter_takes_only_what_the_vms_qemu_lists():
    choices = {"zero-page-detection": ("none", "legacy", "multifd"), "mode": ("normal", "cpr-reboot", "cpr-transfer")}
    current = {"zero-page-detection": "multifd", "mode": "normal"}
    assert parse_parameter("zero-page-detection", " legacy ", current, choices) == ("zero-page-detection", "legacy")
    assert parse_parameter("mode", "cpr-transfer", current, choices) == ("mode", "cpr-transfer")
    with pytest.raises(InputError) as err:
        parse_parameter("zero-page-detection", "fast", current, choices)
    assert str(err.value) == "zero-page-detection: 'fast' is not one this QEMU takes; give one of: none, legacy, multifd"
    with pytest.raises(InputError, match="give one of: normal, cpr-reboot, cpr-transfer"):
        parse_parameter("mode", "Normal", current, choices)
    assert parse_parameter("mode", "anything", current) == ("mode", "anything")  # no schema: QEMU judges
