"""The backend interface: what the console, the recorder and the command line may ask of any backend.

A backend reaches VMs (QMP directly, a recording, libvirt next) and implements two
classes: `Backend`, the set of VMs it watches, and `VMHandle`, one VM. Callers read a
VM through `handle.vm` (read-only by contract: only the backend writes it) and act only
through the handle's methods, with requests from migtui.model.requests; the backend
checks them against what its VM can do, sends its own commands, audits them and
refreshes what they changed before the method returns. Backends post what happened as
migtui.backend.messages to every subscriber. No Textual here or in any backend.
(Modelled on harlequin's adapter ABCs, and toolong's WatcherBase.)
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from migtui.backend.errors import BackendError
from migtui.backend.messages import Listener
from migtui.model.derived import HostLessons
from migtui.model.endpoint import Endpoint
from migtui.model.requests import MigrationOptions, ParamChange
from migtui.model.units import InputError
from migtui.model.vm import EventRecord, VMState

if TYPE_CHECKING:
    from migtui.model.preflight import Prediction

__all__ = ["Backend", "ControlRefused", "Destination", "Features", "HostView", "VMHandle", "VMView", "NO_FEATURES", "Unsubscribe"]

# A fleet bigger than BIG_FLEET has its verdicts brought up to date at most every
# EAGER_ASSESS_EVERY s of samples (the console assesses the rows it draws on every sample).
BIG_FLEET = 50
EAGER_ASSESS_EVERY = 2.0

# What callers get to read of a VM. VMState is the model's; only the backend writes it.
VMView = VMState
Unsubscribe = Callable[[], None]


class ControlRefused(BackendError):
    """This backend cannot do that to any VM (a recording cannot be steered); says why, in one line."""


@dataclass(frozen=True)
class Features:
    """What a VM's backend and QEMU can do now: the console enables its keys from this, not from QMP."""

    migrate: bool = False
    cancel: bool = False
    set_parameters: bool = False
    set_capabilities: bool = False
    postcopy: bool = False  # switch a running migration to post-copy
    recover_postcopy: bool = False
    # One handle holds both ends of its migration (a libvirt domain): recover_postcopy(itself).
    recovers_alone: bool = False
    block_migration: bool = False  # copy the disks with the migration (blk)
    preflight: bool = False  # measure the dirty rate and predict, before migrating
    migrate_to_uri: bool = False  # migrate to a URI the operator types (QMP), not only to a listed destination
    persist: bool = False  # keep the domain defined at the destination, undefine it at the source (libvirt)
    # Capabilities are flags a migration takes when it starts (libvirt): set_capabilities chooses
    # them for the next one, and works while one runs.
    capabilities_at_start: bool = False
    why_not: str | None = None  # why nothing can be done at all (a recording, read-only)


NO_FEATURES = Features()


@dataclass(frozen=True)
class Destination:
    """Where a migration can go, as the start dialog lists it: a QMP VM waiting with -incoming
    defer, or a libvirt host. `target` is the backend's own object; only its backend reads it."""

    key: str  # unique among one source's destinations
    label: str  # one line: what it is, which QEMU, where
    target: Any = field(default=None, compare=False, repr=False)
    # What placement weighs (None: not known): free memory in bytes, the machine types its QEMU
    # has, and how many migrations it can take at once (a QMP VM waiting with -incoming: one).
    free_memory: int | None = None
    machine_types: frozenset[str] | None = None
    slots: int | None = None


@dataclass(frozen=True)
class HostView:
    """A host a backend watches (a libvirt host): one line of state, apart from its VMs, since a
    host that is down or empty has no VM to show it by."""

    name: str
    where: str  # its URI, as the operator gave it
    connected: bool
    reason: str | None = None  # why not, in one line
    vms: int = 0  # how many of its VMs are shown


