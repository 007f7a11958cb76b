"""The two-host libvirt lab (migtui.lab.libvirt_hosts), through libvirt-python as the libvirt backend will use it.

Each libvirt call runs in a worker thread (asyncio.to_thread), never on the event loop's thread, and a migration,
which blocks its caller for as long as it runs, gets a connection of its own apart from the one that polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lab_fixtures import pid_alive, wait_until
from migtui.lab.libvirt_hosts import LibvirtHost, LibvirtHosts, LibvirtLabError

try:
    import libvirt
except ImportError:  # the tests that need it skip (or fail under MIGTUI_REQUIRE_LIBVIRT) through their fixture
    libvirt = None
else:
    # libvirt prints every error to stderr by default; the tests look at the exceptions instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


async def call(fn, *args):
    """A libvirt call in a worker thread."""
    return await asyncio.to_thread(fn, *args)


async def connect(host: LibvirtHost):
    return await call(libvirt.open, host.uri)


@contextlib.asynccontextmanager
async def connected(host: LibvirtHost):
    """A connection to ``host``, closed afterwards (in a worker thread, like every libvirt call)."""
    conn = await connect(host)
    try:
        yield conn
    finally:
        await call(conn.close)


async def migrate(hosts: LibvirtHosts, source: LibvirtHost, dest: LibvirtHost, name: str) -> None:
    """migrateToURI3 over a unix socket, on a connection of its own; returns when the migration ends."""
    async with connected(source) as conn:
        dom = await call(conn.lookupByName, name)
        params = {libvirt.VIR_MIGRATE_PARAM_URI: hosts.migration_uri(dest)}
        await call(dom.migrateToURI3, dest.uri, params, libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER)


def host_uuid(capabilities: str) -> str:
    m = re.search(r"<host>\s*<uuid>([0-9a-f-]+)</uuid>", capabilities)
    assert m, capabilities[:300]
    return m.group(1)


async def cpu_time_grows(dom) -> None:
    """The domain's vCPU runs: its CPU time keeps growing."""
    before = (await call(dom.info))[4]

    async def grown() -> bool:
        return (await call(dom.info))[4] > before

    # info() is a libvirt call: the condition runs in a thread, polled until it holds or the deadline.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not await grown():
        assert loop.time() < deadline, "the domain's CPU time did not grow in 10 s"
        await asyncio.sleep(0.05)


async def test_hosts_answer_with_their_own_hostnames_and_uuids(libvirt_hosts):
    seen = []
    for host in libvirt_hosts:
        async with connected(host) as conn:
            assert await call(conn.getHostname) == host.name
            uuid = host_uuid(await call(conn.getCapabilities))
            assert uuid == host.uuid
            seen.append((host.name, uuid, host.port))
    assert [name for name, _, _ in seen] == ["host1", "host2"]
    assert len({uuid for _, uuid, _ in seen}) == 2
    assert len({port for _, _, port in seen}) == 2


async def test_a_domain_runs_and_migrates_to_the_other_host(libvirt_hosts):
    host1, host2 = libvirt_hosts
    # The paced guest (~19 MiB/s at most): a live migration at libvirt's default, unlimited bandwidth converges.
    guest = await call(lambda: libvirt_hosts.define_guest(host1, "mig-ok", page_delay=1600, icount_shift=7))
    conn1, conn2 = await connect(host1), await connect(host2)
    try:
        dom = await call(conn1.lookupByName, "mig-ok")
        assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_RUNNING
        await cpu_time_grows(dom)
        assert pid_alive(libvirt_hosts.qemu_pid(host1, guest.name))

        await asyncio.wait_for(migrate(libvirt_hosts, host1, host2, "mig-ok"), 30)

        moved = await call(conn2.lookupByName, "mig-ok")
        assert await call(moved.state) == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED]
        await cpu_time_grows(moved)
        assert pid_alive(libvirt_hosts.qemu_pid(host2, guest.name))
        with pytest.raises(libvirt.libvirtError) as gone:
            await call(conn1.lookupByName, "mig-ok")
        assert gone.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    finally:
        await call(conn1.close)
        await call(conn2.close)
        await call(libvirt_hosts.destroy_guest, "mig-ok")


