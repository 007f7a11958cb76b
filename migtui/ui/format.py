"""The colours of the fleet table and the dashboard (their text is migtui/present's)."""

from __future__ import annotations

# Theme variables per status category; the table and header colour by these.
CATEGORY_STYLE = {
    "migrating": "$accent",
    "post-copy": "$warning",
    "postcopy-paused": "bold $error",  # an emergency: recover before anything else
    "completed": "$success",
    "failed": "$error",
    "cancelled": "$warning",
    "disconnected": "dim",
    "unresponsive": "$error",
    "connecting": "dim",
    "waiting": "$secondary",
    "incoming": "$secondary",
    "idle": "",
}


def category_style(category: str, theme_vars: dict[str, str]) -> str:
    """The Rich style of a status category, with theme variables ($accent...) resolved."""
    words = CATEGORY_STYLE.get(category, "").split()
    return " ".join(w for w in (theme_vars.get(w[1:], "") if w.startswith("$") else w for w in words) if w)
