"""The audit log: every state-changing command migtui sends, one NDJSON line each.

Append-only under the user's state directory ($XDG_STATE_HOME/migtui/audit.ndjson),
so an incident review can say who changed what and what QEMU answered. Values
of secret-looking arguments are never written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["AuditLog", "default_audit_path", "redact", "web_session_from_env",
           "WEB_CLIENT_ENV", "WEB_SESSION_ENV", "WEB_FORWARDED_ENV"]

# Set by `migtui serve` for each browser visit's process: the visitor's address (the socket's
# peer), the visit's id, and what a proxy in front claims (X-Forwarded-For), kept apart.
WEB_CLIENT_ENV = "MIGTUI_WEB_CLIENT"
WEB_SESSION_ENV = "MIGTUI_WEB_SESSION"
WEB_FORWARDED_ENV = "MIGTUI_WEB_FORWARDED_FOR"

_SECRET_WORDS = ("password", "secret", "passphrase", "key", "token", "tls-creds", "tls-authz")


def default_audit_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "migtui" / "audit.ndjson"


def redact(value: Any) -> Any:
    """A copy with the values of secret-looking keys replaced, at any depth."""
    if isinstance(value, dict):
        return {k: "***" if any(w in str(k).lower() for w in _SECRET_WORDS) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def web_session_from_env() -> dict[str, str] | None:
    """The browser visit this process serves, from `migtui serve`'s environment; None outside one."""
    client = os.environ.get(WEB_CLIENT_ENV)
    if not client:
        return None
    out = {"client": client, "session": os.environ.get(WEB_SESSION_ENV, "")}
    if forwarded := os.environ.get(WEB_FORWARDED_ENV):
        out["forwarded-for"] = forwarded
    return out


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        """path None: auditing is off."""
        self.path = path
        self.web = web_session_from_env()  # every line of a browser visit says who it was
        self.error: str | None = None  # why the last write failed, for the operator

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def record(self, vm: str, endpoint: str, command: str, arguments: dict[str, Any], ok: bool, result: Any,
               web: dict[str, str] | None = None) -> None:
        if self.path is None:
            return
        web = web or self.web
        line = json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
                "vm": vm,
                "endpoint": endpoint,
                "command": command,
                "arguments": redact(arguments),
                "ok": ok,
                "result": redact(result) if ok else str(result),
                "user": os.environ.get("USER") or str(os.getuid()),
                "pid": os.getpid(),
                **({"web": web} if web else {}),
            },
            separators=(",", ":"),
            default=str,
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # O_APPEND: concurrent migtui processes interleave whole lines, never overwrite.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
            self.error = None
        except OSError as err:
            self.error = f"audit log {self.path}: {err.strerror}"
