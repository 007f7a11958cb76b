"""A small Debian guest for the lab, running a real workload: PostgreSQL under pgbench, or a build.

Built once from Debian's own packages and cached under
``${XDG_CACHE_HOME:-~/.cache}/migtui/guest/<image>-<hash of the recipe>/``:

- ``vmlinuz``: Debian's kernel (``linux-image-amd64``), taken from its package. No modules: the
  guest needs none (serial, tmpfs, proc and devtmpfs are built in), and leaving them out keeps
  ~400 MiB out of the image;
- ``initrd.img``: a compressed cpio of a ``debootstrap --variant=minbase`` bookworm tree with the
  workload's packages, whose ``/init`` (:data:`INIT_SCRIPT`) starts the workload at boot and then
  prints :data:`READY_MARKER` on the serial console.

An initramfs rather than a disk: QEMU boots it with ``-kernel``/``-initrd``, so there is no disk to
migrate nor to share, and the database lives in guest RAM (a tmpfs), which is what a migration
moves. Building needs root (debootstrap chroots), the network and the Debian packages named in
:data:`TOOLS_MISSING_MESSAGE`; booting the cached image needs neither.

Standard library only: debootstrap, cpio and the compressor run as subprocesses, never via a shell.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
KERNEL_PACKAGE = "linux-image-amd64"
BUILDER_VERSION = 1  # bump when the build changes in a way the recipe below does not show

READY_MARKER = b"MIGTUI-WORKLOAD-RUNNING"
"""Printed on the serial console by /init once the workload runs (the line also names it)."""

# What each image holds beyond minbase. pgbench ships in postgresql-client.
IMAGE_PACKAGES: dict[str, tuple[str, ...]] = {
    "postgres": ("postgresql", "postgresql-client"),
    "build": ("gcc", "make", "libc6-dev"),
}


@dataclass(frozen=True)
class Workload:
    name: str
    image: str  # a key of IMAGE_PACKAGES
    args: tuple[str, ...]  # kernel command line words that /init reads
    what: str  # for the operator


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("pgbench", "postgres", ("migtui.workload=pgbench", "migtui.clients=2"),
                 "PostgreSQL 15, pgbench -c 2 on a scale-4 database (~60 MiB) in tmpfs"),
        Workload("pgbench-heavy", "postgres", ("migtui.workload=pgbench", "migtui.clients=16"),
                 "PostgreSQL 15, pgbench -c 16 on a scale-4 database (~60 MiB) in tmpfs"),
        Workload("build", "build", ("migtui.workload=build", "migtui.jobs=2"),
                 "make -j2 of 160 C files with gcc, in a loop, in tmpfs"),
    )
}

PGBENCH_SCALE = 4
"""pgbench -i's scale: 4 x 100,000 accounts, ~60 MiB of tables and indexes."""

# Appended to the database's postgresql.conf: a unix socket only, no JIT (LLVM is pruned), a buffer
# cache in proportion to the guest's RAM (the default 128 MB is an eighth of it), and little WAL:
# it all sits in guest RAM, in a rootfs the kernel caps at half of it (no replicas, so wal_level
# minimal, which also spares pgbench -i's COPY from writing its 60 MiB twice).
POSTGRESQL_CONF = (
    "listen_addresses = ''\njit = off\nshared_buffers = 32MB\n"
    "wal_level = minimal\nmax_wal_senders = 0\nmin_wal_size = 32MB\nmax_wal_size = 64MB\n"
)

GUEST_MEM = "1G"
"""RAM for the Linux guest. The initramfs unpacks into a tmpfs that Linux caps at half the RAM, and
the image is ~220 MiB with its database; what is never touched costs a migration nearly nothing
(zero pages), so this is roomy rather than tight."""

KERNEL_ARGS = ("console=ttyS0", "quiet", "panic=-1", "rdinit=/init")

TOOLS = ("debootstrap", "cpio")
TOOLS_MISSING_MESSAGE = (
    "building the Linux lab guest needs debootstrap, cpio and zstd (or gzip): "
    "install Debian/Ubuntu packages debootstrap cpio zstd"
)
NOT_ROOT_MESSAGE = (
    "building the Linux lab guest needs root (debootstrap chroots): run it once as root, "
    "e.g. sudo XDG_CACHE_HOME=$HOME/.cache migtui lab --guest linux; later runs reuse the cache"
)

