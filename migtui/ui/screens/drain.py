"""The queue of a host's evacuation (migtui.drain): every VM waiting, migrating (with its
verdict and the autopilot's line), done or failed with the reason; C cancels all."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from migtui.ui.messages import FleetChanged
from migtui.ui.widgets.footer import MigtuiFooter

COLUMNS = (("vm", "VM"), ("from", "from"), ("to", "to"), ("state", "state"), ("verdict", "verdict"),
           ("progress", "progress"), ("why", "why / autopilot"))


class DrainScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back (it goes on)", id="back"),
        Binding("C", "cancel_all", "Cancel all", id="migtui.drain-cancel"),
    ]

    def __init__(self, drain, title: str) -> None:
        super().__init__()
        self.drain = drain
        self.title_text = title

    def compose(self) -> ComposeResult:
        yield Static(id="drain-header")
        yield DataTable(id="drain", cursor_type="row", zebra_stripes=True)
        yield MigtuiFooter()

    def on_mount(self) -> None:
        table = self.query_one("#drain", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        for item in self.drain.items:
            table.add_row(*self._cells(item), key=item.key)
        self.refresh_view()
        table.focus()

    def _cells(self, item) -> tuple[str, ...]:
        handle = self.app.handle(item.key)
        vm = handle.vm if handle is not None else None
        verdict = vm.assessment().verdict if vm is not None and vm.in_flight else "-"
        progress = f"{vm.derived.progress * 100:.0f}%" if vm is not None and vm.in_flight and vm.derived.progress \
            is not None else "-"
        autopilot = self.app.autopilot.state(item.key) if self.app.autopilot is not None else None
        why = item.reason or (f"autopilot {autopilot}" if autopilot and item.state == "migrating" else "")
        to = item.destination.split(":", 1)[-1] if item.destination else "-"
        return item.name, item.source, to, item.state, verdict, progress, why

    def refresh_view(self) -> None:
        table = self.query_one("#drain", DataTable)
        for item in self.drain.items:
            for (key, _), value in zip(COLUMNS, self._cells(item)):
                table.update_cell(item.key, key, value)
        counts = {s: sum(i.state == s for i in self.drain.items) for s in ("waiting", "migrating", "done", "failed",
                                                                          "cancelled")}
        state = " · ".join(f"{n} {s}" for s, n in counts.items() if n)
        end = f"\n{self.drain.summary()}" if self.drain.ended is not None else ""
        self.query_one("#drain-header", Static).update(
            f"{self.title_text}: {state}\norder: {self.drain.order_text}; {self.drain.per_source} per host, "
            f"{self.drain.total} at once{end}")

    @on(FleetChanged)
    def on_fleet_changed(self, message: FleetChanged) -> None:
        self.refresh_view()

    def action_cancel_all(self) -> None:
        from migtui.ui.dialogs import ConfirmDialog

        if self.drain.ended is not None:
            self.app.notify("the drain has ended: nothing to cancel", severity="warning")
            return

        def answer(ok: bool | None) -> None:
            if ok:
                self.app.run_worker(self.drain.cancel_all(), exclusive=False)

        self.app.push_screen(ConfirmDialog(f"Cancel the whole drain ({self.title_text})?",
                                           "Migrations in flight are cancelled (their VMs stay where they are); "
                                           "the waiting ones are not started.", danger=True), answer)
