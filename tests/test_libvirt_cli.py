"""The command line on two real libvirt hosts: status lists every domain with its host, migrate
--to a host completes (--wait), set and cancel reach a running migration, and bad targets get one
line; each command as an operator types it, a process of its own."""

from __future__ import annotations

import asyncio
import json
import os
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
    empty = migtui("status", f"{libvirt_hosts[1].uri}#{domain}")  # it runs on host1: nothing to list here
    assert empty.returncode == 0 and empty.stdout == "" and "host2" in empty.stderr and "no running" in empty.stderr


def test_migrate_to_a_host_waits_for_completion(libvirt_hosts, domain):
    hosts = libvirt_hosts
    source = f"{hosts[0].uri}#{domain}"
    # The lab's hosts take a loopback stream only over a unix socket: --migrate-uri, as virsh's --migrateuri.
    done = migtui("migrate", source, "--to", hosts[1].uri, "--migrate-uri", hosts.migration_uri(hosts[1]),
                  "--bandwidth", "1G", "--downtime", "2s", "--wait")
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert "migrating to host2" in done.stderr and "completed" in last and " running " in last  # as it runs on host2
    assert domain in hosts.virsh(hosts[1], "list", "--name").stdout.split()
    hosts.virsh(hosts[1], "destroy", domain)  # the fixture's clean-up looks on host1
    refused = migtui("migrate", source, "--uri", "tcp:127.0.0.1:4444")
    assert refused.returncode == 2 and "--to HOST-URI" in refused.stderr and "Traceback" not in refused.stderr
    not_a_host = migtui("migrate", source, "--to", "tcp:127.0.0.1:4444")
    assert not_a_host.returncode == 2 and "another libvirt host" in not_a_host.stderr


async def test_set_and_cancel_reach_a_migration_started_elsewhere(libvirt_hosts, domain):
    hosts = libvirt_hosts
    virsh = hosts.virsh_migrate(hosts[0], hosts[1], domain, 20, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    try:
        # Until QEMU sends (the job shows from libvirt's prepare on, and virsh's --bandwidth 20
        # is applied as QEMU starts: a set before that would be overwritten by it).
        await wait_until(lambda: "Memory processed" in _job(hosts, hosts[0], domain)
                         and hosts.virsh(hosts[0], "migrate-getspeed", domain).stdout.strip() == "20", 20)
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
        assert virsh.returncode != 0, out  # its migration was aborted (what virsh says varies with the moment)
        assert domain in hosts.virsh(hosts[0], "list", "--name").stdout.split()  # still on host1
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


def test_migtui_lab_libvirt_in_a_terminal_then_q_leaves_nothing(tmp_path):
    """The README's many-hosts command, in a real terminal: two hosts and web-01 show, q quits,
    and no libvirtd, QEMU or directory of the lab is left."""
    import glob
    import shutil
    import time

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    before = set(glob.glob("/tmp/migtui-lab-*-libvirt-*"))
    session = f"migtui-libvirt-{uuidlib.uuid4().hex[:6]}"
    command = f"{sys.executable} -m migtui lab --libvirt; echo EXITED $? > {tmp_path}/rc"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", command], check=True)
    try:
        screen, deadline = "", time.monotonic() + 40
        while time.monotonic() < deadline and not ("web-01" in screen and "2 hosts: host1 (1), host2 (0)" in screen):
            time.sleep(0.1)  # polling the terminal, with a deadline
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True).stdout
        assert "web-01" in screen and "2 hosts: host1 (1), host2 (0)" in screen, screen
        made = set(glob.glob("/tmp/migtui-lab-*-libvirt-*")) - before
        assert len(made) == 1
        lab = made.pop()
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (tmp_path / "rc").exists():
            time.sleep(0.1)
        assert (tmp_path / "rc").read_text().strip() == "EXITED 0"
        left = subprocess.run(["pgrep", "-f", lab], capture_output=True, text=True).stdout.split()
        assert left == [] and not os.path.exists(lab), (left, lab)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_check_measures_through_libvirt_predicts_and_migrates_nothing(libvirt_hosts, domain):
    """--check on a libvirt domain: virDomainStartDirtyRateCalc (no QMP socket), the prediction, no job."""
    hosts = libvirt_hosts
    source = f"{hosts[0].uri}#{domain}"
    fast = migtui("migrate", source, "--to", hosts[1].uri, "--bandwidth", "1G", "--downtime", "2s", "--check")
    assert fast.returncode == 0, fast.stderr
    assert fast.stdout.startswith(f"{domain}: ") and "converge" in fast.stdout and "not" not in fast.stdout.split(":")[1]
    slow = migtui("migrate", source, "--to", hosts[1].uri, "--bandwidth", "8M", "--downtime", "1ms", "--check")
    assert slow.returncode == 1, slow.stdout + slow.stderr
    assert "will not converge" in slow.stdout and "Traceback" not in slow.stderr
    assert "None" in _job(hosts, hosts[0], domain)  # nothing was started
    assert domain in hosts.virsh(hosts[0], "list", "--name").stdout.split()


async def test_the_exporter_on_libvirt_hosts_serves_a_migration_started_elsewhere(libvirt_hosts, domain, tmp_path):
    """`migtui exporter URI URI`: the hosts opened read-only, a virsh migration's figures in the
    exposition with backend="libvirt" and the host it runs on."""
    import re
    import signal
    import urllib.request

    hosts = libvirt_hosts
    log = tmp_path / "exporter.log"
    with open(log, "wb") as out:
        exporter = subprocess.Popen([sys.executable, "-m", "migtui", "exporter", "--metrics", "127.0.0.1:0",
                                     *(h.uri for h in hosts)], stdout=out, stderr=out, start_new_session=True)
    virsh = hosts.virsh_migrate(hosts[0], hosts[1], domain, 30)
    try:
        await wait_until(lambda: "metrics on" in log.read_text() or exporter.poll() is not None, 20)
        said = log.read_text()
        assert "2 libvirt host(s), read-only" in said, said
        url = re.search(r"metrics on (\S+)", said).group(1)
        url = url if url.endswith("/metrics") else url.rstrip("/") + "/metrics"
        found: dict[str, float] = {}

        def scrape() -> bool:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            for series in ("kubevirt_vmi_migration_data_processed_bytes", "kubevirt_vmi_migration_data_total_bytes"):
                m = re.search(rf'^{series}\{{([^}}]*name="{domain}"[^}}]*)\}} (\S+)$', text, re.M)
                if m and 'backend="libvirt"' in m.group(1) and 'host="host1"' in m.group(1):
                    found[series] = float(m.group(2))
            return found.get("kubevirt_vmi_migration_data_processed_bytes", 0) > 0

        await wait_until(lambda: scrape(), 40, 0.5)
        assert found["kubevirt_vmi_migration_data_total_bytes"] >= 200 * 2**20  # the guest's 256 MiB of RAM
    finally:
        hosts.virsh(hosts[0], "domjobabort", domain, check=False)
        await asyncio.to_thread(virsh.wait, 30)
        exporter.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(exporter.wait, 15) == 0
    assert "Traceback" not in log.read_text()
