"""The command line: `migtui status|watch|migrate|cancel|set|caps|postcopy|lab|replay|export|exporter|serve|demo`.

Scripts rely on these names and on the exit codes: 0 done, 1 a migration
failed or was cancelled (`--wait`), 2 bad arguments or an unreachable target,
always with one line on stderr and never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

from migtui import __version__

SUBCOMMANDS = ("status", "watch", "migrate", "cancel", "set", "caps", "postcopy", "lab", "replay", "export",
               "exporter", "serve", "demo")
EXPORTER_LISTEN = "127.0.0.1:9720"  # `migtui exporter`'s default: loopback
SERVABLE = ("lab", "demo", "replay")  # the subcommands that open a console, which `serve` can serve


class UsageError(Exception):
    """Bad arguments: exit 2 with this one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, naming where to look, instead of argparse's usage block.
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _size(text: str) -> int:
    from migtui.model.units import parse_size

    return parse_size(text, "--xbzrle-cache")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="migtui",
        description="A terminal console for QEMU live migration.",
        epilog="Without a subcommand, migtui opens the console on the TARGETs given.",
    )
    parser.add_argument("--version", action="version", version=f"migtui {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    def targets(p: argparse.ArgumentParser, nargs: str = "+") -> None:
        p.add_argument("targets", nargs=nargs, metavar="TARGET", help="[NAME=]unix:PATH, PATH or tcp:HOST:PORT")

    p = sub.add_parser("status", help="one sample per target, then exit")
    p.add_argument("--json", action="store_true", help="one JSON object per target")
    p.add_argument("--window", metavar="TIME",
                   help="sample for this long (e.g. 5s) and judge the trend, not one reply")
    targets(p)

    p = sub.add_parser("watch", help="sample every interval")
    p.add_argument("--json", action="store_true", help="one NDJSON line per target per round")
    p.add_argument("--interval", default="1", metavar="S", help="seconds between rounds (default 1)")
    p.add_argument("--count", default=None, metavar="N", help="stop after N rounds")
    add_metrics_option(p)
    targets(p)

    p = sub.add_parser("migrate", help="start a migration")
    p.add_argument("source", metavar="SOURCE")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="TARGET", help="a destination VM waiting with -incoming defer")
    where.add_argument("--uri", metavar="URI", help="tcp:HOST:PORT, unix:PATH, exec:CMD or fd:NAME")
    p.add_argument("--bandwidth", metavar="SIZE", help="max bandwidth, e.g. 1G or 100M/s (bytes/s)")
    p.add_argument("--downtime", metavar="TIME", help="downtime limit, e.g. 300ms or 2s")
    p.add_argument("--xbzrle", action="store_true", help="turn on XBZRLE")
    p.add_argument("--xbzrle-cache", metavar="SIZE", help="XBZRLE cache size, a power of two, e.g. 256M")
    p.add_argument("--auto-converge", action="store_true", help="throttle the guest CPUs when it does not converge")
    p.add_argument("--postcopy", action="store_true", help="allow a switch to post-copy (postcopy-ram on both sides)")
    p.add_argument("--multifd", metavar="N", help="multifd with N channels (both sides)")
    p.add_argument("--block", action="store_true", help="block migration: copy the disks too (blk)")
    p.add_argument("--wait", action="store_true", help="follow it; exit 0 on completed, 1 on failed or cancelled")
    add_record_options(p, "with --wait: record the migration into this NDJSON file (default: a new file in "
                       "$XDG_STATE_HOME/migtui/recordings)")
    p.add_argument("--check", action="store_true", help="pre-flight only: measure the guest's dirty rate and "
                   "predict whether these settings converge (exit 0 yes, 1 no); nothing is migrated")

    p = sub.add_parser("cancel", help="cancel the migration of SOURCE")
    p.add_argument("source", metavar="SOURCE")

    p = sub.add_parser("set", help="change migration parameters, also during a migration")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument(
        "assignments", nargs="+", metavar="NAME=VALUE",
        help="bandwidth=1G, downtime=500ms, xbzrle-cache=256M, or any migrate-set-parameters name",
    )

    p = sub.add_parser("caps", help="show or set migration capabilities")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("assignments", nargs="*", metavar="NAME=on|off")

    p = sub.add_parser("postcopy", help="switch a running migration to post-copy")
    p.add_argument("source", metavar="SOURCE")

    p = sub.add_parser("lab", help="start a local lab of real QEMU VMs and open the console")
    p.add_argument("--pairs", default="1", metavar="N", help="source/destination pairs (default 1)")
    p.add_argument("--mem", metavar="SIZE", help="guest RAM (default 128M, at least 128M; with --guest linux 1G)")
    p.add_argument("--disk", action="store_true", help="give both sides qcow2 disks for block migration")
    p.add_argument("--no-ui", action="store_true", help="print the endpoints and wait for Ctrl-C")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto", help="default: kvm when usable")
    p.add_argument("--qemu", metavar="PATH", help="the QEMU binary (or a script running one) every VM runs "
                   "(default: $MIGTUI_QEMU, else qemu-system-x86_64 on PATH)")
    p.add_argument("--guest", choices=("tiny", "linux"), default="tiny",
                   help="tiny: a 200-byte guest dirtying 98 MiB (default); linux: Debian with a real workload, "
                        "built once (as root) and cached")
    p.add_argument("--workload", choices=("pgbench", "pgbench-heavy", "build"),
                   help="with --guest linux: pgbench (2 clients, default), pgbench-heavy (16) or build (gcc, make -j2)")
    p.add_argument("--sim", action="store_true", help="a simulated fleet instead (also when QEMU is missing)")
    p.add_argument("--vms", default="12", metavar="N", help="with --sim: how many VMs (default 12)")
    p.add_argument("--dialect", choices=("1.4", "7.2", "10.0", "mixed"), default="mixed",
                   help="with --sim (default mixed: 7.2 and 1.4)")
    p.add_argument("--speedup", default="1", metavar="K", help="with --sim: simulated time runs K times faster")
    add_console_options(p)
    add_metrics_option(p)

    p = sub.add_parser("replay", help="replay a recorded migration in the dashboard")
    p.add_argument("file", nargs="?", metavar="FILE", help="a recording (without it: list the newest recordings)")
    p.add_argument("--vm", metavar="NAME", help="which VM's migration, in a file that holds several (default: the last)")
    p.add_argument("--speed", default="1", metavar="X", help="playback speed, 0.25 to 16 (default 1)")
    p.add_argument("--paused", action="store_true", help="open paused at the start")
    p.add_argument("--end", action="store_true", help="open paused at the end: the whole migration at once")
    p.add_argument("--theme", metavar="NAME", help="as for the console")

    p = sub.add_parser("export", help="a recorded migration as CSV (the time series) and/or SVG (the dashboard)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--vm", metavar="NAME", help="which VM's migration, in a file that holds several")
    p.add_argument("--csv", metavar="OUT", help="write the time series here, one row per sample ('-': stdout)")
    p.add_argument("--svg", metavar="OUT", help="write the dashboard at the end of the recording here")

    p = sub.add_parser("exporter", help="no console: a Prometheus exposition of these VMs' migrations")
    add_metrics_option(p, default=EXPORTER_LISTEN)
    targets(p)

    # Parsed by build_serve_parser (its console arguments are migtui's own); listed here for --help.
    sub.add_parser("serve", help="the console in a browser, one per visit (see: migtui serve --help)", add_help=False)

    p = sub.add_parser("demo", help="the story of a stuck migration, for presenters (simulated unless --real)")
    p.add_argument("--auto", action="store_true", help="play it without a key pressed, at a projector's pace")
    p.add_argument("--real", action="store_true", help="on a lab of real QEMU VMs instead of the simulator")
    p.add_argument("--theme", metavar="NAME", help="as for the console (default migtui-high-contrast)")
    p.add_argument("--read-only", action="store_true",
                   help="the audience's keys change nothing; the story still steers its own VMs")
    p.add_argument("--speed", default="1", help=argparse.SUPPRESS)  # tests: the story's clock, K times faster
    return parser


