"""PID 1 of one libvirt lab host's namespaces (run by migtui.lab.libvirt_hosts, never imported).

    unshare --mount --uts --pid --fork --mount-proc -- python3 -I libvirt_init.py HOSTNAME SRC:DST...

It names the host, bind-mounts each private SRC directory on DST (/etc/libvirt, /run/libvirt, ...), says
"ready" on stdout, then reaps every orphan of the namespace (libvirtd daemonizes, and its QEMUs outlive a
killed libvirtd) until its stdin closes. Only the lab holds that pipe's other end, so when the lab goes, however
it goes (even kill -9), this init exits and the kernel kills every process left in the PID namespace: libvirtd
and its QEMUs. The mounts go with the mount namespace's last process.

Standard library only, and no migtui import: it must start fast and in a bare interpreter.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys

MS_BIND = 0x1000


def _reap(_signum: int, _frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str]) -> int:
    hostname, binds = argv[0], argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    socket.sethostname(hostname)
    for pair in binds:
        src, _, dst = pair.partition(":")
        if libc.mount(src.encode(), dst.encode(), None, MS_BIND, None) != 0:
            err = ctypes.get_errno()
            print(f"mount --bind {src} {dst}: {os.strerror(err)}", file=sys.stderr, flush=True)
            return 1
    signal.signal(signal.SIGCHLD, _reap)
    # Terminal signals are the lab's business, not the namespace's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.write(1, b"ready\n")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the lab reads stdout only up to "ready"; nothing may block on it later
    while os.read(0, 4096):
        pass  # the lab never writes: b"" is the end, read() returns only then (retried across SIGCHLD)
    return 0  # PID 1 exits: the kernel SIGKILLs the rest of the namespace


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
