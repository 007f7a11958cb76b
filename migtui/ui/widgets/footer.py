"""The footer: as many keys as fit the width, the most important first; `?` lists every key.

Textual's Footer lays every shown binding out in one row and lets the last ones run
under the command-palette key, so at 80 columns an operator read "x X▏". This one
hides the least important keys until the rest fit, keeping their order.
"""

from __future__ import annotations

from rich.cells import cell_len
from textual.widget import Widget
from textual.widgets import Footer

__all__ = ["MigtuiFooter", "IMPORTANCE"]

# Actions by how much an operator needs to see their key; those not listed are the first hidden.
IMPORTANCE = (
    "help", "quit", "app.pop_screen", "select", "open_dashboard", "start_migration", "cancel_migration",
    "apply_advice", "filter", "set_bandwidth", "set_downtime", "postcopy", "sort", "capabilities",
    "set_xbzrle_cache", "poll_now",
)
_RANK = {action: rank for rank, action in enumerate(IMPORTANCE)}


def _width(widget: Widget) -> int:
    """Cells the widget takes in the row: its text, padding, border and margin."""
    return cell_len(widget.render().plain) + widget.styles.gutter.width + widget.styles.margin.width


class MigtuiFooter(Footer):
    async def recompose(self) -> None:
        await super().recompose()
        self.fit()

    def on_resize(self) -> None:
        self.fit()

    def fit(self) -> None:
        """Show the most important keys that fit beside the command-palette key; hide the rest."""
        # FooterKey is not exported by Textual: it is found by its CSS type name.
        keys = list(self.query_children("FooterKey").exclude(".-command-palette"))
        if not keys or not self.size.width:
            return
        room = self.size.width - sum(_width(key) for key in self.query_children(".-command-palette"))
        shown = set()
        for key in sorted(keys, key=lambda k: _RANK.get(k.action, len(IMPORTANCE))):
            width = _width(key)
            if width <= room:
                shown.add(key)
                room -= width
        for key in keys:
            key.display = key in shown
