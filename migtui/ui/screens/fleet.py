"""The first screen: every VM, one row each, coloured by what it is doing."""

from __future__ import annotations

from collections import Counter

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from migtui.model.vm import status_category
from migtui.ui.guard import keep_running
from migtui.ui.format import FLEET_COLUMNS, fleet_cells, styled
from migtui.ui.messages import FleetChanged
from migtui.ui.screens.actions import VMActions

# Sort keys by column: numbers sort as numbers, absent values last.
_SORT_KEYS = {
    "vm": lambda vm: vm.name,
    "status": lambda vm: (status_category(vm), vm.migration_status),
    "progress": lambda vm: vm.derived.progress if vm.derived.progress is not None else -1,
    # Rates and sizes count only while a migration runs, as the table shows them.
    "throughput": lambda vm: (vm.derived.throughput_bps or 0) if vm.in_flight else -1,
    "remaining": lambda vm: (vm.derived.remaining_bytes or 0) if vm.in_flight else -1,
    "dirty": lambda vm: (vm.derived.dirty_bytes_per_s or 0) if vm.in_flight else -1,
    "verdict": lambda vm: vm.assessment().verdict if vm.sample is not None else "",
    "eta": lambda vm: (vm.assessment().eta_s if vm.in_flight else None) or float("inf"),
    "passes": lambda vm: vm.derived.passes or 0,
}
_CATEGORY_ORDER = ("migrating", "post-copy", "incoming", "unresponsive", "failed", "disconnected", "cancelled",
                   "completed", "waiting", "idle", "connecting")


