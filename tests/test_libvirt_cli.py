"""The command line on two real libvirt hosts: status lists every domain with its host, migrate
--to a host completes (--wait), set and cancel reach a running migration, and bad targets get one
line; each command as an operator types it, a process of its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid as uuidlib

import pytest

from lab_fixtures import wait_until

pytestmark = pytest.mark.usefixtures("libvirt_required")


def migtui(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migtui", *args], capture_output=True, text=True, timeout=timeout)


def _job(hosts, host, name: str) -> str:
    return hosts.virsh(host, "domjobinfo", name, check=False).stdout


@pytest.fixture
def domain(libvirt_hosts):
    name = f"cli-{uuidlib.uuid4().hex[:6]}"
    libvirt_hosts.define_guest(libvirt_hosts[0], name)
    yield name
    libvirt_hosts.destroy_guest(name)


def test_status_lists_each_domain_with_its_host(libvirt_hosts, domain):
    done = migtui("status", "--json", *(h.uri for h in libvirt_hosts))
    assert done.returncode == 0, done.stderr
    states = [json.loads(line) for line in done.stdout.splitlines()]
    mine = next(s for s in states if s["name"] == domain)
    assert mine["run-state"] == "running" and mine["target"].endswith(f"#{domain}")
    assert mine["target"].startswith(libvirt_hosts[0].uri)
    narrowed = migtui("status", f"{libvirt_hosts[0].uri}#{domain}")
    assert narrowed.returncode == 0 and narrowed.stdout.count("\n") == 1 and domain in narrowed.stdout


def test_migrate_to_a_host_waits_for_completion(libvirt_hosts, domain):
    hosts = libvirt_hosts
    source = f"{hosts[0].uri}#{domain}"
    # The lab's hosts take a loopback stream only over a unix socket: --migrate-uri, as virsh's --migrateuri.
    done = migtui("migrate", source, "--to", hosts[1].uri, "--migrate-uri", hosts.migration_uri(hosts[1]),
                  "--bandwidth", "1G", "--downtime", "2s", "--wait")
    assert done.returncode == 0, done.stderr
    assert "migrating to host2" in done.stderr and "completed" in done.stdout.splitlines()[-1]
    assert domain in hosts.virsh(hosts[1], "list", "--name").stdout.split()
    hosts.virsh(hosts[1], "destroy", domain)  # the fixture's clean-up looks on host1
    refused = migtui("migrate", source, "--uri", "tcp:127.0.0.1:4444")
    assert refused.returncode == 2 and "--to HOST-URI" in refused.stderr and "Traceback" not in refused.stderr
    not_a_host = migtui("migrate", source, "--to", "tcp:127.0.0.1:4444")
    assert not_a_host.returncode == 2 and "another libvirt host" in not_a_host.stderr


async def test_set_and_cancel_reach_a_migration_started_elsewhere(libvirt_hosts, domain):
    hosts = libvirt_hosts
    virsh = subprocess.Popen(["virsh", "-c", hosts[0].uri, "migrate", "--live", "--p2p", domain, hosts[1].uri,
                              "--migrateuri", hosts.migration_uri(hosts[1]), "--bandwidth", "20"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        await wait_until(lambda: "Unbounded" in _job(hosts, hosts[0], domain), 20)
        source = f"{hosts[0].uri}#{domain}"
        done = await asyncio.to_thread(migtui, "set", source, "bandwidth=25M")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"max-bandwidth={25 * 2**20}"
        speed = hosts.virsh(hosts[0], "migrate-getspeed", domain).stdout.strip()
        assert speed == "25"  # MiB/s, as libvirt takes it
        bad = await asyncio.to_thread(migtui, "set", source, "multifd-channels=4")
        assert bad.returncode == 2 and "libvirt cannot set multifd-channels" in bad.stderr
        done = await asyncio.to_thread(migtui, "cancel", source)
        assert done.returncode == 0 and "abort sent" in done.stdout, done.stderr
        out, _ = await asyncio.to_thread(virsh.communicate, timeout=30)
        assert virsh.returncode != 0 and "cancel" in out.lower()
    finally:
        if virsh.poll() is None:
            virsh.kill()


def test_bad_and_unreachable_targets_get_one_line(libvirt_hosts):
    for args, says in [
        (("status", "qemu+tcp://127.0.0.1/nosuch"), "/system or /session"),
        (("status", "qemu+tcp://127.0.0.1:1/system"), "libvirtd unreachable"),
        (("cancel", f"{libvirt_hosts[0].uri}#web-*"), "name one domain after #"),
        (("cancel", f"{libvirt_hosts[0].uri}#no-such-domain"), "no running domain no-such-domain"),
    ]:
        done = migtui(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in done.stderr, (args, done.stderr)
