"""Actions on migrations: start, cancel, tune, switch to post-copy, continue.

Each action checks everything it can before the first command goes out
(options against each VM's dialect and version, combinations its QEMU refuses,
a migration already running, a destination that is not waiting), so a refusal
never leaves a VM half-configured.

A start sends what can be refused and undone first, and what cannot be undone
last: the source's capabilities and parameters, then the destination's paired
capabilities (postcopy-ram, multifd) and multifd-channels, then migrate-incoming
on the destination (QEMU runs it once per process: it cannot be taken back; 9.1+ is told
exit-on-error false, so a failed incoming stays up to say why), and
migrate on the source. When a step is refused, the source's capabilities and
parameters are put back as they were, and so are the destination's unless this
start got it listening; a destination left listening (migrate refused or failed)
is recognised by the next start, which migrates to where it listens.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from migtui.model.parameters import check_uri
from migtui.model.requests import MigrationOptions, ParamChange
from migtui.model.sample import FINISHED_STATUSES, IN_FLIGHT_STATUSES
from migtui.backend.qmp.dialect import Command, Dialect, Unsupported
from migtui.backend.errors import BackendError, NotConnected, Refused

if TYPE_CHECKING:  # the session calls these controls; they never construct one
    from migtui.backend.qmp.session import VMSession

__all__ = [
    "MigrationOptions",
    "start_migration",
    "cancel_migration",
    "set_parameters",
    "set_capabilities",
    "start_postcopy",
    "continue_migration",
    "plan_recovery",
    "recover_postcopy",
    "plan_migration",
    "parameter_commands",
    "refresh_machine",
    "measure_dirty_rate",
    "preflight",
]


@dataclass(frozen=True)
class MigrationPlan:
    """Every command a start sends, in the order sent; shown before it is sent."""

    source: list[Command]  # capabilities, then parameters
    destination: list[Command]  # paired capabilities, multifd-channels, then migrate-incoming unless listening
    migrate: Command  # sent to the source last
    uri: str
    listening: bool = False  # the destination already listened at uri: no migrate-incoming

    @property
    def steps(self) -> list[tuple[str, Command]]:
        """("source" or "destination", command), in the order start_migration sends them."""
        return ([("source", c) for c in self.source] + [("destination", c) for c in self.destination]
                + [("source", self.migrate)])


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
    """Check the options against both VMs and list the commands. Sends nothing.

    Judges by what the sessions last read (start_migration reads it afresh): capabilities
    already on count towards a combination QEMU refuses, and a destination that reports a
    listening address (query-migrate's socket-address) or that migtui told to listen is
    migrated to there, without migrate-incoming.
    """
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
    if options.dirty_limit is not None:
        src.require_capability("dirty-limit", "cap the guest's dirty rate (QEMU 8.1+ has dirty-limit)")
        caps["dirty-limit"] = True
    _refuse_dirty_limit_without_kvm(source, src, caps)
    _refuse_together(source, src, caps)

    params: dict[str, Any] = {}
    if options.bandwidth is not None:
        params["max-bandwidth"] = options.bandwidth
    if options.downtime_ms is not None:
        params["downtime-limit"] = options.downtime_ms
    if options.xbzrle_cache is not None:
        params["xbzrle-cache-size"] = options.xbzrle_cache
    if options.multifd is not None:
        params["multifd-channels"] = options.multifd
    if options.dirty_limit is not None:
        params["vcpu-dirty-limit"] = options.dirty_limit
    src_cmds = src.set_capabilities(caps) + src.set_parameters(params)

    dest_cmds: list[Command] = []
    listening = False
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
        status = destination.vm.migration_status
        if status in _RECEIVING:
            raise Refused(f"{destination.vm.name} is already receiving a migration (status {status})")
        if status in FINISHED_STATUSES:
            raise Refused(f"{destination.vm.name}'s incoming migration ended ({status}); "
                          "restart it with -incoming defer")
        _refuse_across_versions(source, destination)
        listen_uri = _listening_uri(source, destination)
        listening = listen_uri is not None
        # Post-copy and multifd must be alike at both ends: as the source will have them
        # (what it has on already counts), and only what differs is sent.
        src_after = {**source.vm.capabilities, **caps}
        dst_now = destination.vm.capabilities
        paired = {k: bool(src_after.get(k)) for k in ("postcopy-ram", "multifd") if src_after.get(k) or dst_now.get(k)}
        for name, on in paired.items():
            if on:
                dst.require_capability(name, f"receive with {name}")
        _refuse_together(destination, dst, paired)
        dst_caps = {k: v for k, v in paired.items() if bool(dst_now.get(k)) != v}
        dst_params: dict[str, Any] = {}
        channels = options.multifd if options.multifd is not None else source.vm.parameters.get("multifd-channels")
        if paired.get("multifd") and channels is not None and destination.vm.parameters.get("multifd-channels") != channels:
            dst_params["multifd-channels"] = channels
        if listening and dst_caps and dst.fixes_multifd_at_incoming and {**dst_now, **dst_caps}.get("multifd"):
            raise Refused(
                f"{destination.vm.name} already listens at {listen_uri}, and QEMU {dst.version_text} refuses "
                f"capability changes with multifd on after migrate-incoming (needed: {_on_off(dst_caps)}); "
                "start with the capabilities it listens with, or restart it with -incoming defer"
            )
        dest_cmds += dst.set_capabilities(dst_caps)
        dest_cmds += dst.set_parameters(dst_params)
        if listen_uri is not None:
            uri = listen_uri
        else:
            uri = destination_uri(source, destination)
            incoming: dict[str, Any] = {"uri": uri}
            if dst.incoming_args is not None and "exit-on-error" in dst.incoming_args:
                # 9.1+: a failed incoming leaves the destination up (it never runs the half-loaded
                # guest: it stays inmigrate) with QEMU's error in query-migrate, instead of exiting.
                incoming["exit-on-error"] = False
            dest_cmds.append(("migrate-incoming", incoming))

    assert uri is not None
    migrate_args: dict[str, Any] = {"uri": uri}
    if options.block:
        migrate_args["blk"] = True
    return MigrationPlan(source=src_cmds, destination=dest_cmds, migrate=("migrate", migrate_args), uri=uri,
                         listening=listening)


# Capabilities both ends must have on for the stream to load (QEMU's migration docs): one
# the source has on, which the destination's QEMU does not know, fails at the destination.
_BOTH_ENDS = ("postcopy-ram", "multifd", "postcopy-preempt", "switchover-ack", "mapped-ram", "return-path",
              "x-ignore-shared", "validate-uuid")


def _refuse_across_versions(source: VMSession, destination: VMSession) -> None:
    """The cross-version pre-flight: what the destination's QEMU must have to load this stream.

    QEMU migrates between versions only with the same versioned machine type at both ends
    (an older QEMU has no newer one; a newer one started with its own default lays out the
    devices differently and the stream never loads). Judges by what refresh_machine read;
    unknown (a QEMU that cannot say) is not refused."""
    s, d = source.vm, destination.vm
    versions = f"{s.name} runs QEMU {s.qemu_version or '?'}, {d.name} QEMU {d.qemu_version or '?'}"
    if s.machine is not None and d.machine_types is not None and s.machine not in d.machine_types:
        raise Refused(f"QEMU {d.qemu_version or '?'} on {d.name} has no machine type {s.machine} ({versions}): "
                      f"migrate to a QEMU that has it, or start {s.name} with a machine type both have")
    if s.machine is not None and d.machine is not None and s.machine != d.machine:
        raise Refused(f"{d.name} runs machine type {d.machine}, {s.name} runs {s.machine} ({versions}): "
                      f"restart {d.name} with -machine {s.machine} -incoming defer")
    missing = [c for c in _BOTH_ENDS if s.capabilities.get(c) and c not in d.capabilities and d.capabilities]
    if missing:
        raise Refused(f"{s.name} has {', '.join(missing)} on, which QEMU {d.qemu_version or '?'} on {d.name} "
                      f"does not have ({versions}): turn {'them' if len(missing) > 1 else 'it'} off first")


async def refresh_machine(session: VMSession) -> None:
    """Read the machine type the VM runs and the ones its QEMU has (once: they never change
    while it runs; a reconnect may be a new QEMU, so its VMState is read afresh there)."""
    dialect = _dialect(session)
    vm = session.vm
    if vm.machine is not None or not (dialect.has("qom-get") and dialect.has("query-machines")):
        return
    with contextlib.suppress(BackendError):
        kind = await session.query("qom-get", {"path": "/machine", "property": "type"})
        machines = await session.query("query-machines")
        if isinstance(kind, str) and isinstance(machines, list):
            names = {m.get(k) for m in machines if isinstance(m, dict) for k in ("name", "alias")}
            vm.machine_types = frozenset(n for n in names if isinstance(n, str))
            vm.machine = kind.removesuffix("-machine")  # QOM's type name is the machine's plus -machine


# A destination in these receives a migration already; "setup" may be one that only listens.
_RECEIVING = IN_FLIGHT_STATUSES - {"setup"}


def _on_off(caps: Mapping[str, bool]) -> str:
    return ", ".join(f"{k}={'on' if v else 'off'}" for k, v in caps.items())


def _refuse_together(session: VMSession, dialect: Dialect, caps: Mapping[str, bool]) -> None:
    """Refuse, before sending, a pair of capabilities this VM's QEMU would refuse together."""
    current = session.vm.capabilities
    refused = dialect.refused_together({**current, **caps})
    if refused is None:
        return
    one, other, sentence = refused
    already = [c for c in (one, other) if c not in caps and current.get(c)]
    way_out = f"; {already[0]} is on there already: turn it off first" if already else ""
    raise Unsupported(f"QEMU {dialect.version_text} on {session.vm.name} refuses {one} with {other} "
                      f"({sentence!r}){way_out}")


def _refuse_dirty_limit_without_kvm(session: VMSession, dialect: Dialect, caps: Mapping[str, bool]) -> None:
    """QEMU takes dirty-limit only on KVM with a dirty ring; a VM that query-kvm says runs without
    KVM is refused here (whether the ring is on, QMP cannot tell: QEMU then says so itself)."""
    if caps.get("dirty-limit") and session.vm.kvm is False:
        raise Unsupported(f"QEMU {dialect.version_text} on {session.vm.name} offers dirty-limit only on KVM "
                          "with -accel kvm,dirty-ring-size=N, and this VM runs without KVM")


def _listening_uri(source: VMSession, destination: VMSession) -> str | None:
    """Where the destination already listens for a migration, or None.

    QEMU's own answer first (query-migrate's socket-address, 4.0+ reports it); else the URI
    migtui gave its migrate-incoming on this connection (an older QEMU, or exec:/fd:).
    """
    sample = destination.vm.sample
    addresses = sample.info.get("socket-address") if sample is not None else None
    if not isinstance(addresses, list) or not addresses:
        return destination.vm.incoming_uri
    both_local = source.endpoint.is_local and destination.endpoint.is_local
    for address in addresses:
        if not isinstance(address, dict):
            continue
        if address.get("type") == "unix" and isinstance(address.get("path"), str) and both_local:
            return f"unix:{address['path']}"
        if address.get("type") == "inet" and address.get("port"):
            host = str(address.get("host") or "")
            if host in ("", "0.0.0.0", "::"):  # listening everywhere: reach it where its monitor is
                host = destination.endpoint.host or host or "0.0.0.0"
            return f"tcp:{f'[{host}]' if ':' in host else host}:{address['port']}"
    raise Refused(
        f"{destination.vm.name} already listens at {addresses[0]!r:.80} (migrate-incoming ran), which "
        f"{source.vm.name} cannot reach; restart it with -incoming defer"
    )


def destination_uri(source: VMSession, destination: VMSession) -> str:
    """A fresh URI: a unix socket in a private directory when both VMs are local, else tcp."""
    if source.endpoint.is_local and destination.endpoint.is_local:
        path = _runtime_dir() / f"{destination.key}-incoming-{os.urandom(4).hex()}.sock"
        return f"unix:{path}"
    host = destination.endpoint.host or "0.0.0.0"
    return f"tcp:{host}:0"  # QEMU picks a free port; migtui reads it back


# What a start changed and how it was before: (session, "capabilities" or "parameters", values).
_Undo = "list[tuple[VMSession, str, dict[str, Any]]]"


async def start_migration(
    source: VMSession,
    options: MigrationOptions,
    destination: VMSession | None = None,
    uri: str | None = None,
) -> MigrationPlan:
    """Start a migration. Raises InputError (nothing sent) or QMPRefused (QEMU's sentence).

    Sends the plan's steps in order (see the module docstring). When one is refused (or the
    connection fails), the capabilities and parameters this start changed on the source are
    set back to their previous values, and on the destination too unless this start's
    migrate-incoming ran: the source was idle, so QEMU takes them back, and a destination
    that listens keeps what it listens with for the next start (8.1+ refuses multifd
    changes once it listens).
    """
    _dialect(source)
    if destination is not None:
        _dialect(destination)
    # Fresh state first: the one on screen may be a second old, and what is put back on a
    # refusal is what QEMU has now.
    await source.sample()
    await source.refresh_capabilities()
    await source.refresh_parameters()
    if destination is not None:
        await destination.sample()  # its status and listening address
        await destination.refresh_capabilities()
        await destination.refresh_parameters()
        await refresh_machine(source)  # the cross-version pre-flight's facts
        await refresh_machine(destination)
    plan = plan_migration(source, options, destination, uri)
    undo: _Undo = []
    try:
        for command, args in plan.source:
            await _send_undoable(source, command, args, undo)
        if destination is not None:
            for command, args in plan.destination:
                if command == "migrate-incoming":
                    await destination.execute(command, args)
                    # Listening now, for good: keep its settings, remember where.
                    undo = [step for step in undo if step[0] is not destination]
                    destination.vm.incoming_uri = args["uri"]
                else:
                    await _send_undoable(destination, command, args, undo)
            await destination.refresh_capabilities()
        migrate_uri = plan.uri
        if destination is not None and migrate_uri.startswith("tcp:") and migrate_uri.endswith(":0"):
            migrate_uri = destination.vm.incoming_uri = await _incoming_tcp_uri(destination, migrate_uri)
        command, args = plan.migrate
        args = {**args, "uri": migrate_uri}
        await source.execute(command, args)
    except Exception:
        await _undo(undo)
        raise
    await source.refresh_parameters()
    await source.refresh_capabilities()
    source.poll_now()
    return replace(plan, migrate=(command, args), uri=migrate_uri)


async def _send_undoable(session: VMSession, command: str, args: dict[str, Any], undo: _Undo) -> None:
    """Send a capabilities or parameters command, first noting what it changes and how it was."""
    dialect = _dialect(session)
    vm = session.vm
    if command == "migrate-set-capabilities":
        new = {c["capability"]: c["state"] for c in args["capabilities"]}
        before = {k: vm.capabilities.get(k, False) for k, v in new.items() if vm.capabilities.get(k, False) != v}
        kind = "capabilities"
    else:
        new = _parameters_of(command, args)
        # Only what QEMU reported (or migtui set, before 2.4) can be put back.
        before = {k: vm.parameters[k] for k, v in new.items() if k in vm.parameters and vm.parameters[k] != v}
        kind = "parameters"
    await session.execute(command, args)
    if kind == "parameters" and not dialect.modern:
        vm.parameters.update(new)  # QEMU before 2.4 cannot report these back: remember what was set
    if before:
        undo.append((session, kind, before))


def _parameters_of(command: str, args: dict[str, Any]) -> dict[str, Any]:
    """The parameters (QEMU's names and units) that a command of Dialect.set_parameters sets."""
    if command == "migrate-set-parameters":
        return dict(args)
    name = {"migrate_set_speed": "max-bandwidth", "migrate_set_downtime": "downtime-limit",
            "migrate-set-cache-size": "xbzrle-cache-size"}[command]
    value = args["value"]
    return {name: round(value * 1000) if name == "downtime-limit" else value}  # that one takes seconds


async def _undo(undo: _Undo) -> None:
    """Put back what a refused start changed, latest first. Each command is audited and logged
    like any other; one QEMU refuses leaves its sentence in the VM's log, never hides the refusal."""
    for session, kind, before in reversed(undo):
        with contextlib.suppress(BackendError, OSError):
            dialect = _dialect(session)
            commands = dialect.set_capabilities(before) if kind == "capabilities" else dialect.set_parameters(before)
            for command, args in commands:
                await session.execute(command, args)
            if kind == "parameters" and not dialect.modern:
                session.vm.parameters.update(before)
    for session in {id(s): s for s, _, _ in undo}.values():
        with contextlib.suppress(BackendError, OSError):
            await session.refresh_capabilities()
            await session.refresh_parameters()


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


def parameter_commands(session: VMSession, change: ParamChange | Mapping[str, Any]) -> list[Command]:
    """The commands that set these parameters on this VM's QEMU, in the order sent. Sends nothing;
    raises Unsupported for what its QEMU cannot set. Every parameter change (a key, the command
    line, advice) goes this way, so each QEMU gets the commands its version has."""
    params = change.parameters if isinstance(change, ParamChange) else change
    if session.dialect is None:  # never identified: nothing is known of what it takes
        raise NotConnected(f"{session.vm.name} is not connected: {session.vm.reason or 'connecting'}")
    return session.dialect.set_parameters(params)


async def set_parameters(session: VMSession, change: ParamChange | Mapping[str, Any]) -> None:
    """Parameters (QEMU's names and units) may change during a migration."""
    params = change.parameters if isinstance(change, ParamChange) else change
    _dialect(session)  # connected, or NotConnected before anything is sent
    for command, args in parameter_commands(session, params):
        await session.execute(command, args)
    if isinstance(change, ParamChange) and change.advice is not None:
        from migtui.model.guidance import take_advice

        take_advice(session.vm.tracker, change.advice, change.why or change.advice)  # followed up on the passes to come
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
    commands = dialect.set_capabilities(caps)  # a capability this QEMU lacks is refused first
    _refuse_dirty_limit_without_kvm(session, dialect, caps)
    _refuse_together(session, dialect, caps)
    for command, args in commands:
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


# Destinations told to listen for a recovery, and where: QEMU runs migrate-recover once per pause.
_recovery_uris: "weakref.WeakKeyDictionary[VMSession, str]" = weakref.WeakKeyDictionary()


def plan_recovery(source: VMSession, destination: VMSession) -> list[tuple[str, Command]]:
    """The commands that resume a post-copy migration whose stream broke, in the order sent:
    migrate-recover on the destination (it listens anew), then migrate with resume on the
    source. Refused, sending nothing, unless both ends are paused in post-copy."""
    src, dst = _dialect(source), _dialect(destination)
    if destination is source:
        raise Refused("the destination must be another VM")
    for session in (source, destination):
        status = session.vm.migration_status
        if status != "postcopy-paused":
            raise Refused(f"{session.vm.name} is not paused in post-copy (status {status}): nothing to recover")
    dst.require("migrate-recover", "recover a paused post-copy migration")
    if src.migrate_args is not None and "resume" not in src.migrate_args:
        raise Unsupported(f"QEMU {src.version_text} cannot resume a paused post-copy: its migrate has no resume")
    steps: list[tuple[str, Command]] = []
    uri = _recovery_uris.get(destination)
    if uri is None:  # not told to listen yet (a second migrate-recover is refused)
        uri = destination_uri(source, destination)
        steps.append(("destination", ("migrate-recover", {"uri": uri})))
    steps.append(("source", ("migrate", {"uri": uri, "resume": True})))
    return steps


async def recover_postcopy(
    source: VMSession, destination: VMSession, steps: list[tuple[str, Command]] | None = None
) -> list[tuple[str, Command]]:
    """Send plan_recovery's steps (the ones shown to the operator, when given). Returns them as sent."""
    await source.sample()
    await destination.sample()
    planned = plan_recovery(source, destination)
    if steps is not None and [c for _, (c, _) in steps] != [c for _, (c, _) in planned]:
        raise Refused("the migration changed since the recovery was shown: look again and retry")
    sent: list[tuple[str, Command]] = []
    for side, (command, args) in steps or planned:
        session = destination if side == "destination" else source
        if command == "migrate-recover":
            await session.execute(command, args)
            _recovery_uris[destination] = args["uri"]
            if args["uri"].startswith("tcp:") and args["uri"].endswith(":0"):
                _recovery_uris[destination] = await _incoming_tcp_uri(destination, args["uri"])
        else:
            args = {**args, "uri": _recovery_uris.get(destination, args["uri"])}
            await session.execute(command, args)
            _recovery_uris.pop(destination, None)  # resumed: a next pause needs a new listener
        sent.append((side, (command, args)))
    source.poll_now()
    destination.poll_now()
    return sent


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


_RAM_RANGE = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ram\): ")
ZERO_SAMPLE_PAGES = 512  # ~0.7 s over QMP here, within calc-dirty-rate's second; +-2% on the share


