"""What differs between the QEMU dialects the simulator speaks.

"1.4" is the seed's era (QEMU 1.4, 2013): the legacy ``migrate_set_*`` commands, only the
``xbzrle`` capability, no MIGRATION events, and ``query-migrate`` exactly as the seed's
``qmp_query_migrate()`` fills it.  "7.2" is Debian 12's QEMU: ``migrate-set-parameters``,
the full capability list, MIGRATION/MIGRATION_PASS events, and ``query-migrate`` keys as
captured from a real QEMU 7.2 into tests/data/qemu72_keys.json.  "10.0" is bookworm-backports'
QEMU, held against tests/data/qemu10_keys.json: no block migration (``blk``/``inc``, the
``block`` and ``compress`` capabilities and their parameters went in 9.1), no ``disk`` section
nor ``ram.skipped``, a ``device`` state in every switch-over, a destination that says ``setup``
once it listens, and multifd refused with xbzrle.

Error sentences are the ones each QEMU prints (checked against 7.2; the 1.4 ones come
from that era's monitor.c and qerror.h).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migtui.sim.model import PAGE, Migration

# Argument types: name -> (type, required).  "strnull" is QAPI's StrOrNull.
ArgSpec = dict[str, tuple[str, bool]]


class QMPError(Exception):
    """A QMP error reply: ``{"error": {"class": cls, "desc": desc}}``."""

    def __init__(self, desc: str, cls: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.cls = cls


MIGRATE_ARGS: ArgSpec = {"uri": ("str", True), "blk": ("bool", False),
                         "inc": ("bool", False), "detach": ("bool", False)}

COMMANDS_14: dict[str, ArgSpec] = {
    "qmp_capabilities": {},
    "query-version": {},
    "query-name": {},
    "query-status": {},
    "query-commands": {},
    "query-migrate": {},
    "query-migrate-capabilities": {},
    "migrate-set-capabilities": {"capabilities": ("array", True)},
    "migrate": MIGRATE_ARGS,
    "migrate_cancel": {},
    "migrate_set_speed": {"value": ("int", True)},
    "migrate_set_downtime": {"value": ("number", True)},
    "migrate-set-cache-size": {"value": ("int", True)},
    "query-migrate-cache-size": {},
    "stop": {},
    "cont": {},
    "quit": {},
}

# 7.2 parameters: name -> (type, default).  Defaults as query-migrate-parameters shows them.
PARAMETERS_72: dict[str, tuple[str, Any]] = {
    "announce-initial": ("int", 50),
    "announce-max": ("int", 550),
    "announce-rounds": ("int", 5),
    "announce-step": ("int", 100),
    "block-incremental": ("bool", False),
    "compress-level": ("int", 1),
    "compress-threads": ("int", 8),
    "compress-wait-thread": ("bool", True),
    "cpu-throttle-increment": ("int", 10),
    "cpu-throttle-initial": ("int", 20),
    "cpu-throttle-tailslow": ("bool", False),
    "decompress-threads": ("int", 2),
    "downtime-limit": ("int", 300),
    "max-bandwidth": ("int", 128 * 2**20),
    "max-cpu-throttle": ("int", 99),
    "max-postcopy-bandwidth": ("int", 0),
    "multifd-channels": ("int", 2),
    "multifd-compression": ("str", "none"),
    "multifd-zlib-level": ("int", 1),
    "multifd-zstd-level": ("int", 1),
    "throttle-trigger-threshold": ("int", 50),
    "tls-authz": ("strnull", ""),
    "tls-creds": ("strnull", ""),
    "tls-hostname": ("strnull", ""),
    "x-checkpoint-delay": ("int", 20000),
    "xbzrle-cache-size": ("int", 64 * 2**20),
}
# Accepted by migrate-set-parameters, shown by query-migrate-parameters only once set.
OPTIONAL_PARAMETERS_72: dict[str, str] = {"block-bitmap-mapping": "array"}

# Range checks of 7.2's migrate_params_check(): name -> (low, high, what it expects).
PARAMETER_RANGES_72: dict[str, tuple[int, int, str]] = {
    "compress-level": (0, 9, "a value between 0 and 9"),
    "compress-threads": (1, 255, "a value between 1 and 255"),
    "decompress-threads": (1, 255, "a value between 1 and 255"),
    "throttle-trigger-threshold": (1, 100, "an integer in the range of 1 to 100"),
    "cpu-throttle-initial": (1, 99, "an integer in the range of 1 to 99"),
    "cpu-throttle-increment": (1, 99, "an integer in the range of 1 to 99"),
    "max-cpu-throttle": (1, 99, "an integer in the range of 1 to 99"),
    "downtime-limit": (0, 2000 * 1000, "an integer in the range of 0 to (2000 * 1000) ms"),
    "multifd-channels": (1, 255, "is invalid, it should be in the range of 1 to 255"),
    "multifd-zlib-level": (0, 9, "is invalid, it should be in the range of 0 to 9"),
    "multifd-zstd-level": (0, 20, "is invalid, it should be in the range of 0 to 20"),
}
ENUMS_72: dict[str, tuple[str, ...]] = {
    "multifd-compression": ("none", "zlib", "zstd"),
    "mode": ("page-sampling", "dirty-bitmap", "dirty-ring"),
}

# 10.0's parameters, defaults as a fresh 10.0 shows them (the 7.2 ones less compress-*,
# decompress-threads and block-incremental).
PARAMETERS_10: dict[str, tuple[str, Any]] = {
    **{k: v for k, v in PARAMETERS_72.items()
       if not k.startswith(("compress-", "decompress-")) and k != "block-incremental"},
    "avail-switchover-bandwidth": ("int", 0),
    "direct-io": ("bool", False),
    "mode": ("str", "normal"),
    "multifd-qatzip-level": ("int", 1),
    "vcpu-dirty-limit": ("int", 1),
    "x-vcpu-dirty-limit-period": ("int", 1000),
    "zero-page-detection": ("str", "multifd"),
}
PARAMETER_RANGES_10: dict[str, tuple[int, int, str]] = {
    k: v for k, v in PARAMETER_RANGES_72.items() if not k.startswith(("compress-", "decompress-"))}
PARAMETER_ENUMS_72: dict[str, tuple[str, ...]] = {"multifd-compression": ENUMS_72["multifd-compression"]}
PARAMETER_ENUMS_10: dict[str, tuple[str, ...]] = {
    "multifd-compression": ("none", "zlib", "zstd"),  # what Debian's 10.0 is built with (its schema lists no more)
    "zero-page-detection": ("none", "legacy", "multifd"),
    "mode": ("normal", "cpr-reboot", "cpr-transfer"),
}

CAPABILITIES_14: tuple[str, ...] = ("xbzrle",)
CAPABILITIES_72: tuple[str, ...] = (
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
    "postcopy-ram", "x-colo", "release-ram", "block", "return-path",
    "pause-before-switchover", "multifd", "dirty-bitmaps", "postcopy-blocktime",
    "late-block-activate", "x-ignore-shared", "validate-uuid", "background-snapshot",
    "zero-copy-send", "postcopy-preempt",
)

CAPABILITIES_10: tuple[str, ...] = tuple(
    c for c in CAPABILITIES_72 if c not in ("block", "compress")) + ("switchover-ack", "dirty-limit", "mapped-ram")

MIGRATION_STATUSES_72: tuple[str, ...] = (
    "none", "setup", "cancelling", "cancelled", "active", "postcopy-active",
    "postcopy-paused", "postcopy-recover", "completed", "failed", "colo",
    "pre-switchover", "device", "wait-unplug",
)
MIGRATION_STATUSES_10: tuple[str, ...] = (
    "none", "setup", "cancelling", "cancelled", "active", "postcopy-active",
    "postcopy-paused", "postcopy-recover-setup", "postcopy-recover", "completed", "failed", "colo",
    "pre-switchover", "device", "wait-unplug",
)

COMMANDS_72: dict[str, ArgSpec] = {
    "qmp_capabilities": {"enable": ("array", False)},
    "query-version": {},
    "query-name": {},
    "query-status": {},
    "query-commands": {},
    "query-qmp-schema": {},
    "query-migrate": {},
    "query-migrate-capabilities": {},
    "migrate-set-capabilities": {"capabilities": ("array", True)},
    "query-migrate-parameters": {},
    "migrate-set-parameters": {
        **{name: (kind, False) for name, (kind, _) in PARAMETERS_72.items()},
        **{name: (kind, False) for name, kind in OPTIONAL_PARAMETERS_72.items()},
    },
    "migrate": {**MIGRATE_ARGS, "resume": ("bool", False)},
    "migrate-incoming": {"uri": ("str", True)},
    "migrate_cancel": {},
    "migrate-continue": {"state": ("str", True)},
    "migrate-start-postcopy": {},
    "migrate-pause": {},
    "migrate-recover": {"uri": ("str", True)},
    "calc-dirty-rate": {"calc-time": ("int", True), "sample-pages": ("int", False),
                        "mode": ("str", False)},
    "query-dirty-rate": {},
    "query-kvm": {},
    "query-cpus-fast": {},
    "stop": {},
    "cont": {},
    "quit": {},
}
OOB_COMMANDS_72 = frozenset({"migrate-pause", "migrate-recover"})

COMMANDS_10: dict[str, ArgSpec] = {
    **COMMANDS_72,
    "migrate-set-parameters": {
        **{name: (kind, False) for name, (kind, _) in PARAMETERS_10.items()},
        **{name: (kind, False) for name, kind in OPTIONAL_PARAMETERS_72.items()},
    },
    # 9.1 removed blk and inc (block migration): QEMU calls them unexpected now.
    "migrate": {"uri": ("str", True), "detach": ("bool", False), "resume": ("bool", False)},
    "migrate-incoming": {"uri": ("str", True), "exit-on-error": ("bool", False)},
}

EVENTS_72: dict[str, ArgSpec] = {
    "MIGRATION": {"status": ("str", True)},
    "MIGRATION_PASS": {"pass": ("int", True)},
    "STOP": {},
    "RESUME": {},
    "SHUTDOWN": {"guest": ("bool", True), "reason": ("str", True)},
}


@dataclass(frozen=True)
class Dialect:
    name: str
    version: tuple[int, int, int]
    greeting_capabilities: tuple[str, ...]
    commands: dict[str, ArgSpec]
    capabilities: tuple[str, ...]
    type_names: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, tuple[str, Any]] = field(default_factory=lambda: PARAMETERS_72)
    parameter_ranges: dict[str, tuple[int, int, str]] = field(default_factory=lambda: PARAMETER_RANGES_72)
    parameter_enums: dict[str, tuple[str, ...]] = field(default_factory=lambda: PARAMETER_ENUMS_72)
    statuses: tuple[str, ...] = MIGRATION_STATUSES_72

    @property
    def modern(self) -> bool:
        return self.name != "1.4"

    @property
    def device_in_every_switchover(self) -> bool:
        """10.0 goes through `device` whenever the source stops, not only after pre-switchover."""
        return self.version >= (10, 0, 0)

    # Error sentences of each era.
    def unexpected_arg(self, name: str) -> str:
        return f"Parameter '{name}' is unexpected" if self.modern else f"Invalid parameter '{name}'"

    def bad_enum(self, param: str, value: str) -> str:
        if self.modern:
            return f"Parameter '{param}' does not accept value '{value}'"
        return f"Invalid parameter '{value}'"

    def bad_type(self, name: str, kind: str) -> str:
        return f"Invalid parameter type for '{name}', expected: {self.type_names[kind]}"

    def not_negotiated(self, cmd: str) -> str:
        if self.modern:
            return "Expecting capabilities negotiation with 'qmp_capabilities'"
        return f"Expecting capabilities negotiation with 'qmp_capabilities' before command '{cmd}'"

    def already_negotiated(self, cmd: str) -> str:
        if self.modern:
            return "Capabilities negotiation is already complete, command ignored"
        return f"Capabilities negotiation is already complete, command '{cmd}' ignored"


DIALECTS: dict[str, Dialect] = {
    "1.4": Dialect("1.4", (1, 4, 0), (), COMMANDS_14, CAPABILITIES_14,
                   {"str": "string", "strnull": "string", "bool": "bool", "int": "int",
                    "number": "number", "array": "object", "object": "object"}),
    "7.2": Dialect("7.2", (7, 2, 0), ("oob",), COMMANDS_72, CAPABILITIES_72,
                   {"str": "string", "strnull": "string", "bool": "boolean", "int": "integer",
                    "number": "number", "array": "array", "object": "object"}),
    "10.0": Dialect("10.0", (10, 0, 2), ("oob",), COMMANDS_10, CAPABILITIES_10,
                    {"str": "string", "strnull": "string", "bool": "boolean", "int": "integer",
                     "number": "number", "array": "array", "object": "object"},
                    PARAMETERS_10, PARAMETER_RANGES_10, PARAMETER_ENUMS_10, MIGRATION_STATUSES_10),
}


def type_ok(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "strnull":
        return value is None or isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True


def check_args(dialect: Dialect, spec: ArgSpec, args: dict[str, Any]) -> None:
    """Reject arguments the way QEMU's input visitor does."""
    for name, (kind, required) in spec.items():
        if name not in args:
            if required:
                raise QMPError(f"Parameter '{name}' is missing")
        elif not type_ok(kind, args[name]):
            raise QMPError(dialect.bad_type(name, kind))
    for name in args:
        if name not in spec:
            raise QMPError(dialect.unexpected_arg(name))