# Left out of the image: documentation, apt's state, and LLVM (PostgreSQL's optional JIT, off here).
PRUNE = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/i18n",
    "usr/share/lintian", "var/cache/apt/*", "var/lib/apt/lists/*", "var/log/*",
    "usr/lib/x86_64-linux-gnu/libLLVM-*", "usr/lib/x86_64-linux-gnu/libz3.so*",
    "usr/lib/postgresql/*/lib/bitcode", "usr/lib/postgresql/*/lib/llvmjit*",
    # The cluster Debian's postinst made: the build makes its own (see _make_database).
    "var/lib/postgresql/*", "etc/postgresql/*",
    # Perl beyond perl-base: only Debian's PostgreSQL wrappers need it, and /init calls the binaries.
    "usr/share/perl", "usr/lib/x86_64-linux-gnu/perl",
)  # fmt: skip

INIT_SCRIPT = r"""#!/bin/sh
# PID 1 of migtui's Linux lab guest: mount the basics, start the workload named on the kernel
# command line, say so on the console, and never exit (PID 1 exiting panics the kernel).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
hostname migtui-guest
say() { echo "migtui-guest: $*" >/dev/console; }

workload=pgbench clients=2 jobs=2
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        migtui.workload=*) workload=${arg#*=} ;;
        migtui.clients=*) clients=${arg#*=} ;;
        migtui.jobs=*) jobs=${arg#*=} ;;
    esac
done
say "booted in $(cut -d' ' -f1 /proc/uptime) s; starting $workload"

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/var/lib/postgresql "$@"; }

case "$workload" in
pgbench)
    # The database was made (initdb, pgbench -i) when the image was built, under /var/lib/postgresql
    # in the initramfs: the rootfs, which is a tmpfs, so it lives in guest RAM, what a migration moves.
    pgbin=$(echo /usr/lib/postgresql/*/bin)
    mkdir -p /run/postgresql
    chown postgres:postgres /run/postgresql
    as_postgres "$pgbin/pg_ctl" -D /var/lib/postgresql/data -l /run/postgresql/log -w -t 300 \
        -o "-k /run/postgresql" start >/dev/null || { say "postgres failed:"; cat /run/postgresql/log >/dev/console; }
    ( while :; do
        as_postgres "$pgbin/pgbench" -h /run/postgresql -n -c "$clients" -T 100000 postgres >/dev/null 2>&1
        say "pgbench exited; again"
        sleep 1
    done ) &
    ;;
build)
    mkdir -p /build
    mount -t tmpfs -o mode=0755 tmpfs /build
    cp -a /opt/migtui-build/. /build/
    ( cd /build && while :; do
        make -s -j"$jobs" >/dev/null 2>&1 || say "make failed"
        make -s clean >/dev/null 2>&1
    done ) &
    ;;
*)
    say "unknown migtui.workload=$workload (pgbench or build)"
    ;;
esac
say "MIGTUI-WORKLOAD-RUNNING $workload"
while :; do wait; sleep 60; done
"""

# The build workload: many small translation units, as in a kernel build; each gcc is a short
# process that maps fresh memory and writes its object to the page cache (tmpfs).
BUILD_UNITS = 160


def _build_tree() -> dict[str, str]:
    files = {}
    for i in range(BUILD_UNITS):
        files[f"src/u{i:03}.c"] = (
            "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\n"
            + "".join(
                f"int u{i}_f{j}(const char *s, int n)\n{{\n"
                f"    int acc = {i * 31 + j};\n"
                f"    for (int k = 0; k < n; k++)\n"
                f"        acc = acc * {j + 3} + (unsigned char)s[k % (strlen(s) + 1)];\n"
                f"    return acc ^ (int)strtol(\"{i}{j}\", NULL, 10);\n}}\n\n"
                for j in range(12)
            )
        )
    files["src/main.c"] = (
        "#include <stdio.h>\nint u0_f0(const char *s, int n);\n"
        'int main(void) { printf("%d\\n", u0_f0("migtui", 6)); return 0; }\n'
    )
    files["Makefile"] = (
        "SRCS := $(wildcard src/*.c)\nOBJS := $(SRCS:.c=.o)\nCFLAGS := -O2 -g -Wall\n\n"
        "prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n"
        "%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\n"
        "clean:\n\trm -f prog $(OBJS)\n"
    )
    return files


# -- the recipe and its cache ------------------------------------------------------------------


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "migtui" / "guest"


