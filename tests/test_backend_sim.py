"""The backend against the simulator: the seed's 1.4 dialect end to end, and faults real QEMU cannot give.

Real QEMU 7.2 stays the reference (test_backend_qemu.py); the simulator covers
the QEMU of the seed's era and misbehaviour on demand.
"""

from __future__ import annotations

import asyncio
import json
import sys

from dataclasses import replace

import pytest
import pytest_asyncio

from lab_fixtures import wait_until
from migtui.model.vm import Connection
from migtui.model.requests import MigrationOptions
from migtui.backend.qmp.controls import set_capabilities, set_parameters, start_migration
from migtui.backend.qmp.dialect import Unsupported
from migtui.backend.errors import QMPRefused
from migtui.backend.messages import ActionResult
from migtui.sim import SimFleet

MiB = 2**20
MIGTUI = [sys.executable, "-m", "migtui"]


@pytest_asyncio.fixture
async def sim(tmp_path):
    fleet = SimFleet(tmp_path / "sim", speedup=20.0, seed=3)
    yield fleet
    await fleet.stop()


def control_commands(vm) -> list[tuple[str, dict]]:
    return [(n, a) for n, a in vm.received if not n.startswith("query-")]


async def test_legacy_dialect_is_detected_and_spoken(sim, open_session):
    old = await sim.add_vm("old", dialect="1.4", dirty_rate=5 * MiB, working_set=32 * MiB)
    session = open_session(old.endpoint)
    assert await session.wait_connected(5), session.vm.reason
    assert session.vm.dialect == "legacy" and session.vm.qemu_version == "1.4.0"
    assert set(session.vm.capabilities) == {"xbzrle"}
    assert session.vm.parameters == {"xbzrle-cache-size": 64 * MiB}  # 1.4 cannot report speed or downtime
    # The events capability does not exist in 1.4: nothing was sent to turn it on.
    assert control_commands(old) == []
    await set_parameters(session, {"max-bandwidth": 256 * MiB, "downtime-limit": 1500, "xbzrle-cache-size": 128 * MiB})
    assert control_commands(old) == [
        ("migrate_set_speed", {"value": 256 * MiB}),
        ("migrate_set_downtime", {"value": 1.5}),  # seconds
        ("migrate-set-cache-size", {"value": 128 * MiB}),
    ]
    # What 1.4 cannot report back, migtui remembers it set.
    assert session.vm.parameters["max-bandwidth"] == 256 * MiB
    assert session.vm.parameters["downtime-limit"] == 1500
    with pytest.raises(Unsupported, match="cpu-throttle-initial"):
        await set_parameters(session, {"cpu-throttle-initial": 30})
    with pytest.raises(Unsupported, match="postcopy-ram"):
        await start_migration(session, MigrationOptions(postcopy=True), uri="tcp:127.0.0.1:1")
    assert len(control_commands(old)) == 3  # the refusals sent nothing


async def test_guidance_sees_the_capabilities_and_parameters_in_force(sim, open_session):
    vm = await sim.add_vm("modern", dirty_rate=5 * MiB, working_set=32 * MiB)
    session = open_session(vm.endpoint)
    assert await session.wait_connected(5), session.vm.reason
    tracker = session.vm.tracker
    assert tracker.capabilities.get("auto-converge") is False
    await set_capabilities(session, {"auto-converge": True})
    await set_parameters(session, {"max-bandwidth": 64 * MiB, "cpu-throttle-initial": 30})
    assert tracker.capabilities.get("auto-converge") is True  # auto-converge changes the passes ahead
    assert tracker.parameters.get("cpu-throttle-initial") == 30 and tracker.max_bandwidth == 64 * MiB


