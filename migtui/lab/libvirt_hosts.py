"""N private libvirt hosts on this one machine, for the libvirt tests and `migtui lab --libvirt`.

Each host is a libvirtd in its own mount, UTS and PID namespaces:

- its own hostname (host1, host2, ...) and a random ``host_uuid``;
- its own /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, bind-mounted from
  a private directory;
- ``listen_tcp`` on 127.0.0.1 with a free port of its own and ``auth_tcp = "none"`` (loopback, test hosts only):
  ``qemu+tcp://127.0.0.1:PORT/system``, and its unix sockets in a directory of its own;
- QEMU as root with no security driver, and a migration port range of its own. libvirt refuses a loopback migration
  address, so migrations go over a unix socket: :meth:`LibvirtHosts.migration_uri`.

PID 1 of each namespace is migtui/lab/libvirt_init.py: it reaps libvirtd's orphans, so the QEMUs of a killed libvirtd
keep running (as after an operator's ``kill -9``) and a restarted libvirtd reconnects to them. When the lab goes away,
however it goes, that init exits and takes the whole namespace with it.

Standard library only (virsh does the few libvirt calls the lab needs): migtui.lab imports no libvirt-python.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import grp
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

from migtui.lab.guest import MIN_GUEST_MEM, READY_MARKER, build_dirty_guest, guest_image
from migtui.lab.lab import _default_parent_dir, remove_stale_labs
from migtui.lab.qemu import ICOUNT_SHIFT_MAX, QEMU_MISSING_MESSAGE, find_qemu

if TYPE_CHECKING:
    from typing_extensions import Self

LIBVIRT_PACKAGES = "libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients"
INSTALL_HINT = f"install Debian packages {LIBVIRT_PACKAGES} (as root, .ci/libvirt installs all the lab needs)"
QEMU_DRIVER = "libvirt_driver_qemu.so"
# The directories libvirtd's system instance uses, fixed at its build: each host bind-mounts its own over them.
PRIVATE_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}
MADE_BY_LAB = ".made-by-migtui-lab"  # in a mount point the lab made: see _hold_mount_points
MIGRATION_PORT_BASE = 49300  # host i gets MIGRATION_PORT_BASE + 20 * (i - 1) ... + 19; unused over unix sockets
DAEMON_TIMEOUT = 30.0  # s for a libvirtd to answer; its first start probes QEMU's capabilities
GUEST_TIMEOUT = 30.0  # s for a guest to print its ready marker
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the NUL
_POLL = 0.02  # s between readiness checks
_INIT = Path(__file__).with_name("libvirt_init.py")


class LibvirtLabError(RuntimeError):
    """A lab host failed to start or misbehaved (one line, for the operator)."""


class LibvirtMissing(LibvirtLabError):
    """What the libvirt lab needs is not on this machine (root, libvirtd, virsh, QEMU, libvirtd's user)."""


def missing_for_lab() -> str | None:
    """None when this machine can run the libvirt lab, else one line: what is missing and what to install."""
    if os.geteuid() != 0:
        return "the libvirt lab needs root (it mounts private libvirt directories in namespaces of its own)"
    for tool in ("libvirtd", "virsh"):
        if shutil.which(tool) is None:
            return f"{tool} not found: {INSTALL_HINT}"
    if not any(Path(d, "libvirt", "connection-driver", QEMU_DRIVER).exists()
               for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")):
        return f"libvirtd's QEMU driver ({QEMU_DRIVER}) not found: install Debian package libvirt-daemon-driver-qemu"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not found: install Debian package util-linux"
    if find_qemu() is None:
        return QEMU_MISSING_MESSAGE
    try:
        pwd.getpwnam("libvirt-qemu")
        grp.getgrnam("libvirt-qemu")
        grp.getgrnam("kvm")
    except KeyError:
        return ("libvirtd needs the user libvirt-qemu and the groups kvm and libvirt-qemu, even with QEMU as root: "
                "create them (.ci/libvirt does) or install Debian package libvirt-daemon-system")
    return None


def check_lab() -> None:
    """Raise LibvirtMissing (one line) when this machine cannot run the libvirt lab."""
    missing = missing_for_lab()
    if missing is not None:
        raise LibvirtMissing(missing)


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (libvirtd binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    """True when ``pid`` runs; a zombie counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def _namespace(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _pids_in(namespaces: set[str]) -> list[int]:
    """Live host PIDs in any of the given namespaces ("pid:[4026...]", "mnt:[...]")."""
    return [pid for pid in _processes()
            if any(_namespace(pid, kind) in namespaces for kind in ("pid", "mnt")) and _pid_alive(pid)]


def _wait_for(condition, timeout: float, what: str) -> None:
    """Poll ``condition`` until true; LibvirtLabError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise LibvirtLabError(f"{what} within {timeout:g} s")
        time.sleep(_POLL)


@dataclass(eq=False)
class LibvirtHost:
    """One private libvirtd: ``uri`` reaches it; ``pid`` is its libvirtd (host PID, None while it is down)."""

    name: str
    index: int
    dir: Path
    port: int
    uuid: str
    pid: int | None = None
    init_pid: int | None = None  # PID 1 of its namespaces, as the host sees it
    _unshare: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    namespaces: set[str] = field(default_factory=set, repr=False)  # its PID and mount ones, named as in /proc/PID/ns
    _migrations: int = field(default=0, repr=False)

    @property
    def uri(self) -> str:
        return f"qemu+tcp://127.0.0.1:{self.port}/system"

    @property
    def socket_dir(self) -> Path:
        """libvirtd's unix sockets (``libvirt-sock``, ``libvirt-sock-ro``, ...), reachable from outside too."""
        return self.dir / "sock"

    @property
    def migration_socket_dir(self) -> Path:
        """Where migrations to this host listen: outside the private mounts, so both ends' QEMUs see it."""
        return self.dir / "migration"

    @property
    def log_path(self) -> Path:
        return self.dir / "log" / "libvirtd.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "libvirtd.pid"


@dataclass(frozen=True)
class LibvirtGuest:
    """A domain the lab started: its name, the host it started on, and its serial console's log."""

    name: str
    host: LibvirtHost
    serial_log: Path
    xml: str


class LibvirtHosts:
    """``n`` private libvirt hosts, as a context manager (``with`` or ``async with``).

    ``base_dir`` is the *parent* directory: the lab makes its own ``migtui-lab-<pid>-libvirt-XXXX`` (0700) in it,
    by default in $XDG_RUNTIME_DIR or the system's temp dir, and removes it on exit.
    """

    def __init__(self, n: int = 2, base_dir: Path | str | None = None, *, timeout: float = DAEMON_TIMEOUT) -> None:
        if n < 1:
            raise ValueError(f"a libvirt lab needs at least 1 host, not {n}")
        self.n = n
        self.timeout = timeout
        self.hosts: list[LibvirtHost] = []
        self.guests: list[LibvirtGuest] = []
        self._parent = Path(base_dir) if base_dir is not None else None
        self._dir: Path | None = None
        self._mount_points: list[tuple[str, int, bool]] = []  # (path, fd holding a shared lock, made by us)
        self._kernels: dict[int, Path] = {}
        self._namespaces: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False

    # -- the context manager ---------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        import asyncio

        try:
            await asyncio.to_thread(self.start)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self.close))
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        import asyncio

        # shield: a cancelled caller must not leave daemons, mounts or directories behind.
        await asyncio.shield(asyncio.to_thread(self.close))

    def __iter__(self):
        return iter(self.hosts)

    def __getitem__(self, index: int) -> LibvirtHost:
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)

    @property
    def dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError("the libvirt lab is not started")
        return self._dir

    # -- start and stop --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every host; each answers on its URI on return. Raises LibvirtMissing when the machine cannot."""
        if self._dir is not None:
            raise RuntimeError("the libvirt lab was already started")
        check_lab()
        parent = self._parent or _default_parent_dir()
        remove_stale_labs(parent)  # the dirs of a lab killed with -9; its namespaces died with it
        # mkdtemp adds 8 characters; libvirt-admin-sock is the longest name in a host's socket directory.
        longest = parent / f"migtui-lab-{os.getpid()}-libvirt-XXXXXXXX/host{self.n}/sock/libvirt-admin-sock"
        if len(os.fsencode(longest)) > _SUN_PATH_MAX:
            raise LibvirtLabError(f"{parent}: too long a path for libvirtd's unix sockets under it "
                                  f"({_SUN_PATH_MAX} bytes at most); choose a shorter base directory")
        self._dir = Path(tempfile.mkdtemp(prefix=f"migtui-lab-{os.getpid()}-libvirt-", dir=parent))
        atexit.register(self.close)
        try:
            self._hold_mount_points()
            self.hosts = [self._new_host(i) for i in range(1, self.n + 1)]
            errors: list[BaseException] = []

            def start_one(host: LibvirtHost) -> None:
                try:
                    self._start_namespace(host)
                    for attempt in range(3):
                        try:
                            self._start_daemon(host)
                            break
                        except LibvirtLabError as e:
                            # Its port, free a moment ago, may have been taken since: another one, then.
                            if "network sockets" not in str(e) or attempt == 2:
                                raise
                            host.port = _free_port()
                            self._write_config(host)
                except BaseException as e:  # noqa: BLE001 - re-raised below, in the caller's thread
                    errors.append(e)

            # In parallel: each libvirtd's first start probes QEMU's capabilities (a second or two).
            threads = [threading.Thread(target=start_one, args=(h,), name=f"start-{h.name}") for h in self.hosts]
            for t in threads:
                t.start()
            try:
                for t in threads:
                    t.join()
            finally:
                for t in threads:  # interrupted (SIGTERM, Ctrl-C): let them finish, so close() sees all they made
                    t.join(self.timeout)
            if errors:
                raise errors[0]
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill every host's namespace (libvirtd and its domains' QEMUs), drop the mounts, remove the directories.

        Idempotent. Raises LibvirtLabError when something it made is still there afterwards (see :meth:`leftovers`).
        """
        with self._lock:
            if self._closed or self._dir is None:
                return
            self._closed = True
        atexit.unregister(self.close)
        for host in self.hosts:
            self._stop_namespace(host)
        with contextlib.suppress(LibvirtLabError):
            _wait_for(lambda: not _pids_in(self._namespaces), 10.0, "")
        shutil.rmtree(self._dir, ignore_errors=True)
        self._release_mount_points()
        left = self.leftovers()
        if left:
            raise LibvirtLabError("the libvirt lab left behind: " + "; ".join(left))

    def leftovers(self) -> list[str]:
        """What this lab made that still exists: processes in its namespaces, its directory, mount points."""
        left = [f"process {pid} in a lab namespace" for pid in _pids_in(self._namespaces)]
        if self._dir is not None and self._dir.exists():
            left.append(f"directory {self._dir}")
        left += [f"mount point {path}" for path in PRIVATE_DIRS.values()
                 if os.path.exists(os.path.join(path, MADE_BY_LAB)) and not _held(path)]
        return left

    def _new_host(self, index: int) -> LibvirtHost:
        name = f"host{index}"
        host = LibvirtHost(name=name, index=index, dir=self.dir / name, port=_free_port(), uuid=str(uuid.uuid4()))
        for sub in (*PRIVATE_DIRS, "sock", "migration"):
            (host.dir / sub).mkdir(parents=True)
        self._write_config(host)
        return host

    @staticmethod
    def _write_config(host: LibvirtHost) -> None:
        (host.dir / "etc" / "libvirtd.conf").write_text(
            "# A migtui lab host: loopback only, no authentication. Never on a real host.\n"
            "listen_tls = 0\n"
            "listen_tcp = 1\n"
            f'tcp_port = "{host.port}"\n'
            'listen_addr = "127.0.0.1"\n'
            'auth_tcp = "none"\n'
            f'host_uuid = "{host.uuid}"\n'
            f'unix_sock_dir = "{host.socket_dir}"\n'
            f'log_outputs = "3:file:{host.log_path}"\n'
        )
        low = MIGRATION_PORT_BASE + 20 * (host.index - 1)
        (host.dir / "etc" / "qemu.conf").write_text(
            'user = "root"\n'
            'group = "root"\n'
            "dynamic_ownership = 0\n"
            'security_driver = "none"\n'
            'stdio_handler = "file"\n'
            f"migration_port_min = {low}\n"
            f"migration_port_max = {low + 19}\n"
        )

    def _hold_mount_points(self) -> None:
        """Make sure libvirtd's directories exist to mount over, each held with a shared lock.

        A Debian without libvirt-daemon-system has none but /etc/libvirt. The lab makes those missing, with a
        marker file in each (hidden under the mounts), and removes them at exit unless another lab still holds
        them (its lock says so): removing a mount point in use would unmount it in that lab's namespaces. The
        marker lets the next lab remove those a lab killed with -9 could not.
        """
        for path in PRIVATE_DIRS.values():
            marker = os.path.join(path, MADE_BY_LAB)
            while True:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path, 0o755)
                    Path(marker).touch()
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # another lab removed it between our mkdir and open
                fcntl.flock(fd, fcntl.LOCK_SH)
                try:
                    same = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    self._mount_points.append((path, fd, os.path.exists(marker)))
                    break
                os.close(fd)

    def _release_mount_points(self) -> None:
        for path, fd, made in reversed(self._mount_points):
            if made:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.unlink(os.path.join(path, MADE_BY_LAB))
                    os.rmdir(path)
                except OSError:
                    pass  # another lab uses it (or something was put in it): leave it
            os.close(fd)
        self._mount_points.clear()

    def _start_namespace(self, host: LibvirtHost) -> None:
        binds = [f"{host.dir / sub}:{target}" for sub, target in PRIVATE_DIRS.items()]
        with open(host.dir / "init.log", "wb") as log:
            host._unshare = subprocess.Popen(
                ["unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "--",
                 sys.executable, "-I", "-S", str(_INIT), host.name, *binds],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True,  # a Ctrl-C in the terminal is the lab's to handle, not the namespace's
            )  # fmt: skip
        assert host._unshare.stdout is not None
        ready, _, _ = select.select([host._unshare.stdout], [], [], self.timeout)
        line = host._unshare.stdout.readline() if ready else b""
        host._unshare.stdout.close()
        if line != b"ready\n":
            said = (host.dir / "init.log").read_text(errors="replace").strip().splitlines()
            reason = said[-1] if said else f"no answer within {self.timeout:g} s"
            raise LibvirtLabError(f"{host.name}: its namespace did not start: {reason}")
        children = [pid for pid in _children(host._unshare.pid)]
        if len(children) != 1:
            raise LibvirtLabError(f"{host.name}: cannot find the namespace's init (unshare's children: {children})")
        host.init_pid = children[0]
        host.namespaces = {ns for ns in (_namespace(host.init_pid, "pid"), _namespace(host.init_pid, "mnt")) if ns}
        self._namespaces |= host.namespaces

    def _stop_namespace(self, host: LibvirtHost) -> None:
        proc = host._unshare
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the init's stdin ends: it exits, and the kernel kills the namespace
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            if host.init_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(host.init_pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
        host.pid = None

    def _start_daemon(self, host: LibvirtHost) -> None:
        """libvirtd in the host's namespaces; it answers on its URI on return."""
        if host.init_pid is None or not _pid_alive(host.init_pid):
            raise LibvirtLabError(f"{host.name}: its namespace is gone")
        with contextlib.suppress(FileNotFoundError):
            host.pid_file.unlink()  # a killed libvirtd's: the new one's PID must be read, not the old
        # --daemon: libvirtd forks into the namespace's init, which reaps it; nsenter returns once it runs.
        done = subprocess.run(
            ["nsenter", "--target", str(host.init_pid), "--mount", "--uts", "--pid", "--",
             "libvirtd", "--daemon", "--listen", "-f", str(host.dir / "etc" / "libvirtd.conf"),
             "-p", str(host.pid_file)],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise LibvirtLabError(f"{host.name}: libvirtd did not start: {self._said(host, done)}")
        try:
            _wait_for(lambda: _read_pid(host.pid_file) is not None, self.timeout, "no pid file")
            ns_pid = _read_pid(host.pid_file)
            assert ns_pid is not None
            host.pid = _host_pid(host.init_pid, ns_pid)
            _wait_for(lambda: self._answers(host), self.timeout, "libvirtd does not answer")
        except LibvirtLabError as e:
            raise LibvirtLabError(f"{host.name}: {e}; see {host.log_path}") from None

    def _answers(self, host: LibvirtHost) -> bool:
        if host.pid is None or not _pid_alive(host.pid):
            raise LibvirtLabError(f"libvirtd exited: {self._said(host)}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", host.port)) != 0:
                return False
        # The QEMU driver comes up after the socket: until then, "no connection driver available".
        done = self.virsh(host, "hostname", check=False)
        return done.returncode == 0 and done.stdout.strip() == host.name

    @staticmethod
    def _said(host: LibvirtHost, done: subprocess.CompletedProcess[bytes] | None = None) -> str:
        lines = done.stderr.decode(errors="replace").strip().splitlines() if done is not None else []
        if not lines and host.log_path.exists():
            lines = [ln for ln in host.log_path.read_text(errors="replace").splitlines() if "error" in ln]
        return lines[-1].strip() if lines else f"no message (see {host.log_path})"

    # -- what tests do to hosts ------------------------------------------------------------------------------------

    def host(self, name: str) -> LibvirtHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no lab host named {name!r}: {', '.join(h.name for h in self.hosts)}")

    def kill(self, host: LibvirtHost) -> None:
        """SIGKILL the host's libvirtd alone, as an operator's ``kill -9``: its domains' QEMUs keep running."""
        pid = host.pid
        if pid is None:
            raise LibvirtLabError(f"{host.name}: libvirtd is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not _pid_alive(pid), 10.0, f"{host.name}: libvirtd {pid} still runs after SIGKILL")
        host.pid = None

    def restart(self, host: LibvirtHost) -> None:
        """Start the host's libvirtd again (same directories, port and UUID); it reconnects to its running QEMUs."""
        if host.pid is not None and _pid_alive(host.pid):
            raise LibvirtLabError(f"{host.name}: libvirtd {host.pid} still runs; kill it first")
        self._start_daemon(host)

    def virsh(self, host: LibvirtHost, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``virsh -c URI ARGS`` on a host; LibvirtLabError with virsh's line when it fails and ``check``."""
        done = subprocess.run(["virsh", "-q", "-c", host.uri, *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=self.timeout)
        if check and done.returncode != 0:
            said = done.stderr.strip().splitlines()
            raise LibvirtLabError(f"{host.name}: virsh {' '.join(args)}: {said[0] if said else done.returncode}")
        return done

    def virsh_migrate(self, source: LibvirtHost, dest: LibvirtHost, name: str, bandwidth_mib: int,
                      *options: str, **popen: Any) -> subprocess.Popen:
        """``virsh migrate --live --p2p [OPTIONS]`` of ``name`` from ``source`` to ``dest`` over the lab's stream, in
        a process of its own (as another operator or tool would start it); ``popen``: Popen's keywords."""
        popen.setdefault("stdout", subprocess.DEVNULL)
        popen.setdefault("stderr", subprocess.DEVNULL)
        return subprocess.Popen(["virsh", "-c", source.uri, "migrate", "--live", "--p2p", *options, name, dest.uri,
                                 "--migrateuri", self.migration_uri(dest), "--bandwidth", str(bandwidth_mib)],
                                **popen)

    def define_guest(self, host: LibvirtHost, name: str, ram_mib: int = 256, *, vcpus: int = 1,
                     page_delay: int = 0, icount_shift: int | None = None, wait: bool = True) -> LibvirtGuest:
        """Create and start a running (transient) domain ``name`` on ``host`` with the lab's RAM-dirtying guest.

        The stock guest (``page_delay=0``) dirties ~98 MiB as fast as TCG runs (~100 MB/s here): at 30 MiB/s it never
        converges. ``page_delay`` spins between pages (see :func:`migtui.lab.guest.guest_image`); with
        ``icount_shift`` (QEMU's ``-icount shift=N,align=on``) the rate is then set by virtual time, not by the host:
        shift 7 and delay 1600 dirty ~19 MiB/s at most, so a migration well above that converges over passes.
        libvirt has no element for -icount: it goes in ``<qemu:commandline>``, which libvirt marks as a taint
        (``custom-argv``) in its log; the XML, and so the option, migrates with the domain.

        With ``wait``, returns once the guest has dirtied its whole range once (its serial console says so).
        """
        if ram_mib * 2**20 < MIN_GUEST_MEM:
            raise ValueError(f"the lab guest needs at least {MIN_GUEST_MEM >> 20} MiB of RAM, not {ram_mib}")
        if not name or "/" in name or any(g.name == name for g in self.guests):
            raise ValueError(f"bad or taken domain name: {name!r}")
        if icount_shift is not None and not 0 <= icount_shift <= ICOUNT_SHIFT_MAX:
            raise ValueError(f"icount_shift must be 0 to {ICOUNT_SHIFT_MAX}, not {icount_shift}")
        guest_image(page_delay)  # a bad page_delay fails here
        kernel = self._kernels.get(page_delay)
        if kernel is None:
            kernel = self._kernels[page_delay] = build_dirty_guest(self.dir / f"dirty-guest-{page_delay}.bin",
                                                                   page_delay)
        guests = self.dir / "guests"
        guests.mkdir(exist_ok=True)
        serial = guests / f"{name}.serial.log"
        qemu = find_qemu()
        assert qemu is not None  # check_lab() said so at start
        icount = ""
        if icount_shift is not None:
            icount = ("  <qemu:commandline>\n    <qemu:arg value='-icount'/>\n"
                      f"    <qemu:arg value='shift={icount_shift},align=on'/>\n  </qemu:commandline>\n")
        xml = (
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
            f"  <name>{escape(name)}</name>\n"
            f"  <memory unit='MiB'>{int(ram_mib)}</memory>\n"
            f"  <vcpu>{int(vcpus)}</vcpu>\n"
            f"  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{escape(str(kernel))}</kernel></os>\n"
            "  <devices>\n"
            f"    <emulator>{escape(qemu)}</emulator>\n"
            # append: after a migration the destination's QEMU opens the same file, and must not truncate it.
            f"    <serial type='file'><source path={quoteattr(str(serial))} append='on'/></serial>\n"
            "    <memballoon model='none'/>\n"
            "  </devices>\n"
            f"{icount}"
            "</domain>\n"
        )
        xml_path = guests / f"{name}.xml"
        xml_path.write_text(xml)
        self.virsh(host, "create", str(xml_path))
        guest = LibvirtGuest(name=name, host=host, serial_log=serial, xml=xml)
        self.guests.append(guest)
        if wait:
            self.wait_guest_ready(guest)
        return guest

    def wait_guest_ready(self, guest: LibvirtGuest, timeout: float = GUEST_TIMEOUT) -> None:
        """Until the guest's serial console shows its ready marker (its first full sweep of RAM is done)."""

        def ready() -> bool:
            try:
                return READY_MARKER in guest.serial_log.read_bytes()
            except FileNotFoundError:
                return False

        _wait_for(ready, timeout, f"{guest.name}: the guest printed no ready marker")

    def destroy_guest(self, name: str) -> None:
        """``virsh destroy`` the domain ``name`` on whichever host runs it (a test's clean-up); none may."""
        for host in self.hosts:
            if host.pid is not None:
                self.virsh(host, "destroy", name, check=False)
        self.guests = [g for g in self.guests if g.name != name]

    def qemu_pid(self, host: LibvirtHost, name: str) -> int:
        """The host PID of the QEMU that runs domain ``name`` on ``host`` (from libvirt's own pid file)."""
        ns_pid = _read_pid(host.dir / "run" / "qemu" / f"{name}.pid")
        if ns_pid is None or host.init_pid is None:
            raise LibvirtLabError(f"{host.name}: no QEMU runs domain {name}")
        return _host_pid(host.init_pid, ns_pid)

    def migration_uri(self, dest: LibvirtHost) -> str:
        """A fresh ``unix:///...`` for ``VIR_MIGRATE_PARAM_URI`` (virsh's ``--migrateuri``) to migrate to ``dest``."""
        with self._lock:
            dest._migrations += 1
            n = dest._migrations
        return f"unix://{dest.migration_socket_dir / f'mig-{n}.sock'}"


def _held(path: str) -> bool:
    """True when a lab holds ``path`` (a mount point) with its shared lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _status(pid: int, key: str) -> list[str]:
    """The fields of line ``key`` ("PPid", "NSpid") of /proc/PID/status; [] when the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    for line in status.splitlines():
        if line.startswith(f"{key}:"):
            return line.split()[1:]
    return []


def _children(pid: int) -> list[int]:
    """Live host PIDs whose parent is ``pid``."""
    return [p for p in _processes() if _status(p, "PPid") == [str(pid)] and _pid_alive(p)]


def _processes() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _host_pid(init_pid: int, ns_pid: int) -> int:
    """The host PID of the process that is ``ns_pid`` in the PID namespace of ``init_pid``."""
    pid_ns = _namespace(init_pid, "pid")
    for pid in _processes():
        if _namespace(pid, "pid") == pid_ns and _status(pid, "NSpid")[-1:] == [str(ns_pid)]:
            return pid
    raise LibvirtLabError(f"no process {ns_pid} in the namespace of {init_pid}")


def main(argv: list[str] | None = None) -> int:
    """``python -m migtui.lab.libvirt_hosts``: start the hosts, print their URIs, run until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m migtui.lab.libvirt_hosts", description=main.__doc__)
    parser.add_argument("--hosts", type=int, default=2, metavar="N", help="how many hosts (default 2)")
    parser.add_argument("--guest", metavar="NAME", help="also start a RAM-dirtying domain NAME on host1")
    args = parser.parse_args(argv)
    if args.hosts < 1:
        parser.error("--hosts must be 1 or more")

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(0)  # unwinds through the with: everything is removed

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        with LibvirtHosts(args.hosts) as hosts:
            if args.guest:
                hosts.define_guest(hosts[0], args.guest)
            print(f"libvirt lab: {len(hosts)} hosts in {hosts.dir}; stop with Ctrl-C", flush=True)
            for host in hosts:
                print(f"{host.name:<6} {host.uri}  pid={host.pid}  migrate to it with --migrateuri "
                      f"unix://{host.migration_socket_dir}/NAME.sock", flush=True)
            for guest in hosts.guests:
                print(f"domain {guest.name} on {guest.host.name}, serial log {guest.serial_log}", flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        return 0
    except (LibvirtLabError, ValueError) as e:
        print(f"libvirt lab: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
