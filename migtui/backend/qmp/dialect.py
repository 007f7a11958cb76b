"""Which QMP a VM speaks, and how each control is spelled in it.

Pure: built from what the VM reported on connect (`query-version`,
`query-commands`, `query-qmp-schema`), so it is tested without a socket.
The seed's era (QEMU 1.x-2.3) sets speed in bytes/s and downtime in seconds
through four legacy commands; 2.4+ has `migrate-set-parameters` (downtime in
ms); 6.0 removed the legacy four. A VM is never sent a command it lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from migtui.backend.errors import Refused

__all__ = ["Command", "Dialect", "Unsupported"]

Command = tuple[str, dict[str, Any]]

# The parameters that have a legacy command of their own, and that command's unit.
_LEGACY = {
    "max-bandwidth": "migrate_set_speed",  # bytes/s, as the parameter
    "downtime-limit": "migrate_set_downtime",  # seconds, a float: the parameter is ms
    "xbzrle-cache-size": "migrate-set-cache-size",  # bytes
}


# Capabilities QEMU's migrate_caps_check() refuses to have on together: (one, other, first
# version that refuses, first version that accepts again or None, QEMU's sentence). Only pairs
# of capabilities a start turns on itself: any other refusal comes from the source's QEMU,
# before the destination is touched.
_REFUSED_TOGETHER = (
    # "migration: Give one error if trying to set MULTIFD and XBZRLE", pulled 2023-10-31: 8.2.
    ("multifd", "xbzrle", (8, 2, 0), None, "Multifd is not compatible with xbzrle"),
    # 7.2 accepts both (measured); migration/options.c refuses them in 8.1; "migration: enable
    # multifd and postcopy together" (2025-05) lifted it in 10.1.
    ("postcopy-ram", "multifd", (8, 1, 0), (10, 1, 0), "Postcopy is not yet compatible with multifd"),
    # Both throttle the guest (options.c, since dirty-limit came in 8.1); QEMU's own words.
    ("dirty-limit", "auto-converge", (8, 1, 0), None, "dirty-limit conflicts with auto-converge either of then "
     "available currently"),
)


class Unsupported(Refused):
    """The VM's QEMU has no way to do this; nothing was sent."""


@dataclass(frozen=True)
class Dialect:
    version: tuple[int, int, int]
    commands: frozenset[str]
    # Members of `migrate`'s arguments, from query-qmp-schema; None when the VM has no schema.
    migrate_args: frozenset[str] | None = None
    capabilities: frozenset[str] = field(default_factory=frozenset)
    # The values each enum parameter of migrate-set-parameters takes, from query-qmp-schema
    # (a build lists only what it was compiled with: multifd-compression's zstd, say).
    parameter_choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    # Members of `migrate-incoming`'s arguments (exit-on-error came in 9.1); None without a schema.
    incoming_args: frozenset[str] | None = None

    @property
    def modern(self) -> bool:
        return "migrate-set-parameters" in self.commands

    @property
    def name(self) -> str:
        return "modern" if self.modern else "legacy"

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def has(self, command: str) -> bool:
        return command in self.commands

    def require(self, command: str, what: str) -> None:
        if command not in self.commands:
            raise Unsupported(f"QEMU {self.version_text} cannot {what}: it has no {command} command")

    def require_capability(self, capability: str, what: str) -> None:
        if capability not in self.capabilities:
            raise Unsupported(f"QEMU {self.version_text} cannot {what}: it has no {capability} capability")

    def refused_together(self, caps: Mapping[str, bool]) -> tuple[str, str, str] | None:
        """The first pair of capabilities on in `caps` that this QEMU refuses together:
        (one, other, QEMU's sentence); None when it accepts them or its version is unknown."""
        if self.version == (0, 0, 0):
            return None
        for one, other, since, until, sentence in _REFUSED_TOGETHER:
            if caps.get(one) and caps.get(other) and since <= self.version and (until is None or self.version < until):
                return one, other, sentence
        return None

    @property
    def fixes_multifd_at_incoming(self) -> bool:
        """8.1+ refuses migrate-set-capabilities with multifd on once migrate-incoming ran
        ("Multifd must be set before incoming starts"): the listen backlog depends on it."""
        return self.version >= (8, 1, 0)

    @property
    def has_block_migration(self) -> bool:
        if self.migrate_args is not None:
            return "blk" in self.migrate_args
        return self.version < (9, 1)  # 9.1 removed blk; a VM without a schema is older than that

    def set_parameters(self, params: Mapping[str, Any]) -> list[Command]:
        """The commands that set these parameters (QEMU's names, QEMU's units: ms, bytes)."""
        if not params:
            return []
        commands: list[Command] = []
        modern = dict(params)
        # xbzrle-cache-size became a parameter only in 2.11; before that it had its own command.
        if "xbzrle-cache-size" in modern and self.modern and self.version < (2, 11):
            self.require("migrate-set-cache-size", "set the XBZRLE cache size")
            commands.append(("migrate-set-cache-size", {"value": modern.pop("xbzrle-cache-size")}))
        if self.modern:
            if modern:
                commands.append(("migrate-set-parameters", modern))
            return commands
        for name, value in modern.items():
            legacy = _LEGACY.get(name)
            if legacy is None:
                raise Unsupported(
                    f"QEMU {self.version_text} cannot set {name}: it only has "
                    "migrate_set_speed, migrate_set_downtime and migrate-set-cache-size"
                )
            self.require(legacy, f"set {name}")
            if name == "downtime-limit":
                value = value / 1000  # the legacy command takes seconds
            commands.append((legacy, {"value": value}))
        return commands

    def set_capabilities(self, caps: Mapping[str, bool]) -> list[Command]:
        if not caps:
            return []
        self.require("migrate-set-capabilities", "set capabilities")
        for name in caps:
            if name not in self.capabilities:
                raise Unsupported(
                    f"QEMU {self.version_text} has no capability {name!r}; it has: {', '.join(sorted(self.capabilities))}"
                )
        return [
            (
                "migrate-set-capabilities",
                {"capabilities": [{"capability": k, "state": v} for k, v in caps.items()]},
            )
        ]


