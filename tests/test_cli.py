"""The command line: exact names, exit codes, one clear line on stderr, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from lab_fixtures import on_both_qemus, qemu_required, wait_until

MIGTUI = [sys.executable, "-m", "migtui"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*MIGTUI, *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in lines[0], lines[0]


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("migtui ")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["migrate"], "required"),
        (["migrate", "/tmp/x.qmp"], "--to"),
        (["migrate", "/tmp/x.qmp", "--to", "a", "--uri", "tcp:a:1"], "not allowed with"),
        (["migrate", "/tmp/x.qmp", "--uri", "10.0.0.1:4444"], "no supported scheme"),
        (["migrate", "/tmp/x.qmp", "--uri", "tcp:h:1", "--bandwidth", "-5M"], "negative"),
        (["migrate", "/tmp/x.qmp", "--uri", "tcp:h:1", "--bandwidth", "fast"], "not understood"),
        (["migrate", "/tmp/x.qmp", "--uri", "tcp:h:1", "--downtime", "300"], "no unit"),
        (["migrate", "/tmp/x.qmp", "--uri", "tcp:h:1", "--downtime", "1h"], "not understood"),
        (["migrate", "/tmp/x.qmp", "--uri", "tcp:h:1", "--xbzrle-cache", "100M"], "power of two"),
        (["migrate", "/tmp/x.qmp", "--uri", "tcp:h:1", "--multifd", "0"], "1 to 255"),
        (["migrate", "/tmp/x.qmp", "--uri", "tcp:h:1", "--bandwidth", "99999999T"], "too large"),
        (["set", "/tmp/x.qmp", "bandwidth"], "NAME=VALUE"),
        (["caps", "/tmp/x.qmp", "xbzrle=maybe"], "on or off"),
        (["watch", "--interval", "0", "/tmp/x.qmp"], "--interval"),
        (["watch", "--count", "-1", "/tmp/x.qmp"], "--count"),
        (["status", "ssh:host"], "not supported"),
        (["status", "tcp:host"], "tcp:HOST:PORT"),
        (["lab", "--pairs", "0"], "--pairs"),
        (["lab", "--mem", "64M"], "at least 128M"),
        (["lab", "--qemu", "/nonexistent/qemu-system-x86_64"], "--qemu /nonexistent/qemu-system-x86_64: no such file"),
        (["lab", "--qemu", "/etc/passwd"], "--qemu /etc/passwd: not executable"),
        (["lab", "--qemu", "/"], "--qemu /: is a directory"),
        (["lab", "--qemu", "true"], "not a QEMU (--version said: true"),
        (["lab", "--sim", "--qemu", "true"], "give one of them"),
        (["lab", "--dirty-ring", "1000"], "not a ring size KVM takes; give one of 1024, 2048,"),
        (["lab", "--accel", "tcg", "--dirty-ring", "4096"], "--dirty-ring is KVM's"),
        (["migrate", "/nonexistent/vm.qmp", "--uri", "unix:/x", "--dirty-limit", "0"], "at least 1"),
        (["migrate", "/nonexistent/vm.qmp", "--uri", "unix:/x", "--check", "--no-preflight"], "give one of them"),
        (["frobnicate"], "unknown command or socket"),
        (["status", "/nonexistent/vm.qmp"], "no such socket"),
        (["cancel", "/nonexistent/vm.qmp"], "no such socket"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, fragment):
    assert_one_line_error(run(*args), fragment)


def test_not_a_socket_and_refused(tmp_path):
    regular = tmp_path / "file.qmp"
    regular.write_text("")
    assert_one_line_error(run("status", str(regular)), "not a socket")
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "dead.qmp"))  # bound but never listening: nobody answers
    try:
        assert_one_line_error(run("status", str(tmp_path / "dead.qmp")), "nothing listens")
    finally:
        sock.close()


def test_a_bad_migtui_qemu_is_one_line_not_the_simulated_lab():
    env = {**os.environ, "MIGTUI_QEMU": "/nonexistent/qemu"}
    result = subprocess.run([*MIGTUI, "lab", "--no-ui"], capture_output=True, text=True, timeout=60, env=env)
    assert_one_line_error(result, "MIGTUI_QEMU=/nonexistent/qemu: no such file")


@qemu_required
@on_both_qemus
async def test_status_watch_set_and_migrate_wait_on_real_qemu(lab_pair):
    source, destination, lab = lab_pair

    async def migtui(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *MIGTUI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, out.decode(), err.decode()

    rc, out, err = await migtui("status", "--json", source.endpoint, destination.endpoint)
    assert rc == 0, err
    objs = [json.loads(line) for line in out.splitlines()]
    assert [o["name"] for o in objs] == ["src1", "dst1"]
    assert objs[0]["run-state"] == "running" and objs[1]["run-state"] == "inmigrate"
    version = lab.qemu_version
    assert version.startswith(("7.", "10.0.")) and objs[0]["error"] is None
    assert objs[0]["qemu"] == version and objs[0]["dialect"] == "modern"
    assert set(objs[0]["derived"]) >= {"progress", "throughput-bps", "dirty-bytes-per-s", "eta-s"}

    rc, out, err = await migtui("status", source.endpoint)
    assert rc == 0 and f"qemu {version} (modern)" in out, out + err

    rc, out, err = await migtui("set", source.endpoint, "bandwidth=2G", "downtime=20s")
    assert rc == 0, err
    assert "max-bandwidth=2147483648" in out and "downtime-limit=20000" in out

    rc, out, err = await migtui("set", source.endpoint, "downtime=fast")
    assert rc == 2 and "300ms" in err

    rc, out, err = await migtui("migrate", source.endpoint, "--to", destination.endpoint, "--wait")
    assert rc == 0, err
    assert "completed" in out.splitlines()[-1]
    # The pre-flight ran first, by default (one line, after the start was taken).
    said = [line for line in err.splitlines() if "pre-flight" in line]
    assert len(said) == 1 and said[0].startswith("migtui: src1: pre-flight: ") and "converge" in said[0], err

    rc, out, err = await migtui("watch", "--json", "--count", "2", "--interval", "0.1", destination.endpoint)
    assert rc == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2 and all(o["run-state"] == "running" for o in lines)


@qemu_required
async def test_a_refused_start_leaves_the_destination_ready_for_the_next_one(lab_pair):
    """The report: QEMU refused the source's capabilities after migrate-incoming had run on the
    destination, and the retry failed with "The incoming migration has already been started"."""
    from qemu.qmp import QMPClient

    source, destination, lab = lab_pair

    async def migtui(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(*MIGTUI, *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, out.decode(), err.decode()

    def caps(state: bool, *names: str) -> dict:
        return {"capabilities": [{"capability": n, "state": state} for n in names]}

    src_tools, dst_tools = QMPClient("test"), QMPClient("test")
    await src_tools.connect(str(source.tools_qmp_path))
    await dst_tools.connect(str(destination.tools_qmp_path))
    try:
        # 7.2 refuses post-copy while x-ignore-shared is on (as 10.0 refuses multifd with xbzrle).
        await src_tools.execute("migrate-set-capabilities", caps(True, "x-ignore-shared"))
        rc, _, err = await migtui("migrate", source.endpoint, "--to", destination.endpoint, "--postcopy")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "Postcopy is not compatible with ignore-shared" in err
        assert "socket-address" not in await dst_tools.execute("query-migrate")  # never told to listen
        dst_caps = {c["capability"]: c["state"] for c in await dst_tools.execute("query-migrate-capabilities")}
        assert dst_caps["postcopy-ram"] is False
        await src_tools.execute("migrate-set-capabilities", caps(False, "x-ignore-shared"))
        # As after a start whose migrate was refused: the destination listens already. A new
        # migtui process finds where from QEMU (socket-address) and migrates there.
        uri = f"unix:{lab.runtime_dir / 'earlier-start.sock'}"
        await dst_tools.execute("migrate-incoming", {"uri": uri})
        rc, out, err = await migtui("migrate", source.endpoint, "--to", destination.endpoint, "--bandwidth", "4G",
                                    "--downtime", "20s", "--wait", "--no-preflight")
        assert rc == 0, err
        assert f"migrating to {uri}" in err and "completed" in out.splitlines()[-1]
        assert "pre-flight" not in err, err
    finally:
        await src_tools.disconnect()
        await dst_tools.disconnect()


@pytest.mark.parametrize("qemu", ["10.0"], indirect=True)
async def test_block_is_refused_in_one_line_on_10(lab_pair):
    """9.1 removed blk: `--block` is refused before anything is sent, the destination untouched."""
    from qemu.qmp import QMPClient

    source, destination, lab = lab_pair
    proc = await asyncio.create_subprocess_exec(*MIGTUI, "migrate", source.endpoint, "--to", destination.endpoint,
                                                "--block", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err.decode(), err
    assert f"QEMU {lab.qemu_version} has no block migration (blk was removed in 9.1)" in lines[0]
    tools = QMPClient("test")
    await tools.connect(str(destination.tools_qmp_path))
    try:
        assert "socket-address" not in await tools.execute("query-migrate")  # never told to listen
    finally:
        await tools.disconnect()


@qemu_required
async def test_cancel_makes_wait_exit_1(lab_pair):
    source, destination, _ = lab_pair
    proc = await asyncio.create_subprocess_exec(
        *MIGTUI, "migrate", source.endpoint, "--to", destination.endpoint, "--wait",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        # --wait holds the source's monitor, so cancel through the tools monitor.
        from qemu.qmp import QMPClient

        tools = QMPClient("test")
        await tools.connect(str(source.tools_qmp_path))

        async def status() -> str:
            return (await tools.execute("query-migrate")).get("status", "none")

        state = {"s": "none"}

        async def refresh() -> bool:
            state["s"] = await status()
            return state["s"] == "active"

        deadline = asyncio.get_running_loop().time() + 30
        while not await refresh():
            assert asyncio.get_running_loop().time() < deadline, state
            await asyncio.sleep(0.05)
        await tools.execute("migrate_cancel")
        await tools.disconnect()
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "cancelled" in out.decode().splitlines()[-1]


@qemu_required
def test_lab_no_ui_starts_and_stops_cleanly(tmp_path):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.Popen([*MIGTUI, "lab", "--no-ui", "--accel", "tcg"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        header = proc.stdout.readline()
        assert "migtui lab: 2 VMs" in header, proc.stderr.read() if proc.poll() is not None else header
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("src1") and lines[1].startswith("dst1")
        assert len(list(tmp_path.iterdir())) == 1
        proc.send_signal(2)  # Ctrl-C
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp_path.iterdir()) == []


def _start_and_interrupt(args: list[str], env: dict, expect: str) -> tuple[str, str, list]:
    proc = subprocess.Popen([*MIGTUI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        header = proc.stdout.readline()
        assert expect in header, header + (proc.stderr.read() if proc.poll() is not None else "")
        endpoints = [proc.stdout.readline().strip() for _ in range(4)]
        proc.send_signal(2)  # Ctrl-C
        assert proc.wait(timeout=20) == 0
        return header, proc.stderr.read(), endpoints
    finally:
        if proc.poll() is None:
            proc.kill()


def test_lab_sim_no_ui_starts_and_stops_cleanly(tmp_path):
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    header, _, endpoints = _start_and_interrupt(["lab", "--sim", "--no-ui", "--vms", "4", "--dialect", "1.4"], env,
                                                "4 simulated VMs (1.4")
    assert all("=unix:" in e for e in endpoints)
    assert list(tmp_path.iterdir()) == []  # its runtime directory is gone


def test_lab_without_qemu_says_so_and_starts_the_simulated_lab(tmp_path):
    # A PATH with python but no qemu-system-x86_64.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bindir), "XDG_RUNTIME_DIR": str(tmp_path)}
    _, err, _ = _start_and_interrupt(["lab", "--no-ui", "--vms", "4"], env, "simulated VMs")
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "qemu-system-x86_64 not found" in lines[0] and "qemu-system-x86" in lines[0]
    assert [p.name for p in tmp_path.iterdir()] == ["bin"]


@qemu_required
async def test_migrate_check_predicts_from_the_measured_dirty_rate(lab_pair):
    source, destination, _ = lab_pair

    async def check(*extra: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(*MIGTUI, "migrate", source.endpoint, "--to", destination.endpoint,
                                                    "--check", *extra, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode(), err.decode()

    # The guest's measured rate depends on how much CPU TCG gets; 16 MiB/s is too little either way.
    rc, out, err = await check("--bandwidth", "16M")
    assert rc == 1 and "will not converge" in out, out + err
    rc, out, err = await check("--bandwidth", "4G", "--downtime", "2s")
    assert rc == 0 and "converges" in out, out + err
    from qemu.qmp import QMPClient

    tools = QMPClient("test")
    await tools.connect(str(source.tools_qmp_path))
    try:
        await tools.execute("migrate", {"uri": "exec:cat > /dev/null"})
        rc, out, err = await check()
        assert rc == 2 and "competes with" in err and len(err.strip().splitlines()) == 1
    finally:
        await tools.execute("migrate_cancel")
        await tools.disconnect()


def test_preflight_model():
    from migtui.model.preflight import predict

    MiB = 2**20
    assert not predict(100 * MiB, 128 * MiB, 300, 512 * MiB).converges
    good = predict(10 * MiB, 128 * MiB, 300, 512 * MiB)
    assert good.converges and 4 < good.eta_s < 6
    assert "passes" in good.sentence


@pytest.mark.parametrize("boom, code, line", [
    (RuntimeError("a bug"), 3, "migtui: internal error: RuntimeError('a bug'); details in "),
    (None, 2, "migtui: QMP: "),
])
def test_an_unexpected_error_is_one_line_never_a_traceback(monkeypatch, tmp_path, capsys, boom, code, line):
    # The last guard in main(): whatever escapes a command (a migtui bug, a qemu.qmp error no
    # handler names) is one line, and the traceback goes to the error log.
    from qemu.qmp.protocol import StateError

    from migtui import cli

    error = boom if boom is not None else StateError("QMPClient is disconnected and idle.", None, None)

    async def broken(args):
        raise error

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "status", broken)
    assert cli.main(["status", "unix:/nonexistent"]) == code
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1 and "Traceback" not in err, err
    if code == 3:
        logged = (tmp_path / "migtui" / "errors.log").read_text()
        assert "Traceback" in logged and "RuntimeError: a bug" in logged


def test_serve_refuses_metrics_in_the_console_arguments():
    # Each browser visit runs its own console process: they cannot all bind one metrics port.
    r = run("serve", "--sim", "--", "lab", "--sim", "--metrics", "127.0.0.1:0")
    assert r.returncode == 2 and "run migtui exporter beside it" in r.stderr and "Traceback" not in r.stderr, r
