"""A libvirt target as the operator types it: `[NAME=]URI[#DOMAIN[,DOMAIN...]]`.

The URI is libvirt's own (`qemu:///system`, `qemu+ssh://root@host1/system`, `qemu+tcp://`,
`qemu+tls://`, `qemu+unix://`, `qemu+libssh2://`, `qemu+libssh://`) and stands for a host: every
running or paused domain on it. After `#`, a comma-separated list of domain names or shell-style
patterns (`#web-*,db-01`) narrows the host to those domains; libvirt's URIs never use a fragment,
so it cannot clash with libvirt's own `?name=value` options. NAME= labels the host in the fleet
(default: the host's hostname, as libvirt reports it).

Pure: it needs no libvirt, so the command line can check a target before anything connects.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from migtui.model.units import InputError

__all__ = ["LibvirtTarget", "parse_libvirt_target", "is_libvirt_target", "LIBVIRT_FORMS"]

# libvirt's QEMU driver with each transport it has.
_SCHEMES = ("qemu", "qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+unix", "qemu+libssh2", "qemu+libssh", "qemu+ext")
LIBVIRT_FORMS = "qemu:///system, qemu+ssh://[USER@]HOST/system, qemu+tcp://HOST[:PORT]/system or qemu+tls://HOST/system"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9_.:+\-*?\[\]]{1,200}$")


@dataclass(frozen=True, slots=True)
class LibvirtTarget:
    uri: str  # as libvirt is given it (with no_tty=1 added for ssh: never a password prompt)
    label: str | None = None  # NAME=, or None: the host's hostname
    domains: tuple[str, ...] = ()  # patterns; empty: every domain

    def wants(self, domain: str) -> bool:
        return not self.domains or any(fnmatch.fnmatchcase(domain, p) for p in self.domains)

    @property
    def shown_uri(self) -> str:
        """The URI as the operator gave it (without the options migtui adds)."""
        return self.uri.replace("?no_tty=1", "").replace("&no_tty=1", "")

    def __str__(self) -> str:
        return self.shown_uri + (f"#{','.join(self.domains)}" if self.domains else "")


def is_libvirt_target(text: str) -> bool:
    """Whether `text` names a libvirt host (its scheme is libvirt's QEMU driver), NAME= or not."""
    body = text.strip()
    head, sep, tail = body.partition("=")
    if sep and "://" not in head:
        body = tail
    return body.split("://", 1)[0] in _SCHEMES and "://" in body


def parse_libvirt_target(text: str) -> LibvirtTarget:
    original = text.strip()
    body, label = original, None
    head, sep, tail = original.partition("=")
    if sep and "://" not in head:
        if not _NAME_RE.match(head):
            raise InputError(f"libvirt target {original!r}: name {head!r} may use letters, digits and _.:@+- only")
        label, body = head, tail
    body, hashed, fragment = body.partition("#")
    parts = urlsplit(body)
    if parts.scheme not in _SCHEMES or "://" not in body:
        raise InputError(f"libvirt target {original!r}: give {LIBVIRT_FORMS}")
    if parts.path not in ("/system", "/session"):
        raise InputError(f"libvirt target {original!r}: the path must be /system or /session; give {LIBVIRT_FORMS}")
    if parts.scheme in ("qemu", "qemu+unix") and parts.netloc:
        raise InputError(f"libvirt target {original!r}: {parts.scheme}:// is this machine's libvirtd: "
                         f"no host (give {parts.scheme}:///system), or use qemu+ssh://HOST/system")
    if parts.scheme not in ("qemu", "qemu+unix") and not parts.hostname:
        raise InputError(f"libvirt target {original!r}: no host; give {LIBVIRT_FORMS}")
    try:
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError:
        raise InputError(f"libvirt target {original!r}: the port must be a number 1-65535") from None
    domains: tuple[str, ...] = ()
    if hashed:
        domains = tuple(d.strip() for d in fragment.split(",") if d.strip())
        for d in domains:
            if not _DOMAIN_RE.match(d):
                raise InputError(f"libvirt target {original!r}: domain {d!r}: give names or patterns "
                                 "(letters, digits, _.:+- and * ? [ ]) after #, separated by commas")
        if not domains:
            raise InputError(f"libvirt target {original!r}: nothing after #; give domain names, e.g. #web-01,db-*")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.scheme in ("qemu+ssh", "qemu+libssh2", "qemu+libssh") and not any(k == "no_tty" for k, _ in query):
        # ssh must never ask for a password on the console's terminal: it fails with a reason instead.
        query.append(("no_tty", "1"))
    # By hand: urlunsplit drops the empty host of qemu:///system.
    uri = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{urlencode(query)}" if query else "")
    return LibvirtTarget(uri=uri, label=label, domains=domains)
