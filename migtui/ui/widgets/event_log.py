"""A VM's event log on the dashboard: its log records, newest at the bottom.

RichLog can only append, and a run of passes is one record that grows in place
(VMState.log_append). This view draws the record list as it is: each record is
wrapped once, and again only when it is replaced or the width changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.segment import Segment
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from migtui.model.vm import EventRecord

__all__ = ["EventLog"]

MIN_WIDTH = 20  # narrower than this, lines scroll sideways rather than wrap to a word a line


class EventLog(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    EventLog {
        background: $surface;
        color: $foreground;
        overflow-y: scroll;
        &:focus {
            background-tint: $foreground 5%;
        }
    }
    """

    def __init__(self, draw: Callable[[EventRecord], Text], *, id: str | None = None,  # noqa: A002
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.draw = draw
        self.records: list[EventRecord] = []
        self.lines: list[Strip] = []  # the records wrapped to the width, as drawn
        self._wrapped: dict[EventRecord, list[Strip]] = {}
        self._wrap_width = 0
        self._follow = True  # at the newest line: stay there as lines come (scrolling up stops it)

    def show(self, records: Iterable[EventRecord]) -> None:
        """Draw these records (a record replaced in place is drawn again where it is)."""
        records = list(records)
        if records != self.records:
            self.records = records
            self._layout_lines()

    def on_resize(self) -> None:
        self._layout_lines()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._follow = new_value >= self.max_scroll_y

    def _layout_lines(self) -> None:
        if not self.scrollable_content_region.width:
            return  # not laid out yet: the first resize draws them
        width = max(MIN_WIDTH, self.scrollable_content_region.width)
        known = self._wrapped if width == self._wrap_width else {}
        self._wrap_width = width
        self._wrapped = {record: known.get(record) or self._wrap(record, width) for record in self.records}
        self.lines = [strip for record in self.records for strip in self._wrapped[record]]
        self.virtual_size = Size(width, len(self.lines))
        if self._follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def _wrap(self, record: EventRecord, width: int) -> list[Strip]:
        console = self.app.console
        lines = Segment.split_lines(console.render(self.draw(record), console.options.update_width(width)))
        return [strip.adjust_cell_length(width) for strip in Strip.from_lines(list(lines))] or [Strip.blank(width)]

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self.rich_style
        index = scroll_y + y
        if index >= len(self.lines):
            return Strip.blank(width, base)
        return self.lines[index].crop_extend(scroll_x, scroll_x + width, base).apply_style(base)