def build_serve_parser() -> argparse.ArgumentParser:
    from migtui.browser import DEFAULT_BIND

    parser = _Parser(
        prog="migtui serve", allow_abbrev=False,
        usage="migtui serve [--bind HOST:PORT] [--public [--allow-controls]] [--max-sessions N] [--sim | --lab] "
              "[--] CONSOLE-ARGUMENTS...",
        description="Serve the console in a browser: every visit runs `migtui CONSOLE-ARGUMENTS` of its own.",
        epilog="CONSOLE-ARGUMENTS: TARGET..., lab [...], demo [...] or replay FILE, with the console's "
               "options (--theme, --read-only, ...); put -- before them when they could be taken for serve's.",
    )
    parser.add_argument("--bind", default=DEFAULT_BIND, metavar="HOST:PORT", help=f"default {DEFAULT_BIND}")
    parser.add_argument("--public", action="store_true",
                        help="allow a non-loopback bind (there is no authentication: anyone who reaches it)")
    parser.add_argument("--allow-controls", action="store_true",
                        help="with --public: keep the controls on (else every visit is read-only)")
    parser.add_argument("--max-sessions", default="8", metavar="N", help="visits at once (default 8)")
    parser.add_argument("--sim", action="store_true", help="each visit: a simulated fleet of its own (lab --sim)")
    parser.add_argument("--lab", action="store_true", help="each visit: a lab of real QEMU VMs of its own (lab)")
    return parser