class VMHandle(abc.ABC):
    """One VM, as a backend reaches it. Controls raise BackendError subclasses with one line."""

    key: str  # unique in its backend; stable, even when QEMU's -name replaces the shown name
    endpoint: Endpoint  # where the backend reaches it, as the operator gave it
    # What migtui knows of the VM now: identity, connection, migration, history, log.
    # Read-only to everyone but the backend (a plain attribute: the fleet table reads it per cell).
    vm: VMView

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether controls can reach the VM now."""

    @property
    @abc.abstractmethod
    def features(self) -> Features: ...

    def poll_now(self) -> None:
        """Ask for a fresh sample soon; a backend that cannot sample ignores it."""

    def log(self, kind: str, name: str, detail: str) -> None:
        """Add a line to the VM's log: what the console did or was refused ("action", "error", "event")."""
        self.vm.log_append(EventRecord(time.time(), kind, name, detail))

    async def wait_connected(self, timeout: float) -> bool:
        return self.connected

    # ---- controls: each checks, sends, audits and refreshes; raises with one line -----

    async def migrate(self, options: MigrationOptions, destination: VMHandle | Destination | None = None,
                      uri: str | None = None) -> str:
        """Start a migration to `destination` (one of Backend.destinations(), or a VM waiting for
        one) or to `uri`; returns the URI used."""
        raise self.refused("migrate")

    async def cancel(self) -> None:
        raise self.refused("cancel")

    def check_parameters(self, change: ParamChange) -> list[str]:
        """What set_parameters(change) would send, one line each (shown before confirming). Sends
        nothing; raises BackendError when this VM cannot take the change."""
        raise self.refused("set parameters")

    async def set_parameters(self, change: ParamChange) -> None:
        raise self.refused("set parameters")

    async def set_capabilities(self, capabilities: Mapping[str, bool]) -> None:
        raise self.refused("set capabilities")

    async def start_postcopy(self) -> None:
        raise self.refused("switch to post-copy")

    def check_recovery(self, destination: VMHandle) -> list[str]:
        """What recover_postcopy(destination) would send, one line each; raises when it cannot."""
        raise self.refused("recover post-copy")

    async def recover_postcopy(self, destination: VMHandle) -> None:
        raise self.refused("recover post-copy")

    async def preflight(self, options: MigrationOptions) -> Prediction:
        """Measure the guest's dirty rate and predict whether `options` converge; migrates nothing."""
        raise self.refused("pre-flight")

    async def preflight_before_start(self, options: MigrationOptions) -> Prediction | str | None:
        """The pre-flight every start runs first where this VM has one (about a second): pass 1
        reports no dirty rate and nothing says where the guest's zero pages are, so without it
        the ETA until pass 2 is a guess. Its prediction; or why it could not run (the start goes
        ahead all the same); or None where this VM has no pre-flight."""
        if not self.features.preflight:
            return None
        try:
            return await self.preflight(options)
        except (BackendError, InputError, OSError, EOFError) as err:
            return str(err)

    def refused(self, what: str) -> ControlRefused:
        why = self.features.why_not or "this backend cannot do it"
        return ControlRefused(f"{what}: {self.vm.name}: {why}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key}>"


class Backend(abc.ABC):
    """The VMs one backend watches: start them, tell subscribers what changes, close them."""

    # Why no VM of this backend can be steered (a recording), or None: the console turns its
    # controls off for all of them.
    read_only: str | None = None

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._host_lessons: dict[str, HostLessons] = {}

    def lessons_for(self, host: str) -> HostLessons:
        """What this backend's migrations from `host` showed, one object its VMs' trackers share."""
        return self._host_lessons.setdefault(host, HostLessons())

    @abc.abstractmethod
    def handles(self) -> dict[str, VMHandle]:
        """Key -> handle, in the order the operator gave them."""

    def start(self) -> None:
        """Begin watching (connect, poll); returns at once."""

    async def close(self) -> None:
        """Stop watching and let go of every connection."""

    def subscribe(self, listener: Listener) -> Unsubscribe:
        """Call `listener` with every message, on the backend's event loop (it must not block)."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def post(self, message: Any) -> None:
        """Tell every subscriber; a subscriber's bug must not stop the backend or the others."""
        for listener in tuple(self._listeners):
            try:
                listener(message)
            except Exception:
                import logging

                logging.getLogger("migtui").exception("a backend listener failed")

    # ---- lookups shared by every backend ------------------------------------------------

    def get(self, name: str) -> VMHandle | None:
        """By key, then by the name the VM reported."""
        handles = self.handles()
        if name in handles:
            return handles[name]
        for handle in handles.values():
            if handle.vm.name == name:
                return handle
        return None

    def poll_all(self) -> None:
        for handle in self:
            handle.poll_now()

    def __iter__(self) -> Iterator[VMHandle]:
        return iter(list(self.handles().values()))

    def __len__(self) -> int:
        return len(self.handles())

    def assess_max_age(self) -> float:
        """How old (sample seconds) a VM's verdict may stay as its samples arrive: what the
        backend passes to VMState.observe. 0 (every sample) but in a big fleet."""
        return EAGER_ASSESS_EVERY if len(self) > BIG_FLEET else 0.0

    def waiting(self, source: VMHandle) -> list[VMHandle]:
        """VMs waiting for an incoming migration, other than `source`: where it can go."""
        return [h for h in self if h is not source and h.vm.run_state == "inmigrate"]

    def hosts(self) -> list[HostView]:
        """The hosts this backend watches, each with its state; none for per-VM backends (QMP)."""
        return []

    def destinations(self, source: VMHandle) -> list[Destination]:
        """Where `source` can migrate to, for the start dialog; by default the VMs waiting."""
        return [Destination(h.key, f"{h.vm.name}  (QEMU {h.vm.qemu_version or '?'}, {h.endpoint})", h,
                            machine_types=h.vm.machine_types, slots=1)
                for h in self.waiting(source)]

