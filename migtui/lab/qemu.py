"""Run one QEMU process for the migration lab."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Literal

from migtui.lab.guest import READY_MARKER

QEMU_BINARY = "qemu-system-x86_64"
QEMU_ENV = "MIGTUI_QEMU"  # another QEMU for the lab, as --qemu PATH
QEMU_MISSING_MESSAGE = (
    "qemu-system-x86_64 not found: install Debian/Ubuntu package qemu-system-x86, "
    "or Fedora qemu-system-x86-core"
)

Accel = Literal["kvm", "tcg"]

_POLL_INTERVAL = 0.025  # seconds between readiness checks
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL
_PR_SET_PDEATHSIG = 1
ICOUNT_SHIFT_MAX = 10  # QEMU 7.2: one guest instruction per 2**10 ns of virtual time at most
# KVM's dirty ring, per vCPU (-accel kvm,dirty-ring-size=N): what QEMU 8.1+'s dirty limit needs.
# QEMU takes a power of two; the kernel's ring holds 1024 to 65536 entries.
DIRTY_RING_SIZES = tuple(1 << n for n in range(10, 17))


class QemuError(RuntimeError):
    """A lab QEMU process failed to start or misbehaved."""


class QemuMissing(QemuError):
    """qemu-system-x86_64 (or qemu-img) is not installed."""


def find_qemu() -> str | None:
    """Path of qemu-system-x86_64, or None when it is not installed."""
    return shutil.which(QEMU_BINARY)


_ACCEPTED = "give the path of a qemu-system-x86_64, or of a script that runs one"
_VERSION_RE = re.compile(r"QEMU emulator version (\d+\.\d+\.\d+)")
_VERSION_TIMEOUT = 15.0  # seconds; a loaded machine may take a while to start a big binary
_versions: dict[str, str] = {}  # by path: labs of one process probe each binary once


def _named(path: str, what: str) -> str:
    """How the operator gave it: `--qemu PATH`, `MIGTUI_QEMU=PATH`."""
    return f"{what}={path}" if what == QEMU_ENV else f"{what} {path}"


def check_qemu(path: str, what: str = "--qemu") -> str:
    """`path` (a name is looked up on PATH) as an absolute path of a file that can run.

    QemuMissing in one line, naming `what` it came from (an option, a variable), when not.
    """
    found = shutil.which(path) if os.sep not in path else os.path.expanduser(path)
    if found is None or not os.path.exists(found):
        raise QemuMissing(f"{_named(path, what)}: no such file; {_ACCEPTED}")
    if os.path.isdir(found):
        raise QemuMissing(f"{_named(path, what)}: is a directory; {_ACCEPTED}")
    if not os.access(found, os.X_OK):
        raise QemuMissing(f"{_named(path, what)}: not executable; {_ACCEPTED}")
    return os.path.abspath(found)


async def qemu_version(path: str, what: str = "--qemu") -> str:
    """"10.0.2", from `path --version`; QemuError in one line when it is not a QEMU that runs."""
    if path in _versions:
        return _versions[path]
    try:
        proc = await asyncio.create_subprocess_exec(
            path, "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    except OSError as e:
        raise QemuMissing(f"{_named(path, what)}: cannot run it ({e.strerror}); {_ACCEPTED}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), _VERSION_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise QemuError(f"{_named(path, what)}: no answer to --version within {_VERSION_TIMEOUT:g} s") from None
    text = out.decode(errors="replace")
    m = _VERSION_RE.search(text)
    if m is None:
        said = next(iter(text.strip().splitlines()), "nothing")
        raise QemuError(f"{_named(path, what)}: not a QEMU (--version said: {said[:80]}); {_ACCEPTED}")
    _versions[path] = m.group(1)
    return m.group(1)


def kvm_usable() -> bool:
    """True when /dev/kvm exists and this process may open it read-write."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


# Resolved once in the parent: loading libraries in a freshly forked child is
# not async-signal-safe. None where there is no prctl (not Linux).
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def _die_with_parent_preexec(parent_pid: int) -> None:
    """In the child before exec: get SIGKILLed when migtui dies, however it dies."""
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died between fork() and prctl(); then nobody would
    # ever send the death signal, so go now.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def _opt_escape(value: Path | str) -> str:
    """Escape a value for QEMU's comma-separated option syntax."""
    return str(value).replace(",", ",,")


