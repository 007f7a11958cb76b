"""`migtui migrate|cancel|set|caps|postcopy`: the controls, on one source at a time."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Sequence

from migtui.backend.libvirt.target import is_libvirt_target
from migtui.cli.common import _connect, _refuse_if_read_only, make_recorder
from migtui.cli.parser import UsageError


def _migration_options(args: argparse.Namespace):
    from migtui.model.parameters import check_xbzrle_cache_size, parse_dirty_limit
    from migtui.model.units import parse_count, parse_rate, parse_size, parse_time_ms
    from migtui.model.requests import MigrationOptions

    cache = None
    if args.xbzrle_cache is not None:
        cache = check_xbzrle_cache_size(parse_size(args.xbzrle_cache, "--xbzrle-cache"), "--xbzrle-cache")
    return MigrationOptions(
        bandwidth=None if args.bandwidth is None else parse_rate(args.bandwidth, "--bandwidth"),
        downtime_ms=None if args.downtime is None else parse_time_ms(args.downtime, "--downtime"),
        xbzrle=args.xbzrle,
        xbzrle_cache=cache,
        auto_converge=args.auto_converge,
        postcopy=args.postcopy,
        multifd=None if args.multifd is None else parse_count(args.multifd, "--multifd", 1, 255),
        block=args.block,
        dirty_limit=None if args.dirty_limit is None else parse_dirty_limit(args.dirty_limit, "--dirty-limit"),
    )


async def cmd_migrate(args: argparse.Namespace) -> int:
    from migtui.model.parameters import check_uri
    from migtui.backend.qmp.controls import start_migration

    if not args.check:
        _refuse_if_read_only(args, "migrate")
    if args.check and args.no_preflight:
        raise UsageError("--check is the pre-flight alone; --no-preflight starts without one: give one of them")
    if args.autopilot is not None:
        if args.check:
            raise UsageError("--autopilot steers a migration; --check migrates nothing")
        args.wait = True  # the autopilot steers from this process: it follows the migration to its end
        _policy(args)  # an unknown policy is refused before connecting
    if args.record and (args.check or not args.wait):
        raise UsageError("--record FILE records what --wait follows: add --wait (and no --check)")
    options = _migration_options(args)  # every value is checked before connecting
    if args.migrate_uri is not None and not is_libvirt_target(args.source):
        raise UsageError("--migrate-uri is for libvirt domains; a QMP source takes --uri")
    if is_libvirt_target(args.source):
        if args.uri is not None or args.record:
            raise UsageError("a libvirt domain migrates with --to HOST-URI (libvirt picks the stream); "
                             "--uri and --record are for QMP endpoints")
        from migtui.cli.hosts import migrate

        return await migrate(args, options)
    if args.uri is not None:
        check_uri(args.uri)
    following = args.wait and not args.check
    # --wait samples by itself; when it records, the session only listens (for the events).
    source = await _connect(args.source, args, autopoll=False, reconnect=False) if following \
        else await _connect(args.source, args)
    destination = None
    recorder = None
    pilot = None
    try:
        if args.check:
            return await _preflight(source, options)
        if args.to is not None:
            destination = await _connect(args.to, args)
        if following:
            recorder = make_recorder(args)
            if recorder is not None:
                # Before the migrate command: it and QEMU's setup event belong to the recording.
                source.listener = lambda message: recorder.observe(source, message)
                source.start()
            if args.autopilot is not None:
                pilot = _engage(args, _one_session_backend(source), source.key)
        said = None if args.no_preflight else await source.preflight_before_start(options)
        plan = await start_migration(source, options, destination=destination, uri=args.uri)
        print(f"migtui: {source.vm.name}: migrating to {plan.uri}", file=sys.stderr)
        _say_preflight(source, said)
        if not args.wait:
            return 0
        return await _follow(source, recorder)
    finally:
        if pilot is not None:
            pilot.close()
        if recorder is not None:
            recorder.close()  # interrupted: the recording still ends with a summary
        await source.close()
        if destination is not None:
            await destination.close()


def _policy(args: argparse.Namespace):
    """The --autopilot policy by name, from the built-in ones and the config's; UsageError if none."""
    from migtui.config import load_config
    from migtui.model.autopilot import BUILTIN_POLICIES

    policies = {**BUILTIN_POLICIES, **load_config().policies}
    if args.autopilot not in policies:
        raise UsageError(f"{'--policy' if args.command == 'drain' else '--autopilot'} {args.autopilot}: no such policy; there are: {', '.join(sorted(policies))} "
                         "(add more as [autopilot.NAME] in the config)")
    return policies


