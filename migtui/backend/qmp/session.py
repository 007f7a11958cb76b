"""One QMP session per VM: connect, learn who is there, poll, listen, reconnect.

Built on qemu.qmp's QMPClient. The rules that keep an on-call console alive:
- at most one `query-migrate` in flight per VM: a slow QEMU (the `device`
  state can take tens of seconds) marks the VM unresponsive, it does not get
  a queue of requests;
- a monitor that accepts the connection but sends no greeting is held by
  another client (QEMU serves one per socket): say so instead of hanging;
- when the connection drops, the last sample, the history and the reason stay.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import ssl as ssl_module
import stat
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from qemu.qmp import ConnectError, ExecuteError, QMPClient, QMPError
from qemu.qmp.error import ProtocolError
from qemu.qmp.protocol import Runstate

from migtui.model.derived import MigrationTracker
from migtui.model.endpoint import Endpoint
from migtui.model.hints import hint_for
from migtui.model.requests import MigrationOptions, ParamChange
from migtui.model.history import PassMark
from migtui.model.sample import MigrationSample, _bad_number, parse_query_migrate
from migtui.model.vm import Connection, EventRecord, VMState
from migtui.backend.api import Destination, Features, VMHandle
from migtui.backend.audit import AuditLog, redact
from migtui.backend.qmp import controls
from migtui.backend.qmp.client import Client, disconnect
from migtui.backend.qmp.dialect import Dialect, migrate_args_from_schema, parameter_choices_from_schema, parse_version
from migtui.backend.errors import ConnectFailed, NotConnected, QMPRefused, Refused
from migtui.backend.messages import ActionResult, BackendMessage, Listener, VMEvent, VMUpdated, settings_update
from migtui.backend.wake import Wake, stop_task

if TYPE_CHECKING:
    from migtui.model.preflight import Prediction

__all__ = ["VMSession", "SessionOptions", "qmp_text"]

# qemu.qmp logs every protocol hiccup at ERROR; the console reports them itself.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

WATCHED_EVENTS = frozenset({"MIGRATION", "MIGRATION_PASS", "STOP", "RESUME", "SHUTDOWN"})
# Events after which the migration status or run-state may have changed.
_POLL_AFTER = frozenset({"MIGRATION", "STOP", "RESUME", "SHUTDOWN", "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED"})
# A MIGRATION_PASS asks for a sample too (the pass count is in query-migrate), but at most one
# such poll per this many seconds: a migration with a tiny dirty set can sync many times a second.
_PASS_POLL_GAP = 0.1


class SessionOptions:
    """Timing of one session; defaults from the foundation issue."""

    def __init__(
        self,
        poll_interval: float = 1.0,
        active_interval: float = 0.5,
        request_timeout: float = 5.0,
        greeting_timeout: float = 3.0,
        history_seconds: float = 3600.0,
        enable_events: bool = True,
        reconnect: bool = True,
        backoff_max: float = 5.0,
        ssl: ssl_module.SSLContext | None = None,
        autopoll: bool = True,
        audit: AuditLog | None = None,
    ) -> None:
        self.poll_interval = poll_interval
        self.active_interval = active_interval
        self.request_timeout = request_timeout
        self.greeting_timeout = greeting_timeout
        self.history_len = max(16, int(history_seconds / active_interval))
        self.enable_events = enable_events
        self.reconnect = reconnect
        self.backoff_max = backoff_max
        self.ssl = ssl
        # False: the caller samples by itself (migtui watch), the session only listens.
        self.autopoll = autopoll
        self.audit = audit or AuditLog(None)


def _noop(_: BackendMessage) -> None:
    pass


def _every_sample() -> float:
    return 0.0  # a session alone (no backend): bring the verdict up to date on every sample



class VMSession(VMHandle):
    """One VM over QMP: the QMP backend's VMHandle. Its controls are migtui.backend.qmp.controls."""

    def __init__(
        self,
        endpoint: Endpoint,
        listener: Listener | None = None,
        options: SessionOptions | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.options = options or SessionOptions()
        self.listener = listener or _noop
        self.key = endpoint.name  # stable, even when QEMU's -name replaces the shown name
        self.vm = VMState(endpoint=endpoint, name=endpoint.name, tracker=MigrationTracker(self.options.history_len))
        # How old a verdict may stay as samples arrive (VMState.observe): its backend's, by fleet size.
        self.assess_max_age: Callable[[], float] = _every_sample
        self.dialect: Dialect | None = None
        self._client: Client | None = None
        self._wake = Wake()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # The one query-migrate in flight: the reply future from Client.send().
        self._inflight: asyncio.Future[dict[str, Any]] | None = None
        self._sent_at = 0.0  # loop time the in-flight query-migrate was sent
        self._stall_timer: asyncio.TimerHandle | None = None  # the watchdog that marks a silent VM unresponsive
        self._last_poll = float("-inf")  # loop time of the last query-migrate sent
        self._pass_poll: asyncio.TimerHandle | None = None  # a MIGRATION_PASS poll held back by _PASS_POLL_GAP
        self._block_jobs = False  # a drive-mirror runs: read disk progress from query-block-jobs
        self._shutdown_seen = False
        self._zero_retries = 0  # re-polls of a completed reply that still shows zero times
        self._features: tuple[Dialect, Features] | None = None
        self._recovery_shown: dict[str, list[Any]] = {}  # destination key -> the steps shown

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Run the session in the background until close(); it reconnects by itself."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"migtui-session-{self.vm.name}")

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        await stop_task(task)
        await self._drop()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def poll_now(self) -> None:
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.runstate == Runstate.RUNNING

    # ---- the VMHandle controls: each goes through controls, the dialect and execute() ------

    @property
    def features(self) -> Features:
        d = self.dialect
        if d is None:
            return Features(why_not=f"not connected yet: {self.vm.reason or 'connecting'}")
        cached = self._features
        if cached is None or cached[0] is not d:
            cached = self._features = (d, Features(
                migrate=d.has("migrate"), cancel=d.has("migrate_cancel"), set_parameters=True,
                set_capabilities=d.has("migrate-set-capabilities"), postcopy=d.has("migrate-start-postcopy"),
                recover_postcopy=d.has("migrate-recover"), block_migration=d.has_block_migration,
                preflight=d.has("calc-dirty-rate"), migrate_to_uri=d.has("migrate")))
        return cached[1]

    async def migrate(self, options: MigrationOptions, destination: VMHandle | Destination | None = None,
                      uri: str | None = None) -> str:
        if isinstance(destination, Destination):
            destination = destination.target
        if destination is not None and not isinstance(destination, VMSession):
            raise Refused(f"{destination.vm.name} is not reached over QMP: migrate to its URI instead")
        plan = await controls.start_migration(self, options, destination=destination, uri=uri)
        return plan.uri

    async def cancel(self) -> None:
        await controls.cancel_migration(self)

    def check_parameters(self, change: ParamChange) -> list[str]:
        return [qmp_text(command, args) for command, args in controls.parameter_commands(self, change)]

    async def set_parameters(self, change: ParamChange) -> None:
        await controls.set_parameters(self, change)

    async def set_capabilities(self, capabilities: Mapping[str, bool]) -> None:
        await controls.set_capabilities(self, capabilities)

    async def start_postcopy(self) -> None:
        await controls.start_postcopy(self)

    def check_recovery(self, destination: VMHandle) -> list[str]:
        if not isinstance(destination, VMSession):
            raise Refused(f"{destination.vm.name} is not reached over QMP: recover it where it runs")
        steps = controls.plan_recovery(self, destination)
        self._recovery_shown[destination.key] = steps  # recover_postcopy sends what was shown, or nothing
        names = {"source": self.vm.name, "destination": destination.vm.name}
        return [f"on {names[side]} ({side}): {qmp_text(command, args)}" for side, (command, args) in steps]

    async def recover_postcopy(self, destination: VMHandle) -> None:
        if not isinstance(destination, VMSession):
            raise Refused(f"{destination.vm.name} is not reached over QMP: recover it where it runs")
        await controls.recover_postcopy(self, destination, self._recovery_shown.pop(destination.key, None))

    async def preflight(self, options: MigrationOptions) -> Prediction:
        return await controls.preflight(self, options)

    # ---- connecting ------------------------------------------------------

    async def connect(self) -> None:
        """Connect once, learn who is there and take a first sample. Raises ConnectFailed, and nothing else.

        A broken or hostile monitor can make any step fail in any way (qemu.qmp's connect() can
        fail its own assert, a reply can be of any type): whatever it is, the connection is
        dropped and the VM is left disconnected (or monitor busy) with the reason in one line.
        """
        self._set_connection(Connection.CONNECTING, None)
        try:
            self._client = await self._open()
            await self._identify()
            await self._poll_once(first=True)
            await self._enable_events()
        except Exception as err:
            ended = await self._drop()
            busy = isinstance(err, ConnectFailed) and err.busy
            if isinstance(err, ConnectFailed):
                reason = _one_line(err.reason)
            else:
                reason = _one_line(_setup_failure(err, ended, self._shutdown_seen))
            self._set_connection(Connection.MONITOR_BUSY if busy else Connection.DISCONNECTED, reason)
            raise ConnectFailed(reason, busy=busy) from None
        except BaseException:  # cancelled
            await self._drop()
            raise
        self._connected.set()

    async def _open(self) -> Client:
        ep = self.endpoint
        opts = self.options
        tls = opts.ssl is not None and ep.kind == "tcp"
        # Without TLS, connect the socket first, so "nothing listens" and "no greeting" read differently.
        # With TLS, one connection only: QEMU serves one client, and a probe would hold it.
        sock = None if tls else await self._open_socket(ep)
        client = Client(self.vm.name)
        client.tls = tls
        try:
            if sock is None:
                await asyncio.wait_for(client.connect(ep.address, ssl=opts.ssl), opts.greeting_timeout)
            else:
                await asyncio.wait_for(client.connect(sock), opts.greeting_timeout)
        except BaseException as err:
            # qemu.qmp rolls a failed connect() back itself, but not when the session fails just as
            # it starts (its reader dies on the line after the negotiation reply): connect() then
            # fails its own `assert runstate == RUNNING`, with the client half torn down. Finish
            # that; its disconnect() re-raises what killed the reader.
            ended = await disconnect(client, 2)
            if sock is not None:
                sock.close()
            if isinstance(err, asyncio.TimeoutError):
                if client.greeting is not None:  # QEMU greeted, so no other client holds it
                    raise ConnectFailed(f"no answer to qmp_capabilities for {opts.greeting_timeout:g}s") from None
                raise ConnectFailed(
                    f"monitor busy: another client holds it (no QMP greeting within {opts.greeting_timeout:g}s)",
                    busy=True,
                ) from None
            if not isinstance(err, Exception):
                raise  # cancelled
            if isinstance(err, ConnectError):
                raise ConnectFailed(_describe_connect_error(err, client.greeting is not None)) from None
            raise ConnectFailed(_setup_failure(err, ended, False)) from None
        return client

    async def _open_socket(self, ep: Endpoint) -> socket.socket:
        """Connect the raw socket ourselves, so a refused path and a silent monitor read differently."""
        loop = asyncio.get_running_loop()
        timeout = self.options.greeting_timeout
        if ep.kind == "unix":
            path = ep.path or ""
            try:
                mode = os.stat(path).st_mode
            except FileNotFoundError:
                raise ConnectFailed(f"no such socket: {path}") from None
            except PermissionError:
                raise ConnectFailed(f"permission denied: {path}") from None
            except OSError as err:
                raise ConnectFailed(f"cannot reach {path}: {err.strerror}") from None
            if not stat.S_ISSOCK(mode):
                raise ConnectFailed(f"not a socket: {path}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, path), timeout)
            except PermissionError:
                sock.close()
                raise ConnectFailed(f"permission denied: {path}") from None
            except ConnectionRefusedError:
                sock.close()
                raise ConnectFailed(f"nothing listens on {path}: QEMU has gone") from None
            except (OSError, asyncio.TimeoutError) as err:
                sock.close()
                raise ConnectFailed(f"cannot connect to {path}: {_oserror_text(err)}") from None
            return sock
        host, port = ep.host or "", ep.port or 0
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        except (OSError, asyncio.TimeoutError) as err:
            raise ConnectFailed(f"cannot resolve {host}: {_oserror_text(err)}") from None
        last: BaseException | None = None
        for family, type_, proto, _, addr in infos:
            sock = socket.socket(family, type_, proto)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
                return sock
            except (OSError, asyncio.TimeoutError) as err:
                sock.close()
                last = err
        if isinstance(last, ConnectionRefusedError):
            raise ConnectFailed(f"connection refused by {host}:{port}: nothing listens there")
        raise ConnectFailed(f"cannot connect to {host}:{port}: {_oserror_text(last)}")

    async def _identify(self) -> None:
        version = await self._query("query-version")
        name = await self._query("query-name")
        status = await self._query("query-status")
        # Replies are read for what they should hold; anything else is "unknown", never an error.
        commands = await self._query("query-commands")
        names = frozenset(c["name"] for c in _records(commands) if isinstance(c.get("name"), str))
        migrate_args = incoming_args = None
        choices: dict[str, tuple[str, ...]] = {}
        if "query-qmp-schema" in names:
            schema = await self._query("query-qmp-schema")
            migrate_args = migrate_args_from_schema(schema)
            incoming_args = migrate_args_from_schema(schema, "migrate-incoming")
            choices = parameter_choices_from_schema(schema)
        caps: dict[str, bool] = {}
        if "query-migrate-capabilities" in names:
            caps = _capabilities(await self._query("query-migrate-capabilities"))
        self.dialect = Dialect(parse_version(version), names, migrate_args, frozenset(caps), choices, incoming_args)
        vm = self.vm
        # What the dirty limit needs: KVM, and how many vCPUs it caps.
        vm.kvm = vm.vcpus = None
        if "query-kvm" in names:
            kvm = await self._query("query-kvm")
            if isinstance(kvm, dict) and isinstance(kvm.get("enabled"), bool):
                vm.kvm = kvm["enabled"]
        if "query-cpus-fast" in names:
            cpus = await self._query("query-cpus-fast")
            vm.vcpus = len(cpus) if isinstance(cpus, list) and cpus else None
        vm.qemu_version = self.dialect.version_text
        vm.dialect = self.dialect.name
        qemu_name = _word(name.get("name")) if isinstance(name, dict) else None
        if not self.endpoint.named and qemu_name is not None:
            vm.name = qemu_name  # QEMU's -name, unless the operator named the endpoint
        vm.run_state = _word(status.get("status")) if isinstance(status, dict) else None
        vm.incoming_uri = None  # maybe a new QEMU: where it listens is read from query-migrate again
        vm.machine = vm.machine_types = None  # and its machine type (controls.refresh_machine)
        vm.capabilities = caps  # guidance reads auto-converge from them
        await self.refresh_parameters()
        self._shutdown_seen = False
        if "query-block-jobs" in names:
            jobs = await self._query("query-block-jobs")
            self._block_jobs = any(j.get("type") == "mirror" for j in _records(jobs))
        self._notify(VMUpdated(self.key, "identity"))

    async def _enable_events(self) -> None:
        """Turn on the `events` capability so MIGRATION and MIGRATION_PASS arrive as they happen."""
        d = self.dialect
        if not self.options.enable_events or d is None or "events" not in d.capabilities:
            return
        if not d.has("migrate-set-capabilities"):
            return  # a VM that lists the capability but not the command to set it
        if self.vm.capabilities.get("events") or self.vm.in_flight:
            return  # capabilities cannot change during a migration
        try:
            await self._query(*d.set_capabilities({"events": True})[0])
        except QMPRefused:
            return
        self.vm.capabilities["events"] = True

    async def refresh_parameters(self) -> None:
        d = self.dialect
        if d is None:
            return
        params: dict[str, Any] = {}
        if d.has("query-migrate-parameters"):
            reply = await self._query("query-migrate-parameters")
            if isinstance(reply, dict):
                # A figure migtui reads (and formats) must be a number; any other value is unknown.
                params.update((k, v) for k, v in reply.items() if k not in _FIGURES or _size(v) is not None)
        if "xbzrle-cache-size" not in params and d.has("query-migrate-cache-size"):
            value = _size(await self._query("query-migrate-cache-size"))
            if value is not None:
                params["xbzrle-cache-size"] = value
        if not d.modern:
            # QEMU before 2.4 cannot report speed or downtime: keep what migtui last set.
            for key in ("max-bandwidth", "downtime-limit"):
                if key in self.vm.parameters:
                    params[key] = self.vm.parameters[key]
        self.vm.parameters = params  # the tracker's: max_bandwidth and downtime_limit_ms follow
        self._notify(self._settings_message())

    async def refresh_capabilities(self) -> None:
        if self.dialect is None or not self.dialect.has("query-migrate-capabilities"):
            return
        reply = await self._query("query-migrate-capabilities")
        if isinstance(reply, list):
            self.vm.capabilities = _capabilities(reply)
            self._notify(self._settings_message())

    # ---- the background loop ---------------------------------------------

    async def _run(self) -> None:
        first = min(0.5, self.options.backoff_max)
        backoff = first
        while not self._closing:
            try:
                if not self.connected:  # a caller may have connected already
                    await self.connect()
                backoff = first
                await self._session_loop()
            except ConnectFailed as err:
                state = Connection.MONITOR_BUSY if err.busy else Connection.DISCONNECTED
                self._set_connection(state, err.reason)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the console must outlive any one VM's trouble
                self._set_connection(Connection.DISCONNECTED, _lost_reason(err, self._shutdown_seen))
            await self._drop()
            self._connected.clear()
            if self._closing or not self.options.reconnect:
                return
            # Backoff between reconnects; poll_now() cuts it short.
            await self._wake.wait(backoff)
            self._wake.clear()
            backoff = min(backoff * 2, self.options.backoff_max)

    async def _session_loop(self) -> None:
        client = self._client
        assert client is not None
        events = asyncio.create_task(self._drain_events(client))
        gone = asyncio.create_task(self._wait_disconnect(client))
        polls = asyncio.create_task(self._poll_loop() if self.options.autopoll else asyncio.Event().wait())
        try:
            done, _ = await asyncio.wait({events, gone, polls}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise what ended the session
            # The connection dropped: qemu.qmp re-raises from disconnect() what broke it.
            await client.disconnect()
            raise ConnectionResetError("QEMU closed the connection")
        finally:
            for task in (events, gone, polls):
                task.cancel()
            await asyncio.gather(events, gone, polls, return_exceptions=True)

    async def _wait_disconnect(self, client: QMPClient) -> None:
        while client.runstate == Runstate.RUNNING:
            await client.runstate_changed()

    async def _poll_loop(self) -> None:
        wake = self._wake
        while not self._closing:
            opts = self.options
            interval = opts.active_interval if self.vm.in_flight else opts.poll_interval
            await wake.wait(interval)
            wake.clear()
            await self._poll_once()

    async def _poll_once(self, first: bool = False) -> MigrationSample:
        """One query-migrate; never a second while the first is unanswered.

        Whoever finds no request in flight (the poll loop, sample(), connect())
        sends one; anyone else waits for that same reply. A silent QEMU is
        marked unresponsive by the watchdog timer (_check_stall) while the
        request stays in flight: nothing is queued behind it, and the reply,
        when it comes, brings the VM back. No Task and no timed wait per sample.
        `first`: connect()'s sample, which waits at most the request timeout (no reply, no VM).
        """
        while True:
            client = self._client
            if client is None:
                raise NotConnected(f"{self.vm.name}: not connected")
            pending = self._inflight
            if pending is None or pending.done():
                pending = self._inflight = client.send("query-migrate")
                loop = asyncio.get_running_loop()
                self._sent_at = self._last_poll = now = loop.time()
                if self._stall_timer is None:
                    self._stall_timer = loop.call_at(now + self.options.request_timeout, self._check_stall)
                waiter: asyncio.Future[dict[str, Any]] = pending  # the sender awaits the reply itself
            else:
                # Another caller's request is unanswered: wait for its reply, send nothing.
                # Shielded, so that cancelling this caller leaves the request to the others.
                waiter = asyncio.shield(pending)
            try:
                reply = await (asyncio.wait_for(waiter, self.options.request_timeout) if first else waiter)
            except asyncio.TimeoutError:
                timeout = self.options.request_timeout
                raise ConnectionResetError(f"no answer to query-migrate for {timeout:g}s") from None
            except asyncio.CancelledError:
                if pending.cancelled() and self._inflight is pending and self._client is client:
                    # The sender was cancelled, and with it the future it awaited; the request is
                    # still on the wire: its reply goes to a new future, for whoever waits next.
                    self._inflight = client.rewait(pending)
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                continue  # not this caller: its sender was cancelled, or _drop() ended the request
            if self._inflight is pending:
                self._inflight = None
            break
        try:
            result = Client.result(reply, "query-migrate")
        except ExecuteError as err:
            raise QMPRefused("query-migrate", err.error_class, str(err)) from None
        when = time.time()  # of QEMU's reply, not of the block-job query after it
        if self._block_jobs:
            result = await self._with_block_job_progress(result)
        sample = parse_query_migrate(result, when)
        vm = self.vm
        was_in_flight = vm.in_flight
        previous_status = vm.migration_status
        vm.observe(sample, self.assess_max_age())
        if vm.connection != Connection.CONNECTED:
            self._set_connection(Connection.CONNECTED, None)
        status = sample.status
        if status != previous_status or was_in_flight != sample.in_flight:
            await self._on_status_change()
        if status == "completed":
            if sample.get(None, "total-time") == 0 and self._zero_retries < 5:
                # QEMU 7.2 can answer the first query after completion with zero times: ask again shortly.
                self._zero_retries += 1
                asyncio.get_running_loop().call_later(0.05, self.poll_now)
        else:
            self._zero_retries = 0
        self._notify(VMUpdated(self.key, "sample", sample=sample))
        return sample

    def _check_stall(self) -> None:
        """The watchdog: one timer per session, re-armed for the request in flight, not one per sample."""
        self._stall_timer = None
        pending = self._inflight
        if pending is None or pending.done() or self._client is None:
            return  # nothing waits; the next query-migrate arms the watchdog again
        loop = asyncio.get_running_loop()
        timeout = self.options.request_timeout
        due = self._sent_at + timeout
        if due - loop.time() > 0.001:
            self._stall_timer = loop.call_at(due, self._check_stall)  # a later request: wait for its turn
            return
        # Keep the one request; queue nothing behind it. Its reply sets the VM connected again.
        self._set_connection(Connection.UNRESPONSIVE, f"no answer to query-migrate for {timeout:g}s; still waiting")

    async def _with_block_job_progress(self, info: Any) -> Any:
        """While a drive-mirror copies the disk (the modern path), its progress as query-migrate's
        `disk` section: added to the reply before the sample is made, so a sample stays frozen."""
        if not isinstance(info, dict) or "disk" in info or self.dialect is None:
            return info
        jobs = await self._query("query-block-jobs")
        mirrors = [j for j in jobs or [] if isinstance(j, dict) and j.get("type") == "mirror"]
        if not mirrors:
            self._block_jobs = False
            return info
        total = sum(_size(j.get("len")) or 0 for j in mirrors)
        done = sum(_size(j.get("offset")) or 0 for j in mirrors)
        return {**info, "disk": {"total": total, "transferred": done, "remaining": max(0, total - done)}}

    async def _on_status_change(self) -> None:
        status = await self._query("query-status")
        run_state = _word(status.get("status")) if isinstance(status, dict) else None
        if run_state is not None:
            self.vm.run_state = run_state
        await self.refresh_parameters()

    async def _drain_events(self, client: QMPClient) -> None:
        # qemu.qmp's default listener keeps every event until read: reading it here bounds it.
        async for event in client.events:
            name = str(event.get("event", "?"))
            data = event.get("data") if isinstance(event.get("data"), dict) else {}
            stamp = event.get("timestamp")
            when = time.time()
            if isinstance(stamp, dict) and _size(stamp.get("seconds")) is not None:
                when = stamp["seconds"] + (_size(stamp.get("microseconds")) or 0) / 1e6
            passes = None  # a pass's number lets the log join consecutive passes into one line
            if name == "MIGRATION_PASS":
                if isinstance(data.get("pass"), int):
                    passes = (data["pass"], data["pass"])
                    self.vm.tracker.history.mark_pass(PassMark(when, data["pass"]))
                self._poll_after_pass()
            elif name == "SHUTDOWN":
                self._shutdown_seen = True
            elif name == "STOP":
                self.vm.run_state = "paused"
            elif name == "RESUME":
                self.vm.run_state = "running"
            elif name in ("BLOCK_JOB_READY", "JOB_STATUS_CHANGE"):
                self._block_jobs = True
            self._log("event", name, _brief(data), when, passes)
            self._notify(VMEvent(self.key, name, dict(data), when))
            if name in _POLL_AFTER:
                self.poll_now()

    def _poll_after_pass(self) -> None:
        """A new pass: sample now (the pass count and rates are in query-migrate), at most every _PASS_POLL_GAP s."""
        if self._pass_poll is not None:
            return  # one is already due
        wait = self._last_poll + _PASS_POLL_GAP - asyncio.get_running_loop().time()
        if wait <= 0:
            self.poll_now()
        else:
            self._pass_poll = asyncio.get_running_loop().call_later(wait, self._pass_poll_due)

    def _pass_poll_due(self) -> None:
        self._pass_poll = None
        self.poll_now()

    # ---- commands --------------------------------------------------------

    async def _query(self, command: str, args: dict[str, Any] | None = None) -> Any:
        """A read-only command, bounded by the request timeout."""
        client = self._client
        if client is None:
            raise NotConnected(f"{self.vm.name}: not connected")
        try:
            return await asyncio.wait_for(client.execute(command, args), self.options.request_timeout)
        except asyncio.TimeoutError:
            raise ConnectionResetError(f"no answer to {command} for {self.options.request_timeout:g}s") from None
        except ExecuteError as err:
            raise QMPRefused(command, err.error_class, str(err)) from None

    async def execute(self, command: str, args: dict[str, Any] | None = None, *, audit: bool = True) -> Any:
        """Send a state-changing command and report it. Raises QMPRefused with QEMU's sentence."""
        client = self._client
        if client is None or client.runstate != Runstate.RUNNING:
            raise NotConnected(f"{self.vm.name} is not connected: {self.vm.reason or 'connecting'}")
        if self.dialect is not None and not self.dialect.has(command):
            # Never send a VM a command it does not have.
            raise QMPRefused(command, "CommandNotFound", f"QEMU {self.dialect.version_text} has no {command} command")
        args = dict(args or {})
        try:
            result = await asyncio.wait_for(client.execute(command, args or None), max(30.0, self.options.request_timeout))
        except ExecuteError as err:
            refused = QMPRefused(command, err.error_class, str(err))
            if audit:
                self.options.audit.record(self.vm.name, str(self.endpoint), command, args, False, refused.desc)
                hint = hint_for(refused.desc)
                self._log("error", command, refused.desc + (f" → {hint}" if hint else ""))
                self._notify(ActionResult(self.key, command, args, False, refused.desc, time.time()))
            raise refused from None
        except asyncio.TimeoutError:
            if audit:
                self.options.audit.record(self.vm.name, str(self.endpoint), command, args, False, "no answer within 30s")
            raise QMPRefused(command, "Timeout", "no answer within 30s") from None
        if audit:
            self.options.audit.record(self.vm.name, str(self.endpoint), command, args, True, result)
            self._log("action", command, _brief(redact(args)) or "ok")
            self._notify(ActionResult(self.key, command, args, True, result, time.time()))
        return result

    async def query(self, command: str, args: dict[str, Any] | None = None) -> Any:
        return await self._query(command, args)

    async def sample(self) -> MigrationSample:
        """A fresh sample now (used before acting on a migration's state)."""
        return await self._poll_once()

    # ---- helpers ---------------------------------------------------------

    async def _drop(self) -> BaseException | None:
        """Forget the connection; returns what ended it, when qemu.qmp knows."""
        client, self._client = self._client, None
        if self._inflight is not None:
            self._inflight.cancel()
            self._inflight = None
        for timer in (self._stall_timer, self._pass_poll):
            if timer is not None:
                timer.cancel()
        self._stall_timer = self._pass_poll = None
        if client is None:
            return None
        # QEMU's TLS chardev may never answer our close: do not wait long for it.
        return await disconnect(client, 0.3 if client.tls else 2)

    def _set_connection(self, state: Connection, reason: str | None) -> None:
        vm = self.vm
        if reason is not None:
            reason = _one_line(reason)  # it may quote what a monitor sent
        if vm.connection == state and vm.reason == reason:
            return
        vm.connection = state
        vm.reason = reason
        if reason and state != Connection.CONNECTING:
            self._log("error", str(state), reason)
        self._notify(VMUpdated(self.key, "connection", connection=state, reason=reason))

    def _settings_message(self) -> VMUpdated:
        return settings_update(self.key, self.vm.parameters, self.vm.capabilities)

    def _log(self, kind: str, name: str, detail: str, when: float | None = None,
             passes: tuple[int, int] | None = None) -> None:
        self.vm.log_append(EventRecord(when or time.time(), kind, name, detail, passes))

    def _notify(self, message: BackendMessage) -> None:
        try:
            self.listener(message)
        except Exception:  # a listener's bug must not take the session down
            logging.getLogger(__name__).exception("listener failed")


# Parameters migtui reads as figures (guidance, the dashboard, the start dialog).
_FIGURES = frozenset({"max-bandwidth", "downtime-limit", "xbzrle-cache-size", "multifd-channels",
                      "cpu-throttle-initial", "cpu-throttle-increment", "max-cpu-throttle", "vcpu-dirty-limit"})


def _size(value: Any) -> int | float | None:
    """A count, size or time from a reply, if it is one a sample's counter could be; else None."""
    return value if _bad_number(value) is None else None


def _word(value: Any) -> str | None:
    """A name or status from a reply, fit to show on one line; None for anything else."""
    if isinstance(value, str) and value and len(value) <= 200 and value.isprintable():
        return value
    return None


def _records(reply: Any) -> list[dict[str, Any]]:
    """The objects of a list reply (query-commands, query-block-jobs, ...); nothing for another type."""
    return [r for r in reply if isinstance(r, dict)] if isinstance(reply, list) else []


def _capabilities(reply: Any) -> dict[str, bool]:
    return {c["capability"]: bool(c.get("state")) for c in _records(reply) if isinstance(c.get("capability"), str)}


def _one_line(text: str, limit: int = 200) -> str:
    """`text` as one printable line of at most `limit` characters (a reason may quote a hostile peer)."""
    text = text[: limit * 4]  # what may show; a peer's line can be megabytes
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def qmp_text(command: str, args: dict[str, Any] | None) -> str:
    """A command as QMP has it on the wire, for a confirmation that says exactly what is sent."""
    return json.dumps({"execute": command, "arguments": args} if args else {"execute": command})


def _brief(data: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in data.items())[:200]


def _oserror_text(err: BaseException | None) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "timed out"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _describe_connect_error(err: ConnectError, greeted: bool = False) -> str:
    inner = err.exc
    if isinstance(inner, EOFError):
        return f"QEMU closed the connection {'after its' if greeted else 'before'} greeting"
    name = type(inner).__name__
    if name == "NegotiationError" and isinstance(getattr(inner, "exc", None), AssertionError):
        return "not a QMP monitor: its answer to qmp_capabilities is not a success reply"
    if name in ("GreetingError", "NegotiationError"):
        return f"not a QMP monitor: {err.error_message.lower()} ({inner})"
    if isinstance(inner, ssl_module.SSLCertVerificationError):
        return f"TLS: the monitor's certificate is not trusted: {inner.verify_message} (check [tls] ca-file)"
    if isinstance(inner, ssl_module.SSLError):
        return f"TLS handshake failed: {inner.reason or inner} (is this a TLS monitor?)"
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused: nothing listens there"
    if isinstance(inner, OSError) and inner.errno == errno.ECONNRESET:
        return "QEMU reset the connection during the handshake"
    return f"{err.error_message}: {inner}"


def _setup_failure(err: Exception, ended: BaseException | None, shutdown_seen: bool) -> str:
    """Why connecting or identifying failed. `ended`: what ended the connection, if it ended."""
    complaint = isinstance(err, (QMPError, AssertionError)) and not isinstance(err, (ExecuteError, ProtocolError))
    if ended is not None and complaint:
        # qemu.qmp's own complaint about a connection that ended under it (a request interrupted,
        # the wrong state, its failed assert): what ended it says more.
        err = ended  # type: ignore[assignment]
    return _lost_reason(err, shutdown_seen)


def _lost_reason(err: BaseException, shutdown_seen: bool) -> str:
    if shutdown_seen:
        return "QEMU shut down"
    if isinstance(err, (EOFError, ConnectionResetError, BrokenPipeError)):
        text = str(err)
        return text if text and ("closed" in text or "no answer" in text) else "QEMU closed the connection"
    if isinstance(err, QMPRefused):
        return str(err)
    name = type(err).__name__
    if isinstance(err, ValueError) and "Separator" in str(err):  # asyncio's readline: a line without its end
        return "QMP protocol error: a line longer than the read limit"
    if isinstance(err, (ProtocolError, ValueError, TypeError, KeyError, AssertionError)):
        # qemu.qmp's complaints, and its reader's (or migtui's) trouble with a message of the wrong shape
        detail = err if isinstance(err, ProtocolError) else f"a message of the wrong shape ({name}: {err})"
        return _one_line(f"QMP protocol error: {detail}")
    return _one_line(f"connection lost: {name}: {err}")