def check_parameters_72(args: dict[str, Any], dialect: Dialect | None = None) -> dict[str, Any]:
    """migrate-set-parameters: normalise and range-check; returns the values to apply."""
    d = dialect or DIALECTS["7.2"]
    out: dict[str, Any] = {}
    for name, value in args.items():
        if name in d.parameter_enums and value not in d.parameter_enums[name]:
            raise QMPError(f"Parameter '{name}' does not accept value '{value}'")
        if name == "vcpu-dirty-limit" and value == 0:
            raise QMPError("Parameter 'vcpu_dirty_limit' must be greater than 1 MB/s")
        if d.parameters.get(name, ("", None))[0] == "int" and value < 0:
            value += 2**64  # QAPI sizes are unsigned: -1 reads as 2^64 - 1
        if name in d.parameter_ranges:
            low, high, expects = d.parameter_ranges[name]
            if not low <= value <= high:
                raise QMPError(f"Parameter '{name.replace('-', '_')}' expects {expects}")
        if name == "xbzrle-cache-size" and (value < PAGE or value & (value - 1)):
            raise QMPError("Parameter 'xbzrle_cache_size' expects a power of two "
                           "no less than the target page size")
        out[name] = "" if value is None else value
    return out


def pow2floor(value: int) -> int:
    return 1 << (value.bit_length() - 1) if value > 0 else 0