async def test_at_30_mib_s_and_1_ms_it_does_not_converge_and_abort_stops_it(libvirt_hosts):
    host1, host2 = libvirt_hosts
    # The stock guest dirties ~98 MiB as fast as TCG runs: far more than 30 MiB/s can ever catch up with.
    await call(libvirt_hosts.define_guest, host1, "mig-stuck")
    poll = await connect(host1)
    try:
        dom = await call(poll.lookupByName, "mig-stuck")
        await call(dom.migrateSetMaxSpeed, 30)  # MiB/s
        await call(dom.migrateSetMaxDowntime, 1)  # ms
        job = asyncio.ensure_future(migrate(libvirt_hosts, host1, host2, "mig-stuck"))
        iterations = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 25
        while not iterations or iterations[-1] < 3:
            assert not job.done(), "the migration ended by itself"
            assert loop.time() < deadline, f"passes seen in 25 s: {iterations}"
            stats = await call(dom.jobStats)
            if stats.get("type") == libvirt.VIR_DOMAIN_JOB_UNBOUNDED and "memory_iteration" in stats:
                if not iterations or stats["memory_iteration"] != iterations[-1]:
                    iterations.append(stats["memory_iteration"])
            await asyncio.sleep(0.1)
        assert iterations == sorted(iterations) and len(iterations) >= 2, iterations  # climbing, pass after pass
        assert stats["downtime"] > 1  # the expected downtime, ms: far above the 1 ms allowed
        assert stats["memory_dirty_rate"] > 0 and stats["memory_remaining"] > 0
        assert 0 < stats["memory_bps"] < 40 * 2**20  # held to the 30 MiB/s asked

        await call(dom.abortJob)
        with pytest.raises(libvirt.libvirtError) as aborted:
            await asyncio.wait_for(job, 15)
        assert aborted.value.get_error_code() == libvirt.VIR_ERR_OPERATION_ABORTED
        assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_RUNNING
        assert (await call(dom.jobInfo))[0] == libvirt.VIR_DOMAIN_JOB_NONE
        async with connected(host2) as conn2:
            assert "mig-stuck" not in [d.name() for d in await call(conn2.listAllDomains)]
    finally:
        await call(poll.close)
        await call(libvirt_hosts.destroy_guest, "mig-stuck")


async def test_a_killed_libvirtd_restarts_and_reconnects_to_its_running_domain(libvirt_hosts):
    host1, host2 = libvirt_hosts
    await call(libvirt_hosts.define_guest, host2, "survivor")
    qemu = libvirt_hosts.qemu_pid(host2, "survivor")
    old = await connect(host2)
    dom_uuid = (await call(old.lookupByName, "survivor")).UUIDString()
    daemon, other = host2.pid, host1.pid
    try:
        await call(libvirt_hosts.kill, host2)
        assert daemon is not None and not pid_alive(daemon)
        assert pid_alive(qemu)  # kill -9 of libvirtd leaves its domains running
        with pytest.raises(libvirt.libvirtError):
            await call(old.getHostname)
        with pytest.raises(libvirt.libvirtError):
            await connect(host2)  # nobody listens on its port
        assert host1.pid == other and pid_alive(other)

        await call(libvirt_hosts.restart, host2)
        assert host2.pid != daemon and pid_alive(host2.pid)
        async with connected(host2) as new:
            dom = await call(new.lookupByName, "survivor")
            assert dom.UUIDString() == dom_uuid
            assert (await call(dom.state))[0] == libvirt.VIR_DOMAIN_RUNNING
            assert libvirt_hosts.qemu_pid(host2, "survivor") == qemu  # the same QEMU, reconnected
            await cpu_time_grows(dom)
            assert await call(new.getHostname) == "host2"
    finally:
        await call(old.close)
        await call(libvirt_hosts.destroy_guest, "survivor")