def add_metrics_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    where = f"(default {default})" if default else "(e.g. 127.0.0.1:9720)"
    parser.add_argument("--metrics", default=default, metavar="HOST:PORT",
                        help=f"serve a Prometheus exposition of every VM watched here {where}")


# ---- helpers -------------------------------------------------------------


def _endpoints(texts: Sequence[str]):
    from migtui.model.endpoint import parse_endpoint

    return [parse_endpoint(t) for t in texts]


def _options(args: argparse.Namespace, **extra: Any):
    """Session options from the config file: TLS for TCP endpoints, the audit log."""
    from migtui.config import Config
    from migtui.backend.qmp.session import SessionOptions

    config = getattr(args, "config", None) or Config()
    return SessionOptions(ssl=config.ssl_context(), audit=config.audit_log(), **extra)


def _warn_remote(endpoints, args: argparse.Namespace) -> None:
    for endpoint in endpoints:
        if endpoint.kind == "tcp" and not endpoint.is_local:
            tls = getattr(args, "config", None) is not None and args.config.tls_ca_file is not None
            if not tls:
                print(f"migtui: warning: {endpoint} is not loopback and QMP has no authentication: "
                      "anyone who reaches it controls the VM (use [tls] in the config, or an SSH tunnel)",
                      file=sys.stderr)


def _refuse_if_read_only(args: argparse.Namespace, what: str) -> None:
    config = getattr(args, "config", None)
    if config is not None and config.controls_off:
        where = f"read-only in {config.path}" if config.read_only else "MIGTUI_READ_ONLY is set"
        raise UsageError(f"{what} refused: controls are off ({where})")


async def _connect(text: str, args: argparse.Namespace, **options: Any):
    """A connected session for one target, or BackendError with the reason."""
    from migtui.backend.qmp.session import VMSession

    endpoints = _endpoints([text])
    _warn_remote(endpoints, args)
    session = VMSession(endpoints[0], options=_options(args, **options))
    await session.connect()
    return session


def _state_json(target: str, session, error: str | None = None) -> dict[str, Any]:
    vm = session.vm
    sample = vm.sample
    return {
        "target": target,
        "name": vm.name,
        "qemu": vm.qemu_version,
        "dialect": vm.dialect,
        "run-state": vm.run_state,
        "time": round(sample.time, 3) if sample else round(time.time(), 3),
        "migration": sample.info if sample else None,  # serialised as it is, never changed
        "derived": {**vm.derived.to_json(), **vm.assessment().to_json()} if sample else None,
        "error": error,
    }


def _state_line(session, error: str | None = None) -> str:
    from migtui.model.units import format_bytes, format_rate

    vm = session.vm
    if error:
        return f"{vm.name}: {error}"
    d = vm.derived
    sample = vm.sample
    parts = [
        f"{vm.name}",
        f"qemu {vm.qemu_version}" + (f" ({vm.dialect})" if vm.dialect else ""),
        f"{vm.run_state}",
        f"migration {vm.migration_status}",
    ]
    if sample and sample.status not in ("none",):
        if d.progress is not None:
            parts.append(f"{d.progress * 100:.0f}%")
        parts.append(f"throughput {format_rate(d.throughput_bps)}")
        parts.append(f"remaining {format_bytes(d.remaining_bytes)}")
        if d.dirty_bytes_per_s is not None:
            parts.append(f"dirty {format_rate(d.dirty_bytes_per_s)}")
        if d.passes is not None:
            parts.append(f"pass {d.passes}")
        if sample.in_flight:
            parts.append(f"eta {_eta_text(vm)}")
        assessment = vm.assessment()
        parts.append(f"verdict {assessment.verdict}: {assessment.why}")
        if sample.error_desc:
            parts.append(f"error: {sample.error_desc}")
    return "  ".join(parts)


def _eta_text(vm) -> str:
    from migtui.model.units import format_duration

    a = vm.assessment()
    if a.eta_s is not None:
        band = ""
        if a.eta_low_s is not None and a.eta_high_s is not None:
            band = f" ({format_duration(a.eta_low_s)}-{format_duration(a.eta_high_s)})"
        return format_duration(a.eta_s) + band
    if a.verdict in ("not-converging", "stalled"):
        return "never at these settings"
    return "-"


def _check_metrics(args: argparse.Namespace) -> None:
    """A malformed --metrics is refused before anything starts (binding comes later)."""
    if getattr(args, "metrics", None) is not None:
        from migtui.metrics import parse_listen

        parse_listen(args.metrics)


def _start_metrics(args: argparse.Namespace, sessions):
    """The exposition --metrics asks for, read on this loop; None without --metrics."""
    if getattr(args, "metrics", None) is None:
        return None
    from migtui.metrics import start_metrics

    return start_metrics(args.metrics, sessions, asyncio.get_running_loop(),
                         warn=lambda line: print(f"migtui: warning: {line}", file=sys.stderr, flush=True))


