"""Tests for migtui.lab: the dirtying guest, QEMU processes and the Lab."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import sys
from pathlib import Path
from typing import Any

import lab_fixtures
import pytest
from lab_fixtures import pid_alive, qemu_required, wait_until
from qemu.qmp import QMPClient

import migtui.lab.lab as lab_module
from migtui.lab import (
    DIRTY_END,
    DIRTY_START,
    QEMU_MISSING_MESSAGE,
    READY_MARKER,
    Lab,
    QemuError,
    QemuMissing,
    QemuVM,
    build_dirty_guest,
)
from migtui.lab.guest import guest_image
from migtui.lab.lab import parse_mem, remove_stale_labs

# Fixtures, by name (harmless if tests/conftest.py imports them as well).
lab_pair = lab_fixtures.lab_pair
lab_pair_disk = lab_fixtures.lab_pair_disk
lab_pair_paced = lab_fixtures.lab_pair_paced


# -- the guest image (no QEMU needed) -----------------------------------------


@pytest.mark.parametrize("page_delay", [0, lab_fixtures.PACED_PAGE_DELAY])
def test_guest_image_has_valid_multiboot_header(tmp_path: Path, page_delay: int) -> None:
    path = build_dirty_guest(tmp_path / "guest.bin", page_delay)
    image = path.read_bytes()
    assert image == guest_image(page_delay)

    # The header must be 4-byte aligned within the first 8 KiB.
    offset = next(
        off
        for off in range(0, min(len(image), 8192) - 12, 4)
        if struct.unpack_from("<I", image, off)[0] == 0x1BADB002
    )
    magic, flags, checksum = struct.unpack_from("<3I", image, offset)
    assert (magic + flags + checksum) % 2**32 == 0
    assert flags & (1 << 16), "a.out kludge: the addresses come from the header"

    header_addr, load_addr, load_end, bss_end, entry = struct.unpack_from(
        "<5I", image, offset + 12
    )
    assert load_addr == 0x100000
    assert header_addr - load_addr == offset
    assert load_end == load_addr + len(image)
    assert bss_end in (0, load_end)
    assert load_addr + offset + 32 <= entry < load_end
    assert READY_MARKER + b"\0" in image
    # The image must sit below the range the guest dirties.
    assert load_end < DIRTY_START < DIRTY_END <= 100 * 1024 * 1024


def test_the_stock_guest_image_is_unchanged_by_pacing() -> None:
    # The bytes every lab booted before the paced guest existed: the default lab is the same.
    image = guest_image()
    assert len(image) == 91
    assert hashlib.sha256(image).hexdigest() == (
        "1f7061ef65dbc6734191e48728004aa451eaa9c65043692b46371f8c3c25d09c"
    )
    assert guest_image(0) == image


def test_paced_guest_spins_between_pages_after_its_first_sweep() -> None:
    image = guest_image(1600)
    # In the page loop: mov ecx, ebx; jecxz over the spin; loop $ (spin ECX times).
    assert b"\xfe\x00\x89\xd9\xe3\x02\xe2\xfe\x05" in image
    # EBX starts at 0 (no spin in the sweep before the marker) and gets the delay after it.
    assert b"\x31\xdb" in image
    printed = image.index(b"\x31\xf6")  # xor esi, esi: the marker is out
    assert image[printed + 2 : printed + 7] == b"\xbb" + struct.pack("<I", 1600)
    for bad in (-1, 2**32):
        with pytest.raises(ValueError, match="page_delay"):
            guest_image(bad)


def test_icount_shift_reaches_the_qemu_command_line(tmp_path: Path) -> None:
    vm = QemuVM("src", tmp_path, tmp_path / "k", icount_shift=7, qemu="qemu-system-x86_64")
    argv = vm.command()
    assert argv[argv.index("-icount") + 1] == "shift=7,sleep=on,align=on"
    assert "-icount" not in QemuVM("src", tmp_path, tmp_path / "k", qemu="q").command()
    with pytest.raises(ValueError, match="tcg"):
        QemuVM("src", tmp_path, tmp_path / "k", accel="kvm", icount_shift=7)
    with pytest.raises(ValueError, match="0 to 10"):
        QemuVM("src", tmp_path, tmp_path / "k", icount_shift=11)
    with pytest.raises(ValueError, match="tcg"):
        Lab(accel="kvm", icount_shift=7)


def test_a_dirty_ring_reaches_kvms_accel_option(tmp_path: Path) -> None:
    vm = QemuVM("src", tmp_path, tmp_path / "k", accel="kvm", dirty_ring=4096, qemu="q")
    argv = vm.command()
    assert argv[argv.index("-accel") + 1] == "kvm,dirty-ring-size=4096"
    with pytest.raises(ValueError, match="accel='kvm'"):
        QemuVM("src", tmp_path, tmp_path / "k", dirty_ring=4096)  # TCG has no dirty ring
    with pytest.raises(ValueError, match="1024, 2048"):
        QemuVM("src", tmp_path, tmp_path / "k", accel="kvm", dirty_ring=1000)
    with pytest.raises(ValueError, match="KVM's"):
        Lab(accel="tcg", dirty_ring=4096)


def test_parse_mem_and_minimum() -> None:
    assert parse_mem("128M") == 128 << 20
    assert parse_mem("1G") == 1 << 30
    assert parse_mem("256") == 256 << 20
    with pytest.raises(ValueError):
        parse_mem("lots")
    with pytest.raises(ValueError, match="128M"):
        Lab(mem="64M")


async def test_missing_qemu_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_module, "find_qemu", lambda: None)
    lab = Lab()
    with pytest.raises(QemuMissing) as excinfo:
        await lab.start()
    assert str(excinfo.value) == QEMU_MISSING_MESSAGE
    assert not lab.vms


async def test_the_lab_runs_the_qemu_it_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MIGTUI_QEMU", "/nonexistent/qemu")
    with pytest.raises(QemuMissing, match=r"^MIGTUI_QEMU=/nonexistent/qemu: no such file; give the path"):
        await Lab().start()
    # Given as a parameter, it wins over the variable; a file that is not a QEMU is refused by name.
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho 'not this one'\n")
    fake.chmod(0o755)
    lab = Lab(qemu=str(fake), runtime_dir=tmp_path)
    with pytest.raises(QemuError, match=r"^QEMU .*: not a QEMU \(--version said: not this one\)"):
        await lab.start()
    assert not lab.vms and list(tmp_path.iterdir()) == [fake]  # refused before anything started


# -- QEMU processes ------------------------------------------------------------


@pytest.mark.qemu
@qemu_required
async def test_lab_starts_and_stops_cleanly() -> None:
    lab = Lab(pairs=1, accel="tcg")
    await lab.start()
    try:
        runtime_dir = lab.runtime_dir
        assert runtime_dir.name.startswith(f"migtui-lab-{os.getpid()}-")
        assert runtime_dir.stat().st_mode & 0o777 == 0o700
        assert [vm.name for vm in lab.sources] == ["src1"]
        assert [vm.name for vm in lab.destinations] == ["dst1"]
        for vm in lab.vms:
            assert vm.qmp_path.is_socket()
            assert vm.tools_qmp_path.is_socket()
            assert vm.endpoint == f"{vm.name}=unix:{runtime_dir / (vm.name + '.qmp')}"
            assert vm.running
        assert READY_MARKER in lab.sources[0].serial_path.read_bytes()
        # The destination waits for migrate-incoming and runs no guest code.
        assert READY_MARKER not in lab.destinations[0].serial_path.read_bytes()
        pids = [vm.pid for vm in lab.vms]
    finally:
        await lab.stop()
    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert all(vm.returncode is not None for vm in lab.vms)
    assert not runtime_dir.exists()


@pytest.mark.qemu
@qemu_required
async def test_add_vm_joins_the_lab(lab_pair: tuple[QemuVM, QemuVM, Lab]) -> None:
    _, _, lab = lab_pair
    extra = await lab.add_vm("src9", incoming=False)
    assert extra in lab.sources and extra.running
    assert READY_MARKER in extra.serial_path.read_bytes()
    with pytest.raises(ValueError):
        await lab.add_vm("src9", incoming=True)


@pytest.mark.qemu
@qemu_required
async def test_wait_ready_reports_early_exit(tmp_path: Path) -> None:
    vm = QemuVM("bad", tmp_path, tmp_path / "no-such-kernel", accel="tcg")
    await vm.start()
    try:
        with pytest.raises(QemuError, match="exited with status") as excinfo:
            await vm.wait_ready(timeout=10)
        assert "no-such-kernel" in str(excinfo.value)  # the log tail is included
    finally:
        await vm.kill()


async def _qmp(path: Path) -> QMPClient:
    client = QMPClient("test")
    await client.connect(str(path))
    return client


@pytest.mark.qemu
@qemu_required
async def test_source_dirties_and_does_not_converge_at_defaults(
    lab_pair: tuple[QemuVM, QemuVM, Lab],
) -> None:
    source, _, _ = lab_pair
    qmp = await _qmp(source.qmp_path)
    try:
        await qmp.execute("migrate", {"uri": "exec:cat > /dev/null"})
        info: dict[str, Any] = {}

        async def poll() -> bool:
            nonlocal info
            info = await qmp.execute("query-migrate")  # type: ignore[assignment]
            ram = info.get("ram", {})
            return bool(
                ram.get("dirty-pages-rate", 0) > 0
                and ram.get("dirty-sync-count", 0) >= 4
            )

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await poll():
            assert info["status"] in ("setup", "active"), info
            assert loop.time() < deadline, f"no dirtying seen: {info}"
            await asyncio.sleep(0.1)
        assert info["status"] == "active"
        await qmp.execute("migrate_cancel")
    finally:
        await qmp.disconnect()


@pytest.mark.qemu
@qemu_required
async def test_paced_guest_is_ready_and_dirties_no_faster_than_its_pace(
    lab_pair_paced: tuple[QemuVM, QemuVM, Lab],
) -> None:
    """The paced lab came up (its guest printed the READY marker); QEMU's calc-dirty-rate
    finds it dirtying about its pace, not the stock guest's whole range every second."""
    source, destination, _ = lab_pair_paced
    assert READY_MARKER in source.serial_path.read_bytes()
    assert source.icount_shift == destination.icount_shift == lab_fixtures.PACED_ICOUNT_SHIFT
    qmp = await _qmp(source.tools_qmp_path)
    try:
        # 4096 sampled pages per GiB (512 by default): 512 of the guest's 128 MiB, ~10% noise.
        await qmp.execute("calc-dirty-rate", {"calc-time": 2, "sample-pages": 4096})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while (reply := await qmp.execute("query-dirty-rate"))["status"] != "measured":  # type: ignore[index]
            assert loop.time() < deadline, reply
            await asyncio.sleep(0.1)  # QEMU measures for calc-time seconds
    finally:
        await qmp.disconnect()
    measured = reply["dirty-rate"] * 2**20  # type: ignore[index]  # MiB/s
    pace = lab_fixtures.PACED_DIRTY_BYTES_PER_S
    print(f"paced guest: calc-dirty-rate {measured / 2**20:.1f} MiB/s, pace {pace / 2**20:.1f} MiB/s")
    # Never much faster: the stock guest measures ~49 MiB/s here (its whole range, counted
    # once, over 2 s). A guest that fell behind the host's clock (booting on a busy host)
    # runs flat out until it catches up, so up to a boot's lag more than the pace.
    assert 0.25 * pace <= measured <= 1.5 * pace, (measured, pace)


