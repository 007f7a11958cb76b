"""One VM's migration: header figures, live graphs, parameters and the event log."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from migtui.backend.errors import BackendError
from migtui.model.units import format_bytes, format_duration, format_ms, format_rate
from migtui.model.vm import VMState, status_category
from migtui.ui.guard import keep_running
from migtui.present.figures import downtime_text, eta_text, progress_bar, status_text
from migtui.ui.format import category_style
from migtui.ui.messages import FleetChanged
from migtui.ui.screens.actions import VMActions
from migtui.ui.widgets.event_log import EventLog
from migtui.ui.widgets.footer import MigtuiFooter
from migtui.ui.widgets.graphs import DiskGraph, RamGraph, ThroughputGraph, XbzrleGraph

NARROW = 110  # below this many columns the side panel folds into one line


def split_figures(sample) -> list[str]:
    """What QEMU 7.2+ splits out, where it matters: the bytes sent while the guest was stopped,
    pre-copy against post-copy bytes, and auto-converge's throttle (older QEMUs report none)."""
    out = []
    sent_stopped = sample.get("ram", "downtime-bytes")
    if sent_stopped:
        out.append(f"sent in downtime {format_bytes(sent_stopped)}")
    post = sample.get("ram", "postcopy-bytes")
    if post:
        out.append(f"pre-copy {format_bytes(sample.get('ram', 'precopy-bytes'))} / post-copy {format_bytes(post)}")
    throttle = sample.get(None, "cpu-throttle-percentage")
    if throttle and sample.in_flight:
        out.append(f"throttle {throttle:.0f}%")
    # QEMU 8.1+ reports these only while the dirty limit throttles the guest (microseconds).
    held = sample.get(None, "dirty-limit-throttle-time-per-round")
    if held is not None and sample.in_flight:
        full = sample.get(None, "dirty-limit-ring-full-time")
        every = f", ring full every {full / 1000:.1f}ms" if full else ""
        out.append(f"dirty limit: vCPUs held {held / 1000:.1f}ms per round{every}")
    return out


def header_lines(vm: VMState) -> tuple[str, str]:
    """Status and figures, then the convergence sentence an operator reads first."""
    sample = vm.sample
    d = vm.derived
    figures = [f"{vm.name}", status_text(vm)]
    if sample is not None and sample.status != "none":
        figures.append(f"elapsed {format_duration(d.elapsed_s)}")
        setup = sample.get(None, "setup-time")
        if setup is not None:
            figures.append(f"setup {format_ms(setup)}")
        total = sample.get(None, "total-time")
        if sample.finished and total is not None:
            figures.append(f"total {format_ms(total)}")
        figures.append(f"downtime {downtime_text(vm)}")
        if d.passes is not None:
            figures.append(f"pass {d.passes}")
        figures += split_figures(sample)
    figures.append(f"{vm.run_state or '-'} · QEMU {vm.qemu_version or '?'} ({vm.dialect or '?'})")
    second = ""
    if vm.in_flight:
        a = vm.assessment()
        eta = eta_text(vm)
        if a.eta_low_s is not None and a.eta_high_s is not None and a.eta_s is not None:
            eta += f" ({format_duration(a.eta_low_s)}–{format_duration(a.eta_high_s)})"
        second = f"{progress_bar(d.progress, 20)}  {a.verdict.upper()}: {a.why} · ETA {eta}"
        if a.implied_downtime_ms is not None:
            second += f" · implied downtime {format_ms(a.implied_downtime_ms)}"
        if d.progress_note:
            second += f" · progress went back: {d.progress_note.split(':', 1)[0]}"
    elif sample is not None and sample.finished:
        second = f"{progress_bar(d.progress, 20)}  {sample.status}"
        if sample.error_desc:
            second += f": {sample.error_desc}"
    elif vm.reason:
        second = f"{vm.connection}: {vm.reason}"
    return " · ".join(figures), second