# -- query-migrate -----------------------------------------------------------------

def _xbzrle_14(m: Migration, cache_size: int) -> dict[str, Any]:
    c = m.c
    return {"cache-size": cache_size, "bytes": int(c.xbzrle_bytes),
            "pages": int(c.xbzrle_pages), "cache-miss": int(c.xbzrle_miss),
            "overflow": int(c.xbzrle_overflow)}


def query_migrate_14(m: Migration | None, now: float, *, xbzrle: bool,
                     cache_size: int) -> dict[str, Any]:
    """The seed's qmp_query_migrate(), state by state."""
    if m is None or m.status == "setup":
        return {}  # MIG_STATE_SETUP: "no migration has happened ever"
    c = m.c
    ram = {"transferred": int(c.transferred), "remaining": m.remaining_bytes,
           "total": m.guest.pages * PAGE, "duplicate": int(c.duplicate),
           "normal": int(c.normal), "normal-bytes": int(c.normal) * PAGE}
    if m.status == "completed":
        # The seed sets total_time but not has_total_time here, so it is not reported.
        info: dict[str, Any] = {}
        if xbzrle:
            info["xbzrle-cache"] = _xbzrle_14(m, cache_size)
        ram["remaining"] = 0
        info.update({"status": "completed", "downtime": int(m.downtime_ms or 0), "ram": ram})
        return info
    if m.status in ("failed", "cancelled"):
        return {"status": m.status}
    info = {"status": "active", "total-time": int(m.total_time(now)),
            "expected-downtime": int(m.expected_downtime_ms),
            "ram": {**ram, "dirty-pages-rate": int(m.dirty_pages_rate)}}
    if m.blk:
        info["disk"] = {"transferred": int(c.disk_transferred),
                        "remaining": round(m.disk_left), "total": m.guest.disk}
    if xbzrle:
        info["xbzrle-cache"] = _xbzrle_14(m, cache_size)
    return info


