"""The controls QEMU 8.1 to 10.0 added, on real QEMU: the dirty limit, enum parameters, the new
capabilities and migrate-incoming's exit-on-error. 7.2 (the system's) lacks them: migtui hides
and refuses them there, sending nothing.

The lab's VMs run under TCG, where QEMU refuses the dirty limit; the KVM test starts its own
10.0 VMs, with and without a dirty ring. (On this project's machine KVM's dirty ring freezes the
guest's vCPU once the ring fills, so no test here judges the throttle itself: see README.)
"""

from __future__ import annotations

import asyncio
import re
import sys

import pytest
from qemu.qmp import QMPClient

from lab_fixtures import on_both_qemus, qemu_required, require_qemu10, wait_until
from migtui.backend.errors import QMPRefused, Refused
from migtui.backend.qmp.controls import MigrationOptions, set_capabilities, start_migration
from migtui.lab import Lab
from migtui.lab.qemu import kvm_usable

pytestmark = [qemu_required, pytest.mark.qemu]

MIGTUI = [sys.executable, "-m", "migtui"]
TEN = pytest.mark.parametrize("qemu", ["10.0"], indirect=True)


async def migtui(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*MIGTUI, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def refused(*args: str) -> str:
    """A migtui command that must be refused: exit 2 and one line, no traceback. Returns it."""
    rc, out, err = await migtui(*args)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, out, err)
    return lines[0]


class Tools:
    """QEMU's own word, through the lab VM's second monitor."""

    def __init__(self) -> None:
        self.clients: list[QMPClient] = []

    async def open(self, vm) -> QMPClient:
        client = QMPClient("test")
        await client.connect(str(vm.tools_qmp_path))
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.disconnect()


async def caps_of(client: QMPClient) -> dict[str, bool]:
    return {c["capability"]: c["state"] for c in await client.execute("query-migrate-capabilities")}


@on_both_qemus
async def test_the_dirty_limit_is_hidden_and_refused_unsent_where_qemu_cannot_run_it(lab_pair):
    """7.2 has no dirty limit; 10.0 under TCG has the capability but refuses it (it needs KVM
    with a dirty ring). Either way one line, nothing sent; the start dialog hides the row on 7.2
    and greys it out, saying why, on 10.0."""
    from migtui.backend.qmp.backend import QMPBackend
    from migtui.model.endpoint import parse_endpoint
    from migtui.ui.app import MigtuiApp
    from migtui.ui.dialogs import StartMigrationDialog
    from textual.widgets import Input

    source, destination, lab = lab_pair
    ten = lab.qemu_version.startswith("10.")
    line = await refused("migrate", source.endpoint, "--to", destination.endpoint, "--dirty-limit", "20")
    if ten:
        assert line.endswith(f"QEMU {lab.qemu_version} on src1 offers dirty-limit only on KVM with "
                             "-accel kvm,dirty-ring-size=N, and this VM runs without KVM"), line
    else:
        assert re.search(r"QEMU 7\.2\.\d+ cannot cap the guest's dirty rate .*: it has no dirty-limit capability$",
                         line), line
    line = await refused("caps", source.endpoint, "dirty-limit=on")
    assert ("runs without KVM" if ten else "has no capability 'dirty-limit'") in line, line
    if ten:  # the parameter alone is QEMU's to take (it applies once the capability is on)
        rc, out, err = await migtui("set", source.endpoint, "dirty-limit=20")
        assert rc == 0 and out.strip() == "vcpu-dirty-limit=20", (out, err)
    else:
        assert "no vcpu-dirty-limit (QEMU 8.1+" in await refused("set", source.endpoint, "dirty-limit=20")
    tools = Tools()
    try:
        src_tools, dst_tools = await tools.open(source), await tools.open(destination)
        assert not (await caps_of(src_tools)).get("dirty-limit")
        assert (await src_tools.execute("query-migrate")).get("status") in (None, "none")
        assert "socket-address" not in await dst_tools.execute("query-migrate")  # never told to listen
    finally:
        await tools.close()
    fleet = QMPBackend([parse_endpoint(source.endpoint), parse_endpoint(destination.endpoint)])
    app = MigtuiApp(fleet)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(lambda: all(s.connected and s.vm.sample for s in fleet), timeout=15)
        # migtui read what decides it: the capability, KVM (query-kvm) and the vCPUs (query-cpus-fast).
        vm = fleet.get("src1").vm
        assert ("dirty-limit" in vm.capabilities) is ten and vm.kvm is False and vm.vcpus == 1
        await pilot.press("m")
        assert isinstance(app.screen, StartMigrationDialog)
        rows = list(app.screen.query("#dirty-limit").results(Input))
        if ten:
            assert len(rows) == 1 and rows[0].disabled and "this VM runs without KVM" in rows[0].placeholder
        else:
            assert rows == []


