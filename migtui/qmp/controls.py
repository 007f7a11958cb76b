"""Actions on migrations: start, cancel, tune, switch to post-copy, continue.

Each action checks everything it can before the first command goes out
(options against the VM's dialect, a migration already running, a destination
that is not waiting), so a refusal never leaves a VM half-configured.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from migtui.model.parameters import check_uri
from migtui.model.sample import IN_FLIGHT_STATUSES
from migtui.qmp.dialect import Command, Dialect, Unsupported
from migtui.qmp.errors import NotConnected, Refused
from migtui.qmp.session import VMSession

__all__ = [
    "MigrationOptions",
    "start_migration",
    "cancel_migration",
    "set_parameters",
    "set_capabilities",
    "start_postcopy",
    "continue_migration",
    "plan_migration",
    "measure_dirty_rate",
    "preflight",
]


@dataclass(frozen=True)
class MigrationOptions:
    """What the operator asked for; values already in QEMU's units (bytes/s, ms, bytes)."""

    bandwidth: int | None = None
    downtime_ms: int | None = None
    xbzrle: bool = False
    xbzrle_cache: int | None = None
    auto_converge: bool = False
    postcopy: bool = False
    multifd: int | None = None
    block: bool = False


@dataclass(frozen=True)
class MigrationPlan:
    """Every command, in order, that a start will send; shown before it is sent."""

    destination: list[Command]
    source: list[Command]
    uri: str


def _dialect(session: VMSession) -> Dialect:
    if session.dialect is None or not session.connected:
        raise NotConnected(f"{session.vm.name} is not connected: {session.vm.reason or 'connecting'}")
    return session.dialect


def _refuse_if_migrating(session: VMSession) -> None:
    status = session.vm.migration_status
    if status in IN_FLIGHT_STATUSES:
        raise Refused(f"{session.vm.name} is already migrating (status {status}); cancel it first with migtui cancel")