async def test_exit_leaves_no_process_mount_or_directory(libvirt_required):
    async with LibvirtHosts(1) as lab:
        (host,) = lab
        await call(lab.define_guest, host, "doomed")
        pids = [host.init_pid, host.pid, lab.qemu_pid(host, "doomed")]
        namespaces, where = set(host.namespaces), lab.dir
        assert all(pids) and all(pid_alive(p) for p in pids) and len(namespaces) == 2
        assert where.is_dir()
    assert not [p for p in pids if pid_alive(p)]
    assert not where.exists()
    # No process is left in its PID or mount namespace: the namespaces, and the mounts in them, are gone.
    in_them = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        for kind in ("pid", "mnt"):
            try:
                if os.readlink(f"/proc/{entry}/ns/{kind}") in namespaces:
                    in_them.append(int(entry))
            except OSError:
                pass
    assert in_them == []
    assert lab.leftovers() == []


async def test_the_module_runs_hosts_until_sigterm_and_cleans_up(libvirt_required):
    parent = Path(tempfile.mkdtemp(prefix="migtui-libvirt-main-"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "migtui.lab.libvirt_hosts", "--hosts", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "TMPDIR": str(parent)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        while len([ln for ln in lines if ln.startswith("host")]) < 2:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, f"exited early: {(await proc.stderr.read()).decode()}"
            lines.append(line)
        uris = re.findall(r"qemu\+tcp://127\.0\.0\.1:\d+/system", "".join(lines))
        pids = [int(p) for p in re.findall(r"pid=(\d+)", "".join(lines))]
        assert len(uris) == 2 and len(pids) == 2
        for name, uri in zip(("host1", "host2"), uris):
            conn = await call(libvirt.open, uri)
            try:
                assert await call(conn.getHostname) == name
            finally:
                await call(conn.close)
        assert len(list(parent.iterdir())) == 1  # its lab directory

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        await wait_until(lambda: not any(pid_alive(p) for p in pids), 5)
        assert list(parent.iterdir()) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        parent.rmdir()


def test_without_libvirtd_the_lab_says_what_to_install(tmp_path):
    """With no libvirtd on PATH (or not root), one line names what is missing; no traceback, exit status 1."""
    empty, parent = tmp_path / "bin", tmp_path / "tmp"
    empty.mkdir()
    parent.mkdir()
    done = subprocess.run([sys.executable, "-m", "migtui.lab.libvirt_hosts"], capture_output=True, text=True,
                          env={**os.environ, "PATH": str(empty), "TMPDIR": str(parent)}, timeout=30)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    if os.geteuid() == 0:
        assert lines[0] == (
            "libvirt lab: libvirtd not found: install Debian packages libvirt-daemon libvirt-daemon-driver-qemu "
            "libvirt-clients (as root, .ci/libvirt installs all the lab needs)"
        )
    else:
        assert lines[0].startswith("libvirt lab: the libvirt lab needs root")
    assert list(parent.iterdir()) == []  # it stopped before making anything


async def test_a_lab_killed_with_9_takes_its_namespace_along_and_the_next_lab_removes_its_directory(
        libvirt_required):
    tmp_path = Path(tempfile.mkdtemp(prefix="migtui-libvirt-kill-"))  # short: libvirtd's sockets go under it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "migtui.lab.libvirt_hosts", "--hosts", "1", "--guest", "orphan",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert proc.stdout is not None
    text = ""
    while "domain orphan" not in text:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, f"exited early: {(await proc.stderr.read()).decode()}"
        text += line
    (stale,) = tmp_path.iterdir()
    (daemon,) = [int(p) for p in re.findall(r"pid=(\d+)", text)]
    proc.kill()  # no clean-up runs: the init's stdin ends, and the kernel kills the namespace
    await proc.wait()
    await wait_until(lambda: not pid_alive(daemon), 10)

    async with LibvirtHosts(1, base_dir=tmp_path) as lab:
        assert not stale.exists()
        assert [p.name for p in tmp_path.iterdir()] == [lab.dir.name]
    assert list(tmp_path.iterdir()) == []
    tmp_path.rmdir()


def test_a_base_directory_too_long_for_unix_sockets_is_one_line(libvirt_required, tmp_path):
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    with pytest.raises(LibvirtLabError, match=r"too long a path for libvirtd's unix sockets") as said:
        LibvirtHosts(2, base_dir=deep).start()
    assert "\n" not in str(said.value)
    assert list(deep.iterdir()) == []