def parameter_lines(vm: VMState) -> list[str]:
    p = vm.parameters
    caps = sorted(name for name, on_ in vm.capabilities.items() if on_)
    lines = [
        f"max-bandwidth     {format_rate(p.get('max-bandwidth'))}",
        f"downtime-limit    {format_ms(p.get('downtime-limit'))}",
        f"xbzrle-cache-size {format_bytes(p.get('xbzrle-cache-size'))}",
    ]
    if "multifd-channels" in p and vm.capabilities.get("multifd"):
        lines.append(f"multifd-channels  {p['multifd-channels']}")
    if "cpu-throttle-initial" in p and vm.capabilities.get("auto-converge"):
        lines.append(f"cpu-throttle      {p.get('cpu-throttle-initial')}%+{p.get('cpu-throttle-increment')}%")
    if "vcpu-dirty-limit" in p and vm.capabilities.get("dirty-limit"):
        vcpus = f" x {vm.vcpus} vCPUs" if vm.vcpus else ""
        lines.append(f"vcpu-dirty-limit  {p['vcpu-dirty-limit']} MB/s{vcpus}")
    lines.append("capabilities on: " + (", ".join(caps) if caps else "none"))
    return lines


class DashboardScreen(VMActions, Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="migtui.back"),
        Binding("a", "apply_advice", "Advice", id="migtui.advice"),
        *VMActions.ACTION_BINDINGS,
    ]

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self._follow_state: tuple[str, str] | None = None  # the follow-up last logged

    def current_key(self) -> str | None:
        return self.key

    def compose(self) -> ComposeResult:
        with Vertical(id="dash-top"):
            yield Static(id="dash-header")
            yield Static(id="dash-progress")
        with Horizontal(id="dash-body"):
            with Grid(id="graphs"):
                yield ThroughputGraph(id="graph-throughput", classes="graph")
                yield RamGraph(id="graph-ram", classes="graph")
                yield DiskGraph(id="graph-disk", classes="graph")
                yield XbzrleGraph(id="graph-xbzrle", classes="graph")
            with Vertical(id="dash-side"):
                yield Static(id="params", classes="panel")
                yield OptionList(id="advice", classes="panel")
                yield EventLog(_log_line, id="log", classes="panel")
        yield Static(id="params-strip")
        yield MigtuiFooter()

    @property
    def handle(self):
        return self.app.handle(self.key)

    def on_mount(self) -> None:
        self.query_one("#params", Static).border_title = "parameters"
        self.query_one("#log", EventLog).border_title = "events"
        self.query_one("#advice", OptionList).border_title = "advice (a applies)"
        self._apply_colors()
        self.update_all()

    def on_resize(self) -> None:
        self.set_class(self.size.width < NARROW, "narrow")

    def _apply_colors(self) -> None:
        colors = self.app.plot_colors()
        for graph in self.query(".graph"):
            graph.set_colors(colors)

    def on_screen_resume(self) -> None:
        self._apply_colors()
        self.update_all()

    def _follow_up(self, vm: VMState) -> None:
        """Whether applied advice worked: on the advice box, and in the log when it changes."""
        fu = vm.follow_up()
        box = self.query_one("#advice", OptionList)
        box.border_subtitle = fu.text if fu is not None else ""
        autopilot = getattr(self.app, "autopilot", None)  # a replay has none
        if autopilot is not None and autopilot.state(self.key) is not None:
            box.border_subtitle = f"autopilot {autopilot.state(self.key)} (A: hand back)" \
                if autopilot.engaged(self.key) else f"autopilot {autopilot.state(self.key)}"
        state = None if fu is None else (fu.state, fu.text if fu.state == "did-not-work" else "")
        if state != self._follow_state:
            self._follow_state = state
            if fu is not None and fu.state != "watching":
                self.app.log_for(self.key, "action", "advice", fu.text)
                if fu.state in ("did-not-work", "worked"):
                    # Seen at any size (the advice box and the log are hidden on narrow terminals).
                    self.app.notify(fu.text, severity="warning" if fu.state == "did-not-work" else "information",
                                    timeout=10)

    def _show_advice(self, vm: VMState) -> None:
        """Concrete actions from the live figures; rebuilt only when they change."""
        self._follow_up(vm)
        advice = vm.advice() if vm.in_flight else []
        box = self.query_one("#advice", OptionList)
        box.display = bool(advice) or vm.tracker.advice_taken is not None
        prompts = [_advice_prompt(a) for a in advice]
        if prompts == getattr(self, "_advice_prompts", None):
            return
        self._advice_prompts = prompts
        self._advice = advice
        highlighted = box.highlighted
        box.clear_options()
        box.add_options([Option(p) for p in prompts])
        if prompts:
            box.highlighted = min(highlighted or 0, len(prompts) - 1)

    def action_apply_advice(self) -> None:
        from migtui.ui.dialogs import ConfirmDialog

        session = self._session("advice")
        if session is None:
            return
        advice = getattr(self, "_advice", [])
        if not advice:
            self.app.notify("no advice: the migration is doing fine, or there is none running", severity="warning")
            return
        box = self.query_one("#advice", OptionList)
        chosen = advice[box.highlighted or 0] if box.display else advice[0]
        if not chosen.now:
            why = "this needs a new migration (capabilities are fixed while one runs)" if chosen.needs_restart \
                else "nothing to send"
            self.app.notify(f"{chosen.text}: {why}", severity="warning", timeout=8)
            return
        if chosen.postcopy_now:
            self.action_postcopy()  # the post-copy key's own checks and warning
            return
        try:
            # The same path as the keys: the backend checks the change against this VM and says
            # what it will send (each QEMU version's own commands).
            shown = "\n".join(session.check_parameters(chosen.change))
        except BackendError as error:  # refused: one line, nothing sent
            self.app.notify(f"{chosen.text}: {error}", severity="error", timeout=8)
            return

        def answer(ok: bool | None) -> None:
            if ok:
                self.app.run_control(session.key, chosen.kind, lambda: session.set_parameters(chosen.change),
                                     done=chosen.text)

        self.app.push_screen(ConfirmDialog(f"{chosen.text} on {session.vm.name}?",
                                           f"migtui will send exactly:\n{shown}"), answer)

    @on(FleetChanged)
    def _fleet_changed(self, message: FleetChanged) -> None:
        if self.key in message.keys:
            self.update_all()

    @keep_running
    def update_all(self) -> None:
        handle = self.handle
        if handle is None:
            return
        vm = handle.vm
        first, second = header_lines(vm)
        autopilot = getattr(self.app, "autopilot", None)  # a replay has none
        if autopilot is not None and autopilot.engaged(self.key):
            # Seen at any size (the advice box, which also says it, is hidden on small terminals).
            second += f"\nAUTOPILOT {autopilot.state(self.key)} (A hands it back)"
        style = category_style(status_category(vm), self.app.theme_variables)
        self.query_one("#dash-header", Static).update(Text(first, style=f"bold {style}".strip()))
        self.query_one("#dash-progress", Static).update(Text(second, style=style))
        params = parameter_lines(vm)
        self.query_one("#params", Static).update("\n".join(params))
        self.query_one("#params-strip", Static).update(" · ".join(line.split(None, 1)[-1] if i < 3 else line
                                                                  for i, line in enumerate(params)))
        history = vm.tracker.history
        points = list(history.points)
        passes = list(history.passes)
        bandwidth = vm.parameters.get("max-bandwidth")
        # Disk and XBZRLE graphs take room only when there is something to draw.
        disk = self.query_one("#graph-disk")
        disk.display = any(p.disk_transferred is not None for p in points)
        xbzrle = self.query_one("#graph-xbzrle")
        xbzrle.display = bool(vm.capabilities.get("xbzrle")) or any(
            p.xbzrle_cache_miss_rate is not None or p.xbzrle_pages is not None for p in points)
        shown = 2 + disk.display + xbzrle.display
        self.query_one("#graph-throughput").set_class(shown % 2 == 1, "wide")  # no empty cell
        for graph in self.query(".graph"):
            graph.set_data(points, passes, bandwidth)
        self._show_advice(vm)
        self.query_one("#log", EventLog).show(vm.log)


def _advice_prompt(advice) -> str:
    how = "next migration" if advice.needs_restart else "now"
    return f"{advice.text} ({how})"


def _log_line(record) -> Text:
    import time

    stamp = time.strftime("%H:%M:%S", time.localtime(record.time))
    style = {"error": "bold red", "action": "bold"}.get(record.kind, "")
    return Text.assemble((stamp + " ", "dim"), (f"{record.name} ", style), record.detail)