def _one_session_backend(source):
    """A QMP backend around the one session --wait follows, for the autopilot to listen to."""
    from migtui.backend.qmp.backend import QMPBackend

    backend = QMPBackend([])
    backend.sessions[source.key] = source
    before = source.listener

    def both(message) -> None:
        before(message)
        backend.post(message)

    source.listener = both
    return backend


def _engage(args: argparse.Namespace, backend, key: str):
    """The autopilot on the source, with its steps printed as they come (and audited)."""
    from migtui.autopilot import AUTOPILOT_EVENT, Autopilot
    from migtui.backend.messages import VMEvent
    from migtui.config import load_config

    config = load_config()
    pilot = Autopilot(backend, config.policies, audit=config.audit_log())

    def say(message) -> None:
        if isinstance(message, VMEvent) and message.event == AUTOPILOT_EVENT:
            print(f"migtui: {message.vm}: autopilot {message.data['step']}: {message.data['why']}", file=sys.stderr)

    backend.subscribe(say)
    pilot.engage(key, args.autopilot)
    return pilot


async def _preflight(source, options) -> int:
    """--check: measure, predict, migrate nothing (a QMP session or a libvirt domain)."""
    prediction = await source.preflight(options)
    print(f"{source.vm.name}: {prediction.sentence}")
    return 0 if prediction.converges else 1


def _say_preflight(handle, said) -> None:
    """What the pre-flight before a start found (preflight_before_start), once the start was taken:
    one line on stderr; a refused start is its refusal alone."""
    if said is not None:
        line = f"pre-flight skipped: {said}" if isinstance(said, str) else f"pre-flight: {said.sentence}"
        print(f"migtui: {handle.vm.name}: {line}", file=sys.stderr)


async def _follow(source, recorder=None) -> int:
    """--wait: a progress bar on a terminal, plain lines otherwise; the summary at the end.

    With a recorder (listening to the session), the summary shown is the one recorded, and
    where the recording went is one line on stderr.
    """
    from migtui.model.units import format_bytes, format_rate
    from migtui.present.figures import eta_with_range
    from migtui.present.state import state_line
    from migtui.record import SummaryBuilder, summary_text, zero_times

    tty = sys.stdout.isatty()
    last_line = ""
    summary = SummaryBuilder()
    zero_replies = 0
    while True:
        sample = await source.sample()
        summary.add(sample)
        d = source.vm.derived
        if tty:
            width = 30
            filled = int((d.progress or 0) * width)
            bar = "#" * filled + "." * (width - filled)
            eta = eta_with_range(source.vm)
            line = (
                f"\r[{bar}] {(d.progress or 0) * 100:5.1f}% {sample.status:<16} "
                f"{format_rate(d.throughput_bps):>12}  left {format_bytes(d.remaining_bytes):>10}  "
                f"pass {d.passes or '-':>3}  eta {eta:>7}"
            )
            sys.stdout.write(line)
            sys.stdout.flush()
        else:
            line = state_line(source.vm)
            if line != last_line:
                print(line, flush=True)
            last_line = line
        if sample.finished:
            if zero_times(sample) and zero_replies < 5:
                zero_replies += 1  # QEMU 7.2's first reply after completion has zero times: ask again
                await asyncio.sleep(0.05)
                continue
            break
        await asyncio.sleep(0.5)  # pacing between samples, not synchronisation
    if tty:
        sys.stdout.write("\n")
    result = summary.result()
    where = None
    if recorder is not None:
        recorded = [f for f in recorder.finished if f.vm == source.key]
        if recorded:
            result = recorded[-1].summary
            where = f"recorded in {recorded[-1].path}" if recorded[-1].path else f"not recorded: {recorder.error}"
        else:
            where = f"not recorded: {recorder.error or 'migtui saw no sample of this migration'}"
    print(f"{source.vm.name}: {summary_text(result)}", flush=True)
    if where is not None:
        print(f"migtui: {source.vm.name}: {where}", file=sys.stderr, flush=True)
    return 0 if sample.status == "completed" else 1


