"""One libvirt domain as a VMHandle: where it runs, its job's samples, and its controls.

A domain is known by its UUID across every watched host, so it keeps one row, one history
and one log while it moves: during a migration it is on two hosts at once (running or paused
on the source, paused and incoming on the destination), and the row follows the source's job,
then the host it runs on. Controls go through libvirt's migration API only, never the
domain's QMP monitor (libvirt holds it, and marks a domain tainted when commands go around it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from migtui.backend.api import Destination, Features, VMHandle
from migtui.backend.errors import Busy, NotConnected, Refused
from migtui.backend.libvirt.units import MiB, bandwidth_to_libvirt
from migtui.backend.messages import VMUpdated
from migtui.model.endpoint import Endpoint
from migtui.model.requests import MigrationOptions, ParamChange
from migtui.model.vm import Connection, VMState

if TYPE_CHECKING:
    from migtui.backend.libvirt.backend import LibvirtBackend
    from migtui.backend.libvirt.host import LibvirtHost

__all__ = ["LibvirtDomain", "Placement", "CAPABILITY_FLAGS", "SETTABLE"]

# The capabilities a libvirt migration takes as flags at its start (QEMU's names -> what libvirt
# calls them, for the log). `k` chooses them for the next migration.
CAPABILITY_FLAGS = {
    "xbzrle": "VIR_MIGRATE_COMPRESSED",
    "auto-converge": "VIR_MIGRATE_AUTO_CONVERGE",
    "postcopy-ram": "VIR_MIGRATE_POSTCOPY",
    "multifd": "VIR_MIGRATE_PARALLEL",
}
# Parameters libvirt can change while a migration runs, and the call that does it.
SETTABLE = {
    "max-bandwidth": "virDomainMigrateSetMaxSpeed",
    "downtime-limit": "virDomainMigrateSetMaxDowntime",
    "xbzrle-cache-size": "virDomainMigrateSetCompressionCache",
}


@dataclass
class Placement:
    """The domain as one host sees it."""

    host: LibvirtHost
    dom: Any  # libvirt.virDomain on the host's watch connection
    state: int = 0  # virDomainState
    reason: int = 0
    job: bool = False  # a job runs here (libvirt's jobStats type is not NONE)
    incoming: bool = False  # the destination end of a migration


class LibvirtDomain(VMHandle):
    def __init__(self, backend: LibvirtBackend, key: str, uuid: str, name: str, host: LibvirtHost) -> None:
        self.backend = backend
        self.key = key
        self.uuid = uuid
        self.endpoint = _endpoint(name, host)
        self.vm = VMState(endpoint=self.endpoint, name=name)
        self.vm.dialect = "libvirt"
        self.vm.run_state = None
        self.placements: dict[str, Placement] = {}  # host label -> placement
        self.home: LibvirtHost = host  # where the row says it is: its job's source, else where it runs
        self.gone: str | None = None  # why it runs nowhere watched (destroyed, moved to an unwatched host)
        self.stopped: str | None = None  # what libvirt last said of its stop on a source ("stopped (destroyed) on host1")
        self.migrating_to: LibvirtHost | None = None  # the host migtui's own migration goes to
        self._migration: asyncio.Future[None] | None = None  # migtui's migrateToURI3 in its thread
        self.settling = False  # a vanished job waits for JOB_COMPLETED before it is called cancelled
        self.job_seen = asyncio.Event()  # set by a sample in flight: a started migration shows its job

    # ---- where it is ------------------------------------------------------

    @property
    def host(self) -> LibvirtHost:
        return self.home

    @property
    def migrating(self) -> bool:
        """migtui's own virDomainMigrateToURI3 for it is still running (it returns after the job ends)."""
        return self._migration is not None and not self._migration.done()

    @property
    def connected(self) -> bool:
        return self.gone is None and self.home.connected

    def job_placement(self) -> Placement | None:
        """The placement whose job to sample: the source's, else the destination's (its source unwatched)."""
        best = None
        for p in self.placements.values():
            if p.job and p.host.connected:
                if not p.incoming:
                    return p
                best = best or p
        return best

    def update_home(self) -> None:
        """Choose the host the row names, and refresh the VM's place, run-state and connection."""
        libvirt = self.backend.libvirt
        placements = list(self.placements.values())
        chosen = next((p for p in placements if p.job and not p.incoming), None)
        chosen = chosen or next((p for p in placements if p.state == libvirt.VIR_DOMAIN_RUNNING), None)
        chosen = chosen or next((p for p in placements if not p.incoming), None)
        chosen = chosen or (placements[0] if placements else None)
        vm = self.vm
        if chosen is not None:
            self.gone = None
            if chosen.host is not self.home:
                self.home = chosen.host
                self.endpoint = vm.endpoint = _endpoint(self.endpoint.name, chosen.host)
            vm.run_state = self.backend.run_state(chosen.state, chosen.reason, chosen.incoming)
            vm.qemu_version = chosen.host.qemu_version
        host = self.home
        if self.gone is not None:
            state, reason = Connection.DISCONNECTED, self.gone
        elif host.connection == Connection.CONNECTED:
            state, reason = Connection.CONNECTED, None
        else:
            state, reason = host.connection, f"{host.label}: {host.reason or host.connection}"
        if vm.connection != state or vm.reason != reason:
            vm.connection, vm.reason = state, reason
            self.backend.post(VMUpdated(self.key, "connection", connection=state, reason=reason))

    @property
    def postcopy(self) -> bool:
        """Whether libvirt says the domain is in post-copy on either end (it says so in the state's reason)."""
        lv = self.backend.libvirt
        return self._in_state(lv.VIR_DOMAIN_PAUSED_POSTCOPY, lv.VIR_DOMAIN_RUNNING_POSTCOPY)

    @property
    def postcopy_failed(self) -> bool:
        lv = self.backend.libvirt
        return self._in_state(lv.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED, lv.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED)

    def _in_state(self, paused_reason: int, running_reason: int) -> bool:
        """Paused for `paused_reason` on one end, or running for `running_reason`."""
        lv = self.backend.libvirt
        wanted = ((lv.VIR_DOMAIN_PAUSED, paused_reason), (lv.VIR_DOMAIN_RUNNING, running_reason))
        return any((p.state, p.reason) in wanted for p in self.placements.values())

    # ---- the VMHandle ---------------------------------------------------------

    @property
    def features(self) -> Features:
        if self.backend.read_only:
            return Features(why_not=self.backend.read_only)
        if not self.connected:
            return Features(why_not=self.vm.reason or "not connected")
        return Features(migrate=True, cancel=True, set_parameters=True, set_capabilities=True, postcopy=True,
                        block_migration=True, persist=True, capabilities_at_start=True, preflight=True,
                        recover_postcopy=True, recovers_alone=True)

    def poll_now(self) -> None:
        self.backend.poll_soon()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.home.connected_event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return self.connected

    def _ready(self, what: str) -> None:
        if self.backend.read_only:
            raise Refused(f"{what}: {self.vm.name}: {self.backend.read_only}")
        if not self.connected:
            raise NotConnected(f"{what}: {self.vm.name} is not connected: {self.vm.reason or 'connecting'}")

    async def migrate(self, options: MigrationOptions, destination: VMHandle | Destination | None = None,
                      uri: str | None = None) -> str:
        self._ready("migrate")
        target = destination.target if isinstance(destination, Destination) else destination
        if uri is not None and target is None:
            raise Refused(f"{self.vm.name} is a libvirt domain: migrate it to another libvirt host (a URI given "
                          "with one is the migration stream's, as virsh's --migrateuri)")
        from migtui.backend.libvirt.host import LibvirtHost

        if not isinstance(target, LibvirtHost):
            raise Refused(f"{self.vm.name} is a libvirt domain: choose a libvirt host as its destination")
        if target is self.home:
            raise Refused(f"{self.vm.name} already runs on {target.label}: choose another host")
        if not target.connected:
            raise NotConnected(f"migrate: {target.label} is not connected: {target.reason or 'connecting'}")
        if self.vm.in_flight:
            raise Refused(f"{self.vm.name} is already migrating: cancel it first")
        if options.dirty_limit is not None:
            raise Refused(f"{self.vm.name} is a libvirt domain, and libvirt has no migration flag for QEMU's "
                          "dirty limit (dirty-limit, vcpu-dirty-limit): migrate without it")
        if self.migrating:
            raise Busy(f"{self.vm.name}: libvirt is still ending its last migration; try again in a moment")
        return await self.backend.start_migration(self, target, options, stream=uri)

    async def cancel(self) -> None:
        self._ready("cancel")
        placement = self.job_placement()
        if placement is None:
            raise Refused(f"{self.vm.name} has no migration to cancel")
        await self.backend.call_audited(self, placement.host, "virDomainAbortJob", {}, placement.dom.abortJob)

    def check_parameters(self, change: ParamChange) -> list[str]:
        lines = []
        for name, value in change.parameters.items():
            call = SETTABLE.get(name)
            if call is None:
                raise Refused(f"libvirt cannot set {name} during a migration; it sets "
                              f"{', '.join(SETTABLE)} (the rest are chosen when the migration starts)")
            lines.append(f"{call}({self.vm.name}, {_libvirt_value(name, value)}) on {self.home.label}")
        return lines

    async def set_parameters(self, change: ParamChange) -> None:
        self._ready("set parameters")
        self.check_parameters(change)  # refuses before anything is sent
        placement = self.job_placement() or self.placements.get(self.home.label)
        if placement is None:
            raise NotConnected(f"{self.vm.name}: no host holds it now")
        dom = placement.dom
        for name, value in change.parameters.items():
            call = SETTABLE[name]
            if name == "max-bandwidth":
                fn = lambda v=value: dom.migrateSetMaxSpeed(bandwidth_to_libvirt(int(v)), 0)  # noqa: E731
            elif name == "downtime-limit":
                fn = lambda v=value: dom.migrateSetMaxDowntime(int(v), 0)  # noqa: E731
            else:
                fn = lambda v=value: dom.migrateSetCompressionCache(int(v), 0)  # noqa: E731
            await self.backend.call_audited(self, placement.host, call, {name: value}, fn)
        self.vm.parameters = {**self.vm.parameters, **change.parameters}
        if change.advice is not None:
            from migtui.model.guidance import take_advice

            take_advice(self.vm.tracker, change.advice, change.why or "")
        await self.backend.refresh_settings(self)

    async def set_capabilities(self, capabilities: Mapping[str, bool]) -> None:
        """libvirt takes capabilities as flags when a migration starts: kept for the next one."""
        self._ready("set capabilities")
        unknown = [c for c in capabilities if c not in CAPABILITY_FLAGS]
        if unknown:
            raise Refused(f"libvirt migrations take {', '.join(CAPABILITY_FLAGS)} as flags, not {', '.join(unknown)}")
        caps = {**self.vm.capabilities, **{k: bool(v) for k, v in capabilities.items()}}
        self.vm.capabilities = caps
        chosen = ", ".join(f"{CAPABILITY_FLAGS[k]}={'on' if v else 'off'}" for k, v in capabilities.items())
        self.log("action", "capabilities", f"for the next migration (libvirt takes them as flags): {chosen}")
        self.backend.post_settings(self)

    async def start_postcopy(self) -> None:
        self._ready("switch to post-copy")
        placement = self.job_placement()
        if placement is None or placement.incoming:
            raise Refused(f"{self.vm.name} has no outgoing migration to switch to post-copy")
        await self.backend.call_audited(self, placement.host, "virDomainMigrateStartPostCopy", {},
                                        lambda: placement.dom.migrateStartPostCopy(0))

    def check_recovery(self, destination: VMHandle | None = None) -> list[str]:
        """What recover_postcopy() would send: libvirt resumes both ends in one call (the row is both)."""
        self._ready("recover post-copy")
        source, target, params, _, names = self.backend.recovery(self)
        stream = params.get(self.backend.libvirt.VIR_MIGRATE_PARAM_URI)
        return [f"virDomainMigrateToURI3({self.vm.name}, {target.uri}, {'|'.join(names[2:])}"
                + (f", uri={stream}" if stream else "") + f") on {source.label}"]

    async def recover_postcopy(self, destination: VMHandle | None = None) -> None:
        self._ready("recover post-copy")
        await self.backend.recover_postcopy(self)

    async def preflight(self, options: MigrationOptions):  # -> migtui.model.preflight.Prediction
        """Measure the dirty rate through libvirt (virDomainStartDirtyRateCalc, QEMU's calc-dirty-rate
        underneath) and predict whether `options` converge. Migrates nothing."""
        from migtui.model.preflight import predict_start

        self._ready("pre-flight")
        if self.vm.in_flight:
            raise Refused(f"{self.vm.name} is migrating: the dashboard shows its own dirty rate (a measurement "
                          "now would compete with the migration)")
        placement = self.placements.get(self.home.label)
        if placement is None:
            raise NotConnected(f"{self.vm.name}: no host holds it now")
        dirty = await self.backend.measure_dirty_rate(self, placement, seconds=1)
        return predict_start(dirty, options, self.vm.parameters, float(self.vm.memory or 0))

    def __repr__(self) -> str:
        return f"<LibvirtDomain {self.key} on {self.home.label}>"


def _endpoint(name: str, host: LibvirtHost) -> Endpoint:
    """Where the domain is now: its host's URI and label."""
    return Endpoint(name=name, kind="libvirt", path=host.target.shown_uri, host=host.label, named=True)


def _libvirt_value(name: str, value: Any) -> str:
    """A parameter in the unit libvirt's call takes, for the confirmation line."""
    if name == "max-bandwidth":
        return f"{bandwidth_to_libvirt(int(value))} MiB/s"
    if name == "downtime-limit":
        return f"{int(value)} ms"
    return f"{int(value)} bytes ({int(value) / MiB:g} MiB)"

