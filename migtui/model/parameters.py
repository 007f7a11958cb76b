"""Operator names and values for migration parameters, checked before any QMP goes out.

Friendly names (`bandwidth=100M`) map to QEMU's (`max-bandwidth`); any other
name QEMU reports in `query-migrate-parameters` is accepted with a value of
the type QEMU reported for it, and an enum one only with a value its schema lists.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from migtui.model.units import InputError, parse_count, parse_rate, parse_size, parse_time_ms

__all__ = ["FRIENDLY_NAMES", "parse_parameter", "parse_dirty_limit", "check_xbzrle_cache_size", "check_uri",
           "URI_SCHEMES", "DIRTY_LIMIT_UNIT"]

# QEMU's vcpu-dirty-limit is in "MB/s" per vCPU, counted in 2**20 bytes (dirtylimit.c shifts by 20).
DIRTY_LIMIT_UNIT = 2**20
_DIRTY_LIMIT_FORMS = "MB/s per vCPU as QEMU takes it: a whole number of at least 1, e.g. 50 or 50M/s"

FRIENDLY_NAMES = MappingProxyType({
    "bandwidth": "max-bandwidth",
    "speed": "max-bandwidth",
    "downtime": "downtime-limit",
    "xbzrle-cache": "xbzrle-cache-size",
    "cache-size": "xbzrle-cache-size",
    "dirty-limit": "vcpu-dirty-limit",
})
URI_SCHEMES = ("tcp:", "unix:", "exec:", "fd:")


def check_xbzrle_cache_size(value: int, what: str = "xbzrle-cache") -> int:
    # QEMU's own rule (migrate_params_check): a power of two, at least one page.
    if value < 4096 or value & (value - 1):
        raise InputError(f"{what}: {value} bytes is not a power of two of at least 4K; give e.g. 64M or 256M")
    return value


def parse_dirty_limit(text: str, what: str = "dirty-limit") -> int:
    """'50' or '50M/s' -> 50: vcpu-dirty-limit, MB/s per vCPU (QEMU refuses under 1)."""
    stripped = str(text).strip()
    if stripped.isdigit():
        value = int(stripped)
    else:
        try:
            rate = parse_rate(stripped, what)
        except InputError:
            raise InputError(f"{what}: {stripped!r} is not understood; give {_DIRTY_LIMIT_FORMS}") from None
        if rate % DIRTY_LIMIT_UNIT:
            raise InputError(f"{what}: {stripped!r} is not a whole number of MB/s; give {_DIRTY_LIMIT_FORMS}")
        value = rate // DIRTY_LIMIT_UNIT
    if not 1 <= value < 2**43:  # QEMU: "must be greater than 1 MB/s"; the top keeps bytes/s in 63 bits
        raise InputError(f"{what}: {stripped!r} is out of range; give {_DIRTY_LIMIT_FORMS}")
    return value


def parse_parameter(name: str, text: str, current: Mapping[str, Any] | None = None,
                    choices: Mapping[str, tuple[str, ...]] | None = None) -> tuple[str, Any]:
    """('bandwidth', '100M') -> ('max-bandwidth', 104857600). Raises InputError.

    `choices` are the values of each enum parameter, as the VM's QEMU lists them in its
    schema (zero-page-detection, mode, multifd-compression): another value is refused here."""
    name = name.strip()
    qemu_name = FRIENDLY_NAMES.get(name, name)
    if qemu_name == "vcpu-dirty-limit":
        if current is not None and qemu_name not in current:
            raise InputError(f"{name}: this VM's QEMU has no vcpu-dirty-limit (QEMU 8.1+ has it)")
        return qemu_name, parse_dirty_limit(text, name)
    if choices and qemu_name in choices:
        value = text.strip()
        if value not in choices[qemu_name]:
            raise InputError(f"{name}: {value!r} is not one this QEMU takes; give one of: "
                             f"{', '.join(choices[qemu_name])}")
        return qemu_name, value
    if qemu_name == "max-bandwidth":
        return qemu_name, parse_rate(text, name)
    if qemu_name == "downtime-limit":
        stripped = text.strip()
        # QEMU's own parameter is in ms, so a bare number under that name is unambiguous.
        if name == "downtime-limit" and stripped.isdigit():
            return qemu_name, parse_time_ms(stripped + "ms", name)
        return qemu_name, parse_time_ms(text, name)
    if qemu_name == "xbzrle-cache-size":
        return qemu_name, check_xbzrle_cache_size(parse_size(text, name), name)
    if qemu_name == "multifd-channels":
        return qemu_name, parse_count(text, name, 1, 255)
    if current is None or qemu_name not in current:
        known = sorted(set(FRIENDLY_NAMES) | set(current or ()))
        raise InputError(f"unknown parameter {name!r}; this VM accepts: {', '.join(known)}")
    kind = current[qemu_name]
    if isinstance(kind, bool):
        lowered = text.strip().lower()
        if lowered in ("on", "true", "yes", "1"):
            return qemu_name, True
        if lowered in ("off", "false", "no", "0"):
            return qemu_name, False
        raise InputError(f"{name}: {text!r} is not understood; give on or off")
    if isinstance(kind, int):
        stripped = text.strip()
        if not stripped.isdigit():
            raise InputError(f"{name}: {stripped!r} is not a whole number; give a number of 0 or more")
        value = int(stripped)
        if value >= 2**63:
            raise InputError(f"{name}: {stripped} is too large")
        return qemu_name, value
    if isinstance(kind, str):
        return qemu_name, text
    raise InputError(f"{name}: migtui cannot set this parameter from the command line")


def check_uri(uri: str) -> str:
    """Return the scheme of a migration URI, or raise with the accepted forms."""
    uri = uri.strip()
    forms = "tcp:HOST:PORT, unix:PATH, exec:COMMAND or fd:NAME"
    if not uri:
        raise InputError(f"uri: empty; give {forms}")
    for scheme in URI_SCHEMES:
        if uri.startswith(scheme):
            rest = uri[len(scheme):]
            if not rest.strip():
                raise InputError(f"uri {uri!r}: nothing after {scheme}; give {forms}")
            if scheme == "tcp:" and (":" not in rest or not rest.rsplit(":", 1)[1].isdigit()):
                raise InputError(f"uri {uri!r}: expected tcp:HOST:PORT")
            return scheme[:-1]
    raise InputError(f"uri {uri!r}: no supported scheme; give {forms}")
