"""The QMP backend: asyncio sessions on qemu.qmp. Never imports Textual."""

from migtui.model.requests import MigrationOptions
from migtui.backend.qmp.controls import (
    cancel_migration,
    continue_migration,
    set_capabilities,
    set_parameters,
    start_migration,
    start_postcopy,
)
from migtui.backend.errors import BackendError, ConnectFailed, NotConnected, QMPRefused, Refused
from migtui.backend.qmp.backend import QMPBackend
from migtui.backend.messages import ActionResult, BackendMessage, VMEvent, VMUpdated
from migtui.backend.qmp.session import SessionOptions, VMSession

__all__ = [
    "ActionResult",
    "BackendError",
    "BackendMessage",
    "ConnectFailed",
    "QMPBackend",
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
