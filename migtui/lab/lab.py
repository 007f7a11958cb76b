"""A throwaway set of QEMU source/destination pairs to point migtui at."""

from __future__ import annotations

import asyncio
import atexit
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal, TextIO

from migtui.lab.guest import MIN_GUEST_MEM, build_dirty_guest, guest_image
from migtui.lab.qemu import (
    QEMU_ENV,
    QEMU_MISSING_MESSAGE,
    Accel,
    QemuError,
    QemuMissing,
    QemuVM,
    check_qemu,
    find_qemu,
    kvm_usable,
    qemu_version,
)

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

    from migtui.lab.linux_guest import LinuxGuest

QEMU_IMG_MISSING_MESSAGE = (
    "qemu-img not found: install Debian/Ubuntu package qemu-utils, or Fedora qemu-img"
)
DEFAULT_DISK_SIZE = "64M"
LINUX_MIN_MEM = 512 * 2**20  # the image (~220 MiB) unpacks into a tmpfs capped at half the RAM
LINUX_READY_TIMEOUT = 240.0  # a TCG boot of the Linux guest takes ~20 s idle, far more on a busy host
GUEST_IMAGE_NAME = "dirty-guest.bin"

_MEM_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_MEM_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_mem(mem: str) -> int:
    """Bytes in a QEMU ``-m`` size such as "128M" or "1G" (no suffix = MiB)."""
    m = _MEM_RE.match(mem)
    if m is None:
        raise ValueError(f"bad memory size: {mem!r}")
    return int(m.group(1)) * _MEM_UNITS[m.group(2).upper()]


def _default_parent_dir() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        return Path(xdg)
    return Path(tempfile.gettempdir())