class FleetScreen(VMActions, Screen):
    BINDINGS = [
        Binding("enter", "open_dashboard", "Dashboard", id="dashboard"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("o", "sort", "Sort", id="sort"),
        Binding("escape", "clear_filter", "Back", show=False, id="back"),
        *VMActions.ACTION_BINDINGS,
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._cells: dict[str, tuple[str, ...]] = {}
        self._categories: dict[str, str] = {}
        self._stale: set[str] = set()  # changed while scrolled out of view
        self._row_index: dict[str, int] = {}  # row order as last built (DataTable indexes lazily)

    def compose(self) -> ComposeResult:
        yield Static(id="fleet-header")
        table: DataTable[object] = DataTable(id="fleet", cursor_type="row", zebra_stripes=False)
        yield table
        yield Input(placeholder="filter: name, endpoint or status (Enter keeps it, Esc clears)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#fleet", DataTable)
        for key, label, width in FLEET_COLUMNS:
            table.add_column(label, key=key, width=width)
        self.query_one("#filter", Input).display = False
        self.rebuild()
        table.focus()
        self.watch(table, "scroll_y", self._scrolled, init=False)

    @keep_running
    def _scrolled(self, _old: float, _new: float) -> None:
        if self._stale:
            self.refresh_rows(frozenset(self._stale))

    def on_screen_resume(self) -> None:
        self.refresh_rows(None)

    # ---- rows --------------------------------------------------------------

    def visible_sessions(self):
        needle = self.filter_text.lower()
        sessions = [
            s for s in self.app.fleet
            if not needle or any(needle in part.lower() for part in (
                s.vm.name, str(s.vm.endpoint), s.vm.migration_status, status_category(s.vm), s.vm.run_state or ""))
        ]
        if self.sort_column in _SORT_KEYS:
            sessions.sort(key=lambda s: _SORT_KEYS[self.sort_column](s.vm), reverse=self.sort_reverse)
        return sessions

    @keep_running
    def rebuild(self) -> None:
        """Clear and refill: after a filter or sort change only."""
        table = self.query_one("#fleet", DataTable)
        selected = self.selected_key()
        # Forget the old rows first: clear() scrolls to the top, which runs _scrolled.
        self._cells.clear()
        self._stale.clear()
        self._row_index.clear()
        table.clear()
        for index, session in enumerate(self.visible_sessions()):
            self._row_index[session.key] = index
            cells = fleet_cells(session.vm)
            category = status_category(session.vm)
            self._cells[session.key] = cells
            self._categories[session.key] = category
            table.add_row(*self._style(cells, category), key=session.key)
        if selected is not None and selected in self._row_index:
            table.move_cursor(row=self._row_index[selected])
        self.update_header()

    @keep_running
    def refresh_rows(self, keys: frozenset[str] | None) -> None:
        """Touch only the cells that changed, of the VMs that changed."""
        table = self.query_one("#fleet", DataTable)
        column_keys = [key for key, _, _ in FLEET_COLUMNS]
        # Rows out of view wait until they scroll in: a cell update re-renders the whole table.
        top = int(table.scroll_y)
        bottom = top + table.size.height
        for key in (keys if keys is not None else list(self._cells)):
            old = self._cells.get(key)
            session = self.app.fleet.get(key)
            if old is None or session is None:
                continue
            if table.size.height and not top - 2 <= self._row_index.get(key, 0) <= bottom + 2:
                self._stale.add(key)
                continue
            self._stale.discard(key)
            cells = fleet_cells(session.vm)
            category = status_category(session.vm)
            if cells == old and category == self._categories.get(key):
                continue
            recolour = category != self._categories.get(key)
            styled_cells = self._style(cells, category)
            for index, (before, after) in enumerate(zip(old, cells)):
                if recolour or before != after:
                    table.update_cell(key, column_keys[index], styled_cells[index])
            self._cells[key] = cells
            self._categories[key] = category
        self.update_header()

    def _style(self, cells: tuple[str, ...], category: str):
        variables = self.app.theme_variables
        return [styled(c, category, variables) for c in cells]

    @keep_running
    def update_header(self) -> None:
        counts = Counter(status_category(s.vm) for s in self.app.fleet)
        parts = [f"{len(self.app.fleet)} VMs"]
        parts += [f"{counts[c]} {c}" for c in _CATEGORY_ORDER if counts.get(c)]
        shown = len(self._cells)
        if self.filter_text:
            parts.append(f"filter {self.filter_text!r}: {shown} shown")
        if self.sort_column:
            parts.append(f"sorted by {self.sort_column}{' ↓' if self.sort_reverse else ' ↑'}")
        if self.app.read_only:
            parts.append("READ-ONLY")
        if self.app.insecure:
            parts.append(f"⚠ {len(self.app.insecure)} over remote TCP without TLS")
        self.query_one("#fleet-header", Static).update(" · ".join(parts))

    @on(FleetChanged)
    def on_fleet_changed(self, message: FleetChanged) -> None:
        self.refresh_rows(message.keys)

    # ---- selection and navigation -----------------------------------------

    def selected_key(self) -> str | None:
        table = self.query_one("#fleet", DataTable)
        if table.row_count == 0:
            return None
        try:
            row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        except Exception:
            return None
        return row_key.value

    def action_open_dashboard(self) -> None:
        from migtui.ui.screens.dashboard import DashboardScreen

        key = self.selected_key()
        if key is not None:
            self.app.push_screen(DashboardScreen(key))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_dashboard()

    @on(DataTable.HeaderSelected)
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = event.column_key.value
        if column in _SORT_KEYS:
            self.sort_reverse = not self.sort_reverse if self.sort_column == column else False
            self.sort_column = column
            self.reorder()

    def action_sort(self) -> None:
        """Cycle the sort column: name, status, then the figures, biggest first."""
        order = list(_SORT_KEYS)
        index = -1 if self.sort_column is None else order.index(self.sort_column)
        self.sort_column = order[(index + 1) % len(order)]
        # Names read A-Z; for rates, sizes and progress the biggest is what an operator looks for.
        self.sort_reverse = self.sort_column not in ("vm", "status", "verdict", "eta")
        self.reorder()

    @keep_running
    def reorder(self) -> None:
        """Sort the rows in place: re-adding a thousand rows costs DataTable a measure of every cell."""
        table = self.query_one("#fleet", DataTable)
        ordered = [s for s in self.visible_sessions() if s.key in self._cells]
        if len(ordered) != len(self._cells):
            self.rebuild()
            return
        self._row_index = {s.key: i for i, s in enumerate(ordered)}
        position = {self._cells[s.key][0]: i for i, s in reversed(list(enumerate(ordered)))}
        table.sort("vm", key=lambda name: position.get(str(name), 0))
        self.update_header()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.filter_text
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.rebuild()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#fleet", DataTable).focus()
        if not self.filter_text:
            event.input.display = False

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if self.filter_text or box.display:
            self.filter_text = ""
            box.value = ""
            box.display = False
            self.rebuild()
        self.query_one("#fleet", DataTable).focus()
