"""Dialogs: confirmations, one-value tuning, capabilities and the start of a migration.

Validation is inline: every field is parsed as it is typed by the same
functions the command line uses, and a dialog cannot be submitted while any
field is wrong. A bad value never leaves the dialog.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from migtui.model.parameters import check_uri, check_xbzrle_cache_size, parse_dirty_limit
from migtui.model.units import InputError, parse_count, parse_rate, parse_size, parse_time_ms
from migtui.model.requests import MigrationOptions
from migtui.backend.api import Destination, VMHandle

__all__ = [
    "ConfirmDialog",
    "TypedConfirmDialog",
    "ValueDialog",
    "CapabilitiesDialog",
    "StartMigrationDialog",
    "MigrationRequest",
]


class ConfirmDialog(ModalScreen[bool]):
    """y confirms, n or Escape declines."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Back"),
    ]

    def __init__(self, question: str, detail: str = "", danger: bool = False) -> None:
        super().__init__(classes="dialog")
        self.question = question
        self.detail = detail
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box" + (" danger" if self.danger else "")):
            yield Label(self.question, classes="dialog-title")
            if self.detail:
                yield Static(self.detail, classes="dialog-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error" if self.danger else "primary")
                yield Button("No (n)", id="no")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class TypedConfirmDialog(ModalScreen[bool]):
    """For what a slip of one key must not do: the operator types a word."""

    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, question: str, command: str, word: str = "run") -> None:
        super().__init__(classes="dialog")
        self.question = question
        self.command = command
        self.word = word

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box danger"):
            yield Label(self.question, classes="dialog-title")
            yield Static(self.command, classes="dialog-command", markup=False)
            yield Label(f"Type {self.word} and press Enter to go ahead, Esc to go back.")
            yield Input(id="typed", placeholder=self.word)
            yield Label("", id="typed-error", classes="field-error")

    def on_mount(self) -> None:
        self.query_one("#typed", Input).focus()

    @on(Input.Submitted, "#typed")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.word:
            self.dismiss(True)
        else:
            self.query_one("#typed-error", Label).update(f"type exactly {self.word!r}, or Esc to go back")

    def action_cancel(self) -> None:
        self.dismiss(False)


class ValueDialog(ModalScreen[Any]):
    """One value, parsed as typed; Enter applies only a valid value."""

    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, title: str, label: str, current: str, placeholder: str, parse: Callable[[str], Any]) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.label = label
        self.current = current
        self.placeholder = placeholder
        self.parse = parse

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Label(f"{self.label}; now {self.current}")
            yield Input(id="value", placeholder=self.placeholder, compact=True)
            yield Label("", id="value-error", classes="field-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Apply (Enter)", id="apply", variant="primary", disabled=True)
                yield Button("Back (Esc)", id="back")

    def on_mount(self) -> None:
        self.query_one("#value", Input).focus()

    def _check(self, text: str) -> tuple[Any, str | None]:
        try:
            return self.parse(text), None
        except InputError as err:
            return None, str(err)

    @on(Input.Changed, "#value")
    def _changed(self, event: Input.Changed) -> None:
        _, error = self._check(event.value)
        self.query_one("#value-error", Label).update(error or "" if event.value else "")
        self.query_one("#apply", Button).disabled = error is not None

    @on(Input.Submitted, "#value")
    def _submitted(self, event: Input.Submitted) -> None:
        self._apply()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self._apply()
        else:
            self.dismiss(None)

    def _apply(self) -> None:
        value, error = self._check(self.query_one("#value", Input).value)
        if error is not None:
            self.query_one("#value-error", Label).update(error)
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class CapabilitiesDialog(ModalScreen[dict[str, bool]]):
    """Every capability the VM's QEMU has; greyed out, with the reason, during a migration."""

    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, session: VMHandle) -> None:
        super().__init__(classes="dialog")
        self.session = session
        self.initial = dict(session.vm.capabilities)

    def compose(self) -> ComposeResult:
        vm = self.session.vm
        at_start = self.session.features.capabilities_at_start
        locked = vm.in_flight and not at_start
        with Vertical(classes="dialog-box wide"):
            yield Label(f"Capabilities of {vm.name}", classes="dialog-title")
            if at_start:
                yield Label("libvirt takes these as flags when a migration starts: they apply to the next "
                            "migration migtui starts, not to one running.", id="at-start")
            if locked:
                yield Label(
                    f"Locked: a migration is running (status {vm.migration_status}); QEMU refuses capability "
                    "changes until it ends.", classes="field-error", id="locked-reason")
            with VerticalScroll(classes="caps"):
                for name, state in sorted(self.initial.items()):
                    yield Checkbox(name, state, id=f"cap-{name}", disabled=locked)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Apply", id="apply", variant="primary", disabled=locked)
                yield Button("Back (Esc)", id="back")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "apply":
            self.dismiss({})
            return
        changes = {}
        for name, state in self.initial.items():
            box = self.query_one(f"#cap-{name}", Checkbox)
            if box.value != state:
                changes[name] = box.value
        self.dismiss(changes)

    def action_cancel(self) -> None:
        self.dismiss({})


