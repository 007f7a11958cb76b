"""Errors the backend raises, each with a one-line sentence for the operator."""

from __future__ import annotations

from migtui.model.units import InputError

__all__ = ["BackendError", "ConnectFailed", "NotConnected", "QMPRefused", "Refused", "Busy"]


class BackendError(Exception):
    """Base: str(err) is the sentence to show."""


class ConnectFailed(BackendError):
    def __init__(self, reason: str, busy: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.busy = busy


class NotConnected(BackendError):
    pass


class QMPRefused(BackendError):
    """QEMU answered a command with an error; the message is QEMU's own sentence."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QEMU refused {command}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class Refused(InputError, BackendError):
    """migtui refused to send something, e.g. a second migrate while one runs. Both an InputError
    (what the operator asked for cannot be sent) and a BackendError (what every control raises)."""


class Busy(Refused):
    """Refused for now: the VM is still ending what it did last (a migration's clean-up); the
    same request can succeed in a moment (a drain tries again, an operator is told so)."""