async def test_the_session_assesses_each_sample_in_flight_with_no_one_reading(sim, open_session, monkeypatch):
    import migtui.model.guidance as guidance

    assessed = []  # the sample each assessment was of
    real = guidance.assess
    monkeypatch.setattr(guidance, "assess", lambda tracker: assessed.append(tracker.last) or real(tracker))
    src = await sim.add_vm("src", ram=256 * MiB, dirty_rate=40 * MiB, working_set=128 * MiB)
    dst = await sim.add_vm("dst", ram=256 * MiB, incoming=True)
    session = open_session(src.endpoint, active_interval=0.05)  # no listener: no console, no recorder
    dest = open_session(dst.endpoint)
    assert await session.wait_connected(5) and await dest.wait_connected(5), session.vm.reason
    await start_migration(session, MigrationOptions(bandwidth=8 * MiB), destination=dest)
    await wait_until(lambda: len(assessed) >= 3 and session.vm.in_flight, timeout=10)
    # Each in-flight sample was assessed as it arrived (VMState.observe): the latest too, so
    # a reader's look computes nothing.
    assert assessed[-1] is session.vm.sample
    count = len(assessed)
    session.vm.assessment()
    assert len(assessed) == count


async def test_legacy_migration_runs_to_completion_with_its_fields(sim, open_session):
    src = await sim.add_vm("src", dialect="1.4", ram=256 * MiB, dirty_rate=2 * MiB, working_set=16 * MiB)
    dst = await sim.add_vm("dst", dialect="1.4", ram=256 * MiB, incoming=True)
    session = open_session(src.endpoint, active_interval=0.05)
    dest = open_session(dst.endpoint)
    assert await session.wait_connected(5) and await dest.wait_connected(5)
    assert dest.vm.run_state == "inmigrate"
    # 1.4 has no migrate-incoming: --to is refused with the way out, nothing sent.
    with pytest.raises(Unsupported, match="migrate-incoming"):
        await start_migration(session, MigrationOptions(), destination=dest)
    await start_migration(session, MigrationOptions(bandwidth=32 * MiB, downtime_ms=500, xbzrle=True),
                          uri=dst.incoming_uri)
    await wait_until(lambda: session.vm.migration_status == "completed", timeout=20)
    sample = session.vm.sample
    assert sample.get(None, "downtime") is not None
    assert sample.get("ram", "mbps") is None  # 1.4 had no mbps: throughput comes from deltas
    assert any(p.throughput_bps for p in session.vm.tracker.history)
    assert session.vm.derived.progress == 1.0
    await wait_until(lambda: dest.vm.run_state == "running", timeout=5)


