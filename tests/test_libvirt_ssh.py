"""qemu+ssh:// for real: a private sshd on loopback (key authentication only) in front of a lab
libvirt host, reached as an operator reaches a remote one (`?socket=` names the lab host's own
libvirtd socket, which libvirt reaches through `nc -U` on the far side). status lists its domain,
migrate --wait moves it to the other host, and a key the server refuses or a port where nothing
listens is one line with exit 2. CI installs openssh-server and netcat-openbsd (.ci/libvirt)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid as uuidlib

import pytest

pytestmark = pytest.mark.usefixtures("libvirt_required")

SSHD = "/usr/sbin/sshd"


def _missing() -> str | None:
    if not os.path.exists(SSHD):
        return "sshd not installed (apt-get install openssh-server)"
    if shutil.which("nc") is None:
        return "nc not installed (apt-get install netcat-openbsd)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """(port, client key, a key the server does not take) of a private sshd on 127.0.0.1."""
    why = _missing()
    if why is not None:
        if os.environ.get("MIGTUI_REQUIRE_LIBVIRT"):
            pytest.fail(f"MIGTUI_REQUIRE_LIBVIRT is set but {why}")
        pytest.skip(why)
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host", "client", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nStrictModes no\nPidFile {d / 'sshd.pid'}\n")
    os.makedirs("/run/sshd", exist_ok=True)  # its privilege separation directory
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while b"Server listening" not in (d / "sshd.log").read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()[-500:]}")
        time.sleep(0.05)  # polled, with a deadline
    yield port, d / "client", d / "stranger"
    proc.terminate()
    proc.wait(10)
    log.close()


def _ssh_uri(host, port: int, key, verify: bool = False) -> str:
    # no_verify=1: the test's own host key is not in known_hosts (ssh's StrictHostKeyChecking=no).
    return (f"qemu+ssh://root@127.0.0.1:{port}/system?socket={host.socket_dir}/libvirt-sock&keyfile={key}"
            + ("" if verify else "&no_verify=1"))


def migtui(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migtui", *args], capture_output=True, text=True, timeout=90)


def test_over_ssh_status_lists_the_domain_and_migrate_moves_it(libvirt_hosts, sshd):
    port, key, _ = sshd
    hosts = libvirt_hosts
    name = f"ssh-{uuidlib.uuid4().hex[:6]}"
    hosts.define_guest(hosts[0], name)
    try:
        uri = _ssh_uri(hosts[0], port, key)
        status = migtui("status", "--json", uri)
        assert status.returncode == 0, status.stderr
        mine = [s for s in map(json.loads, status.stdout.splitlines()) if s["name"] == name]
        assert mine and mine[0]["run-state"] == "running" and mine[0]["target"].startswith("qemu+ssh://")
        done = migtui("migrate", f"{uri}#{name}", "--to", hosts[1].uri, "--migrate-uri", hosts.migration_uri(hosts[1]),
                      "--bandwidth", "1G", "--downtime", "2s", "--wait")
        assert done.returncode == 0, done.stderr
        assert "completed" in done.stdout.splitlines()[-1]
        assert name in hosts.virsh(hosts[1], "list", "--name").stdout.split()
    finally:
        hosts.destroy_guest(name)


def test_over_ssh_a_refused_key_or_no_server_is_one_line(libvirt_hosts, sshd):
    port, _, stranger = sshd
    refused = migtui("status", _ssh_uri(libvirt_hosts[0], port, stranger))
    assert refused.returncode == 2 and "authentication refused" in refused.stderr and "publickey" in refused.stderr
    nobody = migtui("status", f"qemu+ssh://root@127.0.0.1:{_free_port()}/system")
    assert nobody.returncode == 2 and "libvirtd unreachable" in nobody.stderr
    for done in (refused, nobody):
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