def _runtime_dir() -> Path:
    """A private directory for migration sockets (0700), like the lab's."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"migtui-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.getuid() or path.stat().st_mode & 0o077:
        raise Refused(f"{path} is not private to you; remove it and try again")
    return path


def plan_migration(
    source: VMSession,
    options: MigrationOptions,
    destination: VMSession | None = None,
    uri: str | None = None,
) -> MigrationPlan:
    """Check the options against both VMs and list the commands. Sends nothing."""
    src = _dialect(source)
    _refuse_if_migrating(source)
    if (destination is None) == (uri is None):
        raise Refused("give exactly one of a destination VM or a URI")
    if uri is not None:
        check_uri(uri)

    caps: dict[str, bool] = {}
    if options.xbzrle or options.xbzrle_cache is not None:
        src.require_capability("xbzrle", "use XBZRLE")
        caps["xbzrle"] = True
    if options.auto_converge:
        src.require_capability("auto-converge", "auto-converge")
        caps["auto-converge"] = True
    if options.postcopy:
        src.require_capability("postcopy-ram", "use post-copy")
        caps["postcopy-ram"] = True
    if options.multifd is not None:
        src.require_capability("multifd", "use multifd")
        caps["multifd"] = True
    if options.block and not src.has_block_migration:
        raise Unsupported(f"QEMU {src.version_text} has no block migration (blk was removed in 9.1)")

    params: dict[str, Any] = {}
    if options.bandwidth is not None:
        params["max-bandwidth"] = options.bandwidth
    if options.downtime_ms is not None:
        params["downtime-limit"] = options.downtime_ms
    if options.xbzrle_cache is not None:
        params["xbzrle-cache-size"] = options.xbzrle_cache
    if options.multifd is not None:
        params["multifd-channels"] = options.multifd

    dest_cmds: list[Command] = []
    if destination is not None:
        dst = _dialect(destination)
        if destination is source:
            raise Refused("the destination must be another VM")
        if destination.vm.run_state != "inmigrate":
            raise Refused(
                f"{destination.vm.name} is not waiting for an incoming migration "
                f"(run-state {destination.vm.run_state}); start it with -incoming defer"
            )
        dst.require("migrate-incoming", "receive a migration started by migtui (start it with -incoming URI and use --uri)")
        # Post-copy and multifd must be on at both ends.
        paired = {k: v for k, v in caps.items() if k in ("postcopy-ram", "multifd")}
        for name in paired:
            dst.require_capability(name, f"receive with {name}")
        dest_cmds += dst.set_capabilities(paired)
        if options.multifd is not None:
            dest_cmds += dst.set_parameters({"multifd-channels": options.multifd})
        uri = destination_uri(source, destination)
        dest_cmds.append(("migrate-incoming", {"uri": uri}))

    assert uri is not None
    src_cmds = src.set_capabilities(caps) + src.set_parameters(params)
    migrate_args: dict[str, Any] = {"uri": uri}
    if options.block:
        migrate_args["blk"] = True
    src_cmds.append(("migrate", migrate_args))
    return MigrationPlan(destination=dest_cmds, source=src_cmds, uri=uri)


def destination_uri(source: VMSession, destination: VMSession) -> str:
    """A fresh URI: a unix socket in a private directory when both VMs are local, else tcp."""
    if source.endpoint.is_local and destination.endpoint.is_local:
        path = _runtime_dir() / f"{destination.key}-incoming-{os.urandom(4).hex()}.sock"
        return f"unix:{path}"
    host = destination.endpoint.host or "0.0.0.0"
    return f"tcp:{host}:0"  # QEMU picks a free port; migtui reads it back


async def start_migration(
    source: VMSession,
    options: MigrationOptions,
    destination: VMSession | None = None,
    uri: str | None = None,
) -> MigrationPlan:
    """Start a migration. Raises InputError (nothing sent) or QMPRefused (QEMU's sentence)."""
    # A fresh sample first: the one on screen may be a second old.
    await source.sample()
    plan = plan_migration(source, options, destination, uri)
    migrate_uri = plan.uri
    if destination is not None:
        for command, args in plan.destination:
            await destination.execute(command, args)
        await destination.refresh_capabilities()
        if migrate_uri.startswith("tcp:") and migrate_uri.endswith(":0"):
            migrate_uri = await _incoming_tcp_uri(destination, migrate_uri)
    for command, args in plan.source:
        if command == "migrate":
            args = {**args, "uri": migrate_uri}
        await source.execute(command, args)
    await source.refresh_parameters()
    await source.refresh_capabilities()
    source.poll_now()
    return plan


async def _incoming_tcp_uri(destination: VMSession, uri: str) -> str:
    info = await destination.query("query-migrate")
    for address in (info or {}).get("socket-address") or []:
        if address.get("type") == "inet" and address.get("port"):
            return f"tcp:{uri[4:].rsplit(':', 1)[0]}:{address['port']}"
    raise Refused(f"{destination.vm.name} did not report the port it listens on for {uri}")


async def cancel_migration(session: VMSession) -> None:
    _dialect(session)
    await session.execute("migrate_cancel")
    session.poll_now()


async def set_parameters(session: VMSession, params: Mapping[str, Any]) -> None:
    """Parameters (QEMU's names and units) may change during a migration."""
    commands = _dialect(session).set_parameters(params)
    for command, args in commands:
        await session.execute(command, args)
    if not _dialect(session).modern:
        # QEMU before 2.4 cannot report these back: remember what was set.
        session.vm.parameters.update(params)
    await session.refresh_parameters()


async def set_capabilities(session: VMSession, caps: Mapping[str, bool]) -> None:
    dialect = _dialect(session)
    if session.vm.in_flight:
        raise Refused(
            f"capabilities cannot change while a migration runs (status {session.vm.migration_status}); "
            "QEMU would refuse: cancel first or wait for it to finish"
        )
    for command, args in dialect.set_capabilities(caps):
        await session.execute(command, args)
    await session.refresh_capabilities()


async def start_postcopy(session: VMSession) -> None:
    dialect = _dialect(session)
    dialect.require("migrate-start-postcopy", "switch to post-copy")
    if not session.vm.capabilities.get("postcopy-ram"):
        raise Refused("post-copy needs the postcopy-ram capability on both sides before the migration starts")
    if session.vm.migration_status != "active":
        raise Refused(f"post-copy can only start during an active migration (status {session.vm.migration_status})")
    await session.execute("migrate-start-postcopy")
    session.poll_now()


async def continue_migration(session: VMSession, state: str = "pre-switchover") -> None:
    _dialect(session).require("migrate-continue", "continue a paused migration")
    await session.execute("migrate-continue", {"state": state})
    session.poll_now()


async def measure_dirty_rate(session: VMSession, seconds: int = 1) -> float:
    """The guest's dirty rate in bytes/s, from calc-dirty-rate (QEMU 5.2+). Never during a migration."""
    import asyncio

    dialect = _dialect(session)
    dialect.require("calc-dirty-rate", "measure the dirty rate (QEMU 5.2+ has calc-dirty-rate)")
    await session.sample()
    if session.vm.in_flight:
        raise Refused("not measuring the dirty rate during a migration: calc-dirty-rate competes with it; "
                      "the dashboard shows the migration's own dirty rate")
    await session.execute("calc-dirty-rate", {"calc-time": seconds}, audit=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds + 10
    while True:
        reply = await session.query("query-dirty-rate")
        if isinstance(reply, dict) and reply.get("status") == "measured":
            rate = reply.get("dirty-rate")
            if not isinstance(rate, (int, float)) or rate < 0:
                raise Refused(f"QEMU measured no usable dirty rate: {reply!r:.120}")
            measured = float(rate) * 2**20  # QEMU reports MiB/s
            # The next migration's ETA starts from it while pass 1 reports no dirty rate yet.
            session.vm.tracker.dirty_rate_prior = [(float(seconds), measured)]
            return measured
        if loop.time() > deadline:
            raise Refused(f"QEMU did not finish measuring the dirty rate within {seconds + 10}s")
        await asyncio.sleep(0.1)  # QEMU measures for calc-time seconds; ask again shortly


async def preflight(session: VMSession, options: MigrationOptions):  # -> migtui.model.preflight.Prediction
    """Measure the guest's dirty rate and predict whether these options converge. Migrates nothing."""
    from migtui.model.preflight import predict

    dirty = await measure_dirty_rate(session, seconds=1)
    ram = 0.0
    if session.dialect is not None and session.dialect.has("query-memory-size-summary"):
        reply = await session.query("query-memory-size-summary")
        if isinstance(reply, dict) and isinstance(reply.get("base-memory"), int):
            ram = float(reply["base-memory"])
    params = session.vm.parameters
    bandwidth = options.bandwidth or params.get("max-bandwidth") or 32 * 2**20
    downtime = options.downtime_ms or params.get("downtime-limit") or 300
    return predict(dirty, bandwidth, downtime, ram)