async def test_cli_set_uses_seconds_on_legacy(sim):
    old = await sim.add_vm("old", dialect="1.4")
    proc = await asyncio.create_subprocess_exec(*MIGTUI, "set", old.endpoint, "downtime=250ms", "bandwidth=1G",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert ("migrate_set_downtime", {"value": 0.25}) in old.received
    assert ("migrate_set_speed", {"value": 2**30}) in old.received
    proc = await asyncio.create_subprocess_exec(*MIGTUI, "status", "--json", old.endpoint,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    obj = json.loads(out)
    assert obj["qemu"] == "1.4.0" and obj["migration"] == {} and obj["error"] is None


async def sim_pair(sim, open_session, **src_kw):
    """A 7.2 source and a -incoming defer destination; both sessions' actions go to one list, in order."""
    src = await sim.add_vm("src", **src_kw)
    dst = await sim.add_vm("dst", incoming=True)
    messages: list = []
    source, destination = open_session(src.endpoint, messages), open_session(dst.endpoint, messages)
    assert await source.wait_connected(5) and await destination.wait_connected(5)
    await wait_until(lambda: source.vm.capabilities.get("events") and destination.vm.capabilities.get("events"))

    def actions() -> list[tuple[str, str, dict, bool]]:
        return [("src" if m.vm == source.key else "dst", m.command, m.arguments, m.ok)
                for m in messages if isinstance(m, ActionResult)]

    return src, dst, source, destination, actions


async def test_a_start_sets_the_source_before_the_destination_listens_and_migrates_last(sim, open_session):
    src, dst, source, destination, actions = await sim_pair(sim, open_session, dirty_rate=2 * MiB,
                                                            working_set=16 * MiB, ram=256 * MiB)
    before = len(actions())
    options = MigrationOptions(bandwidth=512 * MiB, downtime_ms=2000, xbzrle=True, postcopy=True, multifd=4)
    plan = await start_migration(source, options, destination=destination)
    sent = actions()[before:]
    assert all(ok for *_, ok in sent)
    sent = [step[:3] for step in sent]
    uri = plan.uri
    assert sent == [
        ("src", "migrate-set-capabilities", {"capabilities": [{"capability": "xbzrle", "state": True},
                                                              {"capability": "postcopy-ram", "state": True},
                                                              {"capability": "multifd", "state": True}]}),
        ("src", "migrate-set-parameters", {"max-bandwidth": 512 * MiB, "downtime-limit": 2000,
                                           "multifd-channels": 4}),
        ("dst", "migrate-set-capabilities", {"capabilities": [{"capability": "postcopy-ram", "state": True},
                                                              {"capability": "multifd", "state": True}]}),
        ("dst", "migrate-set-parameters", {"multifd-channels": 4}),
        ("dst", "migrate-incoming", {"uri": uri}),
        ("src", "migrate", {"uri": uri}),
    ]
    assert [("source" if side == "source" else "dst", c) for side, (c, _) in plan.steps] == \
        [("source" if side == "src" else "dst", c) for side, c, _ in sent]
    await wait_until(lambda: source.vm.migration_status == "completed", timeout=20)


async def test_a_capability_the_source_refuses_leaves_the_destination_untouched(sim, open_session):
    src, dst, source, destination, actions = await sim_pair(sim, open_session)
    src.set_capability("x-ignore-shared")  # 7.2 refuses postcopy-ram with it; migtui never sets it
    dst_before = len(control_commands(dst))
    with pytest.raises(QMPRefused, match="Postcopy is not compatible with ignore-shared"):
        await start_migration(source, MigrationOptions(postcopy=True, bandwidth=64 * MiB), destination=destination)
    assert control_commands(dst)[dst_before:] == []
    assert [(side, c, ok) for side, c, _, ok in actions()] == [("src", "migrate-set-capabilities", False)]
    src.set_capability("x-ignore-shared", False)
    plan = await start_migration(source, MigrationOptions(postcopy=True, bandwidth=64 * MiB), destination=destination)
    assert [n for n, _ in control_commands(dst)[dst_before:]] == ["migrate-set-capabilities", "migrate-incoming"]
    assert not plan.listening


async def test_combinations_a_newer_qemu_refuses_are_refused_before_sending(sim, open_session):
    src, dst, source, destination, actions = await sim_pair(sim, open_session)
    real = source.dialect
    dst_before = len(control_commands(dst))
    # The simulator speaks 7.2, which takes multifd with xbzrle; 8.2+ refuses it ("Multifd is not
    # compatible with xbzrle"), the report's 10.0 among them: migtui says so first, sending nothing.
    source.dialect = replace(real, version=(10, 0, 0))
    with pytest.raises(Unsupported) as err:
        await start_migration(source, MigrationOptions(xbzrle=True, multifd=2), destination=destination)
    assert "QEMU 10.0.0 on src refuses multifd with xbzrle" in str(err.value) and "\n" not in str(err.value)
    # Already on counts: turning multifd on while xbzrle is on is refused too, naming it.
    await set_capabilities(source, {"xbzrle": True})
    with pytest.raises(Unsupported, match="xbzrle is on there already: turn it off first"):
        await start_migration(source, MigrationOptions(multifd=2), destination=destination)
    # Post-copy with multifd: 8.1 to 10.0 refuse it, 10.1 takes it again.
    await set_capabilities(source, {"xbzrle": False})
    with pytest.raises(Unsupported, match="postcopy-ram with multifd"):
        await start_migration(source, MigrationOptions(postcopy=True, multifd=2), destination=destination)
    assert [(side, c) for side, c, _, _ in actions()] == [("src", "migrate-set-capabilities")] * 2  # the two above
    assert control_commands(dst)[dst_before:] == []
    source.dialect = replace(real, version=(10, 1, 0))
    await start_migration(source, MigrationOptions(postcopy=True, multifd=2), destination=destination)
    assert [n for n, _ in control_commands(dst)][-1] == "migrate-incoming"


async def test_capabilities_refused_before_sending_during_migration(sim, open_session):
    src = await sim.add_vm("src", dirty_rate=300 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    session = open_session(src.endpoint)
    assert await session.wait_connected(5)
    await start_migration(session, MigrationOptions(bandwidth=32 * MiB), uri="exec:cat > /dev/null")
    await wait_until(lambda: session.vm.in_flight, timeout=5)
    before = len(control_commands(src))
    from migtui.backend.errors import Refused

    with pytest.raises(Refused, match="while a migration runs"):
        await set_capabilities(session, {"xbzrle": True})
    assert len(control_commands(src)) == before


async def test_one_request_in_flight_while_qemu_stalls(sim, open_session):
    vm = await sim.add_vm("slow")
    session = open_session(vm.endpoint, poll_interval=0.05, active_interval=0.05, request_timeout=0.3)
    assert await session.wait_connected(5)
    vm.freeze()
    frozen_at = len(vm.received)
    await wait_until(lambda: session.vm.connection == Connection.UNRESPONSIVE, timeout=5)
    assert "no answer to query-migrate" in session.vm.reason
    session.poll_now()
    session.poll_now()
    await asyncio.sleep(0.5)  # ten poll intervals pass: none may add a request
    # The simulator records a command when it reads it; while frozen nothing new is read,
    # and migtui must not have queued more than the one it already sent.
    assert session._inflight is not None and not session._inflight.done()
    vm.thaw()
    await wait_until(lambda: session.vm.connection == Connection.CONNECTED, timeout=5)
    queued = [n for n, _ in vm.received[frozen_at:] if n == "query-migrate"]
    assert len(queued) <= 2, queued  # the stalled one, then polling resumes one at a time


async def test_dropped_connection_reconnects_with_history_kept(sim, open_session):
    vm = await sim.add_vm("flaky", dirty_rate=300 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    session = open_session(vm.endpoint, active_interval=0.05, backoff_max=0.2)
    assert await session.wait_connected(5)
    await start_migration(session, MigrationOptions(bandwidth=32 * MiB), uri="exec:cat > /dev/null")
    await wait_until(lambda: len(session.vm.tracker.history) >= 3, timeout=5)
    kept = len(session.vm.tracker.history)
    vm.drop_connection()
    await wait_until(lambda: session.vm.connection == Connection.DISCONNECTED, timeout=5)
    assert session.vm.reason and len(session.vm.tracker.history) >= kept
    await wait_until(lambda: session.vm.connection == Connection.CONNECTED, timeout=5)
    await wait_until(lambda: len(session.vm.tracker.history) > kept, timeout=5)


@pytest.mark.parametrize("fault", ["garbage", "long_line"])
async def test_broken_qmp_gives_an_error_state_not_a_crash(sim, open_session, fault):
    vm = await sim.add_vm("bad")
    session = open_session(vm.endpoint, backoff_max=0.2)
    assert await session.wait_connected(5)
    if fault == "garbage":
        vm.send_garbage()
    else:
        vm.send_long_line()
    await wait_until(lambda: session.vm.connection == Connection.DISCONNECTED, timeout=10)
    assert session.vm.reason
    await wait_until(lambda: session.vm.connection == Connection.CONNECTED, timeout=10)


async def test_failed_migration_reports_qemus_error_desc(sim, open_session):
    vm = await sim.add_vm("doomed", dirty_rate=300 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    session = open_session(vm.endpoint, active_interval=0.05)
    assert await session.wait_connected(5)
    await start_migration(session, MigrationOptions(bandwidth=32 * MiB), uri="exec:cat > /dev/null")
    await wait_until(lambda: session.vm.in_flight, timeout=5)
    vm.fail_migration("Unable to write to socket: Connection reset by peer")
    await wait_until(lambda: session.vm.migration_status == "failed", timeout=5)
    assert session.vm.sample.error_desc == "Unable to write to socket: Connection reset by peer"


async def test_qemu_refusal_is_raised_with_its_sentence(sim, open_session):
    vm = await sim.add_vm("vm")
    session = open_session(vm.endpoint)
    assert await session.wait_connected(5)
    with pytest.raises(QMPRefused) as err:
        await session.execute("migrate", {"uri": "bogus:x"})
    assert err.value.desc and "bogus" not in str(err.value.command)


def count_sends(session, command: str = "query-migrate") -> dict[str, int]:
    """Count `command` requests the session's client sends, and the most ever unanswered at once."""
    client = session._client
    send = client.send
    seen = {"sent": 0, "unanswered": 0, "most_unanswered": 0}

    def settled(_future) -> None:
        seen["unanswered"] -= 1

    def counting(name, args=None):
        future = send(name, args)
        if name == command:
            seen["sent"] += 1
            seen["unanswered"] += 1
            seen["most_unanswered"] = max(seen["most_unanswered"], seen["unanswered"])
            future.add_done_callback(settled)
        return future

    client.send = counting
    return seen


async def test_slow_reply_marks_unresponsive_then_recovers(sim, open_session):
    vm = await sim.add_vm("slow")
    messages: list = []
    session = open_session(vm.endpoint, messages, poll_interval=0.05, active_interval=0.05, request_timeout=0.2)
    assert await session.wait_connected(5)
    seen = count_sends(session)
    vm.set_reply_delay(0.6)
    await wait_until(lambda: session.vm.connection == Connection.UNRESPONSIVE, timeout=5)
    assert "no answer to query-migrate for 0.2s" in session.vm.reason
    vm.set_reply_delay(0.0)
    # The late reply itself brings the VM back, with a fresh sample.
    samples = sum(1 for m in messages if getattr(m, "what", None) == "sample")
    await wait_until(lambda: session.vm.connection == Connection.CONNECTED, timeout=5)
    assert session.vm.reason is None
    await wait_until(lambda: sum(1 for m in messages if getattr(m, "what", None) == "sample") > samples, timeout=5)
    assert seen["most_unanswered"] == 1


async def test_stalled_vm_shares_one_request_and_closes_promptly(sim, open_session):
    vm = await sim.add_vm("frozen")
    session = open_session(vm.endpoint, poll_interval=0.05, active_interval=0.05, request_timeout=0.2)
    assert await session.wait_connected(5)
    seen = count_sends(session)
    vm.freeze()
    await wait_until(lambda: session.vm.connection == Connection.UNRESPONSIVE, timeout=5)
    sent = seen["sent"]
    stalled = session._inflight
    # Callers that want a sample now wait for the same reply; one of them giving up abandons nothing.
    callers = [asyncio.create_task(session.sample()) for _ in range(3)]
    session.poll_now()
    await asyncio.sleep(0)  # one loop turn: the callers start and find the request in flight
    callers[0].cancel()
    await asyncio.gather(callers[0], return_exceptions=True)
    assert session._inflight is stalled and not stalled.done()
    assert seen["sent"] == sent and seen["most_unanswered"] == 1
    vm.thaw()
    samples = await asyncio.wait_for(asyncio.gather(*callers[1:]), 5)
    assert all(s.status == "none" for s in samples)
    await wait_until(lambda: session.vm.connection == Connection.CONNECTED, timeout=5)
    # Stalled again: close() must not hang on the unanswered request (cancellation reaches it).
    vm.freeze()
    await wait_until(lambda: session.vm.connection == Connection.UNRESPONSIVE, timeout=5)
    await asyncio.wait_for(session.close(), 3)
    assert session._task is None and session._inflight is None
    assert seen["most_unanswered"] == 1



async def test_cancelled_sender_leaves_its_request_to_the_next_waiter(sim, open_session):
    vm = await sim.add_vm("frozen")
    session = open_session(vm.endpoint, autopoll=False, request_timeout=0.2)
    assert await session.wait_connected(5)
    seen = count_sends(session)
    frozen_at = len(vm.received)
    vm.freeze()
    first = asyncio.create_task(session.sample())
    await asyncio.sleep(0)  # one loop turn: `first` sends the request
    second = asyncio.create_task(session.sample())
    await asyncio.sleep(0)  # one loop turn: `second` finds it in flight and waits for it
    assert seen["sent"] == 1
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    await asyncio.sleep(0)  # one loop turn: `second` learns its sender gave up
    # The request is still on the wire: `second` waits for its reply and sends nothing.
    assert not second.done() and seen["sent"] == 1
    assert session._inflight is not None and not session._inflight.done()
    vm.thaw()
    assert (await asyncio.wait_for(second, 5)).status == "none"
    assert [n for n, _ in vm.received[frozen_at:]].count("query-migrate") == 1
    await wait_until(lambda: session.vm.connection == Connection.CONNECTED, timeout=5)


async def test_migration_pass_event_samples_at_once(sim, open_session):
    vm = await sim.add_vm("passes", dirty_rate=300 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    messages: list = []
    # No timed poll for a minute: only events can make the session sample.
    session = open_session(vm.endpoint, messages, poll_interval=60, active_interval=60)
    assert await session.wait_connected(5)
    seen = count_sends(session)
    await start_migration(session, MigrationOptions(bandwidth=32 * MiB), uri="exec:cat > /dev/null")

    def last_pass() -> int:
        events = [m.data["pass"] for m in messages if getattr(m, "event", None) == "MIGRATION_PASS"]
        return events[-1] if events else 0

    await wait_until(lambda: last_pass() >= 3, timeout=10)
    # The pass column (dirty-sync-count of query-migrate) follows each event, not the next poll.
    await wait_until(lambda: (session.vm.derived.passes or 0) >= last_pass(), timeout=2)
    assert seen["most_unanswered"] == 1


async def test_direct_request_path_raises_qemus_error(sim, open_session):
    vm = await sim.add_vm("vm")
    session = open_session(vm.endpoint)
    assert await session.wait_connected(5)
    client = session._client
    assert (await client.request("query-status"))["status"] == "running"
    from qemu.qmp import ExecuteError

    with pytest.raises(ExecuteError) as err:
        await client.request("no-such-command")
    assert err.value.error_class == "CommandNotFound"
    assert await client.request("query-name") is not None and client._replies == {}


async def test_replies_are_routed_as_bytes_arrive_and_the_rest_left_in_order():
    from migtui.backend.qmp.client import Client as _Client

    loop = asyncio.get_running_loop()
    client = _Client("unit")
    reader = asyncio.StreamReader()
    client._reader = reader
    client._hook_reader()
    first, second = loop.create_future(), loop.create_future()
    client._replies.update({"mt1": first, "mt2": second})
    # Whole lines: the reply resolves its future at once; the event stays for qemu.qmp's reader task.
    reader.feed_data(b'{"event": "MIGRATION_PASS", "data": {"pass": 2}}\r\n{"return": {"status": "active"}, "id": "mt1"}\r\n')
    assert first.result() == {"return": {"status": "active"}, "id": "mt1"}
    assert b"MIGRATION_PASS" in await reader.readline()
    # A reply split across reads is left whole, in order, to the reader task.
    reader.feed_data(b'{"return": {}, "id"')
    reader.feed_data(b': "mt2"}\r\n')
    assert not second.done() and await reader.readline() == b'{"return": {}, "id": "mt2"}\r\n'
    # Not ours (unknown id, garbage): untouched.
    reader.feed_data(b'{"return": {}, "id": "other"}\r\nnot json\r\n')
    assert await reader.readline() == b'{"return": {}, "id": "other"}\r\n'
    assert await reader.readline() == b"not json\r\n"


async def test_event_memory_stays_bounded_over_many_passes(sim, open_session):
    from migtui.model.vm import LOG_RECORDS
    from migtui.backend.qmp.client import EVENT_HISTORY

    vm = await sim.add_vm("busy", dirty_rate=400 * MiB, working_set=24 * MiB, ram=256 * MiB)
    messages: list = []
    session = open_session(vm.endpoint, messages)
    assert await session.wait_connected(5)
    await start_migration(session, MigrationOptions(bandwidth=128 * MiB, downtime_ms=1), uri="exec:cat > /dev/null")
    passes = lambda: sum(1 for m in messages if getattr(m, "event", None) == "MIGRATION_PASS")  # noqa: E731
    await wait_until(lambda: passes() > max(EVENT_HISTORY, LOG_RECORDS) + 10, timeout=30)
    # Every event arrived, but neither qemu.qmp's own history nor the VM's log keeps them all.
    assert len(session._client.events.history) <= EVENT_HISTORY
    assert len(session.vm.log) <= LOG_RECORDS and session.vm.log_total > LOG_RECORDS


async def test_the_dirty_limit_is_refused_unsent_where_qemu_would_and_holds_the_guest_where_it_runs(sim, open_session):
    """QEMU 8.1+'s dirty limit, on the simulator's 10.0 (the lab's KVM dirty ring cannot run it:
    see README). What migtui knows refuses first: a QEMU without the capability, a VM that
    query-kvm says runs without KVM, auto-converge with it; where it runs, it caps the guest."""
    from migtui.backend.errors import Refused

    old = await sim.add_vm("old", ram=256 * MiB)  # 7.2: no dirty-limit capability
    tcg = await sim.add_vm("tcg", dialect="10.0", ram=256 * MiB)
    kvm = await sim.add_vm("kvm", dialect="10.0", ram=512 * MiB, dirty_rate=200 * MiB, working_set=256 * MiB,
                           vcpus=2, dirty_ring=True)
    sessions = [open_session(vm.endpoint) for vm in (old, tcg, kvm)]
    for s in sessions:
        assert await s.wait_connected(5)
    s_old, s_tcg, s_kvm = sessions
    assert (s_kvm.vm.vcpus, s_kvm.vm.kvm, s_tcg.vm.kvm) == (2, True, False)  # query-cpus-fast, query-kvm
    sink = "exec:cat > /dev/null"
    with pytest.raises(Unsupported, match=r"^QEMU 7\.2\.0 cannot cap the guest's dirty rate .*no dirty-limit capability"):
        await start_migration(s_old, MigrationOptions(dirty_limit=50), uri=sink)
    with pytest.raises(Unsupported, match=r"offers dirty-limit only on KVM with -accel kvm,dirty-ring-size=N, "
                                          r"and this VM runs without KVM$"):
        await start_migration(s_tcg, MigrationOptions(dirty_limit=50), uri=sink)
    with pytest.raises(Unsupported, match="without KVM"):
        await set_capabilities(s_tcg, {"dirty-limit": True})
    with pytest.raises(Unsupported, match=r"refuses dirty-limit with auto-converge \('dirty-limit conflicts with "
                                          r"auto-converge either of then available currently'\)"):
        await start_migration(s_kvm, MigrationOptions(dirty_limit=50, auto_converge=True), uri=sink)
    for vm in (old, tcg, kvm):
        assert not [n for n, _ in control_commands(vm) if n != "migrate-set-capabilities"], vm.name
        assert [a for n, a in control_commands(vm)] == [caps_events()], vm.name  # only the session's events
    await start_migration(s_kvm, MigrationOptions(bandwidth=64 * MiB, dirty_limit=10), uri=sink)
    sent = control_commands(kvm)[1:]
    assert sent[:2] == [("migrate-set-capabilities", {"capabilities": [{"capability": "dirty-limit", "state": True}]}),
                        ("migrate-set-parameters", {"max-bandwidth": 64 * MiB, "vcpu-dirty-limit": 10})]
    with pytest.raises(Refused, match="while a migration runs"):
        await set_capabilities(s_kvm, {"auto-converge": True})
    # Held to 2 vCPUs x 10 MB/s once QEMU's throttle check fires: it converges, which 200 MiB/s would not.
    await wait_until(lambda: s_kvm.vm.sample.get(None, "dirty-limit-throttle-time-per-round") is not None, timeout=10)
    await wait_until(lambda: (s_kvm.vm.sample.get("ram", "dirty-pages-rate") or 0) * 4096 <= 21 * MiB, timeout=10)
    await wait_until(lambda: s_kvm.vm.migration_status == "completed", timeout=20)


def caps_events() -> dict:
    return {"capabilities": [{"capability": "events", "state": True}]}
