"""Host evacuation on three real libvirt hosts (migtui.lab.libvirt_hosts): `migtui drain` moves
every domain off host1, two at a time, one of them only with the autopilot's help; a
destination whose libvirtd dies mid-migration sends its VM back into the queue, never lost."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid as uuidlib

import pytest

from lab_fixtures import require_libvirt, wait_until

pytestmark = pytest.mark.usefixtures("libvirt_required")
MiB = 2**20


@pytest.fixture(scope="module")
def three_hosts():
    from migtui.lab.libvirt_hosts import LibvirtHosts

    require_libvirt()
    with LibvirtHosts(3) as hosts:
        yield hosts


def _names(prefix: str, n: int) -> list[str]:
    tag = uuidlib.uuid4().hex[:5]
    return [f"{prefix}{i}-{tag}" for i in range(n)]


def _running(hosts, host) -> set[str]:
    return set(hosts.virsh(host, "list", "--name").stdout.split())


def test_drain_moves_every_domain_off_a_host_two_at_a_time(three_hosts, tmp_path):
    hosts = three_hosts
    stuck, calm1, calm2 = names = _names("drain", 3)
    hosts.define_guest(hosts[0], stuck, 128)  # dirties ~100 MB/s: not at 30 MiB/s, whatever the downtime
    for name in (calm1, calm2):  # ~19 MiB/s at most: converges at 30 MiB/s
        hosts.define_guest(hosts[0], name, 128, page_delay=1600, icount_shift=7)
    audit = tmp_path / "audit.ndjson"
    (tmp_path / "config.toml").write_text(f'audit-file = "{audit}"\n')
    streams = f"unix://{hosts[0].dir.parent}/{{host}}/migration/drain-{{n}}.sock"
    assert hosts[1].dir.name == hosts[1].name  # what {host} is filled with: the destination's hostname
    try:
        done = subprocess.run(
            [sys.executable, "-m", "migtui", "drain", hosts[0].uri, "--to", f"{hosts[1].uri},{hosts[2].uri}",
             "--parallel", "2", "--bandwidth", "30M", "--downtime", "300ms", "--policy", "finish", "--json",
             "--migrate-uri", streams],
            capture_output=True, text=True, timeout=300, env={**os.environ, "MIGTUI_CONFIG": str(tmp_path / "config.toml")})
        print(done.stderr)
        assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert lines[-1]["moved"] == 3 and lines[-1]["of"] == 3, lines[-1]
        migrating, most = set(), 0
        for line in lines[:-1]:
            (migrating.add if line["state"] == "migrating" else migrating.discard)(line["vm"])
            most = max(most, len(migrating))
        assert most == 2, lines  # two at a time out of host1, never three
        assert "smallest RAM first" in done.stderr
        audited = [json.loads(x) for x in audit.read_text().splitlines()]
        steered = {a["vm"] for a in audited if a["command"] == "autopilot"
                   and a["arguments"]["step"] not in ("engaged", "released")}
        assert stuck in steered, audited  # it could not converge without the autopilot
        moved = _running(hosts, hosts[1]) | _running(hosts, hosts[2])
        assert set(names) <= moved and not set(names) & _running(hosts, hosts[0])
    finally:
        for name in names:
            hosts.destroy_guest(name)


async def test_a_destination_that_dies_mid_migration_sends_its_vm_back_into_the_queue(three_hosts):
    from migtui.backend.libvirt.backend import LibvirtBackend, LibvirtOptions
    from migtui.backend.libvirt.target import parse_libvirt_target
    from migtui.drain import Drain
    from migtui.model.requests import MigrationOptions

    hosts = three_hosts
    (name,) = _names("requeue", 1)
    hosts.define_guest(hosts[0], name, 128, page_delay=1600, icount_shift=7)

    def stream(uri: str) -> str:
        return hosts.migration_uri(next(h for h in hosts if h.uri == uri))

    backend = LibvirtBackend([parse_libvirt_target(h.uri) for h in hosts], options=LibvirtOptions(migration_uri=stream))
    backend.start()
    killed = False
    try:
        await wait_until(lambda: all(h.connected for h in backend.hosts()) and backend.get(name) is not None, 20)
        domain = backend.get(name)
        drain = Drain(backend, [name], allowed=lambda d: d.key != "host:host1",
                      # A first pass of ~4 s at 30 MiB/s: time to kill its destination; it converges after.
                      options=MigrationOptions(bandwidth=30 * MiB, downtime_ms=300))
        item = drain.items[0]
        runner = asyncio.ensure_future(drain.run())
        await wait_until(lambda: item.state == "migrating" and domain.vm.in_flight, 30)
        first = item.destination
        victim = next(h for h in hosts if f"host:{h.name}" == first)
        hosts.kill(victim)
        killed = True
        line = await asyncio.wait_for(runner, 120)
        assert item.state == "done" and item.attempts == 2, (line, item)
        assert item.destination != first and first in item.excluded
        other = next(h for h in hosts if f"host:{h.name}" == item.destination)
        assert name in _running(hosts, other)
    finally:
        await backend.close()
        if killed:
            hosts.restart(victim)
        hosts.destroy_guest(name)


async def test_the_console_drains_a_host_with_d(three_hosts):
    """As a new user would: D on a domain of host1, Enter (no autopilot), the queue fills, both
    domains end on the other hosts, and the queue's header gives the summary."""
    from migtui.backend.libvirt.backend import LibvirtBackend, LibvirtOptions
    from migtui.backend.libvirt.target import parse_libvirt_target
    from migtui.config import Config
    from migtui.ui.app import MigtuiApp
    from migtui.ui.dialogs import ValueDialog
    from migtui.ui.screens.drain import DrainScreen
    from migtui.ui.widgets.fleet_table import FleetTable

    hosts = three_hosts
    names = _names("console", 2)
    for name in names:
        hosts.define_guest(hosts[0], name, 128, page_delay=1600, icount_shift=7)

    def stream(uri: str) -> str:
        return hosts.migration_uri(next(h for h in hosts if h.uri == uri))

    backend = LibvirtBackend([parse_libvirt_target(h.uri) for h in hosts], options=LibvirtOptions(migration_uri=stream))
    app = MigtuiApp(backend, config=Config(audit=False))
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            table = app.screen.query_one("#fleet", FleetTable)
            await wait_until(lambda: all(n in table.row_keys for n in names)
                             and all(h.connected for h in backend.hosts()), 20)
            table.move_cursor(row=table.row_keys.index(names[0]))
            await pilot.press("D")
            await wait_until(lambda: isinstance(app.screen, ValueDialog), 5)
            await pilot.press("enter")
            await wait_until(lambda: isinstance(app.screen, DrainScreen), 5)
            screen = app.screen
            await wait_until(lambda: screen.drain.ended is not None, 120)

            def header() -> str:
                return str(screen.query_one("#drain-header").render())

            # Shown as the drain ends (the last row's state could lag a coalesced update before).
            await wait_until(lambda: "2 of 2 moved" in header(), 2)
            assert "2 done" in header(), header()
        moved = _running(hosts, hosts[1]) | _running(hosts, hosts[2])
        assert set(names) <= moved and not set(names) & _running(hosts, hosts[0])
    finally:
        for name in names:
            hosts.destroy_guest(name)
