"""The first screen: every VM, one row each, coloured by what it is doing."""

from __future__ import annotations

from collections import Counter

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input, Static

from migtui.model.guidance import VERDICTS
from migtui.model.vm import status_category
from migtui.present.fleet import FLEET_COLUMNS, fleet_cells
from migtui.ui.format import category_style
from migtui.ui.guard import keep_running, report
from migtui.ui.messages import FleetChanged
from migtui.ui.screens.actions import VMActions
from migtui.ui.widgets.fleet_table import FleetTable
from migtui.ui.widgets.footer import MigtuiFooter

SORT_MAX_AGE = 5.0  # s

# Sort keys by column: numbers sort as numbers, absent values last.
_SORT_KEYS = {
    "vm": lambda vm: vm.name,
    "status": lambda vm: (status_category(vm), vm.migration_status),
    "progress": lambda vm: vm.derived.progress if vm.derived.progress is not None else -1,
    # Rates and sizes count only while a migration runs, as the table shows them.
    "throughput": lambda vm: (vm.derived.throughput_bps or 0) if vm.in_flight else -1,
    "remaining": lambda vm: (vm.derived.remaining_bytes or 0) if vm.in_flight else -1,
    "dirty": lambda vm: (vm.derived.dirty_bytes_per_s or 0) if vm.in_flight else -1,
    # A verdict up to a few seconds old orders the rows (the rows on screen show the latest):
    # assessing a thousand VMs afresh would hold the key press.
    "verdict": lambda vm: vm.assessment(max_age=SORT_MAX_AGE).verdict if vm.sample is not None else "",
    "eta": lambda vm: (vm.assessment(max_age=SORT_MAX_AGE).eta_s if vm.in_flight else None) or float("inf"),
    "passes": lambda vm: vm.derived.passes or 0,
}
_CATEGORY_ORDER = ("postcopy-paused", "migrating", "post-copy", "incoming", "unresponsive", "failed", "disconnected", "cancelled",
                   "completed", "waiting", "idle", "connecting")


class FilterInput(Input):
    """The filter box. Its Enter is handled as the app reads it (a priority binding, live only while
    the box has the focus), so an Enter right behind it in the same burst (a browser, a paste)
    reaches the table and opens the dashboard."""

    BINDINGS = [Binding("enter", "keep", show=False, priority=True)]

    def action_keep(self) -> None:
        self.post_message(self.Submitted(self, self.value))
        self.screen.set_focus(self.screen.query_one("#fleet"))