async def _stop_metrics(server) -> None:
    if server is not None:
        await asyncio.to_thread(server.close)  # its shutdown waits out the server's poll


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, separators=(",", ":")), flush=True)


# ---- subcommands -----------------------------------------------------------


STATUS_WINDOW_STEP = 0.25  # seconds between samples of status --window (the console's in-flight rate is 0.5)


async def cmd_status(args: argparse.Namespace) -> int:
    from migtui.backend.errors import BackendError
    from migtui.backend.qmp.session import VMSession

    window_s = 0.0
    if args.window is not None:
        from migtui.model.units import parse_time_ms

        window_s = parse_time_ms(args.window, "--window") / 1000
    endpoints = _endpoints(args.targets)
    _warn_remote(endpoints, args)
    options = _options(args)
    sessions = [VMSession(e, options=options) for e in endpoints]

    async def one(session: VMSession) -> str | None:
        try:
            await session.connect()
            if window_s:
                # Samples over the window, so the verdict judges passes, not one reply.
                loop = asyncio.get_running_loop()
                end = loop.time() + window_s
                while loop.time() < end:
                    await asyncio.sleep(min(STATUS_WINDOW_STEP, max(0.0, end - loop.time())))  # pacing
                    await session.sample()
        except BackendError as err:
            return str(err)
        except (OSError, EOFError) as err:
            return f"connection lost: {err}"
        return None

    errors = await asyncio.gather(*(one(s) for s in sessions))
    for target, session, error in zip(args.targets, sessions, errors):
        if args.json:
            _print(_state_json(target, session, error))
        else:
            print(_state_line(session, error), flush=True)
        if error:
            print(f"migtui: {target}: {error}", file=sys.stderr)
    await asyncio.gather(*(s.close() for s in sessions))
    return 2 if any(errors) else 0


async def cmd_watch(args: argparse.Namespace) -> int:
    from migtui.model.units import parse_number
    from migtui.backend.errors import BackendError
    from migtui.backend.qmp.session import VMSession

    interval = parse_number(args.interval, "--interval", 0.05, 3600, "seconds ")
    count = None
    if args.count is not None:
        from migtui.model.units import parse_count

        count = parse_count(args.count, "--count", 1, 10**9)
    _check_metrics(args)
    endpoints = _endpoints(args.targets)
    _warn_remote(endpoints, args)
    options = _options(args, autopoll=False, active_interval=interval)
    sessions = [VMSession(e, options=options) for e in endpoints]
    metrics = _start_metrics(args, lambda: sessions)
    if metrics is not None:
        print(f"migtui: metrics on {metrics.url}", file=sys.stderr, flush=True)

    async def sample(session: VMSession) -> str | None:
        try:
            if not session.connected:
                await session.connect()
                session.start()  # listens for events and reconnects; sampling stays ours
            else:
                await session.sample()
        except BackendError as err:
            return str(err)
        except (OSError, EOFError) as err:
            return f"connection lost: {err}"
        return None

    rounds = 0
    failed = False
    try:
        while count is None or rounds < count:
            started = time.monotonic()
            if len(sessions) == 1:
                errors = [await sample(sessions[0])]  # no Task per sample when watching one VM
            else:
                errors = await asyncio.gather(*(sample(s) for s in sessions))
            for target, session, error in zip(args.targets, sessions, errors):
                failed |= error is not None
                if args.json:
                    _print(_state_json(target, session, error))
                else:
                    print(_state_line(session, error), flush=True)
            rounds += 1
            if count is not None and rounds >= count:
                break
            # Pacing between rounds, not synchronisation.
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    finally:
        await _stop_metrics(metrics)
        await asyncio.gather(*(s.close() for s in sessions))
    return 2 if failed and rounds == 1 else 0


def _migration_options(args: argparse.Namespace):
    from migtui.model.parameters import check_xbzrle_cache_size
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
    )


async def cmd_migrate(args: argparse.Namespace) -> int:
    from migtui.model.parameters import check_uri
    from migtui.backend.qmp.controls import start_migration

    if not args.check:
        _refuse_if_read_only(args, "migrate")
    if args.record and (args.check or not args.wait):
        raise UsageError("--record FILE records what --wait follows: add --wait (and no --check)")
    options = _migration_options(args)  # every value is checked before connecting
    if args.uri is not None:
        check_uri(args.uri)
    following = args.wait and not args.check
    # --wait samples by itself; when it records, the session only listens (for the events).
    source = await _connect(args.source, args, autopoll=False, reconnect=False) if following \
        else await _connect(args.source, args)
    destination = None
    recorder = None
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
        plan = await start_migration(source, options, destination=destination, uri=args.uri)
        print(f"migtui: {source.vm.name}: migrating to {plan.uri}", file=sys.stderr)
        if not args.wait:
            return 0
        return await _follow(source, recorder)
    finally:
        if recorder is not None:
            recorder.close()  # interrupted: the recording still ends with a summary
        await source.close()
        if destination is not None:
            await destination.close()


