"""The autopilot engine: migtui.model.autopilot's decisions, sent through the backend interface.

It listens to a backend's messages like the recorder does, and acts only through VMHandle's
controls, so it works the same on QMP and libvirt. Every step goes to the VM's event log
with its why, to the audit log, and to the recording (a MIGTUI_AUTOPILOT event). The
operator's own change wins: a parameter it set that changes under it (the console, virsh,
another migtui) makes it let go of that migration. Never imports Textual.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Mapping

from migtui.backend.api import Backend, VMHandle
from migtui.backend.audit import AuditLog
from migtui.backend.errors import BackendError, Refused
from migtui.backend.messages import BackendMessage, VMEvent, VMUpdated
from migtui.model.autopilot import BUILTIN_POLICIES, Decision, Pilot, Policy, decide
from migtui.model.units import InputError

__all__ = ["Autopilot", "AUTOPILOT_EVENT"]

AUTOPILOT_EVENT = "MIGTUI_AUTOPILOT"


class Autopilot:
    """Migrations on autopilot, by VM key; one step at a time per VM."""

    def __init__(self, backend: Backend, policies: Mapping[str, Policy] | None = None,
                 audit: AuditLog | None = None, on_change: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self.policies: dict[str, Policy] = {**BUILTIN_POLICIES, **(policies or {})}
        self.audit = audit or AuditLog(None)
        self.pilots: dict[str, Pilot] = {}
        self.on_change = on_change  # called with the VM's key when its autopilot's state line changes
        self._busy: set[str] = set()
        self._unsubscribe = backend.subscribe(self._on_message)

    def close(self) -> None:
        self._unsubscribe()

    # ---- the operator's side -------------------------------------------------------------

    def engage(self, key: str, policy: str) -> Pilot:
        """Put this VM's migrations on autopilot under the named policy. InputError: why not."""
        if self.backend.read_only:
            raise Refused(f"no autopilot: {self.backend.read_only}")
        handle = self.backend.get(key)
        if handle is None:
            raise InputError(f"no VM named {key!r}")
        chosen = self.policies.get(policy)
        if chosen is None:
            raise InputError(f"no autopilot policy {policy!r}; there are: {', '.join(sorted(self.policies))}")
        pilot = self.pilots[key] = Pilot(chosen)
        self._say(handle, "engaged", chosen.summary(), pilot)
        self._changed(key)
        return pilot

    def release(self, key: str, why: str = "handed back to the operator") -> None:
        pilot = self.pilots.get(key)
        if pilot is None or not pilot.engaged:
            return
        pilot.release(why)
        handle = self.backend.get(key)
        if handle is not None:
            self._say(handle, "released", why, pilot)
        self._changed(key)

    def state(self, key: str) -> str | None:
        """One line for the fleet and the dashboard, or None when not on autopilot."""
        pilot = self.pilots.get(key)
        if pilot is None:
            return None
        return f"{pilot.policy.name}: {pilot.state}" if pilot.engaged else pilot.state

    def engaged(self, key: str) -> bool:
        pilot = self.pilots.get(key)
        return pilot is not None and pilot.engaged

    # ---- the backend's side ----------------------------------------------------------------

    def _on_message(self, message: BackendMessage) -> None:
        if not isinstance(message, VMUpdated):
            return
        pilot = self.pilots.get(message.vm)
        if pilot is None or not pilot.engaged:
            return
        if message.what == "settings" and message.vm not in self._busy:
            taken = pilot.overridden(message.parameters or {})
            if taken is not None:
                self.release(message.vm, f"the operator changed {taken}: the autopilot let go")
            return
        if message.what == "sample":
            sample = message.sample
            if sample is None or not (sample.in_flight or pilot.flying):
                return  # engaged before the start: the migration to come is its
            if sample.finished:
                self.release(message.vm, f"done: the migration {sample.status}")  # the next one is the operator's
                return
            pilot.flying = True
            if message.vm not in self._busy:
                self._busy.add(message.vm)
                asyncio.ensure_future(self._step(message.vm, pilot))

    async def _step(self, key: str, pilot: Pilot) -> None:
        try:
            handle = self.backend.get(key)
            if handle is None or not pilot.engaged:
                return
            vm = handle.vm
            before = pilot.state
            decision = decide(pilot, vm.tracker, vm.parameters, vm.capabilities, modern=vm.dialect != "legacy",
                              assessment=vm.assessment())
            if decision is not None:
                await self._apply(handle, pilot, decision)
            if pilot.state != before or decision is not None:
                self._changed(key)
        finally:
            self._busy.discard(key)

    async def _apply(self, handle: VMHandle, pilot: Pilot, decision: Decision) -> None:
        try:
            if decision.change is not None:
                await handle.set_parameters(decision.change)
            elif decision.postcopy:
                await handle.start_postcopy()
            elif decision.abort:
                await handle.cancel()
        except BackendError as err:
            pilot.state = f"{decision.step} refused: {err}"
            self._say(handle, decision.step, f"{decision.why}; refused: {err}", pilot, ok=False)
            pilot.note(decision, handle.vm.tracker)  # a refused step is not tried again
            return
        pilot.note(decision, handle.vm.tracker)
        if decision.change is not None:
            # What the backend reads back is now the autopilot's (libvirt rounds bandwidth to MiB/s).
            pilot.set_values.update({k: handle.vm.parameters.get(k, v) for k, v in decision.change.parameters.items()})
        pilot.state = f"{decision.why}"
        self._say(handle, decision.step, decision.why, pilot)

    def _say(self, handle: VMHandle, step: str, why: str, pilot: Pilot, ok: bool = True) -> None:
        """One step or change of hands: the VM's log, the audit log, and the recording."""
        handle.log("action" if ok else "error", "autopilot", f"{step}: {why}")
        self.audit.record(handle.vm.name, str(handle.endpoint), "autopilot",
                          {"policy": pilot.policy.name, "step": step, "why": why}, ok, None)
        self.backend.post(VMEvent(handle.key, AUTOPILOT_EVENT,
                                  {"policy": pilot.policy.name, "step": step, "why": why, "ok": ok,
                                   "engaged": pilot.engaged}, time.time()))

    def _changed(self, key: str) -> None:
        if self.on_change is not None:
            self.on_change(key)