@pytest.mark.skipif(not kvm_usable(), reason="/dev/kvm is not usable here")
async def test_on_kvm_qemu_10_refuses_the_dirty_limit_without_a_ring_in_its_words_and_takes_it_with_one(
        open_session):
    """What QMP cannot tell (whether KVM's dirty ring is on) QEMU says itself, in one line, before
    anything else of the start is sent; with -accel kvm,dirty-ring-size=4096 it takes migtui's
    dirty-limit and vcpu-dirty-limit."""
    qemu10 = require_qemu10()
    for ring in (None, 4096):
        async with Lab(pairs=1, accel="kvm", qemu=qemu10, dirty_ring=ring) as lab:
            source, destination = lab.sources[0], lab.destinations[0]
            src, dst = open_session(source.endpoint), open_session(destination.endpoint)
            assert await src.wait_connected(10) and await dst.wait_connected(10)
            assert src.vm.kvm is True
            tools = Tools()
            try:
                src_tools, dst_tools = await tools.open(source), await tools.open(destination)
                if ring is None:
                    with pytest.raises(QMPRefused) as err:
                        await start_migration(src, MigrationOptions(dirty_limit=20), destination=dst)
                    assert err.value.desc == "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set"
                    assert "\n" not in str(err.value)
                    assert not (await caps_of(src_tools))["dirty-limit"]
                    params = await src_tools.execute("query-migrate-parameters")
                    assert params["vcpu-dirty-limit"] == 1  # QEMU's default: the parameters were never sent
                    assert "socket-address" not in await dst_tools.execute("query-migrate")
                    continue
                await start_migration(src, MigrationOptions(bandwidth=32 * 2**20, dirty_limit=20), destination=dst)
                assert (await caps_of(src_tools))["dirty-limit"] is True
                assert (await src_tools.execute("query-migrate-parameters"))["vcpu-dirty-limit"] == 20
                with pytest.raises(Refused, match="while a migration runs"):
                    await set_capabilities(src, {"auto-converge": True})
                await src_tools.execute("migrate_cancel")
            finally:
                await tools.close()


@TEN
async def test_enum_parameters_take_what_10_lists_and_the_new_capabilities_are_set_or_refused_in_qemus_words(
        lab_pair):
    source, destination, lab = lab_pair
    line = await refused("set", source.endpoint, "zero-page-detection=fast")
    assert line == "migtui: zero-page-detection: 'fast' is not one this QEMU takes; give one of: none, legacy, multifd"
    line = await refused("set", source.endpoint, "mode=warp")
    assert line.endswith("give one of: normal, cpr-reboot, cpr-transfer"), line  # as 10.0's schema lists them
    rc, out, err = await migtui("set", source.endpoint, "zero-page-detection=legacy")
    assert rc == 0 and out.strip() == "zero-page-detection=legacy", err
    # Alone, three of them need another: QEMU's sentence, one line.
    for cap, sentence in (("switchover-ack", "Capability 'switchover-ack' requires capability 'return-path'"),
                          ("postcopy-preempt", "Postcopy preempt requires postcopy-ram"),
                          ("zero-copy-send", "Zero copy only available for non-compressed non-TLS multifd migration")):
        line = await refused("caps", source.endpoint, f"{cap}=on")
        assert line.startswith("migtui: QEMU refused migrate-set-capabilities: " + sentence), line
    for caps in (["return-path=on", "switchover-ack=on", "postcopy-ram=on", "postcopy-preempt=on"],
                 ["postcopy-preempt=off", "postcopy-ram=off", "multifd=on", "zero-copy-send=on"],
                 ["zero-copy-send=off", "multifd=off", "mapped-ram=on"]):
        rc, out, err = await migtui("caps", source.endpoint, *caps)
        assert rc == 0, err
        shown = dict(line.split("=") for line in out.split())
        assert all(shown[c.split("=")[0]] == c.split("=")[1] for c in caps), (caps, out)
    tools = Tools()
    try:
        src_tools = await tools.open(source)
        assert (await src_tools.execute("query-migrate-parameters"))["zero-page-detection"] == "legacy"
        on = {k for k, v in (await caps_of(src_tools)).items() if v}
        assert on >= {"return-path", "switchover-ack", "mapped-ram"} and "zero-copy-send" not in on
    finally:
        await tools.close()


@TEN
async def test_a_failed_incoming_leaves_a_10_destination_up_saying_why(lab_pair, open_session):
    """migrate-incoming with exit-on-error false (9.1+): the source dies mid-migration, and the
    destination stays up, inmigrate (it never runs the half-loaded guest), with QEMU's error;
    the next start to it is refused, saying so."""
    source, destination, lab = lab_pair
    src, dst = open_session(source.endpoint), open_session(destination.endpoint)
    assert await src.wait_connected(10) and await dst.wait_connected(10)
    sent: list = []
    execute = dst.execute

    async def record(command, args=None, *rest, **kw):
        sent.append((command, args))
        return await execute(command, args, *rest, **kw)

    dst.execute = record
    await start_migration(src, MigrationOptions(bandwidth=8 * 2**20), destination=dst)
    [(_, incoming)] = [c for c in sent if c[0] == "migrate-incoming"]
    assert incoming["exit-on-error"] is False
    await wait_until(lambda: dst.vm.migration_status == "active", timeout=20)
    await source.kill()
    await wait_until(lambda: dst.vm.migration_status == "failed", timeout=20)
    assert dst.connected and destination.running
    assert dst.vm.sample.error_desc.startswith("load of migration failed")
    assert (await dst.query("query-status"))["status"] == "inmigrate"
    other = await lab.add_vm("src2", incoming=False, qemu=require_qemu10())
    src2 = open_session(other.endpoint)
    assert await src2.wait_connected(10)
    with pytest.raises(Refused, match=r"dst1's incoming migration ended \(failed\); restart it with -incoming defer"):
        await start_migration(src2, MigrationOptions(), destination=dst)
