"""The fleet table: one row per VM, drawn only where it is on screen.

Textual's DataTable keeps a styled cell object for every cell and measures all of
them whenever rows are added, so re-filling it after a sort or a filter cost
0.25-0.4 s at 1000 VMs, and any cell update invalidated its whole render cache.
This table holds only the row order. A row's cells are asked for (from `row_source`)
when the row comes into view, kept as one rendered line, and dropped when the VM
changes; sorting or filtering is a new list of keys.
"""

from __future__ import annotations

from typing import Callable, Sequence

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

__all__ = ["FleetTable", "RowSource"]

# A VM's row: the cell texts, and the Rich style the whole row is drawn in.
RowSource = Callable[[str], tuple[Sequence[str], str]]

PADDING = 1  # blank cells either side of every column, as DataTable draws them


def fit(text: str, width: int) -> str:
    """Exactly `width` cells: padded, or cut with an ellipsis."""
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    return set_cell_size(text, width - 1) + "…" if width > 1 else set_cell_size(text, width)


class FleetTable(ScrollView, can_focus=True):
    """Rows by key, a cursor, a header that sorts when clicked."""

    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "select", "Dashboard"),  # shadows the screen's Enter in the footer
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
    ]

    COMPONENT_CLASSES = {"fleet-table--header", "fleet-table--cursor"}

    DEFAULT_CSS = """
    FleetTable {
        background: $surface;
        color: $foreground;
        & > .fleet-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        & > .fleet-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus {
            background-tint: $foreground 5%;
            & > .fleet-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
        }
    }
    """

    class RowSelected(Message):
        """Enter or a click on a row."""

        def __init__(self, table: FleetTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> FleetTable:
            return self.table

    class HeaderSelected(Message):
        """A click on a column heading."""

        def __init__(self, table: FleetTable, column: str) -> None:
            super().__init__()
            self.table = table
            self.column = column

        @property
        def control(self) -> FleetTable:
            return self.table

    def __init__(
        self,
        columns: Sequence[tuple[str, str, int]],
        row_source: RowSource,
        *,
        on_error: Callable[[BaseException], None] | None = None,
        id: str | None = None,  # noqa: A002 - Textual's name
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.columns = list(columns)  # (key, label, width)
        self.row_source = row_source
        self.on_error = on_error
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._lines: dict[str, tuple[str, Style]] = {}  # key -> (rendered text, row style)
        self._looks: tuple[Style, Style, Style] | None = None  # base, header, cursor: costly to resolve
        self.cursor_row = 0
        self.heading_marks: dict[str, str] = {}  # column key -> a mark after its label (sort arrow)
        self.renders = 0  # rows rendered from their cells (for tests and benchmarks)
        self._width = sum(width + 2 * PADDING for _, _, width in self.columns)
        # The first column (the VM's name) stays put when the rest scrolls sideways, as in htop.
        self._frozen = self.columns[0][2] + 2 * PADDING if self.columns else 0

    # ---- rows -------------------------------------------------------------

    @property
    def row_keys(self) -> list[str]:
        return list(self._keys)

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def cursor_key(self) -> str | None:
        return self._keys[self.cursor_row] if 0 <= self.cursor_row < len(self._keys) else None

    def row_index(self, key: str) -> int | None:
        return self._index.get(key)

    def set_rows(self, keys: Sequence[str]) -> None:
        """A new order (sort) or subset (filter); the cursor stays on its VM if it is still shown."""
        selected = self.cursor_key
        self._keys = list(keys)
        self._index = {key: i for i, key in enumerate(self._keys)}
        for gone in set(self._lines) - self._index.keys():
            del self._lines[gone]
        self.virtual_size = Size(self._width, len(self._keys) + 1)
        if selected in self._index:
            self.cursor_row = self._index[selected]  # type: ignore[index]
        self.cursor_row = max(0, min(self.cursor_row, len(self._keys) - 1))
        self._scroll_to_cursor()
        self.refresh()

    def invalidate(self, keys: Sequence[str] | None = None) -> None:
        """These VMs changed (None: all of them): redraw their rows when they are on screen."""
        if keys is None:
            self._lines.clear()
            self.refresh()
            return
        top, bottom = self.visible_rows()
        shown = False
        for key in keys:
            self._lines.pop(key, None)
            index = self._index.get(key)
            shown = shown or (index is not None and top <= index < bottom)
        if shown:
            self.refresh()

    def visible_rows(self) -> tuple[int, int]:
        """The row indexes on screen: [top, bottom)."""
        top = int(self.scroll_offset.y)
        return top, top + max(0, self.scrollable_content_region.height - 1)

    def get_row(self, key: str) -> tuple[str, ...]:
        return tuple(self.row_source(key)[0])

    def get_cell(self, key: str, column: str) -> str:
        index = next(i for i, (k, _, _) in enumerate(self.columns) if k == column)
        return self.get_row(key)[index]

    def drawn_cells(self, key: str) -> tuple[str, ...] | None:
        """The row's cells as last drawn (None: not drawn since it last changed)."""
        line = self._lines.get(key)
        if line is None:
            return None
        cells, x = [], 0
        for _, _, width in self.columns:
            x += PADDING
            cells.append(line[0][x : x + width].strip())
            x += width + PADDING
        return tuple(cells)

    # ---- drawing ----------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines.clear()  # theme or focus changed the styles rows are drawn in
        self._looks = None

    @staticmethod
    def _style(spec: str) -> Style:
        try:
            return Style.parse(spec) if spec else Style()  # Rich caches what it parsed
        except Exception:
            return Style()

    def _text(self, cells: Sequence[str]) -> str:
        pad = " " * PADDING
        return "".join(pad + fit(str(cell), width) + pad for (_, _, width), cell in zip(self.columns, cells))

    def _row_line(self, key: str) -> tuple[str, Style]:
        line = self._lines.get(key)
        if line is None:
            try:
                cells, spec = self.row_source(key)
                line = (self._text(cells), self._style(spec))
            except Exception as error:  # a drawing bug must not take the console down
                if self.on_error is not None:
                    self.on_error(error)
                line = (fit(f" {key}: cannot draw this row ({error!r})", self._width), Style())
            self.renders += 1
            self._lines[key] = line
        return line

    def _resolved_looks(self) -> tuple[Style, Style, Style]:
        if self._looks is None:
            base = self.rich_style
            self._looks = (base, base + self.get_component_rich_style("fleet-table--header"),
                           self.get_component_rich_style("fleet-table--cursor"))
        return self._looks

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base, header, cursor = self._resolved_looks()
        if y == 0:
            text = self._text([label + self.heading_marks.get(key, "") for key, label, _ in self.columns])
            strip = Strip([Segment(text, header)], self._width)
        else:
            index = scroll_y + y - 1
            if index >= len(self._keys):
                return Strip.blank(width, base)
            text, style = self._row_line(self._keys[index])
            style = base + style
            if index == self.cursor_row:
                style += cursor
            strip = Strip([Segment(text, style)], self._width)
        frozen = self._frozen
        if not scroll_x or width <= frozen:
            return strip.crop_extend(0, width, base)
        return Strip.join([strip.crop(0, frozen), strip.crop_extend(frozen + scroll_x, scroll_x + width, base)])

    # ---- cursor -----------------------------------------------------------

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def move_cursor(self, row: int) -> None:
        if not self._keys:
            return
        row = max(0, min(row, len(self._keys) - 1))
        if row != self.cursor_row:
            self.cursor_row = row
            self.refresh()
        self._scroll_to_cursor()

    def _scroll_to_cursor(self) -> None:
        top, page = int(self.scroll_offset.y), self._page()
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + page:
            self.scroll_to(y=self.cursor_row - page + 1, animate=False, immediate=True)

    def action_cursor_up(self) -> None:
        self.move_cursor(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self.cursor_row + 1)

    def action_page_up(self) -> None:
        page = self._page()
        self.scroll_to(y=max(0, int(self.scroll_offset.y) - page), animate=False, immediate=True)
        self.move_cursor(self.cursor_row - page)

    def action_page_down(self) -> None:
        page = self._page()
        self.scroll_to(y=int(self.scroll_offset.y) + page, animate=False, immediate=True)
        self.move_cursor(self.cursor_row + page)

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(len(self._keys) - 1)

    def action_select(self) -> None:
        if self.cursor_key is not None:
            self.post_message(self.RowSelected(self, self.cursor_key))

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = offset.x + (int(self.scroll_offset.x) if offset.x >= self._frozen else 0)
            for key, _, width in self.columns:
                x -= width + 2 * PADDING
                if x < 0:
                    self.post_message(self.HeaderSelected(self, key))
                    break
            return
        row = int(self.scroll_offset.y) + offset.y - 1
        if 0 <= row < len(self._keys):
            self.move_cursor(row)
            self.post_message(self.RowSelected(self, self._keys[row]))