@pytest.mark.qemu
@qemu_required
async def test_pair_migrates_when_tuned(lab_pair: tuple[QemuVM, QemuVM, Lab]) -> None:
    source, destination, lab = lab_pair
    src, dst = await _qmp(source.qmp_path), await _qmp(destination.tools_qmp_path)
    try:
        uri = f"unix:{lab.runtime_dir / 'migration.sock'}"
        await dst.execute("migrate-incoming", {"uri": uri})
        await src.execute(
            "migrate-set-parameters",
            {"max-bandwidth": 2 << 30, "downtime-limit": 10_000},
        )
        await src.execute("migrate", {"uri": uri})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            info = await src.execute("query-migrate")
            if info["status"] == "completed":  # type: ignore[index]
                break
            assert info["status"] in ("setup", "active", "device"), info  # type: ignore[index]
            assert loop.time() < deadline, info
            await asyncio.sleep(0.05)
        status = await dst.execute("query-status")
        assert status["status"] == "running"  # type: ignore[index]
    finally:
        await src.disconnect()
        await dst.disconnect()


@pytest.mark.qemu
@qemu_required
async def test_disk_pair_has_qcow2_drives(
    lab_pair_disk: tuple[QemuVM, QemuVM, Lab],
) -> None:
    for vm in lab_pair_disk[:2]:
        assert vm.disk is not None and vm.disk.is_file()
        qmp = await _qmp(vm.tools_qmp_path)
        try:
            blocks: list[dict[str, Any]] = await qmp.execute("query-block")  # type: ignore[assignment]
        finally:
            await qmp.disconnect()
        (disk0,) = [b for b in blocks if b["device"] == "disk0"]
        assert disk0["inserted"]["drv"] == "qcow2"
        assert disk0["inserted"]["image"]["virtual-size"] == 64 << 20