def _stats_72(m: Migration, skipped: bool = True) -> dict[str, Any]:
    c = m.c
    return {
        "transferred": int(c.transferred), "remaining": m.remaining_bytes,
        "total": m.guest.pages * PAGE, "duplicate": int(c.duplicate),
        **({"skipped": 0} if skipped else {}),  # 9.1 dropped it
        "normal": int(c.normal), "normal-bytes": int(c.normal) * PAGE,
        "dirty-pages-rate": int(m.dirty_pages_rate), "mbps": m.mbps,
        "dirty-sync-count": m.passes, "postcopy-requests": int(c.postcopy_requests),
        "page-size": PAGE, "multifd-bytes": 0, "pages-per-second": int(m.pages_per_second),
        "precopy-bytes": int(c.precopy_bytes), "downtime-bytes": int(c.downtime_bytes),
        "postcopy-bytes": int(c.postcopy_bytes), "dirty-sync-missed-zero-copy": 0,
    }


def _disk_72(m: Migration) -> dict[str, Any]:
    # Block migration reports the same MigrationStats type as RAM, mostly zero.
    stats = {key: 0 for key in _stats_72(m)}
    stats.update({"transferred": int(m.c.disk_transferred),
                  "remaining": round(m.disk_left), "total": m.guest.disk})
    return stats


