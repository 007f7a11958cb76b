"""The QMP backend: asyncio sessions on qemu.qmp. Never imports Textual."""

from migtui.qmp.controls import (
    MigrationOptions,
    cancel_migration,
    continue_migration,
    set_capabilities,
    set_parameters,
    start_migration,
    start_postcopy,
)
from migtui.qmp.errors import BackendError, ConnectFailed, NotConnected, QMPRefused, Refused
from migtui.qmp.fleet import Fleet
from migtui.qmp.messages import ActionResult, BackendMessage, VMEvent, VMUpdated
from migtui.qmp.session import SessionOptions, VMSession

__all__ = [
    "ActionResult",
    "BackendError",
    "BackendMessage",
    "ConnectFailed",
    "Fleet",
    "MigrationOptions",
    "NotConnected",
    "QMPRefused",
    "Refused",
    "SessionOptions",
    "VMEvent",
    "VMSession",
    "VMUpdated",
    "cancel_migration",
    "continue_migration",
    "set_capabilities",
    "set_parameters",
    "start_migration",
    "start_postcopy",
]