class Lab:
    """Source and destination QEMU VMs running the dirtying guest.

    ``runtime_dir`` is the *parent* directory: the lab always makes its own
    private ``migtui-lab-<pid>-XXXX`` directory (mode 0700) inside it and
    removes that on :meth:`stop`. Default parent: $XDG_RUNTIME_DIR, else the
    system temp dir.

    ``page_delay`` and ``icount_shift`` make a paced guest (see
    :func:`migtui.lab.guest.guest_image` and :class:`QemuVM`): every VM of the
    lab then runs TCG under the same ``-icount``.

    ``qemu`` is the binary every VM runs (a path, or a name on PATH); without it,
    $MIGTUI_QEMU, else qemu-system-x86_64 on PATH.

    ``linux`` boots a built Linux guest (:mod:`migtui.lab.linux_guest`) instead of the tiny
    one. With ``accel="auto"`` the lab then first checks that KVM really runs its kernel, and
    says in :attr:`accel_note` when it fell back to TCG.
    """

    def __init__(
        self,
        pairs: int = 1,
        mem: str = "128M",
        disk: bool = False,
        accel: Literal["auto", "kvm", "tcg"] = "auto",
        runtime_dir: Path | None = None,
        disk_size: str = DEFAULT_DISK_SIZE,
        ready_timeout: float = 30.0,
        page_delay: int = 0,
        icount_shift: int | None = None,
        qemu: str | None = None,
        linux: LinuxGuest | None = None,
        dirty_ring: int | None = None,
    ) -> None:
        if pairs < 0:
            raise ValueError("pairs must be >= 0")
        if linux is not None and parse_mem(mem) < LINUX_MIN_MEM:
            raise ValueError(f"the Linux lab guest needs at least {LINUX_MIN_MEM >> 20}M of RAM, got {mem}")
        if linux is not None and (page_delay or icount_shift is not None):
            raise ValueError("page_delay and icount_shift pace the tiny guest, not the Linux one")
        if parse_mem(mem) < MIN_GUEST_MEM:
            raise ValueError(f"the lab guest needs at least 128M of RAM, got {mem}")
        if accel not in ("auto", "kvm", "tcg"):
            raise ValueError(f"accel must be auto, kvm or tcg, not {accel!r}")
        if icount_shift is not None and accel == "kvm":
            raise ValueError("icount_shift needs accel tcg (-icount counts TCG's instructions)")
        if dirty_ring is not None and (accel == "tcg" or icount_shift is not None or page_delay):
            raise ValueError("dirty_ring is KVM's: it needs accel kvm (or auto, on a machine with KVM)")
        guest_image(page_delay)  # a bad page_delay fails here, not in start()
        self.pairs = pairs
        self.mem = mem
        self.disk = disk
        self.disk_size = disk_size
        self.linux = linux
        self.ready_timeout = max(ready_timeout, LINUX_READY_TIMEOUT) if linux is not None else ready_timeout
        self.accel_note: str | None = None  # why the lab did not use what was asked, if so
        self.page_delay = page_delay
        self.icount_shift = icount_shift
        self.dirty_ring = dirty_ring  # every VM's -accel kvm,dirty-ring-size=N (QEMU's dirty limit needs it)
        self._accel_request = accel
        self._parent_dir = Path(runtime_dir) if runtime_dir is not None else None
        self._dir: Path | None = None
        self._kernel: Path | None = None
        self._qemu_request = qemu
        self._qemu: str | None = None
        self.qemu_version: str | None = None  # resolved by start(), e.g. "10.0.2"
        self.accel: Accel | None = None  # resolved by start()
        self.vms: list[QemuVM] = []

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def runtime_dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError("the lab is not started")
        return self._dir

    @property
    def sources(self) -> list[QemuVM]:
        return [vm for vm in self.vms if not vm.incoming]

    @property
    def destinations(self) -> list[QemuVM]:
        return [vm for vm in self.vms if vm.incoming]

    async def start(self) -> None:
        """Create the runtime dir and start every pair; all are ready on return."""
        if self._dir is not None:
            raise RuntimeError("the lab was already started")
        requested, what = self._qemu_request, "QEMU"
        if requested is None and os.environ.get(QEMU_ENV):
            requested, what = os.environ[QEMU_ENV], QEMU_ENV
        self._qemu = check_qemu(requested, what) if requested else find_qemu()
        if self._qemu is None:
            raise QemuMissing(QEMU_MISSING_MESSAGE)
        self.qemu_version = await qemu_version(self._qemu, what)
        if self.disk and shutil.which("qemu-img") is None:
            raise QemuMissing(QEMU_IMG_MISSING_MESSAGE)
        if self.icount_shift is not None:
            self.accel = "tcg"  # -icount is TCG's
        elif self._accel_request == "auto":
            self.accel = "kvm" if kvm_usable() else "tcg"
        else:
            self.accel = self._accel_request
        if self.dirty_ring is not None and self.accel != "kvm":
            raise QemuError("a KVM dirty ring needs KVM, and /dev/kvm is not usable here")

        parent = self._parent_dir or _default_parent_dir()
        remove_stale_labs(parent)
        # mkdtemp makes the directory 0700 atomically: sockets inside are
        # unreachable for other users from the first moment.
        self._dir = Path(
            tempfile.mkdtemp(prefix=f"migtui-lab-{os.getpid()}-", dir=parent)
        )
        atexit.register(self._cleanup_sync)
        try:
            if self.linux is None:
                self._kernel = build_dirty_guest(self._dir / GUEST_IMAGE_NAME, self.page_delay)
            else:
                # Imported here: `python3 -m migtui.lab.linux_guest` must find it not yet loaded.
                from migtui.lab.linux_guest import KVM_FALLBACK_NOTE, KVM_PROBE_SECONDS, kvm_runs_kernel

                self._kernel = self.linux.kernel
                if self.accel == "kvm" and self._accel_request == "auto" and not await kvm_runs_kernel(
                        self._qemu, self._kernel, self._dir):
                    self.accel = "tcg"
                    self.accel_note = KVM_FALLBACK_NOTE.format(s=KVM_PROBE_SECONDS)
            names = [(f"src{i}", False) for i in range(1, self.pairs + 1)]
            names += [(f"dst{i}", True) for i in range(1, self.pairs + 1)]
            await asyncio.gather(
                *(self.add_vm(name, incoming, self.disk) for name, incoming in names)
            )
            # gather() finishes in completion order; keep a stable listing.
            order = {name: i for i, (name, _) in enumerate(names)}
            self.vms.sort(key=lambda vm: order.get(vm.name, len(order)))
        except BaseException:
            # Includes cancellation: never leave half a lab behind.
            await self.stop()
            raise

    async def add_vm(self, name: str, incoming: bool, disk: bool = False, *,
                     qemu: str | None = None, machine: str = "pc") -> QemuVM:
        """Start one more VM in this lab's runtime dir and wait until it is ready.

        ``qemu`` runs it on another binary than the lab's (say, a newer QEMU as the
        destination), with ``machine`` its ``-machine`` (the source's versioned type).
        """
        if self._dir is None or self._kernel is None or self.accel is None:
            raise RuntimeError("the lab is not started")
        if qemu is not None:
            qemu = check_qemu(qemu, "QEMU")
            await qemu_version(qemu, "QEMU")  # not a QEMU: said before anything starts
        if any(vm.name == name for vm in self.vms):
            raise ValueError(f"a VM named {name!r} already exists in this lab")
        disk_path = await self._create_disk(name) if disk else None
        vm = QemuVM(
            name,
            self._dir,
            self._kernel,
            mem=self.mem,
            accel=self.accel,
            incoming=incoming,
            disk=disk_path,
            qemu=qemu or self._qemu,
            icount_shift=self.icount_shift,  # both ends alike: the icount state migrates
            machine=machine,
            dirty_ring=self.dirty_ring,
            **self._linux_boot(),
        )
        self.vms.append(vm)  # before start, so stop() reaps it whatever happens
        await vm.start()
        await vm.wait_ready(self.ready_timeout)
        return vm

    def _linux_boot(self) -> dict[str, Any]:
        if self.linux is None:
            return {}
        from migtui.lab.linux_guest import READY_MARKER

        return {"initrd": self.linux.initrd, "append": self.linux.append, "ready_marker": READY_MARKER}

    async def _create_disk(self, name: str) -> Path:
        qemu_img = shutil.which("qemu-img")
        if qemu_img is None:
            raise QemuMissing(QEMU_IMG_MISSING_MESSAGE)
        path = self.runtime_dir / f"{name}.qcow2"
        proc = await asyncio.create_subprocess_exec(
            qemu_img, "create", "-q", "-f", "qcow2", str(path), self.disk_size,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise QemuError(
                f"qemu-img create {path} failed: {out.decode(errors='replace')}"
            )
        return path

    async def stop(self) -> None:
        """Kill every QEMU of the lab, wait for them, remove the runtime dir."""
        # shield: a cancelled caller must not leave QEMUs or the dir behind.
        await asyncio.shield(self._stop())

    async def _stop(self) -> None:
        await asyncio.gather(*(vm.kill() for vm in self.vms), return_exceptions=True)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        atexit.unregister(self._cleanup_sync)

    def kill_now(self) -> None:
        """Synchronous stop, for a signal handler: SIGKILL every QEMU and remove the directory."""
        self._cleanup_sync()

    def _cleanup_sync(self) -> None:
        """atexit fallback when stop() never ran (crash, unawaited shutdown)."""
        for vm in self.vms:
            vm.kill_nowait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def remove_stale_labs(parent: Path) -> list[Path]:
    """Remove lab directories left by a migtui that was killed (kill -9 runs no cleanup).

    Only our own `migtui-lab-<pid>-*` directories whose process is gone; their QEMUs died
    with it (PR_SET_PDEATHSIG). Returns what was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        parts = entry.name.split("-")
        if len(parts) < 4 or parts[:2] != ["migtui", "lab"] or not parts[2].isdigit():
            continue
        try:
            info = entry.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue  # never follow a link, never touch another user's files
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        except OSError:
            continue  # alive under another user, or unreadable: leave it
    return removed


async def _report_exit(vm: QemuVM, out: TextIO) -> None:
    status = await vm.wait()
    print(
        f"{vm.name} exited with status {status}; see {vm.log_path}",
        file=out,
        flush=True,
    )


async def run_lab_no_ui(
    pairs: int = 1,
    mem: str = "128M",
    disk: bool = False,
    *,
    accel: Literal["auto", "kvm", "tcg"] = "auto",
    out: TextIO | None = None,
    main: Callable[[Lab], Awaitable[int]] | None = None,
    qemu: str | None = None,
    linux: LinuxGuest | None = None,
    dirty_ring: int | None = None,
) -> int:
    """Run a lab until SIGINT/SIGTERM/SIGHUP, printing one line per VM.

    With `main` (the console), the lab runs until `main(lab)` returns, and
    that is the exit status. Returns 0 after a clean stop, 1 when the lab
    could not start (the reason goes to stderr).
    """
    out = out if out is not None else sys.stdout
    lab = Lab(pairs=pairs, mem=mem, disk=disk, accel=accel, qemu=qemu, linux=linux,
              dirty_ring=dirty_ring)  # may raise ValueError
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    # Handlers go in first: a signal during start-up must still clean up.
    for sig in signals:
        loop.add_signal_handler(sig, stop_requested.set)
    start: asyncio.Future[None] = asyncio.ensure_future(lab.start())
    stop_wait: asyncio.Future[bool] = asyncio.ensure_future(stop_requested.wait())
    watchers: list[asyncio.Future[None]] = []
    try:
        either: list[asyncio.Future[Any]] = [start, stop_wait]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            start.cancel()  # Lab.start() cleans up after itself when cancelled
        try:
            await start
        except asyncio.CancelledError:
            if stop_requested.is_set():
                return 0  # interrupted during start-up
            raise  # we are being cancelled ourselves
        except QemuError as e:
            print(f"migtui lab: {e}", file=sys.stderr)
            return 1

        if lab.accel_note:
            print(f"migtui lab: {lab.accel_note}", file=out)
        if linux is not None:
            print(f"migtui lab: Linux guest, workload {linux.workload.name}: {linux.workload.what}", file=out)
        print(
            f"migtui lab: {len(lab.vms)} VMs ({lab.accel}"
            f"{f' with a dirty ring of {lab.dirty_ring}' if lab.dirty_ring else ''}, QEMU {lab.qemu_version}) "
            f"in {lab.runtime_dir}; "
            "stop with Ctrl-C",
            file=out,
        )
        for vm in lab.vms:
            role = "destination" if vm.incoming else "source"
            print(
                f"{vm.name:<6} {role:<11} {vm.endpoint}  tools={vm.tools_qmp_path}  "
                f"pid={vm.pid}",
                file=out,
            )
        out.flush()
        # Say so when a VM goes away on its own (e.g. a destination after a
        # failed incoming migration): its log is still there to read.
        watchers = [asyncio.ensure_future(_report_exit(vm, out)) for vm in lab.vms]
        if main is None:
            await stop_wait
            return 0
        running = asyncio.ensure_future(main(lab))
        watchers.append(running)
        await asyncio.wait([running, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        return running.result() if running.done() else 0
    finally:
        start.cancel()
        stop_wait.cancel()
        for watcher in watchers:
            watcher.cancel()
        await lab.stop()  # idempotent; also covers errors and our own cancellation
        # Only now: a second Ctrl-C during stop() must not interrupt it.
        for sig in signals:
            loop.remove_signal_handler(sig)
