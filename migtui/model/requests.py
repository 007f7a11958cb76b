"""What an operator (or advice) asks a backend to do, checked and in QEMU's names and units.

Every control takes one of these down the same path: key -> dialog -> request -> VMHandle ->
backend -> QEMU (or libvirt). The backend turns it into its own commands (a QEMU dialect's,
libvirt's API); nothing here knows QMP.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["MigrationOptions", "ParamChange"]


@dataclass(frozen=True)
class MigrationOptions:
    """What the operator asked for; values already in QEMU's units (bytes/s, ms, bytes)."""

    bandwidth: int | None = None
    downtime_ms: int | None = None
    xbzrle: bool = False
    xbzrle_cache: int | None = None
    auto_converge: bool = False
    postcopy: bool = False
    multifd: int | None = None
    block: bool = False
    # vcpu-dirty-limit in QEMU's MB/s (2**20 bytes) per vCPU: turns on the dirty-limit capability
    # (QEMU 8.1+, KVM with a dirty ring), which caps each vCPU's dirtying instead of its CPU time.
    dirty_limit: int | None = None
    # libvirt only: keep the domain defined at the destination, and undefine it at the source.
    persist_destination: bool = False
    undefine_source: bool = False


@dataclass(frozen=True)
class ParamChange:
    """Migration parameters to set, by QEMU's names (max-bandwidth, downtime-limit,
    xbzrle-cache-size, ...) in QEMU's units (bytes/s, ms, bytes); `why` says who asked
    (an advice's text, say), for the log and the audit."""

    parameters: Mapping[str, Any]
    why: str | None = None
    # The kind of advice this applies (guidance's ADVICE_KINDS), or None: once it is applied,
    # the backend notes it, so the follow-up can judge it on the passes that come.
    advice: str | None = None

    def __post_init__(self) -> None:
        if not self.parameters:
            raise ValueError("a ParamChange sets at least one parameter")
        # A read-only copy, so a frozen change stays frozen (set once, at construction).
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))

    @classmethod
    def of(cls, why: str | None = None, **parameters: Any) -> "ParamChange":
        """ParamChange.of(max_bandwidth=...) with Python names for QEMU's dashed ones."""
        return cls({k.replace("_", "-"): v for k, v in parameters.items()}, why)

    def to_json(self) -> dict[str, Any]:
        return dict(self.parameters)