async def _preflight(source, options) -> int:
    """--check: measure, predict, migrate nothing."""
    from migtui.backend.qmp.controls import preflight

    prediction = await preflight(source, options)
    print(f"{source.vm.name}: {prediction.sentence}")
    return 0 if prediction.converges else 1


async def _follow(source, recorder=None) -> int:
    """--wait: a progress bar on a terminal, plain lines otherwise; the summary at the end.

    With a recorder (listening to the session), the summary shown is the one recorded, and
    where the recording went is one line on stderr.
    """
    from migtui.model.units import format_bytes, format_rate
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
            eta = _eta_text(source.vm)
            line = (
                f"\r[{bar}] {(d.progress or 0) * 100:5.1f}% {sample.status:<16} "
                f"{format_rate(d.throughput_bps):>12}  left {format_bytes(d.remaining_bytes):>10}  "
                f"pass {d.passes or '-':>3}  eta {eta:>7}"
            )
            sys.stdout.write(line)
            sys.stdout.flush()
        else:
            line = _state_line(source)
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
    session = await _connect(args.source, args)
    try:
        params = dict(parse_parameter(n, v, session.vm.parameters) for n, v in pairs)
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
    session = await _connect(args.source, args)
    try:
        await session.sample()
        await start_postcopy(session)
        print(f"migtui: {session.vm.name}: switched to post-copy", file=sys.stderr)
    finally:
        await session.close()
    return 0


def _check_lab_args(args: argparse.Namespace) -> tuple[int, int]:
    """The lab's numbers, checked (one line for a bad one): (pairs, mem); --vms and --speedup too."""
    from migtui.model.units import parse_count, parse_number, parse_size

    pairs = parse_count(args.pairs, "--pairs", 1, 16)
    linux = args.guest == "linux"
    if args.workload and not linux:
        raise UsageError("--workload needs --guest linux")
    if linux and args.sim:
        raise UsageError("--guest linux boots real QEMU; --sim is the simulated fleet: give one of them")
    if linux:
        from migtui.lab.lab import LINUX_MIN_MEM
        from migtui.lab.linux_guest import GUEST_MEM

        mem = parse_size(args.mem or GUEST_MEM, "--mem")
        if mem < LINUX_MIN_MEM:
            raise UsageError(f"--mem: the Linux lab guest needs at least {LINUX_MIN_MEM >> 20}M")
    else:
        mem = parse_size(args.mem or "128M", "--mem")
        if mem < 128 * 2**20:
            raise UsageError("--mem: the lab guest dirties up to 100 MiB; give at least 128M")
    parse_count(args.vms, "--vms", 1, 5000)
    parse_number(args.speedup, "--speedup", 0.01, 1000, "a factor ")
    return pairs, mem


def _check_theme(name: str | None) -> None:
    """A theme the console knows, or one line naming them (the console would refuse it at each visit)."""
    if name is None:
        return
    from textual.theme import BUILTIN_THEMES

    from migtui.ui.themes import load_themes

    known = list(load_themes())
    if name not in known and name not in BUILTIN_THEMES:
        raise UsageError(f"--theme: unknown theme {name!r}; themes: {', '.join(known)}")


