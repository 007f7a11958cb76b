"""The demo's caption: one line at the top of every screen saying what the audience looks at."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

__all__ = ["Caption"]


class Caption(Static):
    DEFAULT_CSS = """
    Caption {
        dock: top;
        height: 1;
        width: 100%;
        padding: 0 1;
        background: $accent;
        color: $background;
        text-style: bold;
    }
    """

    def __init__(self, step_text: str = "", caption: str = "", state: str = "") -> None:
        super().__init__(id="demo-caption")
        self.step_text = step_text  # "2/5"
        self.caption = caption
        self.state = state  # "▶ auto", "‖ paused", "→ next"

    def show(self, step_text: str, caption: str, state: str) -> None:
        if (step_text, caption, state) != (self.step_text, self.caption, self.state):
            self.step_text, self.caption, self.state = step_text, caption, state
            self.refresh()

    @property
    def line(self) -> str:
        return f"{self.step_text} {self.caption}"

    def render(self) -> Text:
        width = max(1, self.content_size.width)
        left, right = self.line, self.state
        room = width - len(right) - 1
        if len(left) > room:  # a caption that does not fit loses its end, never the step or the state
            left = left[:max(0, room - 1)] + "…"
        return Text(left.ljust(room) + " " + right)
