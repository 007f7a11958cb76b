"""One simulated QEMU: its QMP monitor, its commands, its migration, its faults.

A SimVM holds no task of its own.  Its migration model is advanced lazily: whenever a
command touches it, and by the fleet's one shared ticker while a migration runs (so
events and the destination's completion happen on time even when nobody asks).
"""
from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migtui.sim import dialects
from migtui.sim.dialects import Dialect, QMPError, check_args
from migtui.sim.jsonstream import OVERFLOW, JSONStreamer
from migtui.sim.model import (
    FINISHED,
    PAGE,
    DirtyRateProbe,
    Guest,
    Knobs,
    Migration,
    ModelEvent,
)

if TYPE_CHECKING:
    from migtui.sim.fleet import SimFleet

MIGRATION_SCHEMES = ("tcp:", "unix:", "exec:", "fd:")
MIGRATION_SCHEMES_72 = MIGRATION_SCHEMES + ("rdma:",)
DEFAULT_GARBAGE = b"\x00\xffthis is not JSON }{\r\n"
OVERLONG_LINE = 10 * 2**20 + PAGE  # just over the 10 MiB read buffer of qemu.qmp and libvirt


class SimVM:
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
        self.incoming_source: SimVM | None = None
        self._dest: SimVM | None = None
        self._dirty_probe: DirtyRateProbe | None = None
        self._was_running = True  # whether the guest ran when migration stopped it
        # Monitor and faults.
        self._server: asyncio.AbstractServer | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._client_lock = asyncio.Lock()  # QEMU serves one monitor client at a time
        self._writer: asyncio.StreamWriter | None = None  # the client being served
        self._negotiated = False
        self._oob = False
        self._transports: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._thaw_timer: asyncio.TimerHandle | None = None
        self._held: list[bytes] = []  # events emitted while frozen
        self._pending_raw: list[bytes] = []  # fault bytes for the next client
        self.reply_delay = 0.0
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

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, tcp: bool = False) -> None:
        if len(str(self.socket_path).encode()) > 107:
            raise ValueError(f"socket path too long for AF_UNIX: {self.socket_path}")
        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._on_connect, path=str(self.socket_path))
        if tcp:
            self._tcp_server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
            host, port = self._tcp_server.sockets[0].getsockname()[:2]
            self.tcp_address = (host, port)

    async def close(self) -> None:
        """Stop serving (fleet shutdown); the migration state is left as it is."""
        self._shutdown_monitor()
        tasks = [t for t in self._handlers if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _shutdown_monitor(self) -> None:
        for server in (self._server, self._tcp_server):
            if server is not None:
                server.close()
        for writer in list(self._transports):
            writer.transport.abort()
        self._thawed.set()
        self.socket_path.unlink(missing_ok=True)

    # -- fault switches ----------------------------------------------------------------
    def freeze(self, seconds: float | None = None) -> None:
        """Stop answering (commands and events are held) for ``seconds``, or until thaw()."""
        self._thawed.clear()
        if self._thaw_timer is not None:
            self._thaw_timer.cancel()
        if seconds is not None:
            self._thaw_timer = asyncio.get_running_loop().call_later(seconds, self.thaw)

    def thaw(self) -> None:
        self._thaw_timer = None
        held, self._held = self._held, []
        for data in held:
            self._write(data)
        self._thawed.set()

    @property
    def connected(self) -> bool:
        """Whether a client is being served (greeted) right now."""
        return self._writer is not None

    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    def drop_connection(self) -> None:
        """Cut the current client off (as if the socket broke)."""
        if self._writer is not None:
            self._writer.transport.abort()

    def send_garbage(self, data: bytes = DEFAULT_GARBAGE) -> None:
        """Write raw bytes to the client now, or right after the next client's greeting."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)
        else:
            self._pending_raw.append(data)

    def send_long_line(self, size: int = OVERLONG_LINE) -> None:
        """An over-long line: ``size`` bytes with no newline (default: past 10 MiB buffers)."""
        self.send_garbage(b'{"event": "' + b"x" * max(0, size - 11))

    def set_reply_delay(self, seconds: float) -> None:
        """Answer every command ``seconds`` late (events are not delayed)."""
        self.reply_delay = seconds

    def fail_migration(self, desc: str = "Unable to write to socket: Connection reset by peer") -> None:
        """Fail the running migration now (status failed; 7.2 reports error-desc)."""
        self.sync()
        if self.migration is not None:
            self._apply(self.migration.fail(self.fleet.now(), desc))
        elif self.incoming_source is not None:
            self.incoming_source.fail_migration(desc)

    def kill(self) -> None:
        """The QEMU process dies: monitor gone, no SHUTDOWN event, socket removed."""
        if not self.alive:
            return
        self.sync()
        self._die()
        if self.migration is not None and self.migration.running:
            self._apply(self.migration.fail(self.fleet.now(), "killed"))
        source, self.incoming_source = self.incoming_source, None
        if source is not None:  # the source sees its connection break
            source.fail_migration("Unable to write to socket: Broken pipe")

    def _die(self) -> None:
        self.alive = False
        self._run_state = "shutdown"
        self._shutdown_monitor()
        if self.incoming_uri is not None:
            self.fleet._unlisten(self)

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
            self.fleet._deactivate(self)

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
        elif status == "postcopy-active":
            dest._incoming_set("postcopy-active", ev.t)
        elif status == "completed":
            dest._incoming_resume(ev.t)  # 7.2 runs the guest before announcing completion
            dest._incoming_set("completed", ev.t)
            self._dest = dest.incoming_source = None
        elif status in ("failed", "cancelled"):
            self._dest = dest.incoming_source = None
            if dest.incoming_status not in ("none", "setup"):
                dest.kill()  # like QEMU: "load of migration failed", the process exits
            elif dest.incoming_uri is not None:
                self.fleet._listen(dest, dest.incoming_uri)  # never connected: still listening

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
        self.fleet._listen(self, uri)

    # -- events --------------------------------------------------------------------------
    def emit(self, name: str, data: dict[str, Any] | None, t: float | None = None) -> None:
        """Send an event to the negotiated client, if any (QEMU drops events otherwise)."""
        if self._writer is None or not self._negotiated:
            return
        seconds, micro = self.fleet.timestamp(t)
        msg: dict[str, Any] = {"event": name}
        if data is not None:
            msg["data"] = data
        msg["timestamp"] = {"seconds": seconds, "microseconds": micro}
        raw = json.dumps(msg).encode() + b"\r\n"
        if self.frozen:
            self._held.append(raw)
        else:
            self._write(raw)

    def _write(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    # -- the monitor -------------------------------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._transports.add(writer)
        try:
            async with self._client_lock:
                if self.alive and not reader.at_eof():
                    await self._session(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._transports.discard(writer)
            self._handlers.discard(task)
            writer.transport.abort()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        major, minor, micro = self.dialect.version
        greeting = {"QMP": {"version": {"qemu": {"major": major, "minor": minor, "micro": micro},
                                        "package": ""},
                            "capabilities": list(self.dialect.greeting_capabilities)}}
        self._writer, self._negotiated, self._oob = writer, False, False
        try:
            await self._thawed.wait()
            writer.write(json.dumps(greeting).encode() + b"\r\n")
            for data in self._pending_raw:
                writer.write(data)
            self._pending_raw.clear()
            streamer = JSONStreamer()
            while self.alive:
                data = await reader.read(65536)
                if not data:
                    break
                for text in streamer.feed(data):
                    await self._thawed.wait()
                    reply, quit_ = self._handle(text)
                    if self.reply_delay > 0:
                        await asyncio.sleep(self.reply_delay)
                    await self._thawed.wait()
                    self._write(json.dumps(reply).encode() + b"\r\n")
                    if quit_:
                        await self._quit(writer)
                        return
                await writer.drain()
        finally:
            self._writer = None
            self._negotiated = False

    def _handle(self, text: str) -> tuple[dict[str, Any], bool]:
        """One JSON text in, one reply out (and whether the VM quits after it)."""
        modern = self.dialect.modern
        if text == OVERFLOW:
            return _error("JSON parse error, token too long" if modern else "Invalid JSON syntax"), False
        try:
            msg = json.loads(text)
        except json.JSONDecodeError as exc:
            return _error(f"JSON parse error, {exc.msg}" if modern else "Invalid JSON syntax"), False
        if not isinstance(msg, dict):
            return _error("QMP input must be a JSON object" if modern
                          else "Expected 'object' in QMP input"), False
        ident = msg.get("id")
        has_id = "id" in msg
        try:
            name, args = self._check_envelope(msg)
            if not self._negotiated:
                if name != "qmp_capabilities":
                    raise QMPError(self.dialect.not_negotiated(name), "CommandNotFound")
                check_args(self.dialect, self.dialect.commands[name], args)
                self._negotiated = True
                self._oob = "oob" in args.get("enable", [])
                result: Any = {}
            else:
                result = self.execute(name, args)
        except Exception as exc:  # noqa: BLE001 - a simulator bug answers, rather than hanging up
            err = exc if isinstance(exc, QMPError) else QMPError(f"simulator error: {exc!r}")
            reply = _error(err.desc, err.cls)
            if has_id:
                reply["id"] = ident
            return reply, False
        reply = {"return": result}
        if has_id:
            reply["id"] = ident
        return reply, name == "quit"

    def _check_envelope(self, msg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        modern = self.dialect.modern
        allowed = {"execute", "arguments", "id"} | ({"exec-oob", "control"} if modern else set())
        for key in msg:
            if key not in allowed:
                raise QMPError(f"QMP input member '{key}' is unexpected" if modern
                               else f"QMP input object member '{key}' is unexpected")
        if "execute" in msg and "exec-oob" in msg:
            raise QMPError("QMP input must not contain both 'execute' and 'exec-oob'")
        key = "exec-oob" if "exec-oob" in msg else "execute"
        if key not in msg:
            raise QMPError("QMP input lacks member 'execute'" if modern
                           else "Expected 'execute' in QMP input")
        name = msg[key]
        if not isinstance(name, str):
            raise QMPError(f"QMP input member '{key}' must be a string" if modern
                           else "QMP input object member 'execute' expects 'string'")
        args = msg.get("arguments", {})
        if not isinstance(args, dict):
            raise QMPError("QMP input member 'arguments' must be an object" if modern
                           else "QMP input object member 'arguments' expects 'object'")
        if key == "exec-oob":
            if not self._oob:
                raise QMPError("QMP input member 'exec-oob' is unexpected")
            if name in self.dialect.commands and name not in dialects.OOB_COMMANDS_72:
                raise QMPError(f"The command {name} does not support OOB")
        return name, args

    async def _quit(self, writer: asyncio.StreamWriter) -> None:
        shutdown = {"guest": False, "reason": "host-qmp-quit"} if self.dialect.modern else None
        self.emit("SHUTDOWN", shutdown)
        writer.close()  # flush the reply and SHUTDOWN before the process "exits"
        await writer.wait_closed()
        self.kill()

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
        _check_caps(new, self.dialect)
        self.caps = new
        self.knobs.xbzrle = new["xbzrle"]
        self.knobs.auto_converge = new.get("auto-converge", False)
        self.knobs.postcopy_ram = new.get("postcopy-ram", False)
        self.knobs.pause_before_switchover = new.get("pause-before-switchover", False)
        return {}

    def _cmd_migrate(self, uri: str, blk: bool = False, inc: bool = False,
                     detach: bool = False, resume: bool = False) -> dict[str, Any]:
        m, now = self.migration, self.fleet.now()
        if resume:
            if m is None or m.status != "postcopy-paused":
                raise QMPError("Cannot resume if there is no paused migration")
            self._apply(m.resume_postcopy(now))
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
        self._dest = self.fleet._connect(uri)  # None: a sink (exec:, fd:, unknown address)
        if self._dest is not None:
            self._dest.incoming_source = self
        self.fleet._activate(self)
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
        return dialects.qmp_schema_72(self.dialect.commands)

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
        return {}

    def _cmd_migrate_incoming(self, uri: str, exit_on_error: bool = True) -> dict[str, Any]:
        if self._run_state != "inmigrate":
            raise QMPError("'-incoming' was not specified on the command line")
        if self.incoming_uri is not None:
            raise QMPError("The incoming migration has already been started")
        if not uri.startswith(MIGRATION_SCHEMES_72):
            raise QMPError(f"unknown migration protocol: {uri}")
        if self.fleet._listener(uri) is not None:
            raise QMPError("Failed to bind socket: Address already in use")
        self._listen(uri)
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
        m = self.migration
        if m is None or m.status != "postcopy-active":
            raise QMPError("migrate-pause is currently only supported during "
                           "postcopy-active state")
        self._apply(m.pause_postcopy(self.fleet.now()))
        return {}

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

    def __repr__(self) -> str:
        return f"<SimVM {self.name} {self.dialect.name} {self._run_state}>"


def _error(desc: str, cls: str = "GenericError") -> dict[str, Any]:
    return {"error": {"class": cls, "desc": desc}}


def _check_caps(caps: dict[str, bool], dialect: Dialect) -> None:
    """A few of migrate_caps_check()'s rules: 7.2's (as Debian's 7.2 answers: it takes postcopy-ram
    with compress), and 10.0's, which refuses multifd with xbzrle (8.2) or post-copy (8.1)."""
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


def uri_key(uri: str) -> tuple[str, str] | None:
    """How a source's URI finds a listening destination: unix by path, tcp by port."""
    scheme, _, rest = uri.partition(":")
    if scheme == "unix":
        return ("unix", str(Path(rest).absolute()))
    if scheme == "tcp":
        return ("tcp", rest.rpartition(":")[2].split(",")[0])
    return None


__all__ = ["FINISHED", "QMPError", "SimVM", "uri_key"]
