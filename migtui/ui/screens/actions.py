"""The keys that act on a VM, shared by the fleet screen and the dashboard.

Each action checks what it can before a dialog opens (connected? migrating?),
asks for confirmation where a mistake costs a VM, and then runs in a worker.
A control is one path: key -> dialog -> a checked request (ParamChange,
MigrationOptions) -> the VM's handle (migtui.backend.api) -> its backend.
"""

from __future__ import annotations

from textual.binding import Binding

from migtui.backend.api import VMHandle
from migtui.backend.errors import BackendError
from migtui.model.parameters import check_xbzrle_cache_size
from migtui.model.requests import ParamChange
from migtui.model.units import InputError, format_bytes, format_ms, format_rate, parse_rate, parse_size, parse_time_ms
from migtui.ui.controls import CONTROL_ACTIONS


class VMActions:
    """Mixin for screens that have a current VM (`current_key()`)."""

    ACTION_BINDINGS = [
        Binding("m", "start_migration", "Migrate", id="migtui.migrate"),
        Binding("c", "cancel_migration", "Cancel", id="migtui.cancel"),
        Binding("b", "set_bandwidth", "Bandwidth", id="migtui.bandwidth"),
        Binding("d", "set_downtime", "Downtime", id="migtui.downtime"),
        Binding("x", "set_xbzrle_cache", "XBZRLE", id="migtui.xbzrle"),
        Binding("k", "capabilities", "Caps", id="migtui.capabilities"),
        Binding("p", "postcopy", "Post-copy", id="migtui.postcopy"),
        Binding("A", "autopilot", "Autopilot", show=False, id="migtui.autopilot"),  # in help and ctrl+p: the footer is full at 80 columns
        # Off the footer: the emergency line says the key when it applies.
        Binding("R", "recover_postcopy", "Recover", show=False, id="migtui.recover"),
        Binding("r", "poll_now", "Poll", id="migtui.poll"),
        Binding("s", "app.screenshot", "Shot", show=False, id="migtui.screenshot"),
        Binding("t", "app.next_theme", "Theme", show=False, id="migtui.theme"),
    ]

    def current_key(self) -> str | None:
        return self.selected_key()  # type: ignore[attr-defined]

    def _session(self, what: str, need_connection: bool = True) -> VMHandle | None:
        """The selected VM's handle, if a control can reach it; else say why and None."""
        app = self.app  # type: ignore[attr-defined]
        if app.read_only:
            app.notify("read-only: controls are off", severity="warning")
            return None
        session = app.handle(self.current_key())
        if session is None:
            app.notify(f"{what}: no VM selected", severity="warning")
            return None
        if need_connection and not session.connected:
            app.notify(f"{what}: {session.vm.name} is {session.vm.connection}: {session.vm.reason or 'connecting'}",
                       severity="error")
            return None
        return session

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in CONTROL_ACTIONS and self.app.read_only:  # type: ignore[attr-defined]
            return False  # hidden from the footer and unreachable by key
        return True

    # ---- start and stop ----------------------------------------------------

    def action_start_migration(self) -> None:
        from migtui.ui.dialogs import StartMigrationDialog, TypedConfirmDialog

        session = self._session("migrate")
        if session is None:
            return
        app = self.app  # type: ignore[attr-defined]
        if session.vm.in_flight:
            app.notify(f"{session.vm.name} is already migrating ({session.vm.migration_status}); cancel it first",
                       severity="error")
            return

        destinations = app.backend.destinations(session)

        def go(request) -> None:
            if request is None:
                return
            destination = next((d for d in destinations if d.key == request.destination), None)

            if request.autopilot is not None and getattr(app, "autopilot", None) is not None:
                app.autopilot.engage(session.key, request.autopilot)  # before the start: it sees the first pass

            async def work() -> None:
                said = None
                if request.preflight and session.features.preflight:
                    app.notify("pre-flight: measuring the guest for a second, then the start", title=session.key,
                               timeout=2)
                    said = await session.preflight_before_start(request.options)
                if isinstance(said, str):
                    app.log_for(session.key, "error", "pre-flight", f"skipped: {said}")
                elif said is not None:
                    app.log_for(session.key, "action", "pre-flight", said.sentence)
                uri = await session.migrate(request.options, destination=destination, uri=request.uri)
                app.log_for(session.key, "action", "migrate", f"to {uri}")
                if said is not None and not isinstance(said, str) and not said.converges:
                    # Once the start is taken (a refused start is its refusal alone): the start goes
                    # ahead, as the operator asked, and the verdict will say the same within passes.
                    app.notify(f"pre-flight: {said.sentence}", title=session.key, severity="warning", timeout=10)

            where = destination.label.split("  (")[0] if destination is not None else request.uri
            app.run_control(session.key, "migrate", work, done=f"migration started to {where}")

        def confirmed_exec(request):
            def after(ok: bool | None) -> None:
                go(request if ok else None)
            return after

        def chosen(request) -> None:
            if request is not None and request.uri and request.uri.startswith("exec:"):
                app.push_screen(
                    TypedConfirmDialog(
                        f"QEMU on {session.vm.name} will run this command as its migration stream:",
                        request.uri[len("exec:"):],
                        word="run",
                    ),
                    confirmed_exec(request),
                )
            else:
                go(request)

        app.push_screen(StartMigrationDialog(session, destinations), chosen)

    def action_cancel_migration(self) -> None:
        from migtui.ui.dialogs import ConfirmDialog

        session = self._session("cancel")
        if session is None:
            return
        app = self.app  # type: ignore[attr-defined]
        if not session.vm.in_flight:
            app.notify(f"{session.vm.name} has no migration to cancel (status {session.vm.migration_status})",
                       severity="warning")
            return

        def answer(ok: bool | None) -> None:
            if ok:
                app.operator_takes_over(session.key, "cancel")
                app.run_control(session.key, "cancel", session.cancel, done="cancel sent")

        app.push_screen(
            ConfirmDialog(f"Cancel the migration of {session.vm.name}?",
                          "The source keeps running; the destination is left waiting or exits."),
            answer,
        )

    def action_postcopy(self) -> None:
        from migtui.ui.dialogs import ConfirmDialog

        session = self._session("post-copy")
        if session is None:
            return
        app = self.app  # type: ignore[attr-defined]
        if not session.vm.capabilities.get("postcopy-ram"):
            app.notify("post-copy needs postcopy-ram on both sides before the migration starts "
                       "(tick post-copy in the start dialog)", severity="error")
            return
        if session.vm.migration_status != "active":
            app.notify(f"post-copy can only start during an active migration (status {session.vm.migration_status})",
                       severity="error")
            return

        def answer(ok: bool | None) -> None:
            if ok:
                app.operator_takes_over(session.key, "post-copy")
                app.run_control(session.key, "post-copy", session.start_postcopy, done="switched to post-copy")

        app.push_screen(
            ConfirmDialog(
                f"Switch {session.vm.name} to post-copy now?",
                "The guest runs on the destination from now on. If the migration fails during post-copy, "
                "the VM is lost: neither side has all of its memory.",
                danger=True,
            ),
            answer,
        )

    def action_recover_postcopy(self) -> None:
        """The stream broke in post-copy: listen anew on the destination, resume the source."""
        from migtui.ui.dialogs import ConfirmDialog

        session = self._session("recover")
        if session is None:
            return
        app = self.app  # type: ignore[attr-defined]
        if session.vm.migration_status != "postcopy-paused":
            app.notify(f"{session.vm.name} is not paused in post-copy (status {session.vm.migration_status}): "
                       "nothing to recover", severity="warning")
            return
        # A libvirt domain is both ends at once; two QMP VMs are one each.
        pair = (session, session) if session.features.recovers_alone else _recovery_pair(session, list(app.backend))
        if isinstance(pair, str):
            app.notify(pair, severity="error")
            return
        source, destination = pair
        try:
            steps = source.check_recovery(destination)
        except (BackendError, InputError) as error:  # refused: one line, nothing sent
            app.notify(str(error), severity="error")
            return
        qmp = "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))
        to = "its destination" if destination is source else destination.vm.name

        def answer(ok: bool | None) -> None:
            if ok:
                app.run_control(source.key, "recover", lambda: source.recover_postcopy(destination),
                                done=f"recovery sent: {source.vm.name} resumes to {to}")

        app.push_screen(
            ConfirmDialog(
                f"Recover the post-copy migration of {source.vm.name} to {to}?",
                "The stream broke: the VM's memory is split across both hosts. migtui will send:\n" + qmp,
                danger=True,
            ),
            answer,
        )

    # ---- tuning --------------------------------------------------------------

    def _tune(self, what: str, name: str, label: str, placeholder: str, parse, show) -> None:
        """One parameter, in a dialog that parses as typed; QEMU's name and units go out."""
        from migtui.ui.dialogs import ValueDialog

        session = self._session(what)
        if session is None:
            return
        app = self.app  # type: ignore[attr-defined]

        def answer(value) -> None:
            if value is not None:
                app.operator_takes_over(session.key, f"{name} {show(value)}")
                app.run_control(session.key, what, lambda: session.set_parameters(ParamChange({name: value})),
                                done=f"{name} set")

        current = show(session.vm.parameters.get(name))
        app.push_screen(ValueDialog(f"{what} for {session.vm.name}", label, current, placeholder, parse), answer)

    def action_set_bandwidth(self) -> None:
        self._tune("bandwidth", "max-bandwidth", "max-bandwidth (bytes/s, binary: 1G = 1 GiB/s)",
                   "e.g. 1G or 500M/s", lambda text: parse_rate(text, "bandwidth"), format_rate)

    def action_set_downtime(self) -> None:
        self._tune("downtime", "downtime-limit", "downtime-limit (the longest pause the guest may see)",
                   "e.g. 300ms or 2s", lambda text: parse_time_ms(text, "downtime"), format_ms)

    def action_set_xbzrle_cache(self) -> None:
        self._tune("XBZRLE cache", "xbzrle-cache-size", "xbzrle-cache-size (a power of two, at least 4K)",
                   "e.g. 256M", lambda text: check_xbzrle_cache_size(parse_size(text, "xbzrle-cache"), "xbzrle-cache"),
                   format_bytes)

    def action_capabilities(self) -> None:
        from migtui.ui.dialogs import CapabilitiesDialog

        session = self._session("capabilities")
        if session is None:
            return
        app = self.app  # type: ignore[attr-defined]

        def answer(changes) -> None:
            if changes:
                app.run_control(session.key, "capabilities", lambda: session.set_capabilities(changes),
                               done="capabilities set")

        app.push_screen(CapabilitiesDialog(session), answer)

    def action_autopilot(self) -> None:
        """Put the VM's migration (running or the next one) on autopilot under a policy, or hand it back."""
        from migtui.ui.dialogs import ValueDialog

        session = self._session("autopilot", need_connection=False)
        if session is None:
            return
        app = self.app  # type: ignore[attr-defined]
        autopilot = getattr(app, "autopilot", None)
        if autopilot is None:
            app.notify("autopilot: off with read-only controls", severity="warning")
            return
        if autopilot.engaged(session.key):
            autopilot.release(session.key)
            app.notify(f"{session.vm.name}: autopilot off, the migration is yours", timeout=8)
            return
        names = sorted(autopilot.policies)

        def parse(text: str) -> str:
            name = text.strip() or "cautious"
            if name not in autopilot.policies:
                raise InputError(f"no policy {name!r}; there are: {', '.join(names)}")
            return name

        def answer(name) -> None:
            if name is not None:
                pilot = autopilot.engage(session.key, name)
                app.notify(f"{session.vm.name}: autopilot on: {pilot.policy.summary()}", timeout=10)

        shown = "; ".join(autopilot.policies[n].summary() for n in names)
        app.push_screen(ValueDialog(f"autopilot for {session.vm.name}", f"policy ({shown})", "off",
                                    f"{' or '.join(names)}; Enter: cautious", parse), answer)

    def action_drain_host(self) -> None:
        """Empty the selected VM's libvirt host: every running domain to the other hosts, in a queue."""
        from migtui.drain import Drain
        from migtui.model.drain import PER_SOURCE, TOTAL
        from migtui.ui.dialogs import ValueDialog
        from migtui.ui.screens.drain import DrainScreen

        session = self._session("drain", need_connection=False)
        if session is None:
            return
        app = self.app  # type: ignore[attr-defined]
        hosts = app.backend.hosts()
        if not hosts:
            app.notify("drain empties a libvirt host; these VMs have none (QMP: migtui drain A,B --to C,D)",
                       severity="warning")
            return
        home = session.vm.endpoint.host
        keys = [h.key for h in app.backend if h.vm.endpoint.host == home and h.vm.run_state == "running"]
        others = [h.name for h in hosts if h.name != home and h.connected]
        if not keys or not others:
            app.notify(f"drain {home}: " + ("no running domain on it" if not keys else "no other host is connected"),
                       severity="warning")
            return
        policies = sorted(app.autopilot.policies) if getattr(app, "autopilot", None) is not None else []

        def parse(text: str) -> str:
            name = text.strip() or "none"
            if name != "none" and name not in policies:
                raise InputError(f"no policy {name!r}; give {', '.join(policies)} or none")
            return name

        def answer(policy) -> None:
            if policy is None:
                return
            drain = Drain(app.backend, keys, allowed=lambda d: d.key != f"host:{home}",
                          autopilot=app.autopilot, policy=None if policy == "none" else policy,
                          on_change=lambda item: app.log_for(item.key, "action", "drain",
                                                             f"{item.state}{' to ' + item.destination.split(':', 1)[-1] if item.destination else ''}"
                                                             f"{': ' + item.reason if item.reason else ''}"))

            screen = DrainScreen(drain, f"drain of {home}")

            async def run() -> None:
                line = await drain.run()
                if screen.is_mounted:
                    screen.refresh_view()  # its summary now, not at the next coalesced fleet update
                app.notify(line, title=f"drain of {home} ended", timeout=20)

            app.run_worker(run(), exclusive=False)
            app.push_screen(screen)

        names = ", ".join(app.backend.get(k).vm.name for k in keys)
        plan = (f"{len(keys)} running: {names}; to {', '.join(others)}, {PER_SOURCE} at once from it ({TOTAL} in all), "
                f"smallest RAM first. The autopilot policy for each (or none)")
        app.push_screen(ValueDialog(f"Drain {home}?", plan, "none",
                                    f"{', '.join(policies) or 'no policy'}; Enter: none (no autopilot)", parse), answer)

    def action_poll_now(self) -> None:
        session = self.app.handle(self.current_key())  # type: ignore[attr-defined]
        if session is not None:
            session.poll_now()


def _recovery_pair(session: VMHandle, fleet: list[VMHandle]) -> tuple[VMHandle, VMHandle] | str:
    """(source, destination) of a paused post-copy, from one of its ends, or why not.

    The other end is the one other VM paused in post-copy; the destination is the end whose
    guest runs (post-copy moved it there), the source the stopped one."""
    others = [s for s in fleet if s is not session and s.connected and s.vm.migration_status == "postcopy-paused"]
    if not others:
        return (f"{session.vm.name} is paused in post-copy, but no other VM in the fleet is: "
                "add its other end (migtui VM_A VM_B) to recover it here")
    if len(others) > 1:
        return (f"{len(others) + 1} VMs are paused in post-copy; migtui cannot tell which is "
                f"{session.vm.name}'s other end: recover with a fleet of the two")
    other = others[0]
    if session.vm.run_state == "running" and other.vm.run_state != "running":
        return other, session
    if other.vm.run_state == "running" and session.vm.run_state != "running":
        return session, other
    return (f"cannot tell which of {session.vm.name} and {other.vm.name} is the destination "
            f"(run-states {session.vm.run_state} and {other.vm.run_state})")
