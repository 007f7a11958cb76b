"""The config file: ~/.config/migtui/config.toml (or $MIGTUI_CONFIG). No Textual here.

    theme = "migtui-dark"
    read-only = false
    audit = true                  # audit-file = "~/audit.ndjson" to move it
    record = true                 # false: as --no-record, nothing is recorded
    record-keep-days = 30         # recordings older than this are removed (0: no age limit)
    record-max-mb = 500           # ... and the oldest beyond this total (0: no size limit)
    [keys]                        # remap any action: action = "key[,key]"
    migrate = "M"
    [autopilot.web]               # a named autopilot policy (migtui.model.autopilot)
    max-downtime = "800ms"        # caps it never exceeds
    max-bandwidth = "2G"
    steps = ["bandwidth", "downtime", "xbzrle-cache", "throttle", "postcopy", "abort"]
    deadline-per-gib = "800s"     # or deadline = "20m"
    at-deadline = "abort"         # or "postcopy", "nothing"
    [tls]                         # QMP over TCP with TLS (QEMU's tls-creds-x509)
    ca-file = "~/pki/ca-cert.pem"
    cert-file = "~/pki/client-cert.pem"   # optional: a client certificate
    key-file = "~/pki/client-key.pem"
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from migtui.model.autopilot import Policy, parse_policy
from migtui.model.units import InputError

__all__ = ["Config", "load_config", "config_path", "ConfigError"]


class ConfigError(InputError):
    pass


@dataclass
class Config:
    theme: str | None = None
    read_only: bool = False
    keys: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    audit: bool = True
    audit_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    record: bool = True
    record_keep_days: int = 30
    record_max_mb: int = 500
    policies: dict[str, Policy] = field(default_factory=dict)  # [autopilot.NAME], beside the built-in ones

    def retention(self):  # -> migtui.record.Retention
        """How long and how much of the recordings directory to keep (0 in the file: no limit)."""
        from migtui.record.retention import Retention

        return Retention(keep_days=self.record_keep_days or None,
                         max_bytes=self.record_max_mb * 2**20 if self.record_max_mb else None)

    def ssl_context(self):  # -> ssl.SSLContext | None
        """TLS for QMP over TCP, verified against the configured CA; None when not configured."""
        if self.tls_ca_file is None:
            return None
        import ssl

        try:
            context = ssl.create_default_context(cafile=str(self.tls_ca_file))
            if self.tls_cert_file is not None:
                context.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file) if self.tls_key_file else None)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"{self.path}: [tls] files cannot be used: {err}") from None
        return context

    def audit_log(self):  # -> migtui.backend.audit.AuditLog
        from migtui.backend.audit import AuditLog, default_audit_path

        if not self.audit or os.environ.get("MIGTUI_AUDIT", "").lower() in ("0", "off", "no", "false"):
            return AuditLog(None)
        return AuditLog(self.audit_file or default_audit_path())

    @property
    def controls_off(self) -> bool:
        """Read-only from the config file or the environment (MIGTUI_READ_ONLY=1)."""
        return self.read_only or os.environ.get("MIGTUI_READ_ONLY", "").lower() in ("1", "on", "yes", "true")


def config_path() -> Path:
    if env := os.environ.get("MIGTUI_CONFIG"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "migtui" / "config.toml"


def load_config(path: Path | None = None) -> Config:
    path = path or config_path()
    try:
        info = path.stat()
    except FileNotFoundError:
        return Config()
    # A config others can write could remap keys or point at other VMs: refuse it.
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"{path} is writable by others; refusing it (fix with: chmod go-w {path})")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    theme = data.get("theme")
    if theme is not None and not isinstance(theme, str):
        raise ConfigError(f"{path}: theme must be a string such as \"migtui-dark\"")
    read_only = data.get("read-only", False)
    if not isinstance(read_only, bool):
        raise ConfigError(f"{path}: read-only must be true or false")
    keys = data.get("keys", {})
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ConfigError(f"{path}: [keys] maps action names to key strings, e.g. migrate = \"M\"")
    audit = data.get("audit", True)
    if not isinstance(audit, bool):
        raise ConfigError(f"{path}: audit must be true or false")
    audit_file = data.get("audit-file")
    if audit_file is not None and not isinstance(audit_file, str):
        raise ConfigError(f"{path}: audit-file must be a path")
    record = data.get("record", True)
    if not isinstance(record, bool):
        raise ConfigError(f"{path}: record must be true or false")
    limits = {}
    for key, most, what in (("record-keep-days", 36500, "days"), ("record-max-mb", 2**30, "MiB")):
        value = data.get(key, Config.record_keep_days if key == "record-keep-days" else Config.record_max_mb)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
            raise ConfigError(f"{path}: {key} must be a whole number of {what} from 0 (no limit) to {most}")
        limits[key] = value
    tls = data.get("tls", {})
    if not isinstance(tls, dict) or not all(isinstance(v, str) for v in tls.values()):
        raise ConfigError(f"{path}: [tls] takes ca-file, cert-file and key-file, each a path")
    unknown = set(tls) - {"ca-file", "cert-file", "key-file"}
    if unknown:
        raise ConfigError(f"{path}: [tls] has unknown {', '.join(sorted(unknown))}; it takes ca-file, cert-file, key-file")

    tables = data.get("autopilot", {})
    if not isinstance(tables, dict) or not all(isinstance(v, dict) for v in tables.values()):
        raise ConfigError(f"{path}: [autopilot.NAME] tables, each a policy, e.g. [autopilot.web] max-downtime = \"1s\"")
    try:
        policies = {name: parse_policy(name, table) for name, table in tables.items()}
    except InputError as err:
        raise ConfigError(f"{path}: {err}") from None

    def as_path(value: str | None) -> Path | None:
        return None if value is None else Path(os.path.expanduser(value))

    return Config(theme=theme, read_only=read_only, keys=dict(keys), path=path, audit=audit,
                  audit_file=as_path(audit_file), tls_ca_file=as_path(tls.get("ca-file")),
                  tls_cert_file=as_path(tls.get("cert-file")), tls_key_file=as_path(tls.get("key-file")),
                  record=record, record_keep_days=limits["record-keep-days"],
                  record_max_mb=limits["record-max-mb"], policies=policies)
