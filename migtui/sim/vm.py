"""One simulated QEMU: its QMP monitor, its commands, its migration, its faults.

SimVM ties the parts: the monitor (transport.py), the fault switches (faults.py) and the
command table (commands.py) are mixins sharing its state; the migration plumbing is here.

A SimVM holds no task of its own.  Its migration model is advanced lazily: whenever a
command touches it, and by the fleet's one shared ticker while a migration runs (so
events and the destination's completion happen on time even when nobody asks).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migtui.sim import dialects
from migtui.sim.commands import QMPCommands
from migtui.sim.dialects import Dialect, QMPError
from migtui.sim.faults import FaultSwitches
from migtui.sim.model import (
    FINISHED,
    DirtyRateProbe,
    Guest,
    Knobs,
    Migration,
    ModelEvent,
)
from migtui.sim.transport import QMPMonitor

if TYPE_CHECKING:
    from migtui.sim.fleet import SimFleet


class SimVM(QMPMonitor, FaultSwitches, QMPCommands):
    """A simulated VM with its own QMP socket.  Create it with ``SimFleet.add_vm``."""

    def __init__(self, fleet: SimFleet, name: str, dialect: str, guest: Guest, *,
                 incoming: bool, rng: random.Random) -> None:
        if dialect not in dialects.DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}: use one of {list(dialects.DIALECTS)}")
        self.fleet = fleet
        self.name = name
        self.dialect: Dialect = dialects.DIALECTS[dialect]
        self.guest = guest
        self.rng = rng
        self.socket_path: Path = fleet.runtime_dir / f"{name}.qmp"
        self.tcp_address: tuple[str, int] | None = None
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.alive = True
        self.migration: Migration | None = None
        self.caps: dict[str, bool] = {cap: False for cap in self.dialect.capabilities}
        self.params: dict[str, Any] = {k: v for k, (_, v) in self.dialect.parameters.items()}
        modern = self.dialect.modern
        self.knobs = Knobs(max_bandwidth=128 * 2**20 if modern else 32 << 20,  # MAX_THROTTLE
                           downtime_limit=0.3 if modern else 0.03,  # seed: 30000000 ns
                           zero_bandwidth_unlimited=modern, seed_expected_downtime=not modern,
                           device_in_every_switchover=self.dialect.device_in_every_switchover)
        self._run_state = "inmigrate" if incoming else "running"
        self.autostart = True
        # Incoming side: the URI listened on, and the source feeding it.
        self.incoming_uri: str | None = None
        self.incoming_status = "none"
        self.exit_on_error = True  # migrate-incoming's exit-on-error (9.1+): false keeps a failed one up
        self.incoming_error: str | None = None
        self.incoming_source: SimVM | None = None
        self._dest: SimVM | None = None
        self._dirty_probe: DirtyRateProbe | None = None
        self._was_running = True  # whether the guest ran when migration stopped it
        # The monitor, and the fault switches it obeys (transport.py).
        self._init_monitor()
        if incoming and not modern:
            # 1.4 has no migrate-incoming: the VM was started with -incoming unix:PATH.
            self._listen(f"unix:{fleet.runtime_dir / (name + '.migrate')}")

    # -- public state ------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"{self.name}=unix:{self.socket_path}"

    @property
    def status(self) -> str:
        """Migration status: the outgoing migration's, else the incoming one's, else "none"."""
        self.sync()
        if self.migration is not None:
            return self.migration.status
        return self.incoming_status

    @property
    def run_state(self) -> str:
        self.sync()
        return self._run_state

    # -- programmatic controls (demos, tests) ------------------------------------------
    def set_dirty_rate(self, rate: float) -> None:
        if self.migration is not None:
            self._apply(self.migration.settle(self.fleet.now()))
        self.guest.dirty_rate = rate

    def start_migration(self, uri: str, blk: bool = False) -> None:
        self.execute("migrate", {"uri": uri, **({"blk": True} if blk else {})}, record=False)  # 9.1+ has no blk

    def set_capability(self, name: str, state: bool = True) -> None:
        self.execute("migrate-set-capabilities",
                     {"capabilities": [{"capability": name, "state": state}]}, record=False)

    # -- model plumbing ------------------------------------------------------------------
    def sync(self) -> None:
        """Advance the migration model to now and act on what happened."""
        source = self.incoming_source
        if source is not None:  # a destination moves only as its source does
            source.sync()
        m = self.migration
        if m is not None and m.running:
            self._apply(m.advance(self.fleet.now()))

    def _apply(self, events: list[ModelEvent]) -> None:
        modern = self.dialect.modern
        for ev in events:
            if ev.kind == "status":
                if modern and self.caps.get("events"):
                    self.emit("MIGRATION", {"status": ev.value}, ev.t)
                self._on_status(ev)
            elif ev.kind == "pass":
                if modern and self.caps.get("events"):
                    self.emit("MIGRATION_PASS", {"pass": ev.value}, ev.t)
            elif ev.kind == "stop":
                self._was_running = self._run_state == "running"
                if self._was_running:
                    self.emit("STOP", None, ev.t)
                self._run_state = "finish-migrate"
            elif ev.kind == "resume":
                if self._was_running:
                    self._run_state = "running"
                    self.emit("RESUME", None, ev.t)
                else:
                    self._run_state = "paused"
            elif ev.kind == "dest-resume" and self._dest is not None:
                self._dest._incoming_resume(ev.t)
        if self.migration is not None and not self.migration.running:
            self.fleet.stop_ticking(self)

    def _on_status(self, ev: ModelEvent) -> None:
        status, dest = ev.value, self._dest
        if status == "completed":
            self._run_state = "postmigrate"
        if dest is None:
            return
        if status == "active" and dest.incoming_status in ("none", "setup"):
            if dest.incoming_status == "none":
                dest._incoming_set("setup", ev.t)  # 10.0 said so when it began to listen
            dest._incoming_set("active", ev.t)
        elif status in ("postcopy-active", "postcopy-paused", "postcopy-recover"):
            if dest.incoming_status != status:  # a resume refused leaves it paused, unannounced
                dest._incoming_set(status, ev.t)  # both ends pause, recover and resume together
        elif status == "completed":
            dest._incoming_resume(ev.t)  # 7.2 runs the guest before announcing completion
            dest._incoming_set("completed", ev.t)
            self._dest = dest.incoming_source = None
        elif status in ("failed", "cancelled"):
            self._dest = dest.incoming_source = None
            if dest.incoming_status not in ("none", "setup"):
                if dest.exit_on_error:
                    dest.kill()  # like QEMU: "load of migration failed", the process exits
                else:  # it stays, inmigrate, and says why
                    dest.incoming_error = "load of migration failed: Invalid argument"
                    self.fleet.stop_listening(dest)
                    dest.incoming_uri = None
                    dest._incoming_set("failed", ev.t)
            elif dest.incoming_uri is not None:
                self.fleet.listen(dest, dest.incoming_uri)  # never connected: still listening

    def _incoming_set(self, status: str, t: float) -> None:
        self.incoming_status = status
        if self.dialect.modern and self.caps.get("events"):
            self.emit("MIGRATION", {"status": status}, t)

    def _incoming_resume(self, t: float) -> None:
        if self._run_state == "inmigrate":
            self._run_state = "running" if self.autostart else "paused"
            if self.autostart:
                self.emit("RESUME", None, t)

    def _listen(self, uri: str) -> None:
        self.incoming_uri = uri
        self.fleet.listen(self, uri)

    def __repr__(self) -> str:
        return f"<SimVM {self.name} {self.dialect.name} {self._run_state}>"


__all__ = ["FINISHED", "QMPError", "SimVM"]