async def cmd_lab(args: argparse.Namespace) -> int:
    import os

    from migtui.lab.qemu import QEMU_ENV, QEMU_MISSING_MESSAGE, QemuError, check_qemu, find_qemu, qemu_version

    pairs, mem = _check_lab_args(args)
    _check_metrics(args)
    if args.metrics is not None and args.no_ui:
        raise UsageError("--metrics serves the console's VMs; with --no-ui, run migtui exporter on the "
                         "endpoints it prints")
    linux = args.guest == "linux"
    qemu, what = (args.qemu, "--qemu") if args.qemu else (os.environ.get(QEMU_ENV) or None, QEMU_ENV)
    if args.sim and args.qemu:
        raise UsageError("--qemu runs real QEMU VMs and --sim simulated ones: give one of them")
    if args.sim:
        qemu = None  # $MIGTUI_QEMU is for real labs
    if qemu is not None:
        # Asked for by name: a QEMU that is not there is an error, never the simulated lab.
        try:
            qemu = check_qemu(qemu, what)
            await qemu_version(qemu, what)
        except QemuError as err:
            raise UsageError(str(err)) from None
    elif linux and find_qemu() is None:
        print(f"migtui lab: {QEMU_MISSING_MESSAGE}", file=sys.stderr)
        return 1
    elif not args.sim and find_qemu() is None:
        print(f"migtui: {QEMU_MISSING_MESSAGE}; starting the simulated lab instead", file=sys.stderr)
        args.sim = True
    if args.sim:
        return await run_sim_lab(args)
    from migtui.lab.lab import run_lab_no_ui

    guest = None
    if linux:
        from migtui.lab.linux_guest import GuestBuildError, ensure_guest

        try:
            guest = ensure_guest(args.workload or "pgbench", out=sys.stderr)  # minutes, the first time
        except GuestBuildError as e:
            print(f"migtui lab: {e}", file=sys.stderr)
            return 1
    finished = []

    async def console(lab) -> int:
        _exit_on_hangup(lab.kill_now)
        code = await run_console(_endpoints([vm.endpoint for vm in lab.vms]), args)
        finished.append(code)
        return code

    main = None if args.no_ui else console
    code = await run_lab_no_ui(pairs, f"{mem // 2**20}M", args.disk, accel=args.accel, main=main,
                               out=sys.stderr if main else None, qemu=qemu, linux=guest)
    if main is not None and not finished:
        _exit_now(code)
    return code


def _exit_on_hangup(cleanup) -> None:
    """With the console up, SIGHUP and SIGTERM clean up at once, synchronously, and exit.

    When the terminal goes away, Textual's writer can block the event loop for
    good, so an asyncio signal handler might never run; a plain one does.
    """
    import os
    import signal

    def handler(signum: int, _frame: object) -> None:
        try:
            cleanup()
        finally:
            os._exit(128 + signum)

    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, handler)


