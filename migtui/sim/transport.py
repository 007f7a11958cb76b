"""The QMP monitor's socket side: what a client sees before and around a command.

Accepting clients on the unix socket (and an optional TCP one), one at a time as QEMU
does; the greeting; splitting the byte stream into JSON texts; the envelope checks and
capability negotiation; replies and events written back, held while the VM is frozen.
What a command does is the command table's business (migtui/sim/commands.py).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migtui.sim import dialects
from migtui.sim.dialects import Dialect, QMPError, check_args
from migtui.sim.jsonstream import OVERFLOW, JSONStreamer

if TYPE_CHECKING:
    from migtui.sim.fleet import SimFleet


class QMPMonitor:
    """SimVM's monitor half.  It reads the VM's ``dialect``, ``alive``, ``fleet`` (for event
    timestamps) and ``socket_path``; it hands commands to ``execute`` and quits with ``kill``."""

    fleet: SimFleet
    dialect: Dialect
    alive: bool
    socket_path: Path
    tcp_address: tuple[str, int] | None

    def _init_monitor(self) -> None:
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

    @property
    def connected(self) -> bool:
        """Whether a client is being served (greeted) right now."""
        return self._writer is not None

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


def _error(desc: str, cls: str = "GenericError") -> dict[str, Any]:
    return {"error": {"class": cls, "desc": desc}}
