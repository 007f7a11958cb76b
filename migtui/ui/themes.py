"""Themes as data: every themes/*.toml becomes a Textual theme plus the graph colours."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from textual.theme import Theme

__all__ = ["MigtuiTheme", "load_themes", "THEMES_DIR", "DEFAULT_THEME"]

# migtui/themes is a symlink to the repo's top-level themes/, so a checkout reads them in place; a wheel
# (pyproject.toml's package-data, which follows the link) carries real copies at the same path.
THEMES_DIR = Path(__file__).resolve().parents[1] / "themes"
DEFAULT_THEME = "migtui-dark"
_THEME_FIELDS = ("primary", "secondary", "accent", "warning", "error", "success",
                 "foreground", "background", "surface", "panel", "boost")


@dataclass(frozen=True)
class MigtuiTheme:
    theme: Theme
    plot: dict[str, str] = field(default_factory=dict)


def load_themes(directory: Path = THEMES_DIR) -> dict[str, MigtuiTheme]:
    """Load every theme file, in name order; a broken file is skipped, not fatal."""
    themes: dict[str, MigtuiTheme] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text())
            theme = Theme(
                name=str(data["name"]),
                dark=bool(data.get("dark", True)),
                **{k: str(data[k]) for k in _THEME_FIELDS if k in data},
            )
        except (OSError, KeyError, ValueError, TypeError, tomllib.TOMLDecodeError):
            continue
        plot = {str(k): str(v) for k, v in (data.get("plot") or {}).items()}
        themes[theme.name] = MigtuiTheme(theme, plot)
    return themes
