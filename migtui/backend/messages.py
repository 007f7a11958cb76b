"""What the backend tells its listener (the console, the CLI, a test).

Plain dataclasses, so the backend needs no Textual; the console wraps them in
its own messages. The listener is called on the event loop and must not block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Union

if TYPE_CHECKING:
    from migtui.model.sample import MigrationSample
    from migtui.model.vm import Connection

__all__ = ["VMUpdated", "VMEvent", "ActionResult", "BackendMessage", "Listener", "settings_update"]


@dataclass(frozen=True, slots=True)
class VMUpdated:
    """A new sample, or a change of connection, identity or settings, with what it is now.

    The new state travels with the message (the sample, the connection and its reason, the
    settings, as read-only copies), so a subscriber need not read state the backend is writing.
    """

    vm: str
    what: str  # "sample", "connection", "identity" or "settings"
    sample: MigrationSample | None = None  # "sample": the new one
    connection: Connection | None = None  # "connection": the new state
    reason: str | None = None  # "connection": why it is not connected, in one line
    parameters: Mapping[str, Any] | None = None  # "settings": QEMU's names and units
    capabilities: Mapping[str, bool] | None = None  # "settings"


def settings_update(key: str, parameters: Mapping[str, Any], capabilities: Mapping[str, bool]) -> VMUpdated:
    """A "settings" VMUpdated carrying read-only copies of the VM's parameters and capabilities."""
    from types import MappingProxyType

    return VMUpdated(key, "settings", parameters=MappingProxyType(dict(parameters)),
                     capabilities=MappingProxyType(dict(capabilities)))


@dataclass(frozen=True, slots=True)
class VMEvent:
    """A QMP event from the VM, e.g. MIGRATION {status: completed}."""

    vm: str
    event: str
    data: dict[str, Any]
    time: float


@dataclass(frozen=True, slots=True)
class ActionResult:
    """A state-changing command migtui sent, and what QEMU answered."""

    vm: str
    command: str
    arguments: dict[str, Any]
    ok: bool
    result: Any  # QEMU's return on success, QEMU's sentence on failure
    time: float


BackendMessage = Union[VMUpdated, VMEvent, ActionResult]
Listener = Callable[[BackendMessage], None]
