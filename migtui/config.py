"""The config file: ~/.config/migtui/config.toml (or $MIGTUI_CONFIG). No Textual here.

    theme = "migtui-dark"
    read-only = false
    [keys]            # remap any action: action = "key[,key]"
    migrate = "M"
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

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
    return Config(theme=theme, read_only=read_only, keys=dict(keys), path=path)