# -- clean-up when the owning process goes away ---------------------------------

_START_LAB_SCRIPT = """
import asyncio, json, sys
from migtui.lab import Lab

async def main():
    lab = Lab(pairs=1, accel="tcg")
    await lab.start()
    print(json.dumps({"dir": str(lab.runtime_dir), "pids": [vm.pid for vm in lab.vms]}),
          flush=True)
    if sys.argv[1] == "hang":
        await asyncio.Event().wait()
    # "exit": return without stop(); the atexit fallback must clean up.

asyncio.run(main())
"""


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE
    )


async def _read_line(proc: asyncio.subprocess.Process, timeout: float = 15) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, "child exited before printing"
    return line.decode()


@pytest.mark.qemu
@qemu_required
async def test_no_ui_lab_stops_cleanly_on_sigterm() -> None:
    proc = await _spawn(
        "-c",
        "import asyncio, sys\n"
        "from migtui.lab import run_lab_no_ui\n"
        "sys.exit(asyncio.run(run_lab_no_ui(1, '128M', False, accel='tcg')))\n",
    )
    try:
        header = await _read_line(proc)
        runtime_dir = Path(re.search(r" in (\S+);", header).group(1))  # type: ignore[union-attr]
        lines = [await _read_line(proc) for _ in range(2)]
        assert lines[0].split()[:2] == ["src1", "source"]
        assert lines[1].split()[:2] == ["dst1", "destination"]
        assert f"dst1=unix:{runtime_dir}/dst1.qmp" in lines[1]
        assert f"tools={runtime_dir}/dst1-tools.qmp" in lines[1]
        pids = [int(re.search(r"pid=(\d+)", line).group(1)) for line in lines]  # type: ignore[union-attr]
        assert all(pid_alive(pid) for pid in pids)

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await wait_until(lambda: not any(pid_alive(pid) for pid in pids))
        assert not runtime_dir.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.qemu
@qemu_required
async def test_atexit_cleans_up_a_lab_never_stopped() -> None:
    proc = await _spawn("-c", _START_LAB_SCRIPT, "exit")
    info = json.loads(await _read_line(proc))
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    await wait_until(lambda: not any(pid_alive(pid) for pid in info["pids"]))
    assert not Path(info["dir"]).exists()


@pytest.mark.qemu
@qemu_required
async def test_qemu_dies_with_a_killed_parent() -> None:
    proc = await _spawn("-c", _START_LAB_SCRIPT, "hang")
    info = json.loads(await _read_line(proc))
    try:
        proc.kill()  # SIGKILL: no atexit, only PR_SET_PDEATHSIG can help
        await proc.wait()
        await wait_until(lambda: not any(pid_alive(pid) for pid in info["pids"]))
        # Nobody was left to remove the directory; the next lab in the same place does.
        left = Path(info["dir"])
        assert left.exists()
        alive = left.parent / f"migtui-lab-{os.getpid()}-keep"  # a running migtui's lab stays
        alive.mkdir()
        try:
            assert left in remove_stale_labs(left.parent)
            assert not left.exists() and alive.exists()
        finally:
            alive.rmdir()
    finally:
        shutil.rmtree(info["dir"], ignore_errors=True)