class FleetScreen(VMActions, Screen):
    BINDINGS = [
        Binding("enter", "open_dashboard", "Dashboard", id="dashboard"),
        # Priority: handled as the app reads it, so keys typed right after it in the same burst (a
        # browser or a paste delivers "/web" in one read) are routed to the box, not the table.
        Binding("slash", "filter", "Filter", id="filter", priority=True),
        Binding("o", "sort", "Sort", id="sort"),
        Binding("escape", "clear_filter", "Back", show=False, id="back"),
        Binding("D", "drain_host", "Drain host", show=False, id="migtui.drain"),  # in help and ctrl+p
        *VMActions.ACTION_BINDINGS,
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._reported: set[str] = set()
        self._members: set[str] = set()  # the backend's keys when the rows were last chosen
        self._order: list[int] | None = None  # the columns' order, when not FLEET_COLUMNS' own

    def compose(self) -> ComposeResult:
        yield Static(id="fleet-header")
        yield FleetTable(self._columns(), self.row, on_error=self._row_error, id="fleet")
        yield FilterInput(placeholder="filter: name, endpoint, status or verdict (Enter keeps it, Esc clears)",
                          id="filter")
        yield MigtuiFooter()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.rebuild()
        self.table.focus()

    @property
    def table(self) -> FleetTable:
        return self.query_one("#fleet", FleetTable)

    def on_screen_resume(self) -> None:
        self.refresh_rows(None)

    # ---- rows --------------------------------------------------------------

    def _columns(self):
        """FLEET_COLUMNS; on a fleet of hosts (libvirt), the host right after the VM, where it is seen."""
        order = list(range(len(FLEET_COLUMNS)))
        if self.app.backend.hosts():
            host = next(i for i, c in enumerate(FLEET_COLUMNS) if c[0] == "host")
            order.remove(host)
            order.insert(1, host)
        self._order = order if order != sorted(order) else None
        return [FLEET_COLUMNS[i] for i in order]

    def row(self, key: str) -> tuple[tuple[str, ...], str]:
        """A VM's cells and the style of its row, asked for by the table when the row is in view."""
        vm = self.app.backend.get(key).vm
        cells = fleet_cells(vm)
        autopilot = getattr(self.app, "autopilot", None)  # a replay has none
        if autopilot is not None and autopilot.engaged(key):
            # AP after the migration's status; what it does in the note (the operator's why).
            cells = (cells[0], f"{cells[1]} AP", *cells[2:-1], f"autopilot {autopilot.state(key)}")
        if self._order is not None:
            cells = tuple(cells[i] for i in self._order)
        return cells, category_style(status_category(vm), self.app.theme_variables)

    def _row_error(self, error: BaseException) -> None:
        if repr(error) not in self._reported:  # once per bug, not once per row and frame
            self._reported.add(repr(error))
            report(self.app, "the fleet table", error)

    def visible_sessions(self):
        needle = self.filter_text.lower()
        # Verdicts are looked up only when the text can be part of one (not for most names).
        verdicts = needle and any(needle in v for v in (*VERDICTS, "receiving"))
        sessions = [
            s for s in self.app.backend
            if not needle or any(needle in part.lower() for part in (
                s.vm.name, str(s.vm.endpoint), s.vm.migration_status, status_category(s.vm), s.vm.run_state or ""))
            or (verdicts and s.vm.sample is not None and needle in _SORT_KEYS["verdict"](s.vm))
        ]
        if self.sort_column in _SORT_KEYS:
            sessions.sort(key=lambda s: _SORT_KEYS[self.sort_column](s.vm), reverse=self.sort_reverse)
        return sessions

    @keep_running
    def rebuild(self) -> None:
        """Filter and sort again: the table gets a new list of keys, rows are drawn as they show."""
        table = self.table
        table.heading_marks = {self.sort_column: " ↓" if self.sort_reverse else " ↑"} if self.sort_column else {}
        self._members = set(self.app.backend.handles())
        table.set_rows([s.key for s in self.visible_sessions()])
        table.invalidate(None)  # sort and filter follow the latest figures: so do the rows
        self.update_header()

    @keep_running
    def refresh_rows(self, keys: frozenset[str] | None) -> None:
        """These VMs changed: their rows are drawn again if on screen, else when they scroll in."""
        self.table.invalidate(None if keys is None else list(keys))
        self.update_header()

    @keep_running
    def update_header(self) -> None:
        counts = Counter(status_category(s.vm) for s in self.app.backend)
        parts = [f"{len(self.app.backend)} VMs"]
        parts += [f"{counts[c]} {c}" for c in _CATEGORY_ORDER if counts.get(c)]
        shown = self.table.row_count
        if self.filter_text:
            parts.append(f"filter {self.filter_text!r}: {shown} shown")
        if self.sort_column:
            parts.append(f"sorted by {self.sort_column}{' ↓' if self.sort_reverse else ' ↑'}")
        if self.app.read_only:
            parts.append("READ-ONLY")
        if self.app.insecure:
            parts.append(f"⚠ {len(self.app.insecure)} over remote TCP without TLS")
        lines = [" · ".join(parts)]
        hosts = self.app.backend.hosts()
        if hosts:
            # A host that is down or empty has no row to show it by: each has its line here.
            up = [h for h in hosts if h.connected]
            line = f"{len(hosts)} hosts: " + ", ".join(f"{h.name} ({h.vms})" for h in up)
            lines.append(line if up else f"{len(hosts)} hosts, none connected")
            lines += [f"⚠ {h.name} {h.where}: {h.reason or 'connecting'}" for h in hosts if not h.connected]
        self.query_one("#fleet-header", Static).update("\n".join(lines))

    @on(FleetChanged)
    def on_fleet_changed(self, message: FleetChanged) -> None:
        # A libvirt host's domains come and go (started, stopped, moved in): the rows follow.
        if self._members != set(self.app.backend.handles()):
            self.rebuild()
            return
        self.refresh_rows(message.keys)

    # ---- selection and navigation -----------------------------------------

    def selected_key(self) -> str | None:
        return self.table.cursor_key

    def action_open_dashboard(self) -> None:
        from migtui.ui.screens.dashboard import DashboardScreen

        key = self.selected_key()
        if key is not None:
            self.app.push_screen(DashboardScreen(key))

    @on(FleetTable.RowSelected)
    def _row_selected(self, event: FleetTable.RowSelected) -> None:
        event.stop()
        self.action_open_dashboard()

    @on(FleetTable.HeaderSelected)
    def _header_selected(self, event: FleetTable.HeaderSelected) -> None:
        if event.column in _SORT_KEYS:
            self.sort_reverse = not self.sort_reverse if self.sort_column == event.column else False
            self.sort_column = event.column
            self.rebuild()

    def action_sort(self) -> None:
        """Cycle the sort column: name, status, then the figures, biggest first."""
        order = list(_SORT_KEYS)
        index = -1 if self.sort_column is None else order.index(self.sort_column)
        self.sort_column = order[(index + 1) % len(order)]
        # Names read A-Z; for rates, sizes and progress the biggest is what an operator looks for.
        self.sort_reverse = self.sort_column not in ("vm", "status", "verdict", "eta")
        self.rebuild()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if self.focused is box:
            box.insert_text_at_cursor("/")  # a `/` typed in the box is part of the filter (unix:/run/...)
            return
        box.display = True
        box.value = self.filter_text
        self.set_focus(box)  # at once, not through the message queue, for the keys right behind

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.rebuild()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self._keep_filter(event.input)

    def _keep_filter(self, box: Input) -> None:
        self.set_focus(self.table)
        if not self.filter_text:
            box.display = False

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if self.filter_text or box.display:
            self.filter_text = ""
            box.value = ""
            box.display = False
            self.rebuild()
        self.table.focus()
