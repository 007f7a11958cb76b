"""The backend against real QEMU (Debian's 7.2 here), on lab VMs under TCG.

The lab guest dirties ~100 MB/s, so QEMU's defaults (128 MiB/s, 300 ms) never
converge on it, while a high bandwidth and a downtime limit of seconds do.
Tests marked ``on_both_qemus`` run on QEMU 10.0 too (see tests/lab_fixtures.py).
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from qemu.qmp import QMPClient

from lab_fixtures import on_both_qemus, qemu_required, require_qemu10, wait_until
from migtui.model.vm import Connection
from migtui.backend.qmp.controls import (
    MigrationOptions,
    cancel_migration,
    continue_migration,
    plan_recovery,
    recover_postcopy,
    set_capabilities,
    set_parameters,
    start_migration,
    start_postcopy,
)
from migtui.backend.qmp.dialect import Unsupported
from migtui.backend.errors import QMPRefused, Refused
from migtui.backend.messages import ActionResult, VMEvent

pytestmark = [qemu_required, pytest.mark.qemu]

CONVERGING = MigrationOptions(bandwidth=4 * 2**30, downtime_ms=20_000)
NOT_CONVERGING = MigrationOptions(bandwidth=32 * 2**20, downtime_ms=1)


async def connected_pair(open_session, source, destination, **options):
    src_messages: list = []
    src = open_session(source.endpoint, src_messages, **options)
    dst = open_session(destination.endpoint, **options)
    assert await src.wait_connected(10), src.vm.reason
    assert await dst.wait_connected(10), dst.vm.reason
    await wait_until(lambda: src.vm.capabilities.get("events") and dst.vm.capabilities.get("events"))
    return src, dst, src_messages


def is_10(lab) -> bool:
    return lab.qemu_version.startswith("10.")


@on_both_qemus
async def test_connect_learns_who_is_there(lab_pair, open_session):
    source, destination, lab = lab_pair
    src, dst, _ = await connected_pair(open_session, source, destination)
    assert src.vm.connection == Connection.CONNECTED
    assert src.vm.qemu_version == dst.vm.qemu_version == lab.qemu_version  # query-version, as --version
    assert src.vm.qemu_version.startswith("10.0." if is_10(lab) else "7.")
    assert src.vm.dialect == "modern" and src.dialect.modern
    assert not src.dialect.has("migrate_set_speed")  # removed in 6.0: never sent
    assert src.vm.name == source.name  # from query-name (-name)
    assert src.vm.run_state == "running"
    assert dst.vm.run_state == "inmigrate"
    assert src.vm.parameters["max-bandwidth"] == 128 * 2**20
    assert src.vm.parameters["downtime-limit"] == 300
    assert src.dialect.has_block_migration is not is_10(lab)  # 9.1 removed blk
    assert "postcopy-ram" in src.vm.capabilities
    # 10.0 dropped compress (9.1) and block (9.1) and has the dirty limit (8.1).
    assert ("compress" in src.vm.capabilities) is not is_10(lab)
    assert ("block" in src.vm.capabilities) is not is_10(lab)
    assert ("dirty-limit" in src.vm.capabilities) is is_10(lab)
    assert src.vm.migration_status == "none"


@on_both_qemus
async def test_converging_migration_completes_and_destination_runs(lab_pair, open_session):
    source, destination, lab = lab_pair
    src, dst, messages = await connected_pair(open_session, source, destination)
    plan = await start_migration(src, CONVERGING, destination=dst)
    assert plan.uri.startswith("unix:")
    await wait_until(lambda: src.vm.migration_status == "completed", timeout=60)
    await wait_until(lambda: dst.vm.run_state == "running", timeout=10)
    # The sample that shows "completed" lands before the query-status it prompts is answered.
    await wait_until(lambda: src.vm.run_state == "postmigrate", timeout=10)
    sample = src.vm.sample
    assert sample.get(None, "downtime") is not None
    assert src.vm.derived.progress == 1.0
    events = [m.data.get("status") for m in messages if isinstance(m, VMEvent) and m.event == "MIGRATION"]
    assert events[-1] == "completed" and "active" in events
    # 10.0 goes through `device` in every switch-over (where Proxmox's loop died); 7.2 never does.
    assert ("device" in events) is is_10(lab), events
    sent = [m.command for m in messages if isinstance(m, ActionResult)]
    assert sent == ["migrate-set-parameters", "migrate"]
    # Reading the default event listener keeps it from growing.
    assert src._client is not None and src._client.events.empty()


@on_both_qemus
async def test_non_converging_passes_climb_and_cancel_leaves_source_running(lab_pair, open_session):
    source, destination, _ = lab_pair
    src, dst, _ = await connected_pair(open_session, source, destination, active_interval=0.2)
    await start_migration(src, NOT_CONVERGING, destination=dst)
    await wait_until(lambda: (src.vm.derived.passes or 0) >= 4, timeout=60)
    assert src.vm.migration_status == "active"
    # The verdict, from QEMU's own figures: the guest dirties faster than 32 MiB/s sends.
    await wait_until(lambda: src.vm.assessment().verdict == "not-converging", timeout=20)
    assert "against" in src.vm.assessment().why, src.vm.assessment().why
    assert src.vm.derived.dirty_bytes_per_s > 0
    assert src.vm.derived.throughput_bps > 0
    assert len(src.vm.tracker.history.passes) >= 3
    # A second migrate is refused before anything is sent.
    with pytest.raises(Refused, match="already migrating"):
        await start_migration(src, CONVERGING, uri="exec:cat > /dev/null")
    # Capabilities cannot change mid-migration: said before sending.
    with pytest.raises(Refused, match="while a migration runs"):
        await set_capabilities(src, {"xbzrle": True})
    await cancel_migration(src)
    await wait_until(lambda: src.vm.migration_status == "cancelled", timeout=20)
    await wait_until(lambda: src.vm.run_state == "running", timeout=10)


async def test_bandwidth_change_during_migration_reaches_qemu(lab_pair, open_session):
    source, destination, _ = lab_pair
    src, dst, _ = await connected_pair(open_session, source, destination)
    await start_migration(src, NOT_CONVERGING, destination=dst)
    await wait_until(lambda: src.vm.migration_status == "active", timeout=20)
    await set_parameters(src, {"max-bandwidth": 64 * 2**20, "downtime-limit": 2})
    reply = await src.query("query-migrate-parameters")
    assert reply["max-bandwidth"] == 64 * 2**20 and reply["downtime-limit"] == 2
    assert src.vm.parameters["max-bandwidth"] == 64 * 2**20
    await cancel_migration(src)
    await wait_until(lambda: src.vm.migration_status == "cancelled", timeout=20)


@on_both_qemus
async def test_xbzrle_stats_appear(lab_pair, open_session):
    source, destination, _ = lab_pair
    src, dst, _ = await connected_pair(open_session, source, destination, active_interval=0.2)
    options = MigrationOptions(bandwidth=64 * 2**20, downtime_ms=1, xbzrle=True, xbzrle_cache=32 * 2**20)
    await start_migration(src, options, destination=dst)
    assert src.vm.capabilities["xbzrle"] is True
    assert src.vm.parameters["xbzrle-cache-size"] == 32 * 2**20
    await wait_until(lambda: (src.vm.sample.get("xbzrle-cache", "cache-miss") or 0) > 0, timeout=60)
    sample = src.vm.sample
    assert sample.get("xbzrle-cache", "cache-size") == 32 * 2**20
    assert 0 <= sample.get("xbzrle-cache", "cache-miss-rate") <= 1
    assert any(p.xbzrle_cache_miss_rate is not None for p in src.vm.tracker.history)
    await cancel_migration(src)
    await wait_until(lambda: src.vm.migration_status == "cancelled", timeout=20)


async def test_block_migration_shows_disk_progress(lab_pair_disk, open_session):
    source, destination, _ = lab_pair_disk
    src, dst, _ = await connected_pair(open_session, source, destination, active_interval=0.1)
    options = MigrationOptions(bandwidth=16 * 2**20, downtime_ms=20_000, block=True)
    await start_migration(src, options, destination=dst)
    await wait_until(lambda: src.vm.sample.has("disk"), timeout=30)
    disk_total = src.vm.sample.get("disk", "total")
    assert disk_total and disk_total >= 64 * 2**20
    await set_parameters(src, {"max-bandwidth": 4 * 2**30})
    await wait_until(lambda: src.vm.migration_status == "completed", timeout=90)
    assert any(p.disk_transferred for p in src.vm.tracker.history)
    await wait_until(lambda: dst.vm.run_state == "running", timeout=10)


@on_both_qemus
async def test_postcopy_switch_completes(lab_pair, open_session):
    source, destination, _ = lab_pair
    src, dst, _ = await connected_pair(open_session, source, destination)
    await start_migration(src, MigrationOptions(bandwidth=32 * 2**20, downtime_ms=1, postcopy=True), destination=dst)
    assert dst.vm.capabilities.get("postcopy-ram") is True  # on at both ends
    await wait_until(lambda: src.vm.migration_status == "active", timeout=20)
    await set_parameters(src, {"max-bandwidth": 4 * 2**30})
    await start_postcopy(src)
    await wait_until(lambda: src.vm.migration_status == "completed", timeout=60)
    await wait_until(lambda: dst.vm.run_state == "running", timeout=10)


@on_both_qemus
async def test_paused_before_switchover_then_continued_goes_through_device(lab_pair, open_session):
    """pre-switchover and device, the states 10.0 shows in switch-overs, on a real QEMU: each
    gets its verdict, and migrate-continue from migtui finishes the migration."""
    source, destination, _ = lab_pair
    src, dst, messages = await connected_pair(open_session, source, destination)
    await set_capabilities(src, {"pause-before-switchover": True})
    await start_migration(src, CONVERGING, destination=dst)
    await wait_until(lambda: src.vm.migration_status == "pre-switchover", timeout=60)
    assessment = src.vm.assessment()
    assert assessment.verdict == "switching-over" and "send migrate-continue" in assessment.why, assessment
    assert src.vm.in_flight and (await src.query("query-status"))["status"] == "finish-migrate"
    await continue_migration(src)
    await wait_until(lambda: src.vm.migration_status == "completed", timeout=30)
    await wait_until(lambda: dst.vm.run_state == "running", timeout=10)
    events = [m.data.get("status") for m in messages if isinstance(m, VMEvent) and m.event == "MIGRATION"]
    assert events[-3:] == ["pre-switchover", "device", "completed"], events


@on_both_qemus
async def test_multifd_migration_completes_over_its_channels(lab_pair, open_session):
    source, destination, lab = lab_pair
    src, dst, _ = await connected_pair(open_session, source, destination)
    # 3 channels: QEMU's default is 2, so the destination must be told too.
    plan = await start_migration(src, MigrationOptions(bandwidth=4 * 2**30, downtime_ms=20_000, multifd=3),
                                 destination=dst)
    # Alike at both ends, set before migrate-incoming (8.1+ refuses multifd after it).
    assert [c for c, _ in plan.destination] == ["migrate-set-capabilities", "migrate-set-parameters",
                                                "migrate-incoming"]
    assert dst.vm.capabilities["multifd"] is True and src.vm.capabilities["multifd"] is True
    await wait_until(lambda: src.vm.migration_status == "completed", timeout=60)
    await wait_until(lambda: dst.vm.run_state == "running", timeout=10)
    assert (await dst.query("query-migrate-parameters"))["multifd-channels"] == 3
    # The pages went over the channels, not the main stream.
    assert src.vm.sample.get("ram", "multifd-bytes") > 0


@on_both_qemus
async def test_what_this_qemu_refuses_together_is_refused_before_anything_is_sent(lab_pair, open_session):
    """dialect.py's table of refused pairs and removed blk, held against real QEMU: 10.0 refuses
    multifd with xbzrle, and has no blk; 7.2 takes both. migtui refuses on 10.0 before sending."""
    source, destination, lab = lab_pair
    src, dst, actions = await logged_pair(open_session, source, destination)
    pair = {"capabilities": [{"capability": c, "state": True} for c in ("multifd", "xbzrle")]}
    if is_10(lab):
        with pytest.raises(Unsupported, match="^QEMU 10.0.[0-9]+ on src1 refuses multifd with xbzrle") as err:
            await start_migration(src, MigrationOptions(xbzrle=True, multifd=2), destination=dst)
        assert "\n" not in str(err.value)
        with pytest.raises(Unsupported, match=r"^QEMU 10.0.[0-9]+ has no block migration \(blk was removed"):
            await start_migration(src, MigrationOptions(block=True), destination=dst)
        assert actions() == []  # nothing reached either QEMU
        assert "socket-address" not in await dst.query("query-migrate")
        # QEMU says so itself when asked: the table is not migtui's invention.
        with pytest.raises(QMPRefused, match="Multifd is not compatible with xbzrle"):
            await src.execute("migrate-set-capabilities", pair)
        with pytest.raises(QMPRefused, match="blk"):
            await src.execute("migrate", {"uri": "exec:cat > /dev/null", "blk": True})
    else:
        assert src.dialect.refused_together({"multifd": True, "xbzrle": True}) is None
        await src.execute("migrate-set-capabilities", pair)  # 7.2 takes them
        assert {"multifd", "xbzrle"} <= await caps_on(src)
    assert src.vm.migration_status == "none" and (await src.query("query-status"))["status"] == "running"


async def test_a_72_source_migrates_to_a_10_destination_started_with_its_machine_type(lab_pair, open_session):
    """The upgrade path: a VM on 7.2 moves to a host running 10.0, whose destination QEMU is
    started with the source's versioned machine type (7.2's "pc" is pc-i440fx-7.2)."""
    source, _, lab = lab_pair
    assert lab.qemu_version.startswith("7.2.")
    newer = await lab.add_vm("dst10", incoming=True, qemu=require_qemu10(), machine="pc-i440fx-7.2")
    src = open_session(source.endpoint)
    dst = open_session(newer.endpoint)
    assert await src.wait_connected(10) and await dst.wait_connected(10)
    assert dst.vm.qemu_version.startswith("10.0.") and src.vm.qemu_version.startswith("7.2.")
    await start_migration(src, CONVERGING, destination=dst)
    await converges_now(src, dst)
    assert (await dst.query("query-status"))["status"] == "running"


async def test_across_versions_a_machine_type_the_destination_lacks_or_does_not_run_is_refused_unsent(
        lab_pair, open_session):
    """The cross-version pre-flight: a 10.0 source runs pc-i440fx-10.0, which 7.2 has not; a
    10.0 destination started with its own pc runs another machine type than a 7.2 source.
    Both are refused before anything is sent, saying why."""
    source, destination, lab = lab_pair
    assert lab.qemu_version.startswith("7.2.")
    newer_source = await lab.add_vm("src10", incoming=False, qemu=require_qemu10())
    newer_destination = await lab.add_vm("dst10", incoming=True, qemu=require_qemu10())
    src10, dst72 = open_session(newer_source.endpoint), open_session(destination.endpoint)
    src72, dst10 = open_session(source.endpoint), open_session(newer_destination.endpoint)
    sessions = (src10, dst72, src72, dst10)
    for session in sessions:
        assert await session.wait_connected(10), session.vm.reason
    sent: list[tuple[str, str]] = []
    for session in sessions:
        def record(command, args=None, *rest, _session=session, _execute=session.execute, **kw):
            sent.append((_session.vm.name, command))
            return _execute(command, args, *rest, **kw)
        session.execute = record
    with pytest.raises(Refused, match=r"^QEMU 7\.2\.\d+ on dst1 has no machine type pc-i440fx-10\.0 "
                                      r"\(src10 runs QEMU 10\.0\.\d+, dst1 QEMU 7\.2\.\d+\)"):
        await start_migration(src10, CONVERGING, destination=dst72)
    with pytest.raises(Refused, match=r"^dst10 runs machine type pc-i440fx-10\.0, src1 runs pc-i440fx-7\.2 .*"
                                      r"restart dst10 with -machine pc-i440fx-7\.2 -incoming defer"):
        await start_migration(src72, CONVERGING, destination=dst10)
    assert sent == []
    for session in sessions:  # QEMU's own word: no migration anywhere, destinations not listening
        info = await session.query("query-migrate")
        assert info.get("status") in (None, "none") and "socket-address" not in info, (session.vm.name, info)
    assert (await dst72.query("query-status"))["status"] == "inmigrate"


@on_both_qemus
async def test_a_postcopy_whose_stream_broke_is_recovered_and_completes(lab_pair, open_session):
    """migrate-pause breaks the stream in post-copy: both ends park in postcopy-paused, the
    VM's memory split between them. migtui's recovery (migrate-recover on the destination,
    then migrate with resume on the source) gets it going again to completion."""
    source, destination, lab = lab_pair
    src, dst, messages = await connected_pair(open_session, source, destination)
    with pytest.raises(Refused, match="src1 is not paused in post-copy \\(status none\\): nothing to recover"):
        plan_recovery(src, dst)
    await start_migration(src, MigrationOptions(bandwidth=32 * 2**20, downtime_ms=1, postcopy=True), destination=dst)
    await set_parameters(src, {"max-postcopy-bandwidth": 4 * 2**20})  # slow: still in post-copy when broken
    await wait_until(lambda: src.vm.migration_status == "active", timeout=20)
    await start_postcopy(src)
    # Both ends: a destination still loading the switch-over package when the stream breaks
    # cannot pause (7.2's exits: "loadvm failed"), and the VM is lost.
    await wait_until(lambda: src.vm.migration_status == dst.vm.migration_status == "postcopy-active", timeout=20)
    await src.execute("migrate-pause")
    await wait_until(lambda: src.vm.migration_status == dst.vm.migration_status == "postcopy-paused", timeout=20)
    assert src.vm.assessment().verdict == "post-copy" and "paused" in src.vm.assessment().why
    steps = plan_recovery(src, dst)
    assert [(side, command) for side, (command, _) in steps] == [("destination", "migrate-recover"),
                                                                 ("source", "migrate")]
    uri = steps[0][1][1]["uri"]
    assert uri.startswith("unix:") and steps[1][1][1] == {"uri": uri, "resume": True}
    await set_parameters(src, {"max-postcopy-bandwidth": 0})
    sent = await recover_postcopy(src, dst, steps)
    assert sent == steps
    await converges_now(src, dst)
    events = [m.data.get("status") for m in messages if isinstance(m, VMEvent) and m.event == "MIGRATION"]
    recovered = ["postcopy-paused", "postcopy-recover-setup", "postcopy-recover", "postcopy-active", "completed"]
    if not is_10(lab):
        recovered.remove("postcopy-recover-setup")  # 10.0 added it
    assert events[-len(recovered):] == recovered, events


async def test_refusals_carry_qemus_sentence(lab_pair, open_session):
    source, destination, _ = lab_pair
    src, _, messages = await connected_pair(open_session, source, destination)
    with pytest.raises(QMPRefused) as err:
        await src.execute("migrate-set-parameters", {"xbzrle-cache-size": 1000})
    assert "xbzrle_cache_size" in err.value.desc or "cache" in err.value.desc
    assert any(isinstance(m, ActionResult) and not m.ok for m in messages)
    with pytest.raises(Refused, match="postcopy-ram"):
        await start_postcopy(src)


async def test_second_client_is_reported_as_monitor_busy(lab_pair, open_session):
    source, _, _ = lab_pair
    holder = QMPClient("holder")
    await holder.connect(str(source.qmp_path))
    try:
        session = open_session(source.endpoint, greeting_timeout=1.0)
        await wait_until(lambda: session.vm.connection == Connection.MONITOR_BUSY, timeout=10)
        assert session.vm.reason.startswith("monitor busy: another client holds it")
    finally:
        await holder.disconnect()
    # Once the holder leaves, the session gets in by itself.
    await wait_until(lambda: session.vm.connection == Connection.CONNECTED, timeout=15)


async def test_stalled_qemu_is_unresponsive_then_recovers(lab_pair, open_session):
    source, _, _ = lab_pair
    session = open_session(source.endpoint, request_timeout=0.5, poll_interval=0.1)
    assert await session.wait_connected(10)
    os.kill(source.pid, signal.SIGSTOP)
    try:
        await wait_until(lambda: session.vm.connection == Connection.UNRESPONSIVE, timeout=10)
        assert "no answer to query-migrate" in session.vm.reason
        inflight = session._inflight
        await asyncio.sleep(0.3)  # let several poll intervals pass: still the same single request
        assert session._inflight is inflight
    finally:
        os.kill(source.pid, signal.SIGCONT)
    await wait_until(lambda: session.vm.connection == Connection.CONNECTED, timeout=10)


async def test_killed_qemu_keeps_last_sample_and_reason(lab_pair, open_session):
    source, destination, lab = lab_pair
    src, dst, _ = await connected_pair(open_session, source, destination, backoff_max=0.5)
    await start_migration(src, NOT_CONVERGING, destination=dst)
    await wait_until(lambda: (src.vm.derived.passes or 0) >= 2, timeout=60)
    history_len = len(src.vm.tracker.history)
    await source.kill()
    await wait_until(lambda: src.vm.connection == Connection.DISCONNECTED, timeout=10)
    assert src.vm.reason
    assert src.vm.migration_status == "active"  # as QEMU last saw it, never invented
    assert len(src.vm.tracker.history) >= history_len
    # The destination exits when its source dies ("load of migration failed").
    await wait_until(lambda: dst.vm.connection == Connection.DISCONNECTED, timeout=20)


async def test_a_qemu_restarted_on_the_same_socket_is_reconnected(lab_pair, open_session):
    from migtui.lab.qemu import QemuVM

    source, destination, lab = lab_pair
    src, dst, _ = await connected_pair(open_session, source, destination, backoff_max=0.5)
    await start_migration(src, NOT_CONVERGING, destination=dst)
    await wait_until(lambda: src.vm.in_flight, timeout=30)
    first_pid = source.pid
    await source.kill()
    await wait_until(lambda: src.vm.connection == Connection.DISCONNECTED, timeout=10)
    # The same VM started again by its operator: same monitor socket, a new QEMU behind it.
    again = QemuVM(source.name, source.runtime_dir, source.kernel, mem=source.mem, accel=source.accel,
                   qemu=source._qemu)
    lab.vms.append(again)  # the lab reaps it
    await again.start()
    await again.wait_ready(30)
    assert again.pid != first_pid
    await wait_until(lambda: src.vm.connection == Connection.CONNECTED and src.vm.run_state == "running",
                     timeout=15)
    assert src.vm.migration_status == "none"  # the new QEMU's own answer: the old one was migrating
    await src.sample()  # and it answers through the same session
    assert src.vm.connection == Connection.CONNECTED


# ---- a refused start leaves both VMs as they were -----------------------------


async def logged_pair(open_session, source, destination):
    """Sessions whose actions (ActionResult: which VM, command, ok) go to one list, in the order sent."""
    messages: list = []
    src = open_session(source.endpoint, messages)
    dst = open_session(destination.endpoint, messages)
    assert await src.wait_connected(10), src.vm.reason
    assert await dst.wait_connected(10), dst.vm.reason
    await wait_until(lambda: src.vm.capabilities.get("events") and dst.vm.capabilities.get("events"))

    def actions() -> list[tuple[str, str, bool]]:
        return [("src" if m.vm == src.key else "dst", m.command, m.ok) for m in messages if isinstance(m, ActionResult)]

    return src, dst, actions


async def caps_on(session) -> set[str]:
    return {c["capability"] for c in await session.query("query-migrate-capabilities") if c["state"]}


async def converges_now(src, dst) -> None:
    await wait_until(lambda: src.vm.migration_status == "completed", timeout=60)
    await wait_until(lambda: dst.vm.run_state == "running", timeout=10)


async def test_capabilities_the_source_refuses_never_reach_the_destination(lab_pair, open_session):
    source, destination, _ = lab_pair
    src, dst, actions = await logged_pair(open_session, source, destination)
    # An earlier tuning migtui does not look at: 7.2 refuses postcopy-ram with it.
    await set_capabilities(src, {"x-ignore-shared": True})
    src_caps, src_params, dst_caps = await caps_on(src), await src.query("query-migrate-parameters"), await caps_on(dst)
    before = len(actions())
    with pytest.raises(QMPRefused, match="Postcopy is not compatible with ignore-shared"):
        await start_migration(src, MigrationOptions(bandwidth=64 * 2**20, xbzrle=True, postcopy=True), destination=dst)
    assert actions()[before:] == [("src", "migrate-set-capabilities", False)]
    # Neither VM changed: the destination was never told to listen and can still be migrated to.
    assert await caps_on(src) == src_caps and await src.query("query-migrate-parameters") == src_params
    assert await caps_on(dst) == dst_caps
    assert "socket-address" not in await dst.query("query-migrate")
    assert (await dst.query("query-status"))["status"] == "inmigrate"
    await set_capabilities(src, {"x-ignore-shared": False})
    await start_migration(src, CONVERGING, destination=dst)
    await converges_now(src, dst)
    assert [a for a in actions() if a[0] == "dst"] == [("dst", "migrate-incoming", True)]


async def test_a_refusal_after_the_source_is_set_puts_the_source_back(lab_pair, open_session):
    source, destination, _ = lab_pair
    src, dst, actions = await logged_pair(open_session, source, destination)
    # The destination refuses postcopy-ram while x-ignore-shared is on: after the source took its settings.
    await set_capabilities(dst, {"x-ignore-shared": True})
    src_caps, src_params = await caps_on(src), await src.query("query-migrate-parameters")
    before = len(actions())
    options = MigrationOptions(bandwidth=64 * 2**20, downtime_ms=1500, xbzrle=True, postcopy=True)
    with pytest.raises(QMPRefused, match="ignore-shared"):
        await start_migration(src, options, destination=dst)
    assert actions()[before:] == [
        ("src", "migrate-set-capabilities", True),
        ("src", "migrate-set-parameters", True),
        ("dst", "migrate-set-capabilities", False),
        ("src", "migrate-set-parameters", True),  # put back, latest first
        ("src", "migrate-set-capabilities", True),
    ]
    assert await caps_on(src) == src_caps and await src.query("query-migrate-parameters") == src_params
    assert src.vm.capabilities["xbzrle"] is False and src.vm.parameters["max-bandwidth"] == 128 * 2**20
    assert "socket-address" not in await dst.query("query-migrate")
    await set_capabilities(dst, {"x-ignore-shared": False})
    plan = await start_migration(src, CONVERGING, destination=dst)
    assert not plan.listening
    await converges_now(src, dst)


async def test_a_refused_migrate_leaves_the_destination_listening_for_the_next_start(lab_pair, open_session):
    source, destination, _ = lab_pair
    src, dst, actions = await logged_pair(open_session, source, destination)
    # blk with the block capability already on: 7.2's migrate refuses it, after migrate-incoming.
    await set_capabilities(src, {"block": True})
    params = await src.query("query-migrate-parameters")
    before = len(actions())
    with pytest.raises(QMPRefused, match="incompatible with current migration capabilities"):
        await start_migration(src, MigrationOptions(bandwidth=64 * 2**20, block=True), destination=dst)
    assert actions()[before:] == [
        ("src", "migrate-set-parameters", True),
        ("dst", "migrate-incoming", True),
        ("src", "migrate", False),
        ("src", "migrate-set-parameters", True),  # put back
    ]
    assert await src.query("query-migrate-parameters") == params
    listening = (await dst.query("query-migrate"))["socket-address"]
    assert dst.vm.incoming_uri == f"unix:{listening[0]['path']}"
    # The next start migrates to where it listens: migrate-incoming again would be refused.
    await set_capabilities(src, {"block": False})
    before = len(actions())
    plan = await start_migration(src, CONVERGING, destination=dst)
    assert plan.listening and plan.uri == dst.vm.incoming_uri
    assert actions()[before:] == [("src", "migrate-set-parameters", True), ("src", "migrate", True)]
    await converges_now(src, dst)