async def measure_zero_pages(session: VMSession, pages: int = ZERO_SAMPLE_PAGES,
                             budget_s: float = 1.0) -> tuple[bool | None, ...] | None:
    """`pages` pages evenly spaced across the guest's RAM in address order (HMP's `xp` through
    human-monitor-command, at the RAM ranges `info mtree -f` lists), True for a zero page, None
    for one not read within `budget_s` (they are read in bit-reversed order, so those read are
    spread over all of RAM however many there were time for): pass 1 sends zero pages nearly
    free, in address order, and nothing QEMU reports before it says how many there are or
    where. None when this QEMU cannot say. Reads only; only whether each page is zero is kept."""
    import asyncio

    if session.dialect is None or not session.dialect.has("human-monitor-command"):
        return None

    async def hmp(line: str) -> str:
        out = await session.query("human-monitor-command", {"command-line": line})
        return out if isinstance(out, str) else ""

    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    ranges = sorted({(int(m[1], 16), int(m[2], 16) + 1) for line in (await hmp("info mtree -f")).splitlines()
                     if (m := _RAM_RANGE.match(line))})
    ranges = [(a, b) for a, b in ranges if b - a >= 2**20]  # RAM, not ROM shadows or small device buffers
    size = sum(b - a for a, b in ranges)
    if not size or pages < 1:
        return None
    bits = max(1, (pages - 1).bit_length())
    found: list[bool | None] = [None] * pages
    for i in sorted(range(pages), key=lambda i: int(f"{i:0{bits}b}"[::-1], 2)):
        if loop.time() > deadline:
            break
        at = int((i + 0.5) * size / pages)
        for a, b in ranges:
            if at < b - a:
                addr = (a + at) & ~0xFFF
                break
            at -= b - a
        out = await hmp(f"xp /512gx {addr:#x}")
        words = [w for line in out.splitlines() if ":" in line for w in line.split(":", 1)[1].split()]
        if words:
            found[i] = not any(w.removeprefix("0x").strip("0") for w in words)
        await asyncio.sleep(0)  # let the other queries (calc-dirty-rate's) through
    return tuple(found) if any(z is not None for z in found) else None


async def _zero_pages_or_none(session: VMSession) -> tuple[bool | None, ...] | None:
    try:
        return await measure_zero_pages(session)
    except (BackendError, ConnectionError):
        return None  # the ETA does without; the dirty rate is what the pre-flight is for


async def preflight(session: VMSession, options: MigrationOptions):  # -> migtui.model.preflight.Prediction
    """Measure the guest's dirty rate and predict whether these options converge; meanwhile
    sample how much of its RAM is zero pages (for the ETA of pass 1). Migrates nothing."""
    import asyncio

    from migtui.model.preflight import predict_start

    dirty, zero = await asyncio.gather(measure_dirty_rate(session, seconds=1), _zero_pages_or_none(session))
    session.vm.tracker.zero_pages_prior = zero
    ram = 0.0
    if session.dialect is not None and session.dialect.has("query-memory-size-summary"):
        reply = await session.query("query-memory-size-summary")
        if isinstance(reply, dict) and isinstance(reply.get("base-memory"), int):
            ram = float(reply["base-memory"])
    return predict_start(dirty, options, session.vm.parameters, ram, session.vm.vcpus)