async def cmd_cancel(args: argparse.Namespace) -> int:
    from migtui.backend.qmp.controls import cancel_migration

    _refuse_if_read_only(args, "cancel")
    if is_libvirt_target(args.source):
        from migtui.cli.hosts import control

        async def cancel(handle) -> str:
            status = handle.vm.migration_status
            await handle.cancel()
            return f"{handle.vm.name}: abort sent (status was {status})"

        return await control(args, "cancel", cancel)
    session = await _connect(args.source, args)
    try:
        await cancel_migration(session)
        print(f"migtui: {session.vm.name}: cancel sent (status was {session.vm.migration_status})", file=sys.stderr)
    finally:
        await session.close()
    return 0


def _assignments(items: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{item!r} is not NAME=VALUE")
        pairs.append((name.strip(), value))
    return pairs


async def cmd_set(args: argparse.Namespace) -> int:
    from migtui.model.parameters import parse_parameter
    from migtui.backend.qmp.controls import set_parameters

    _refuse_if_read_only(args, "set")
    pairs = _assignments(args.assignments)
    if is_libvirt_target(args.source):
        from migtui.cli.hosts import control
        from migtui.model.requests import ParamChange

        if not pairs:
            raise UsageError("give NAME=VALUE, e.g. bandwidth=1G downtime=500ms xbzrle-cache=256M")

        async def tune(handle) -> str:
            params = dict(parse_parameter(n, v, handle.vm.parameters) for n, v in pairs)
            await handle.set_parameters(ParamChange(params, why="migtui set"))
            return " ".join(f"{k}={handle.vm.parameters.get(k, v)}" for k, v in params.items())

        return await control(args, "set", tune)
    session = await _connect(args.source, args)
    try:
        choices = session.dialect.parameter_choices if session.dialect is not None else None
        params = dict(parse_parameter(n, v, session.vm.parameters, choices) for n, v in pairs)
        await set_parameters(session, params)
        shown = {k: session.vm.parameters.get(k, v) for k, v in params.items()}
        print(" ".join(f"{k}={v}" for k, v in shown.items()))
    finally:
        await session.close()
    return 0


async def cmd_caps(args: argparse.Namespace) -> int:
    from migtui.backend.qmp.controls import set_capabilities

    caps: dict[str, bool] = {}
    for name, value in _assignments(args.assignments):
        lowered = value.strip().lower()
        if lowered not in ("on", "off"):
            raise UsageError(f"{name}={value}: give on or off")
        caps[name] = lowered == "on"
    if caps:
        _refuse_if_read_only(args, "caps")
    if is_libvirt_target(args.source):
        from migtui.cli.hosts import control

        if caps:
            raise UsageError("libvirt takes capabilities as flags when a migration starts: give them to "
                             "migtui migrate (--xbzrle, --auto-converge, --postcopy, --multifd N)")

        async def flags(handle) -> str:
            return " ".join(f"{k}={'on' if v else 'off'}" for k, v in sorted(handle.vm.capabilities.items()))

        return await control(args, "caps", flags)
    session = await _connect(args.source, args)
    try:
        if caps:
            await set_capabilities(session, caps)
        for name, state in sorted(session.vm.capabilities.items()):
            print(f"{name}={'on' if state else 'off'}")
    finally:
        await session.close()
    return 0


async def cmd_postcopy(args: argparse.Namespace) -> int:
    from migtui.backend.qmp.controls import start_postcopy

    _refuse_if_read_only(args, "postcopy")
    if is_libvirt_target(args.source):
        from migtui.cli.hosts import control

        async def switch(handle) -> str:
            await handle.start_postcopy()
            return f"{handle.vm.name}: switched to post-copy"

        return await control(args, "postcopy", switch)
    session = await _connect(args.source, args)
    try:
        await session.sample()
        await start_postcopy(session)
        print(f"migtui: {session.vm.name}: switched to post-copy", file=sys.stderr)
    finally:
        await session.close()
    return 0
