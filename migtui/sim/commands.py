"""The QMP command table: one ``_cmd_<name>`` handler per command a dialect advertises.

``execute`` checks a command against the dialect (known, arguments well typed) and calls
its handler with the arguments as keywords ("-" becomes "_"); a refusal raises QMPError
with QEMU's own sentence.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from migtui.sim import dialects
from migtui.sim.dialects import Dialect, QMPError, check_args
from migtui.sim.model import PAGE, DirtyRateProbe, Guest, Knobs, Migration

if TYPE_CHECKING:
    from migtui.sim.fleet import SimFleet
    from migtui.sim.vm import SimVM

MIGRATION_SCHEMES = ("tcp:", "unix:", "exec:", "fd:")
MIGRATION_SCHEMES_72 = MIGRATION_SCHEMES + ("rdma:",)


class QMPCommands:
    """SimVM's command handlers.  They read and change the VM's state and migration, and
    act on what the model reports through ``_apply``."""

    fleet: SimFleet
    name: str
    dialect: Dialect
    guest: Guest
    rng: random.Random
    received: list[tuple[str, dict[str, Any]]]
    migration: Migration | None
    caps: dict[str, bool]
    params: dict[str, Any]
    knobs: Knobs
    autostart: bool
    incoming_uri: str | None
    incoming_status: str
    _run_state: str
    _dest: SimVM | None
    _dirty_probe: DirtyRateProbe | None

    def execute(self, name: str, args: dict[str, Any] | None = None, *, record: bool = True) -> Any:
        """Run a command as if a negotiated client sent it (raises QMPError)."""
        args = args or {}
        if record:
            self.received.append((name, args))
        spec = self.dialect.commands.get(name)
        if spec is None:
            raise QMPError(f"The command {name} has not been found", "CommandNotFound")
        check_args(self.dialect, spec, args)
        self.sync()
        handler: Callable[..., Any] = getattr(self, "_cmd_" + name.replace("-", "_"))
        return handler(**{k.replace("-", "_"): v for k, v in args.items()})

    # -- commands: both dialects ----------------------------------------------------------
    def _cmd_query_version(self) -> dict[str, Any]:
        major, minor, micro = self.dialect.version
        return {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": ""}

    def _cmd_query_name(self) -> dict[str, Any]:
        return {"name": self.name}

    def _cmd_query_status(self) -> dict[str, Any]:
        return {"status": self._run_state, "singlestep": False,
                "running": self._run_state == "running"}

    def _cmd_query_commands(self) -> list[dict[str, str]]:
        return [{"name": name} for name in self.dialect.commands]

    def _cmd_query_migrate(self) -> dict[str, Any]:
        now, xbzrle, cache = self.fleet.now(), self.caps["xbzrle"], self.knobs.xbzrle_cache_size
        if not self.dialect.modern:
            return dialects.query_migrate_14(self.migration, now, xbzrle=xbzrle, cache_size=cache)
        if self.migration is not None:
            return dialects.query_migrate_72(self.migration, now, xbzrle=xbzrle, cache_size=cache,
                                             ten=self.dialect.version >= (10, 0, 0))
        info: dict[str, Any] = {}
        if self.incoming_status != "none":
            info["status"] = self.incoming_status
        if self.incoming_status == "failed" and self.incoming_error:
            info["error-desc"] = self.incoming_error
        if self.incoming_uri is not None and self.incoming_status != "completed":
            info["socket-address"] = [_socket_address(self.incoming_uri)]
        return info

    def _cmd_query_migrate_capabilities(self) -> list[dict[str, Any]]:
        return [{"capability": cap, "state": state} for cap, state in self.caps.items()]

    def _cmd_migrate_set_capabilities(self, capabilities: list[Any]) -> dict[str, Any]:
        if self.migration is not None and self.migration.running:
            raise QMPError("There's a migration process in progress")
        new = dict(self.caps)
        for i, item in enumerate(capabilities):
            if not isinstance(item, dict):
                raise QMPError(self.dialect.bad_type(f"capabilities[{i}]", "object"))
            check_args(self.dialect, {"capability": ("str", True), "state": ("bool", True)}, item)
            if item["capability"] not in new:
                raise QMPError(self.dialect.bad_enum("capability", item["capability"]))
            new[item["capability"]] = item["state"]
        _check_caps(new, self.dialect, self.guest)
        self.caps = new
        self.knobs.xbzrle = new["xbzrle"]
        self.knobs.auto_converge = new.get("auto-converge", False)
        self.knobs.postcopy_ram = new.get("postcopy-ram", False)
        self.knobs.pause_before_switchover = new.get("pause-before-switchover", False)
        self.knobs.dirty_limit = new.get("dirty-limit", False)
        return {}

    def _cmd_migrate(self, uri: str, blk: bool = False, inc: bool = False,
                     detach: bool = False, resume: bool = False) -> dict[str, Any]:
        m, now = self.migration, self.fleet.now()
        if resume:
            if m is None or m.status != "postcopy-paused":
                raise QMPError("Cannot resume if there is no paused migration")
            self._resume_postcopy(m, uri, now)
            return {}
        if m is not None and m.running:
            raise QMPError("There's a migration process in progress")
        if self.dialect.modern:
            if self._run_state == "inmigrate":
                raise QMPError("Guest is waiting for an incoming migration")
            if self._run_state == "postmigrate":
                raise QMPError("Can't migrate the vm that was paused due to previous migration")
        schemes = MIGRATION_SCHEMES_72 if self.dialect.modern else MIGRATION_SCHEMES
        if not uri.startswith(schemes):
            raise QMPError("Parameter 'uri' expects a valid migration protocol")
        blk = blk or inc or self.caps.get("block", False)
        self.guest.running = self._run_state == "running"
        self.migration = Migration(self.guest, self.knobs, start=now, rng=self.rng, blk=blk)
        self._dest = self.fleet.connect_migration(uri)  # None: a sink (exec:, fd:, unknown address)
        if self._dest is not None:
            self._dest.incoming_source = self
        self.fleet.start_ticking(self)
        self._apply(self.migration.drain_events())
        return {}

    def _cmd_migrate_cancel(self) -> dict[str, Any]:
        if self.migration is not None:
            self._apply(self.migration.cancel(self.fleet.now()))
        return {}

    def _cmd_stop(self) -> dict[str, Any]:
        if self._run_state == "running":
            if self.migration is not None:
                self._apply(self.migration.set_guest_running(self.fleet.now(), False))
            self.guest.running = False
            self._run_state = "paused"
            self.emit("STOP", None)
        return {}

    def _cmd_cont(self) -> dict[str, Any]:
        if self._run_state == "inmigrate":
            if not self.dialect.modern:
                raise QMPError("An incoming migration is expected before this command "
                               "can be executed", "MigrationExpected")
            self.autostart = True  # 7.2: run as soon as the incoming migration is done
            return {}
        if self._run_state in ("paused", "postmigrate", "prelaunch"):
            if self.migration is not None:
                self._apply(self.migration.set_guest_running(self.fleet.now(), True))
            self.guest.running = True
            self._run_state = "running"
            self.emit("RESUME", None)
        return {}

    def _cmd_quit(self) -> dict[str, Any]:
        return {}  # the session writes the reply, then quits

    # -- commands: 1.4 ---------------------------------------------------------------------
    def _cmd_migrate_set_speed(self, value: int) -> dict[str, Any]:
        self.knobs.max_bandwidth = max(0, value)  # the seed clamps negative values to 0
        return {}

    def _cmd_migrate_set_downtime(self, value: float) -> dict[str, Any]:
        self.knobs.downtime_limit = max(0.0, float(value))  # seconds; the seed keeps ns
        return {}

    def _cmd_migrate_set_cache_size(self, value: int) -> dict[str, Any]:
        if value < PAGE:
            raise QMPError("Parameter 'cache size' expects is smaller than page size")
        self.knobs.xbzrle_cache_size = dialects.pow2floor(value)  # xbzrle_cache_resize()
        return {}

    def _cmd_query_migrate_cache_size(self) -> int:
        return self.knobs.xbzrle_cache_size

    # -- commands: 7.2 ---------------------------------------------------------------------
    def _cmd_qmp_capabilities(self, enable: list[str] | None = None) -> dict[str, Any]:
        raise QMPError(self.dialect.already_negotiated("qmp_capabilities"), "CommandNotFound")

    def _cmd_query_qmp_schema(self) -> list[dict[str, Any]]:
        return dialects.qmp_schema_72(self.dialect.commands, self.dialect.parameter_enums)

    def _cmd_query_kvm(self) -> dict[str, Any]:
        return {"enabled": self.guest.kvm or self.guest.dirty_ring, "present": True}

    def _cmd_query_cpus_fast(self) -> list[dict[str, Any]]:
        return [{"cpu-index": i, "qom-path": f"/machine/unattached/device[{i}]", "thread-id": 1000 + i,
                 "props": {"core-id": 0, "thread-id": 0, "socket-id": i}, "target": "x86_64"}
                for i in range(self.guest.vcpus)]

    def _cmd_query_migrate_parameters(self) -> dict[str, Any]:
        return dict(self.params)

    def _cmd_migrate_set_parameters(self, **kwargs: Any) -> dict[str, Any]:
        values = dialects.check_parameters_72({k.replace("_", "-"): v for k, v in kwargs.items()}, self.dialect)
        m = self.migration
        if m is not None and m.running:
            self._apply(m.settle(self.fleet.now()))  # new limits apply from now on
        self.params.update(values)
        p, k = self.params, self.knobs
        k.max_bandwidth = p["max-bandwidth"]
        k.downtime_limit = p["downtime-limit"] / 1000
        k.xbzrle_cache_size = p["xbzrle-cache-size"]
        k.throttle_initial = p["cpu-throttle-initial"]
        k.throttle_increment = p["cpu-throttle-increment"]
        k.throttle_max = p["max-cpu-throttle"]
        k.throttle_trigger = p["throttle-trigger-threshold"]
        k.max_postcopy_bandwidth = p["max-postcopy-bandwidth"]
        k.vcpu_dirty_limit = p.get("vcpu-dirty-limit", k.vcpu_dirty_limit)
        return {}

    def _cmd_migrate_incoming(self, uri: str, exit_on_error: bool = True) -> dict[str, Any]:
        if self._run_state != "inmigrate":
            raise QMPError("'-incoming' was not specified on the command line")
        if self.incoming_uri is not None or self.incoming_status == "failed":
            raise QMPError("The incoming migration has already been started")
        if not uri.startswith(MIGRATION_SCHEMES_72):
            raise QMPError(f"unknown migration protocol: {uri}")
        if self.fleet.listening_on(uri) is not None:
            raise QMPError("Failed to bind socket: Address already in use")
        self._listen(uri)
        self.exit_on_error = exit_on_error
        if self.dialect.version >= (10, 0, 0):
            self._incoming_set("setup", self.fleet.now())  # 10.0 says setup while it listens
        return {}

    def _cmd_migrate_continue(self, state: str) -> dict[str, Any]:
        if state not in self.dialect.statuses:
            raise QMPError(self.dialect.bad_enum("state", state))
        current = self.migration.status if self.migration is not None else "none"
        if current != state:
            raise QMPError(f"Migration not in expected state: {current}")
        assert self.migration is not None
        self._apply(self.migration.continue_switchover(self.fleet.now()))
        return {}

    def _cmd_migrate_start_postcopy(self) -> dict[str, Any]:
        if not self.caps["postcopy-ram"]:
            raise QMPError("Enable postcopy with migrate_set_capability before "
                           "the start of migration")
        m = self.migration
        if m is None or m.status not in ("setup", "active"):
            raise QMPError("Postcopy must be started after migration has been started")
        self._apply(m.start_postcopy(self.fleet.now()))
        return {}

    def _cmd_migrate_pause(self) -> dict[str, Any]:
        ten = self.dialect.version >= (10, 0, 0)
        pausable = ("postcopy-active", "postcopy-recover") if ten else ("postcopy-active",)
        source = self.incoming_source
        if self.migration is None and source is not None and self.incoming_status in pausable:
            # On the destination: it shuts the stream, and the source sees the channel break.
            assert source.migration is not None
            source._apply(source.migration.pause_postcopy(self.fleet.now(), "Channel error: Input/output error"))
            return {}
        m = self.migration
        if m is None or m.status not in pausable:
            raise QMPError("migrate-pause is currently only supported during "
                           + ("postcopy-active or postcopy-recover state" if ten else "postcopy-active state"))
        self._apply(m.pause_postcopy(self.fleet.now()))
        return {}

    def _cmd_migrate_recover(self, uri: str) -> dict[str, Any]:
        """On a destination paused in post-copy: listen on `uri` for the source's resume (again
        and elsewhere if asked twice, as QEMU does)."""
        if self.incoming_status != "postcopy-paused":
            raise QMPError("Migrate recover can only be run when postcopy is paused.")
        if not uri.startswith(MIGRATION_SCHEMES_72):
            raise QMPError(f"unknown migration protocol: {uri}")
        if self.fleet.listening_on(uri) not in (None, self):
            raise QMPError("Failed to bind socket: Address already in use")
        self.fleet.stop_listening(self)
        self._listen(uri)
        if self.dialect.version < (10, 0, 0) and self.caps.get("events"):
            self.emit("MIGRATION", {"status": "setup"})  # 7.2 says setup, and query-migrate still paused
        return {}

    def _resume_postcopy(self, m: Migration, uri: str, now: float) -> None:
        """migrate with resume: reconnect to the destination listening at `uri` (migrate-recover)."""
        ten = self.dialect.version >= (10, 0, 0)
        dest = self.fleet.listening_on(uri)
        if dest is None or dest is not self._dest or dest.incoming_status != "postcopy-paused":
            where = uri.partition(":")[2]
            self._apply(m.resume_postcopy(now, recover_setup=ten,
                                          refused=f"Failed to connect to '{where}': No such file or directory"))
            return
        self.fleet.connect_migration(uri)
        self._apply(m.resume_postcopy(now, recover_setup=ten))

    def _cmd_calc_dirty_rate(self, calc_time: int, sample_pages: int = 512,
                             mode: str = "page-sampling") -> dict[str, Any]:
        if mode not in dialects.ENUMS_72["mode"]:
            raise QMPError(self.dialect.bad_enum("mode", mode))
        if not 1 <= calc_time <= 60:
            raise QMPError("Parameter 'calc-time' expects a value between 1 and 60 seconds")
        now = self.fleet.now()
        if self._dirty_probe is not None and self._dirty_probe.status(now, self.guest) == "measuring":
            raise QMPError("Dirty page rate calculation is in processing")
        self._dirty_probe = DirtyRateProbe(now, calc_time, sample_pages, mode)
        return {}

    def _cmd_query_dirty_rate(self) -> dict[str, Any]:
        probe = self._dirty_probe
        if probe is None:
            return {"status": "unstarted", "sample-pages": 0, "mode": "page-sampling",
                    "start-time": 0, "calc-time": 0}
        info = {"status": probe.status(self.fleet.now(), self.guest),
                "sample-pages": probe.sample_pages, "mode": probe.mode,
                "start-time": int(probe.start), "calc-time": int(probe.calc_time)}
        if info["status"] == "measured":
            info["dirty-rate"] = int(probe.result_mb or 0)
        return info


def _check_caps(caps: dict[str, bool], dialect: Dialect, guest: Guest) -> None:
    """A few of migrate_caps_check()'s rules: 7.2's (as Debian's 7.2 answers: it takes postcopy-ram
    with compress), and 10.0's, which refuses multifd with xbzrle (8.2) or post-copy (8.1), and
    the dirty limit with auto-converge or off a KVM dirty ring (8.1)."""
    if caps.get("dirty-limit"):
        if caps.get("auto-converge"):
            raise QMPError("dirty-limit conflicts with auto-converge either of then available currently")
        if not guest.dirty_ring:
            raise QMPError("dirty-limit requires KVM with accelerator property 'dirty-ring-size' set")
    if caps.get("postcopy-ram") and caps.get("x-ignore-shared"):
        raise QMPError("Postcopy is not compatible with ignore-shared")
    if caps.get("multifd") and caps.get("compress"):
        raise QMPError("Multifd is not compatible with compress")
    if dialect.version >= (10, 0, 0):
        if caps.get("postcopy-ram") and caps.get("multifd"):
            raise QMPError("Postcopy is not yet compatible with multifd")
        if caps.get("multifd") and caps.get("xbzrle"):
            raise QMPError("Multifd is not compatible with xbzrle")
    if caps.get("postcopy-preempt") and not caps.get("postcopy-ram"):
        raise QMPError("Postcopy preempt requires postcopy-ram")
    if caps.get("zero-copy-send") and not caps.get("multifd"):
        raise QMPError("Zero copy only available for non-compressed non-TLS multifd migration")


def _socket_address(uri: str) -> dict[str, Any]:
    scheme, _, rest = uri.partition(":")
    if scheme == "unix":
        return {"path": rest, "type": "unix"}
    host, _, port = rest.rpartition(":")
    return {"host": host or "0.0.0.0", "port": port, "type": "inet"}