@dataclass(frozen=True)
class MigrationRequest:
    options: MigrationOptions
    destination: str | None  # a VM's key, or None with a URI
    uri: str | None
    autopilot: str | None = None  # a policy's name: the migration goes on autopilot under it
    # Run the pre-flight first (its figures time pass 1); False when Check just ran it on these options.
    preflight: bool = True


URI_CHOICE = "__uri__"
CHECK_FRESH_S = 60.0  # a guest's dirty rate and zero pages change within minutes: measure again after


class StartMigrationDialog(ModalScreen[MigrationRequest | None]):
    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, source: VMHandle, destinations: list[Destination]) -> None:
        super().__init__(classes="dialog")
        self.source = source
        # Backend.destinations(): VMs waiting for an incoming migration, or libvirt hosts; the first by default.
        self.destinations = destinations
        # The options Check measured for, and when: Start need not measure them again soon after.
        self._checked: tuple[MigrationOptions, float] | None = None

    def compose(self) -> ComposeResult:
        features = self.source.features
        caps = self.source.vm.capabilities
        params = self.source.vm.parameters
        # Which QEMU each end runs: an older destination may lack the source's machine type.
        options = [(d.label, d.key) for d in self.destinations]
        if features.migrate_to_uri:
            options.append(("a URI…", URI_CHOICE))
        default = self.destinations[0].key if self.destinations else URI_CHOICE if features.migrate_to_uri \
            else Select.BLANK
        with Vertical(classes="dialog-box wide"):
            yield Label(f"Migrate {self.source.vm.name} (QEMU {self.source.vm.qemu_version or '?'})",
                        classes="dialog-title")
            with Grid(classes="form"):
                yield Label("destination")
                yield Select(options, value=default, allow_blank=not options, id="destination", compact=True,
                             prompt="no other host is connected")
                if features.migrate_to_uri:
                    yield Label("URI")
                    yield Input(compact=True, placeholder="tcp:HOST:PORT, unix:PATH, exec:CMD or fd:NAME", id="uri",
                                disabled=default != URI_CHOICE)
                yield Label("bandwidth")
                yield Input(compact=True, placeholder=f"now {_rate(params.get('max-bandwidth'))}; e.g. 1G", id="bandwidth")
                yield Label("downtime limit")
                yield Input(compact=True, placeholder=f"now {_ms(params.get('downtime-limit'))}; e.g. 300ms or 2s", id="downtime")
                yield Label("XBZRLE")
                yield Checkbox("compress re-sent pages", caps.get("xbzrle", False), id="xbzrle",
                               disabled="xbzrle" not in caps)
                yield Label("XBZRLE cache")
                yield Input(compact=True, placeholder="e.g. 256M (a power of two)", id="xbzrle-cache")
                yield Label("auto-converge")
                yield Checkbox("throttle the guest if it does not converge", caps.get("auto-converge", False),
                               id="auto-converge", disabled="auto-converge" not in caps)
                yield Label("post-copy")
                yield Checkbox("allow a switch to post-copy (p)", caps.get("postcopy-ram", False), id="postcopy",
                               disabled="postcopy-ram" not in caps)
                yield Label("multifd")
                yield Input(compact=True, placeholder="channels, e.g. 4; empty = off", id="multifd",
                            disabled="multifd" not in caps)
                yield Label("block")
                yield Checkbox("copy the disks too (blk)", False, id="block",
                               disabled=not features.block_migration)
                if "dirty-limit" in caps:  # QEMU 8.1+; an older one (or libvirt) has no such row
                    yield Label("dirty limit")
                    no_kvm = self.source.vm.kvm is False
                    hint = (f"on at {params.get('vcpu-dirty-limit')} MB/s per vCPU; e.g. 50" if caps["dirty-limit"]
                            else "MB/s per vCPU, e.g. 50; empty = off (KVM with dirty-ring-size)")
                    yield Input(compact=True, id="dirty-limit", disabled=no_kvm,
                                placeholder="needs KVM with dirty-ring-size: this VM runs without KVM" if no_kvm
                                else hint)
                if features.persist:
                    yield Label("persist")
                    yield Checkbox("define it at the destination, undefine it here", False, id="persist")
                autopilot = getattr(self.app, "autopilot", None)
                if autopilot is not None:  # off with read-only controls
                    yield Label("autopilot")
                    yield Select([("off: the migration is yours", "off")]
                                 + [(autopilot.policies[n].summary(), n) for n in sorted(autopilot.policies)],
                                 value="off", allow_blank=False, id="autopilot", compact=True)
            yield Label("", id="start-error", classes="field-error")
            yield Label("Start measures the guest for a second first (the pre-flight)" if features.preflight else "",
                        id="preflight")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start (Enter)", id="start", variant="primary")
                yield Button("Check", id="check", tooltip="pre-flight: measure the dirty rate, predict convergence",
                             disabled=not features.preflight)
                yield Button("Back (Esc)", id="back")

    def on_mount(self) -> None:
        self.query_one("#start", Button).focus()
        self._validate()

    def _value(self, field: str) -> str:
        return self.query_one(f"#{field}", Input).value.strip()

    def _flag(self, field: str) -> bool:
        return self.query_one(f"#{field}", Checkbox).value

    def build(self) -> MigrationRequest:
        """The request, or InputError naming the first bad field."""
        destination = self.query_one("#destination", Select).value
        uri = None
        if destination == Select.BLANK:
            raise InputError("destination: no other host is connected to migrate to")
        if destination == URI_CHOICE:
            uri = self._value("uri")
            check_uri(uri)
            destination = None
        cache = self._value("xbzrle-cache")
        multifd = self._value("multifd")
        limit = next((box.value.strip() for box in self.query("#dirty-limit").results(Input) if not box.disabled), "")
        if limit and self._flag("auto-converge"):
            raise InputError("dirty limit: QEMU refuses it with auto-converge; choose one of them")
        persist = self.source.features.persist and self._flag("persist")  # libvirt only: one box for both flags
        options = MigrationOptions(
            bandwidth=parse_rate(self._value("bandwidth"), "bandwidth") if self._value("bandwidth") else None,
            downtime_ms=parse_time_ms(self._value("downtime"), "downtime") if self._value("downtime") else None,
            xbzrle=self._flag("xbzrle"),
            xbzrle_cache=check_xbzrle_cache_size(parse_size(cache, "XBZRLE cache"), "XBZRLE cache") if cache else None,
            auto_converge=self._flag("auto-converge"),
            postcopy=self._flag("postcopy"),
            multifd=parse_count(multifd, "multifd", 1, 255) if multifd else None,
            block=self._flag("block"),
            dirty_limit=parse_dirty_limit(limit, "dirty limit") if limit else None,
            persist_destination=persist,
            undefine_source=persist,
        )
        policy = next((str(box.value) for box in self.query("#autopilot").results(Select)), "off")
        return MigrationRequest(options, str(destination) if destination else None, uri,
                                None if policy == "off" else policy, preflight=not self._fresh_check(options))

    def _fresh_check(self, options: MigrationOptions) -> bool:
        """Check measured these options within CHECK_FRESH_S: the guest's figures still hold."""
        return self._checked is not None and self._checked[0] == options \
            and time.monotonic() - self._checked[1] < CHECK_FRESH_S

    def _validate(self) -> MigrationRequest | None:
        error = self.query_one("#start-error", Label)
        try:
            request = self.build()
        except InputError as err:
            error.update(str(err))
            self.query_one("#start", Button).disabled = True
            return None
        error.update("")
        self.query_one("#start", Button).disabled = False
        return request

    @on(Select.Changed, "#destination")
    def _destination_changed(self, event: Select.Changed) -> None:
        for box in self.query("#uri").results(Input):
            box.disabled = event.value != URI_CHOICE
        self._validate()

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        self._validate()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._start()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self._start()
        elif event.button.id == "check":
            self._check()
        else:
            self.dismiss(None)

    def _check(self) -> None:
        """Pre-flight: measure the guest's dirty rate (calc-dirty-rate, 1 s) and predict; migrates nothing."""
        request = self._validate()
        if request is None:
            return
        label = self.query_one("#preflight", Label)
        label.update("measuring the guest's dirty rate for 1s…")
        source = self.source

        async def work() -> None:
            from migtui.backend.errors import BackendError

            try:
                prediction = await source.preflight(request.options)
                label.update(("✓ " if prediction.converges else "✗ ") + prediction.sentence)
                self._checked = (request.options, time.monotonic())
            except (InputError, BackendError, OSError) as err:
                label.update(f"pre-flight failed: {err}")

        self.run_worker(work(), exclusive=True, group="preflight", exit_on_error=False)

    def _start(self) -> None:
        request = self._validate()
        if request is not None:
            self.dismiss(request)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _rate(value: Any) -> str:
    from migtui.model.units import format_rate

    return format_rate(value) if isinstance(value, (int, float)) else "?"


def _ms(value: Any) -> str:
    from migtui.model.units import format_ms

    return format_ms(value) if isinstance(value, (int, float)) else "?"