def _exit_now(code: int) -> None:
    """A signal ended the lab, which is cleaned up; the console may hang writing to a gone terminal."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def build_console_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="migtui", description="Open the console on these VMs' QMP monitors.")
    add_console_options(parser)
    add_metrics_option(parser)
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="[NAME=]unix:PATH, PATH or tcp:HOST:PORT")
    return parser


def add_console_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--theme", metavar="NAME", help="migtui-dark (default), migtui-light, "
                        "migtui-high-contrast or migtui-colorblind")
    parser.add_argument("--read-only", action="store_true", help="watch only: every control is off")
    add_record_options(parser, "record every migration into this one NDJSON file "
                       "(default: one file per migration in $XDG_STATE_HOME/migtui/recordings)")


def add_record_options(parser: argparse.ArgumentParser, help_record: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--record", metavar="FILE", help=help_record)
    group.add_argument("--no-record", action="store_true", help="record nothing (as record = false in the config)")


def make_recorder(args: argparse.Namespace, **kwargs: Any):
    """The Recorder the options and the config ask for, or None: --no-record or `record = false`.

    --record FILE records into that file even when the config says `record = false`; the
    recordings directory is pruned as the config says (record-keep-days, record-max-mb).
    """
    from migtui.config import Config
    from migtui.record import Recorder

    config = getattr(args, "config", None) or Config()
    if getattr(args, "no_record", False):
        return None
    if getattr(args, "record", None):
        return Recorder(file=Path(args.record), **kwargs)
    if not config.record:
        return None
    return Recorder(retention=config.retention(), **kwargs)


async def run_console(endpoints, args: argparse.Namespace) -> int:
    """The Textual console on these endpoints, on this event loop."""
    from migtui.config import load_config
    from migtui.backend.qmp.backend import QMPBackend
    from migtui.ui.app import MigtuiApp

    config = getattr(args, "config", None) or load_config()
    _warn_remote(endpoints, args)
    fleet = QMPBackend(endpoints, options=_options(args))
    metrics = _start_metrics(args, lambda: fleet)
    try:
        recorder = make_recorder(args)
        app = MigtuiApp(fleet, config=config, theme=args.theme, read_only=args.read_only or config.controls_off,
                        recorder=recorder, metrics_url=None if metrics is None else metrics.url)
        await app.run_async()
    finally:
        await _stop_metrics(metrics)
    return app.return_code or 0


def _check_targets(targets: Sequence[str]) -> None:
    import os

    if not targets:
        raise UsageError("give at least one TARGET ([NAME=]unix:PATH or tcp:HOST:PORT), or run: migtui lab")
    for target in targets:
        # A bare word is far more often a mistyped subcommand than a socket in this directory.
        if not any(c in target for c in "/:=") and not os.path.exists(target):
            raise UsageError(f"unknown command or socket {target!r}; commands: {', '.join(SUBCOMMANDS)}")
    _endpoints(targets)  # InputError (one line) for a malformed one


async def cmd_console(args: argparse.Namespace) -> int:
    _check_targets(args.targets)
    _check_metrics(args)
    return await run_console(_endpoints(args.targets), args)


def parse_serve_args(argv: Sequence[str]) -> argparse.Namespace:
    """`migtui serve [serve options] [--] CONSOLE-ARGUMENTS`: serve's own options, then migtui's for each visit.

    The console arguments are checked here, once, so a mistake is one line now rather than a
    broken page for every visitor.
    """
    from migtui.browser import ServeOptions, is_loopback_host, parse_bind
    from migtui.model.units import parse_count

    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        args = build_serve_parser().parse_args(argv[:cut])
        console = argv[cut + 1:]
    else:
        args, console = build_serve_parser().parse_known_args(argv)
    if args.sim or args.lab:
        if args.sim and args.lab:
            raise UsageError("give --sim or --lab, not both")
        rest = console[1:] if console[:1] == ["lab"] else console
        console = ["lab", *(["--sim"] if args.sim else []), *rest]
    if not console:
        raise UsageError("give what each visit opens: TARGET..., --sim, --lab or demo (see: migtui serve --help)")
    try:
        host, port = parse_bind(args.bind)
    except ValueError as err:
        raise UsageError(str(err)) from None
    loopback = is_loopback_host(host)
    if not loopback and not args.public:
        raise UsageError(f"--bind {args.bind} is not loopback and migtui serve has no authentication: anyone who "
                         "reaches it gets the console; add --public if that is meant")
    read_only = not loopback and not args.allow_controls
    head = console[0]
    if head in SUBCOMMANDS:
        if head not in SERVABLE:
            raise UsageError(f"{head} has no console to serve; serve opens TARGET..., lab, demo or replay FILE")
        visit = build_parser().parse_args(console)
        if head == "lab" and visit.no_ui:
            raise UsageError("lab --no-ui has no console to serve")
        if head == "replay" and visit.file is None:
            raise UsageError("replay: give the FILE each visit replays")
        if head == "lab":
            _check_lab_args(visit)
        if head == "demo":
            _demo_speed(visit)
        if read_only and head != "replay" and not visit.read_only:  # a replay is read-only anyway
            console = [head, "--read-only", *console[1:]]
    else:
        visit = build_console_parser().parse_args(console)
        _check_targets(visit.targets)
        if read_only and not visit.read_only:
            console = ["--read-only", *console]
    _check_theme(getattr(visit, "theme", None))
    if getattr(visit, "metrics", None) is not None:
        # Each visit is a process of its own: they would all bind the one port.
        raise UsageError("--metrics under serve would bind once per visit; run migtui exporter beside it")
    args.serve = ServeOptions(host=host, port=port, console=console, public=not loopback, read_only=read_only,
                              max_sessions=parse_count(args.max_sessions, "--max-sessions", 1, 1000))
    args.command = "serve"
    return args


async def cmd_serve(args: argparse.Namespace) -> int:
    from migtui.browser import ListenError, run_server

    options = args.serve
    options.audit = args.config.audit_log()  # visits open and close here; their actions, in their process
    if options.public:
        controls = ("and its controls: they can start, cancel and change migrations"
                    if not options.read_only else "read-only (--allow-controls gives them the controls too)")
        print(f"migtui serve: warning: {options.url} is not loopback and has no authentication: anyone who "
              f"reaches it gets the console, {controls}; put it behind an authenticating proxy or an SSH tunnel",
              file=sys.stderr, flush=True)
    try:
        return await run_server(options)
    except ListenError as err:
        raise UsageError(str(err)) from None


async def cmd_replay(args: argparse.Namespace) -> int:
    if args.file is None:
        from migtui.record import default_recordings_dir, list_recordings

        listed = list_recordings()
        if not listed:
            raise UsageError(f"no recordings in {default_recordings_dir()}; give a FILE")
        for path, line in listed:
            print(f"{path}\n    {line}")
        return 0
    from migtui.ui.replay import run_replay

    return await run_replay(args.file, vm=args.vm, speed=args.speed, paused=args.paused, at_end=args.end,
                            theme=args.theme or args.config.theme)


async def cmd_export(args: argparse.Namespace) -> int:
    from migtui.ui.export import run_export

    for line in await run_export(args.file, vm=args.vm, csv_out=args.csv, svg_out=args.svg, theme=args.config.theme):
        print(f"migtui: wrote {line}", file=sys.stderr)
    return 0


async def cmd_exporter(args: argparse.Namespace) -> int:
    """No console: sessions on every target, read by Prometheus at each scrape, until a signal."""
    import signal

    from migtui.backend.qmp.backend import QMPBackend

    _check_metrics(args)
    endpoints = _endpoints(args.targets)
    _warn_remote(endpoints, args)
    fleet = QMPBackend(endpoints, options=_options(args))
    metrics = _start_metrics(args, lambda: fleet)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        fleet.start()
        print(f"migtui exporter: {len(fleet)} VM(s); metrics on {metrics.url}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await _stop_metrics(metrics)
        await fleet.close()
    return 0


def _demo_speed(args: argparse.Namespace) -> float:
    from migtui.model.units import parse_number

    return parse_number(args.speed, "--speed", 0.1, 1000, "a factor ")


async def cmd_demo(args: argparse.Namespace) -> int:
    speed = _demo_speed(args)
    read_only = args.read_only or args.config.controls_off
    if args.real:
        from migtui.lab.qemu import QEMU_MISSING_MESSAGE, find_qemu

        if find_qemu() is None:
            raise UsageError(f"demo --real: {QEMU_MISSING_MESSAGE}; without --real the demo needs no QEMU")
    from migtui.ui.demo import run_demo

    return await run_demo(real=args.real, auto=args.auto, theme=args.theme, read_only=read_only, speed=speed,
                          config=args.config, options=_options(args))


async def run_sim_lab(args: argparse.Namespace) -> int:
    """`migtui lab --sim`: a simulated fleet over real QMP sockets, some migrations already running."""
    import os
    import shutil
    import signal
    import tempfile

    from migtui.model.units import parse_count, parse_number
    from migtui.sim import serve

    n_vms = parse_count(args.vms, "--vms", 1, 5000)
    speedup = parse_number(args.speedup, "--speedup", 0.01, 1000, "a factor ")
    parent = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    runtime = tempfile.mkdtemp(prefix="migtui-sim-", dir=parent if os.path.isdir(parent) else None)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    fleet = None
    try:
        fleet = await serve(n_vms, args.dialect, Path(runtime), speedup=speedup)
        endpoints = [vm.endpoint for vm in fleet.vms.values()]
        if args.no_ui:
            print(f"migtui lab --sim: {n_vms} simulated VMs ({args.dialect}, x{speedup:g}) in {runtime}; "
                  "stop with Ctrl-C", flush=True)
            for endpoint in endpoints:
                print(endpoint, flush=True)
            await stop.wait()
            return 0
        _exit_on_hangup(lambda: shutil.rmtree(runtime, ignore_errors=True))
        console = asyncio.ensure_future(run_console(_endpoints(endpoints), args))
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([console, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        return console.result() if console.done() else 0
    finally:
        if fleet is not None:
            await fleet.stop()
        shutil.rmtree(runtime, ignore_errors=True)
        for sig in signals:
            loop.remove_signal_handler(sig)
        if stop.is_set() and not args.no_ui:
            _exit_now(0)


COMMANDS = {
    "status": cmd_status,
    "watch": cmd_watch,
    "migrate": cmd_migrate,
    "cancel": cmd_cancel,
    "set": cmd_set,
    "caps": cmd_caps,
    "postcopy": cmd_postcopy,
    "lab": cmd_lab,
    "replay": cmd_replay,
    "export": cmd_export,
    "exporter": cmd_exporter,
    "serve": cmd_serve,
    "demo": cmd_demo,
}


async def _quietly(work):
    from migtui.backend.qmp.client import quiet_loop_errors

    quiet_loop_errors(asyncio.get_running_loop())  # no asyncio noise in front of an operator
    return await work


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--bandwidth -5M` -> `--bandwidth=-5M`, so the value is refused as negative, not as a missing one."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.match(r"^-\.?\d", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from migtui.model.units import InputError
    from migtui.backend.errors import BackendError

    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    try:
        from migtui.config import load_config

        if argv and argv[0] == "serve":
            args = parse_serve_args(argv[1:])
        elif argv and (argv[0] in SUBCOMMANDS or argv[0] in ("--version", "-h", "--help")):
            args = build_parser().parse_args(argv)
        else:
            args = build_console_parser().parse_args(argv)
            args.command = None
        args.config = load_config()  # a broken or unsafe config is refused before anything runs
        command = cmd_console if args.command is None else COMMANDS[args.command]
        return asyncio.run(_quietly(command(args)))
    except (UsageError, InputError, BackendError) as err:
        from migtui.model.hints import hint_for
        from migtui.backend.errors import QMPRefused

        hint = hint_for(err.desc) if isinstance(err, QMPRefused) else None
        print(f"migtui: {err}" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return 2
    except (OSError, EOFError) as err:
        print(f"migtui: connection lost: {err or type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0  # `migtui watch | head` closed the pipe
    except Exception as err:  # noqa: BLE001 - the last guard: an operator never gets a traceback
        from qemu.qmp import QMPError

        if isinstance(err, QMPError):
            print(f"migtui: QMP: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
            return 2
        from migtui.ui.guard import log_error  # standard library only

        print(f"migtui: internal error: {err!r:.200}; {log_error('migtui ' + ' '.join(argv[:1]), err)}",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
