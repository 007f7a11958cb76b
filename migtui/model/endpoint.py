"""Where a VM's QMP monitor is: `[NAME=]unix:PATH`, `[NAME=]PATH` or `[NAME=]tcp:HOST:PORT`."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from migtui.model.units import InputError

__all__ = ["Endpoint", "parse_endpoint"]

_FORMS = "unix:PATH, a socket path, or tcp:HOST:PORT, each optionally prefixed NAME="
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    kind: str  # "unix", "tcp", or "libvirt" (a domain on a libvirt host: path is the host's URI, host its label)
    path: str | None = None
    host: str | None = None
    port: int | None = None
    named: bool = False  # NAME= was given: it wins over QEMU's -name

    @property
    def address(self) -> str | tuple[str, int]:
        """What qemu.qmp's connect() takes."""
        if self.kind == "unix":
            assert self.path is not None
            return self.path
        assert self.host is not None and self.port is not None
        return (self.host, self.port)

    @property
    def is_local(self) -> bool:
        """Unix sockets and loopback TCP: a destination we can reach by a unix socket too."""
        if self.kind == "libvirt":
            return False  # libvirt chooses the migration path itself
        if self.kind == "unix":
            return True
        return _is_loopback(self.host or "")

    @property
    def source_host(self) -> str:
        """The machine the VM runs on, as far as its address says: what its VMs share (the link,
        the CPU a stop-and-copy runs on). Every local socket is one host, "localhost"."""
        if self.kind == "libvirt":
            return self.path or self.host or self.name
        return "localhost" if self.is_local else (self.host or self.name)

    def __str__(self) -> str:
        if self.kind == "libvirt":
            return f"{self.path}#{self.name}"  # a target that names just this domain
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_endpoint(text: str) -> Endpoint:
    original = text.strip()
    if not original:
        raise InputError(f"endpoint: empty; give {_FORMS}")
    name: str | None = None
    body = original
    head, sep, tail = original.partition("=")
    if sep:
        if not _NAME_RE.match(head):
            raise InputError(f"endpoint {original!r}: name {head!r} may use letters, digits and _.:@+- only")
        name, body = head, tail
    if body.startswith("tcp:"):
        hostport = body[4:]
        m = re.fullmatch(r"\[(?P<h6>[^\]]+)\]:(?P<p1>\d+)|(?P<h>[^:\[\]]+):(?P<p2>\d+)", hostport)
        if m is None:
            raise InputError(f"endpoint {original!r}: expected tcp:HOST:PORT; give {_FORMS}")
        host = m["h6"] or m["h"]
        port = int(m["p1"] or m["p2"])
        if not 0 < port < 65536:
            raise InputError(f"endpoint {original!r}: port {port} is out of range 1-65535")
        return Endpoint(name=name or f"{host}:{port}", kind="tcp", host=host, port=port, named=bool(name))
    if body.startswith("unix:"):
        body = body[5:]
    elif re.match(r"^[a-z][a-z0-9+.-]*:", body) and not body.startswith(("/", ".")):
        scheme = body.split(":", 1)[0]
        raise InputError(f"endpoint {original!r}: scheme {scheme!r} is not supported; give {_FORMS}")
    if not body:
        raise InputError(f"endpoint {original!r}: no socket path; give {_FORMS}")
    return Endpoint(name=name or Path(body).stem or body, kind="unix", path=body, named=bool(name))