class QemuVM:
    """One QEMU process booting the lab guest, with two QMP monitors.

    ``<name>.qmp`` is migtui's monitor and ``<name>-tools.qmp`` a second one
    for other tools: QEMU serves one client per monitor at a time.

    ``icount_shift`` (TCG only) runs the guest under ``-icount shift=N,align=on``:
    one instruction per 2**N ns of virtual time, and ``align`` holds virtual time
    to the host's clock (without it TCG runs the count as fast as it can, several
    times real time), so a paced guest's dirty rate is set by its code, not by the
    host. A migration's destination needs the same shift.

    ``initrd`` and ``append`` boot a Linux kernel (``-initrd``, ``-append``); ``ready_marker`` is
    what the guest prints on its serial console once it runs (see :meth:`wait_ready`).
    """

    def __init__(
        self,
        name: str,
        runtime_dir: Path,
        kernel: Path,
        mem: str = "128M",
        accel: Accel = "tcg",
        incoming: bool = False,
        disk: Path | None = None,
        qemu: str | None = None,
        icount_shift: int | None = None,
        machine: str = "pc",
        initrd: Path | None = None,
        append: str | None = None,
        ready_marker: bytes = READY_MARKER,
        dirty_ring: int | None = None,
    ) -> None:
        if not name or "/" in name or "," in name:
            raise ValueError(f"bad VM name: {name!r}")
        if dirty_ring is not None and (accel != "kvm" or dirty_ring not in DIRTY_RING_SIZES):
            raise ValueError(f"dirty_ring needs accel='kvm' and one of {', '.join(map(str, DIRTY_RING_SIZES))}")
        self.dirty_ring = dirty_ring
        self.name = name
        self.runtime_dir = Path(runtime_dir)
        self.kernel = Path(kernel)
        self.mem = mem
        self.accel: Accel = accel
        self.incoming = incoming
        self.disk = Path(disk) if disk is not None else None
        if icount_shift is not None and not 0 <= icount_shift <= ICOUNT_SHIFT_MAX:
            raise ValueError(f"icount_shift must be 0 to {ICOUNT_SHIFT_MAX}, not {icount_shift}")
        if icount_shift is not None and accel != "tcg":
            raise ValueError("icount_shift needs accel='tcg' (-icount counts TCG's instructions)")
        self.icount_shift = icount_shift
        # A destination on a newer QEMU takes the source's machine type (pc-i440fx-7.2):
        # its own "pc" is a newer machine that the source's state does not load into.
        self.machine = machine
        self.initrd = Path(initrd) if initrd is not None else None
        self.append = append
        self.ready_marker = ready_marker
        self._qemu = qemu
        self._proc: asyncio.subprocess.Process | None = None
        for sock in (self.qmp_path, self.tools_qmp_path):
            if len(os.fsencode(sock)) > _SUN_PATH_MAX:
                raise ValueError(f"socket path too long for AF_UNIX: {sock}")

    def __repr__(self) -> str:
        role = "destination" if self.incoming else "source"
        return f"<QemuVM {self.name} {role} pid={self.pid} rc={self.returncode}>"

    # -- paths -------------------------------------------------------------

    @property
    def qmp_path(self) -> Path:
        return self.runtime_dir / f"{self.name}.qmp"

    @property
    def tools_qmp_path(self) -> Path:
        return self.runtime_dir / f"{self.name}-tools.qmp"

    @property
    def serial_path(self) -> Path:
        return self.runtime_dir / f"{self.name}.serial"

    @property
    def log_path(self) -> Path:
        return self.runtime_dir / f"{self.name}.log"

    @property
    def pidfile_path(self) -> Path:
        return self.runtime_dir / f"{self.name}.pid"

    @property
    def endpoint(self) -> str:
        """migtui's endpoint syntax for this VM's monitor."""
        return f"{self.name}=unix:{self.qmp_path}"

    # -- process state -----------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def command(self) -> list[str]:
        """The QEMU argv (no shell is ever involved)."""
        qemu = self._qemu or find_qemu()
        if qemu is None:
            raise QemuMissing(QEMU_MISSING_MESSAGE)
        argv = [
            qemu,
            "-name", self.name,
            "-machine", self.machine,
            "-accel", self.accel + (f",dirty-ring-size={self.dirty_ring}" if self.dirty_ring else ""),
            "-m", self.mem,
            "-nodefaults",
            "-no-user-config",
            "-display", "none",
            "-kernel", str(self.kernel),
            *(["-initrd", str(self.initrd)] if self.initrd is not None else []),
            # A Linux guest that panics (say, an image too big for its RAM) should exit, not
            # reboot for ever: the lab then says so at once rather than after its timeout.
            *(["-append", self.append, "-no-reboot"] if self.append is not None else []),
            "-pidfile", str(self.pidfile_path),
            "-chardev", f"file,id=serial0,path={_opt_escape(self.serial_path)}",
            "-serial", "chardev:serial0",
        ]  # fmt: skip
        for mon_id, sock in (
            ("qmp", self.qmp_path),
            ("qmp-tools", self.tools_qmp_path),
        ):
            argv += [
                "-chardev",
                f"socket,id={mon_id},path={_opt_escape(sock)},server=on,wait=off",
                "-mon", f"chardev={mon_id},mode=control",
            ]  # fmt: skip
        if self.disk is not None:
            # id=disk0 gives the block backend a stable name for
            # nbd-server-add / drive-mirror.
            argv += [
                "-drive",
                f"file={_opt_escape(self.disk)},if=virtio,format=qcow2,id=disk0",
            ]
        if self.icount_shift is not None:
            argv += ["-icount", f"shift={self.icount_shift},sleep=on,align=on"]
        if self.incoming:
            argv += ["-incoming", "defer"]
        return argv

    async def start(self) -> None:
        """Launch QEMU; returns once the process exists (see :meth:`wait_ready`)."""
        if self._proc is not None:
            raise QemuError(f"{self.name} was already started")
        argv = self.command()
        die_with_us = functools.partial(_die_with_parent_preexec, os.getpid())
        with open(self.log_path, "wb") as log:  # noqa: ASYNC230 (tiny, local)
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C or hangup reaches migtui,
                # which then tears the lab down in order, not QEMU directly.
                start_new_session=True,
                preexec_fn=die_with_us,
            )

    def _is_ready(self) -> bool:
        if not (self.qmp_path.is_socket() and self.tools_qmp_path.is_socket()):
            return False
        if self.incoming:
            return True  # an incoming VM runs no guest code until migrated
        try:
            return self.ready_marker in self.serial_path.read_bytes()
        except FileNotFoundError:
            return False

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until both monitors listen and (for a source) the guest runs."""
        if self._proc is None:
            raise QemuError(f"{self.name} was not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._proc.returncode is not None:
                raise QemuError(
                    f"{self.name}: QEMU exited with status {self._proc.returncode} "
                    f"before it was ready; last lines of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            if self._is_ready():
                return
            if loop.time() >= deadline:
                raise QemuError(
                    f"{self.name}: not ready after {timeout:g} s; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            await asyncio.sleep(_POLL_INTERVAL)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    async def wait(self) -> int:
        """Wait for the process to exit and return its status."""
        if self._proc is None:
            raise QemuError(f"{self.name} was not started")
        return await self._proc.wait()

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.returncode is None:
            try:
                self._proc.send_signal(sig)
            except ProcessLookupError:
                pass  # exited, not yet reaped

    async def kill(self) -> None:
        """SIGKILL the process and wait for it."""
        if self._proc is None:
            return
        self._signal(signal.SIGKILL)
        await self._proc.wait()

    async def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL if QEMU is still there after ``grace`` seconds."""
        if self._proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), grace)
        except asyncio.TimeoutError:
            await self.kill()

    def kill_nowait(self) -> None:
        """Synchronous best effort SIGKILL, for atexit handlers."""
        if self._proc is not None and self._proc.returncode is None:
            try:
                os.kill(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