def recipe(image: str) -> dict[str, object]:
    """Everything that decides an image's content; its hash names the cache entry."""
    if image not in IMAGE_PACKAGES:
        raise ValueError(f"no such Linux guest image: {image!r} ({', '.join(IMAGE_PACKAGES)})")
    return {
        "builder": BUILDER_VERSION,
        "suite": SUITE,
        "mirror": MIRROR,
        "variant": "minbase",
        "kernel": KERNEL_PACKAGE,
        "packages": list(IMAGE_PACKAGES[image]),
        "prune": list(PRUNE),
        "init": INIT_SCRIPT,
        "files": _build_tree() if image == "build" else {},
        "database": {"scale": PGBENCH_SCALE, "conf": POSTGRESQL_CONF} if image == "postgres" else None,
    }


def image_dir(image: str) -> Path:
    digest = hashlib.sha256(json.dumps(recipe(image), sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / f"{image}-{digest}"


@dataclass(frozen=True)
class LinuxGuest:
    """A built image and the workload to boot it with: what the lab hands QEMU."""

    kernel: Path
    initrd: Path
    workload: Workload

    @property
    def append(self) -> str:
        return " ".join(KERNEL_ARGS + self.workload.args)


def cached_guest(workload: str) -> LinuxGuest | None:
    """The cached image for ``workload``, or None when it was never built."""
    w = _workload(workload)
    d = image_dir(w.image)
    kernel, initrd = d / "vmlinuz", d / "initrd.img"
    if kernel.is_file() and initrd.is_file() and (d / "recipe.json").is_file():
        return LinuxGuest(kernel, initrd, w)
    return None


def _workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"--workload must be one of {', '.join(WORKLOADS)}, not {name!r}") from None


class GuestBuildError(RuntimeError):
    """The image could not be built; the message is one line for the operator."""


def missing_tools() -> list[str]:
    missing = [t for t in TOOLS if _which(t) is None]
    if _which("zstd") is None and _which("gzip") is None:
        missing.append("zstd")
    return missing


def _which(tool: str) -> str | None:
    # debootstrap lives in /usr/sbin, which a user's PATH may lack.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def ensure_guest(workload: str, out: TextIO | None = None) -> LinuxGuest:
    """The image for ``workload``: the cached one, else built now (minutes; progress on ``out``)."""
    w = _workload(workload)
    cached = cached_guest(workload)
    if cached is not None:
        return cached
    if missing_tools():
        raise GuestBuildError(TOOLS_MISSING_MESSAGE)
    if os.geteuid() != 0:
        raise GuestBuildError(NOT_ROOT_MESSAGE)
    build_image(w.image, out if out is not None else sys.stderr)
    built = cached_guest(workload)
    if built is None:  # pragma: no cover (build_image raises instead)
        raise GuestBuildError(f"the build left no image in {image_dir(w.image)}")
    return built


# -- the build -------------------------------------------------------------------------------------


class _Progress:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        s = int(time.monotonic() - self.t0)
        print(f"  [{s // 60}:{s % 60:02}] {text}", file=self.out, flush=True)


_DEBOOTSTRAP_STEP = re.compile(r"^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) ")
_STEP_NAMES = {"Retrieving": "downloaded", "Validating": "downloaded", "Extracting": "extracted",
               "Unpacking": "unpacked", "Configuring": "configured"}


def _run(argv: list[str], what: str, on_line: Callable[[str], None] | None = None) -> None:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = (tail + [line])[-15:]
        if on_line is not None:
            on_line(line)
    if proc.wait() != 0:
        raise GuestBuildError(f"{what} failed (status {proc.returncode}); its last lines:\n" + "\n".join(tail))


def _debootstrap_lines(progress: _Progress) -> Callable[[str], None]:
    """One progress line per debootstrap stage (not per package), with the count of the last."""
    state = {"step": "", "n": 0}

    def seen(line: str) -> None:
        m = _DEBOOTSTRAP_STEP.match(line)
        step = _STEP_NAMES[m.group(1)] if m else ""
        if step and step == state["step"]:
            state["n"] += 1
            return
        if state["step"]:
            progress.say(f"debootstrap: {state['step']} {state['n']} packages")
            state["step"], state["n"] = "", 0
        if step:
            state["step"], state["n"] = step, 1
        elif line.startswith(("I: ", "W: ", "E: ")):
            progress.say(f"debootstrap: {line[3:]}")

    return seen


def _unmount_under(tree: Path) -> None:
    """Unmount whatever a failed debootstrap left mounted inside ``tree`` (deepest first)."""
    root = os.path.realpath(tree)
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    for point in sorted((p for p in points if p == root or p.startswith(root + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], stdin=subprocess.DEVNULL, check=False)


def _remove_tree(tree: Path) -> None:
    if not tree.exists():
        return
    _unmount_under(tree)
    root = os.path.realpath(tree)
    with open("/proc/self/mounts") as f:
        if any(line.split()[1].startswith(root + "/") for line in f):
            raise GuestBuildError(f"{tree} still has mounts inside; not removing it")
    shutil.rmtree(tree, ignore_errors=True)


def _extract_kernel(tree: Path, dest: Path) -> str:
    """Download Debian's kernel package in the chroot and take its vmlinuz; returns the version."""
    _run(["chroot", str(tree), "apt-get", "install", "-y", "-qq", "--download-only",
          "--no-install-recommends", KERNEL_PACKAGE], "apt-get download of the kernel")
    archives = tree / "var/cache/apt/archives"
    debs = sorted(archives.glob("linux-image-[0-9]*-amd64_*.deb"))
    if not debs:
        raise GuestBuildError(f"no linux-image-*-amd64 package in {archives} after apt-get")
    deb = "/var/cache/apt/archives/" + debs[-1].name
    proc = subprocess.Popen(["chroot", str(tree), "dpkg-deb", "--fsys-tarfile", deb],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    version = ""
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile() and member.name.startswith("./boot/vmlinuz-"):
                    src = tar.extractfile(member)
                    assert src is not None
                    with open(dest, "wb") as f:
                        shutil.copyfileobj(src, f)
                    version = member.name.removeprefix("./boot/vmlinuz-")
                    break
    finally:
        proc.stdout.close()
        proc.kill()  # the rest of the package (its modules) is not needed
        proc.wait()
    if not version:
        raise GuestBuildError(f"no /boot/vmlinuz-* in {debs[-1].name}")
    return version


def _make_database(tree: Path) -> None:
    """initdb and pgbench -i in the chroot, now: under TCG they take the guest most of a minute."""
    bins = sorted(tree.glob("usr/lib/postgresql/*/bin"))
    if not bins:
        raise GuestBuildError(f"no usr/lib/postgresql/*/bin in {tree}")
    pgbin = "/" + str(bins[-1].relative_to(tree))
    data = "/var/lib/postgresql/data"
    as_postgres = ["chroot", str(tree), "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                   "env", "HOME=/var/lib/postgresql"]
    _run(as_postgres + [f"{pgbin}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                        "--locale=C", "--no-sync"], "initdb")
    with open(tree / data.lstrip("/") / "postgresql.conf", "a") as f:
        f.write(POSTGRESQL_CONF)
    # No /dev/shm in the chroot: dynamic shared memory in files for this one run.
    _run(as_postgres + [f"{pgbin}/pg_ctl", "-D", data, "-l", "/tmp/postgres.log", "-w", "-o",
                        "-k /tmp -c dynamic_shared_memory_type=mmap", "start"], "pg_ctl start")
    try:
        _run(as_postgres + [f"{pgbin}/pgbench", "-h", "/tmp", "-i", "-q", "-s", str(PGBENCH_SCALE), "postgres"],
             "pgbench -i")
    finally:
        _run(as_postgres + [f"{pgbin}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], "pg_ctl stop")
    (tree / "tmp/postgres.log").unlink(missing_ok=True)


def _prune(tree: Path) -> None:
    for pattern in PRUNE:
        for path in tree.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _pack(tree: Path, dest: Path) -> str:
    """cpio (newc, as the kernel wants) of the tree, compressed: zstd when there, else gzip."""
    compressor = ["zstd", "-q", "-T0", "-6"] if _which("zstd") else ["gzip", "-6"]
    with open(dest, "wb") as f:
        find = subprocess.Popen(["find", ".", "-print0"], cwd=tree, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        cpio = subprocess.Popen(["cpio", "--null", "--create", "--format=newc", "--quiet"], cwd=tree,
                                stdin=find.stdout, stdout=subprocess.PIPE)
        comp = subprocess.Popen(compressor, stdin=cpio.stdout, stdout=f)
        assert find.stdout is not None and cpio.stdout is not None
        find.stdout.close()  # the children hold their own ends now
        cpio.stdout.close()
        codes = comp.wait(), cpio.wait(), find.wait()
    if any(codes):
        raise GuestBuildError(f"packing the image failed: compressor, cpio, find exited {codes}")
    return compressor[0]


def _size(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def build_image(image: str, out: TextIO) -> Path:
    """Build ``image`` into the cache (replacing nothing that is there) and return its directory."""
    final = image_dir(image)
    packages = IMAGE_PACKAGES[image]
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f".build-{final.name}-{os.getpid()}"
    tree = work / "tree"
    progress = _Progress(out)
    print(f"migtui: building the Linux lab guest '{image}' (Debian {SUITE} minbase + {', '.join(packages)}) "
          f"into {final}; once, a few minutes", file=out, flush=True)
    try:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o755)
        _run([_which("debootstrap") or "debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
              SUITE, str(tree), MIRROR], "debootstrap", _debootstrap_lines(progress))
        progress.say(f"debootstrap done: {_size(_du(tree))}")
        version = _extract_kernel(tree, work / "vmlinuz")
        progress.say(f"kernel {version} taken from {KERNEL_PACKAGE}")
        _prune(tree)
        init = tree / "init"
        init.write_text(INIT_SCRIPT)
        init.chmod(0o755)
        progress.say(f"pruned to {_size(_du(tree))}")
        if image == "postgres":
            _make_database(tree)
            progress.say(f"database made: pgbench -i -s {PGBENCH_SCALE}")
        if image == "build":
            for rel, text in _build_tree().items():
                path = tree / "opt/migtui-build" / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        unpacked = _du(tree)
        progress.say(f"packing the initramfs ({_size(unpacked)})")
        compressor = _pack(tree, work / "initrd.img")
        _remove_tree(tree)
        took = time.monotonic() - progress.t0
        meta = {"recipe": recipe(image), "kernel-version": version, "unpacked-bytes": unpacked,
                "compressor": compressor, "build-seconds": round(took, 1)}
        (work / "recipe.json").write_text(json.dumps(meta, indent=1) + "\n")
        for path in work.iterdir():
            path.chmod(0o644)  # readable by the user who boots it, if root built it
        work.chmod(0o755)
        work.rename(final)
    except BaseException:
        _remove_tree(tree)
        shutil.rmtree(work, ignore_errors=True)
        raise
    cached = sum(p.stat().st_size for p in final.iterdir())
    print(f"migtui: built in {int(took) // 60}m{int(took) % 60:02}s; caches {_size(cached)} in {final} "
          f"(initramfs {_size((final / 'initrd.img').stat().st_size)}, {_size(unpacked)} unpacked)",
          file=out, flush=True)
    return final


def _du(tree: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(tree):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_size
    return total


# -- KVM that opens but does not run Linux ---------------------------------------------------------

KVM_PROBE_SECONDS = 10.0
KVM_FALLBACK_NOTE = (
    "KVM did not start Debian's kernel within {s:g} s (/dev/kvm opens but does not run it: "
    "a nested or emulated KVM?); using TCG"
)


async def kvm_runs_kernel(qemu: str, kernel: Path, runtime_dir: Path, timeout: float = KVM_PROBE_SECONDS) -> bool:
    """Whether KVM gets ``kernel`` as far as its first message (well under a second on a real KVM).

    /dev/kvm can open and still not run a 64-bit kernel: some nested or emulated KVMs run the
    lab's tiny 32-bit guest but hang in Linux's decompressor, for good.
    """
    import asyncio
    import functools

    from migtui.lab.qemu import _die_with_parent_preexec, _opt_escape

    serial = Path(runtime_dir) / "kvm-probe.serial"
    argv = [qemu, "-machine", "pc", "-accel", "kvm", "-m", "128M", "-nodefaults", "-no-user-config",
            "-display", "none", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
            "-chardev", f"file,id=serial0,path={_opt_escape(serial)}", "-serial", "chardev:serial0"]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        preexec_fn=functools.partial(_die_with_parent_preexec, os.getpid()))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while loop.time() < deadline and proc.returncode is None:
            try:
                if b"Linux version" in serial.read_bytes():
                    return True
            except FileNotFoundError:
                pass
            await asyncio.sleep(0.05)
        return False
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        serial.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """``python3 -m migtui.lab.linux_guest [WORKLOAD...]``: build (or reuse) the images, for CI."""
    names = (sys.argv[1:] if argv is None else argv) or ["pgbench"]
    for name in names:
        if name not in WORKLOADS:
            print(f"migtui.lab.linux_guest: a workload is one of {', '.join(WORKLOADS)}, not {name!r}",
                  file=sys.stderr)
            return 2
    for name in names:
        t0 = time.monotonic()
        cached = cached_guest(name)
        try:
            guest = cached or ensure_guest(name, out=sys.stdout)
        except GuestBuildError as e:
            print(f"migtui.lab.linux_guest: {e}", file=sys.stderr)
            return 1
        if cached is not None:
            size = sum(p.stat().st_size for p in guest.kernel.parent.iterdir())
            print(f"migtui: Linux lab guest for {name}: cached in {guest.kernel.parent} ({_size(size)}), "
                  f"checked in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