def query_migrate_72(m: Migration | None, now: float, *, xbzrle: bool,
                     cache_size: int, ten: bool = False) -> dict[str, Any]:
    """QEMU 7.2's fill_source_migration_info(); with `ten`, 10.0's (no skipped, no disk, and
    the downtime once known, as in post-copy, instead of the expected one)."""
    if m is None:
        return {}
    if m.status == "setup":
        return {"status": "setup"}
    if m.status == "failed":
        return {"status": "failed", "error-desc": m.error_desc or "migration failed"}
    if m.status == "cancelled":
        return {"status": "cancelled"}
    info: dict[str, Any] = {"status": m.status, "setup-time": int(m.setup_time_ms),
                            "total-time": int(m.total_time(now)), "ram": _stats_72(m, skipped=not ten)}
    if ten and m.status == "postcopy-paused" and m.error_desc:
        info["error-desc"] = m.error_desc  # 10.0 says why it paused (7.2 does not)
    if m.status == "completed" or (ten and m.status.startswith("postcopy") and m.downtime_ms is not None):
        info["downtime"] = int(m.downtime_ms or 0)
        if m.throttle and m.status != "completed":
            info["cpu-throttle-percentage"] = m.throttle
    else:
        info["expected-downtime"] = int(m.expected_downtime_ms)
        if m.blk:
            info["disk"] = _disk_72(m)
        if m.throttle:
            info["cpu-throttle-percentage"] = m.throttle
    times = m.dirty_limit_times_us() if ten else None
    if times is not None:
        info["dirty-limit-throttle-time-per-round"], info["dirty-limit-ring-full-time"] = map(int, times)
    if xbzrle:
        c = m.c
        info["xbzrle-cache"] = {
            "cache-size": cache_size, "bytes": int(c.xbzrle_bytes),
            "pages": int(c.xbzrle_pages), "cache-miss": int(c.xbzrle_miss),
            "cache-miss-rate": m.cache_miss_rate, "encoding-rate": m.encoding_rate,
            "overflow": int(c.xbzrle_overflow)}
    return info


def qmp_schema_72(commands: dict[str, ArgSpec] | None = None,
                  enums: dict[str, tuple[str, ...]] | None = None) -> list[dict[str, Any]]:
    """A minimal query-qmp-schema: the commands and events the simulator has, with types;
    `enums` are migrate-set-parameters' enum members and their values."""
    builtins = {"str": "string", "int": "int", "bool": "boolean", "number": "number",
                "any": "value", "null": "null"}
    schema: list[dict[str, Any]] = [
        {"name": name, "meta-type": "builtin", "json-type": json_type}
        for name, json_type in builtins.items()]
    schema.append({"name": "0", "meta-type": "object", "members": []})
    kind_type = {"str": "str", "strnull": "str", "int": "int", "bool": "bool",
                 "number": "number", "array": "any", "object": "any"}

    def object_type(name: str, spec: ArgSpec) -> str:
        if not spec:
            return "0"
        members = []
        for arg, (kind, required) in spec.items():
            member: dict[str, Any] = {"name": arg, "type": kind_type[kind]}
            if name == "q_obj_migrate-set-parameters-arg" and arg in (enums or {}):
                member["type"] = f"enum-{arg}"
                values = list((enums or {})[arg])
                schema.append({"name": member["type"], "meta-type": "enum", "values": values,
                               "members": [{"name": v} for v in values]})
            if not required:
                member["default"] = None
            members.append(member)
        schema.append({"name": name, "meta-type": "object", "members": members})
        return name

    for cmd, spec in (COMMANDS_72 if commands is None else commands).items():
        schema.append({"name": cmd, "meta-type": "command",
                       "arg-type": object_type(f"q_obj_{cmd}-arg", spec),
                       "ret-type": "any", "allow-oob": cmd in OOB_COMMANDS_72})
    for event, spec in EVENTS_72.items():
        schema.append({"name": event, "meta-type": "event",
                       "arg-type": object_type(f"q_obj_{event}-arg", spec)})
    return schema
