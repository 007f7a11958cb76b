"""Evacuating a host: migtui.model.drain's plan, run through the backend interface.

Every VM to move is an item in a queue: waiting, migrating (with its verdict and, under a
policy, the autopilot), done, or failed with the reason. Migrations start within the caps
per source host and in total; a VM whose destination goes away mid-migration goes back in
the queue for another destination (once), never lost. Works the same on QMP (sources and
the VMs waiting for them) and libvirt (a host's domains, other hosts). Never imports Textual.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from migtui.backend.api import Backend, Destination, VMHandle
from migtui.backend.errors import BackendError, Busy
from migtui.backend.wake import Wake
from migtui.model.drain import PER_SOURCE, RETRIES, TOTAL, DrainItem, Place, next_to_start, order, place, summary
from migtui.model.requests import MigrationOptions
from migtui.model.units import InputError

__all__ = ["Drain", "START_TIMEOUT"]

START_TIMEOUT = 60.0  # s a started migration may take to show in flight before it counts as failed
CHECK_EVERY = 1.0  # s between looks at the queue when no message wakes it
BUSY_RETRY_S = 2.0  # s before a VM the backend called busy is started again


class Drain:
    """One evacuation: `keys` (the VMs to move) to the destinations `allowed` accepts."""

    def __init__(self, backend: Backend, keys: Iterable[str], *,
                 allowed: Callable[[Destination], bool] = lambda d: True,
                 options: MigrationOptions | None = None, per_source: int = PER_SOURCE, total: int = TOTAL,
                 pins: dict[str, str] | None = None, autopilot=None, policy: str | None = None,
                 on_change: Callable[[DrainItem], None] | None = None,
                 uri_for: Callable[[Destination], str | None] | None = None) -> None:
        if per_source < 1 or total < 1:
            raise InputError("parallel migrations: give at least 1 per source host and 1 in all")
        if policy is not None and autopilot is None:
            raise InputError(f"policy {policy}: the autopilot is off (read-only)")
        self.backend = backend
        self.allowed = allowed
        self.options = options or MigrationOptions()
        self.per_source, self.total = per_source, total
        self.autopilot, self.policy = autopilot, policy
        self.on_change = on_change
        self.uri_for = uri_for  # libvirt: the migration stream's URI to a destination (None: libvirt's choice)
        self.cancelling = False
        self.began: float | None = None
        self.ended: float | None = None
        items = []
        for key in keys:
            handle = backend.get(key)
            if handle is None:
                raise InputError(f"no VM named {key!r}")
            vm = handle.vm
            items.append(DrainItem(key, vm.name, vm.endpoint.host or "local", vm.memory, vm.machine,
                                   (pins or {}).get(key)))
        self.items, self.order_text = order(items)
        self._flying: set[str] = set()  # items seen in flight since their start
        self._sent: dict[str, float] = {}  # when each item's migrate call returned (wall clock, as samples)
        self._held: dict[str, float] = {}  # items the backend said to try again later: not before then
        self._wake = Wake()

    # ---- running ---------------------------------------------------------------------------

    async def run(self) -> str:
        """Until every item is done, failed or cancelled; returns the summary line."""
        self.began = time.monotonic()
        by_key = {i.key: i for i in self.items}

        def heard(message) -> None:
            item = by_key.get(getattr(message, "vm", None))
            if item is None:
                return
            sample = getattr(message, "sample", None)
            if item.state == "migrating" and sample is not None and sample.in_flight:
                self._flying.add(item.key)  # seen as it comes: a short migration may end before the next look
            self._wake.set()

        unsubscribe = self.backend.subscribe(heard)
        try:
            while True:
                self._advance()
                if not self.cancelling:
                    now = time.monotonic()
                    ready = [i for i in self.items if self._held.get(i.key, 0) <= now]
                    for item in next_to_start(ready, self.per_source, self.total):
                        await self._start(item)
                if all(i.state in ("done", "failed", "cancelled") for i in self.items):
                    break
                self._wake.clear()
                await self._wake.wait(CHECK_EVERY)
        finally:
            unsubscribe()
        self.ended = time.monotonic()
        return self.summary()

    def summary(self) -> str:
        end = self.ended if self.ended is not None else time.monotonic()
        return summary(self.items, end - (self.began or end))

    async def cancel_all(self) -> None:
        """No more starts; every migration in flight cancelled; the waiting ones stay where they are."""
        self.cancelling = True
        for item in self.items:
            if item.state == "waiting":
                self._set(item, "cancelled", "cancelled before it started")
        for item in [i for i in self.items if i.state == "migrating"]:
            handle = self.backend.get(item.key)
            if handle is not None:
                try:
                    await handle.cancel()
                except BackendError as err:
                    item.reason = f"cancel refused: {err}"
        self._wake.set()

    # ---- one item ----------------------------------------------------------------------------

    def _places(self, handle: VMHandle) -> tuple[list[Place], dict[str, Destination]]:
        destinations = [d for d in self.backend.destinations(handle) if self.allowed(d)]
        return ([Place(d.key, d.label.split("  (")[0], d.free_memory, d.machine_types, d.slots) for d in destinations],
                {d.key: d for d in destinations})

    async def _start(self, item: DrainItem) -> None:
        handle = self.backend.get(item.key)
        if handle is None:
            self._set(item, "failed", "the VM is gone from the backend")
            return
        if not handle.connected:
            self._set(item, "failed", f"{handle.vm.connection}: {handle.vm.reason or 'not connected'}")
            return
        places, by_key = self._places(handle)
        committed: dict[str, int] = {}
        taken: dict[str, int] = {}
        for other in self.items:
            if other.state in ("migrating", "done") and other.destination is not None:
                committed[other.destination] = committed.get(other.destination, 0) + (other.memory or 0)
                if other.state == "migrating":
                    taken[other.destination] = taken.get(other.destination, 0) + 1
        where = place(item, places, committed, taken)
        if isinstance(where, str):
            self._set(item, "failed", where)
            return
        item.destination, item.attempts, item.started = where.key, item.attempts + 1, time.monotonic()
        self._flying.discard(item.key)
        self._sent.pop(item.key, None)
        self._set(item, "migrating", None)
        if self.policy is not None and self.autopilot is not None:
            try:
                self.autopilot.engage(item.key, self.policy)
            except InputError as err:
                item.reason = f"no autopilot: {err}"
        try:
            destination = by_key[where.key]
            await handle.migrate(self.options, destination, uri=self.uri_for(destination) if self.uri_for else None)
        except Busy as err:  # still ending its last migration (a destination that died): soon
            item.attempts -= 1
            self._held[item.key] = time.monotonic() + BUSY_RETRY_S
            self._set(item, "waiting", str(err))
            return
        except (BackendError, InputError) as err:
            item.excluded.add(where.key)
            self._set(item, "failed", str(err))
            return
        self._sent[item.key] = time.time()  # a sample after this is of this migration, however short

    def _advance(self) -> None:
        """Each migrating item: still going, done, failed, or back in the queue."""
        for item in self.items:
            if item.state != "migrating":
                continue
            handle = self.backend.get(item.key)
            vm = handle.vm if handle is not None else None
            if vm is not None and vm.in_flight:
                self._flying.add(item.key)
                continue
            after = vm is not None and vm.sample is not None and vm.sample.time > self._sent.get(item.key, float("inf"))
            if vm is None or item.key not in self._flying and not (after and vm.sample.finished):
                if time.monotonic() - (item.started or 0) > START_TIMEOUT:
                    self._set(item, "failed", f"the migration did not show in {START_TIMEOUT:.0f} s")
                continue
            status = vm.migration_status
            if status == "completed":
                item.downtime_ms = vm.sample.get(None, "downtime") if vm.sample is not None else None
                self._set(item, "done", None)
                continue
            why = (vm.sample.info.get("error-desc") if vm.sample is not None else None) or status
            lost = self._destination_lost(handle, item)
            if self.cancelling or status == "cancelled" and not lost:
                self._set(item, "cancelled", why)
            elif lost and item.attempts <= RETRIES:
                item.excluded.add(item.destination)
                self._set(item, "waiting", f"{item.destination} went away mid-migration ({why}): queued again")
            else:
                self._set(item, "failed", why)

    def _destination_lost(self, handle: VMHandle, item: DrainItem) -> bool:
        return item.destination not in {d.key for d in self.backend.destinations(handle)}

    def _set(self, item: DrainItem, state: str, reason: str | None) -> None:
        item.state, item.reason = state, reason
        if state in ("done", "failed", "cancelled"):
            item.ended = time.monotonic()
        if self.on_change is not None:
            self.on_change(item)