def parse_version(reply: Any) -> tuple[int, int, int]:
    """query-version's return -> (major, minor, micro); (0, 0, 0) when unreadable."""
    try:
        q = reply["qemu"]
        version = (q["major"], q["minor"], q["micro"])
    except (KeyError, TypeError, IndexError):
        return (0, 0, 0)
    if all(type(n) is int and 0 <= n < 10**6 for n in version):
        return version
    return (0, 0, 0)


def _schema_by_name(schema: Any) -> dict[str, dict[str, Any]] | None:
    if not isinstance(schema, list):
        return None
    # Entries and fields of another type than introspection's are skipped: no schema is better than a wrong one.
    return {e["name"]: e for e in schema if isinstance(e, dict) and isinstance(e.get("name"), str)}


def _command_members(by_name: dict[str, dict[str, Any]], name: str) -> list[dict[str, Any]] | None:
    """The members of a command's argument type, each a dict with a string name; None without it."""
    command = by_name.get(name)
    if not command or command.get("meta-type") != "command" or not isinstance(command.get("arg-type"), str):
        return None
    arg_type = by_name.get(command["arg-type"])
    if not arg_type:
        return None
    members = arg_type.get("members") or []
    if not isinstance(members, list):
        return None
    return [m for m in members if isinstance(m, dict) and isinstance(m.get("name"), str)]


def migrate_args_from_schema(schema: Any, command: str = "migrate") -> frozenset[str] | None:
    """The argument names of `migrate` (or another command), read from query-qmp-schema's list."""
    by_name = _schema_by_name(schema)
    members = None if by_name is None else _command_members(by_name, command)
    return None if members is None else frozenset(m["name"] for m in members)


def parameter_choices_from_schema(schema: Any) -> dict[str, tuple[str, ...]]:
    """{parameter: its values} for the enum parameters of migrate-set-parameters."""
    by_name = _schema_by_name(schema)
    members = None if by_name is None else _command_members(by_name, "migrate-set-parameters")
    out: dict[str, tuple[str, ...]] = {}
    for member in members or []:
        kind = by_name.get(member.get("type")) if by_name is not None and isinstance(member.get("type"), str) else None
        if not kind or kind.get("meta-type") != "enum":
            continue
        values = kind.get("values")  # introspection's list; 6.2+ also gives members [{name}]
        if not isinstance(values, list):
            values = [m.get("name") for m in kind.get("members") or [] if isinstance(m, dict)]
        names = tuple(v for v in values if isinstance(v, str))
        if names:
            out[member["name"]] = names
    return out
