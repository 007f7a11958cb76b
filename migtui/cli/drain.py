"""`migtui drain SOURCE --to DEST[,DEST...]`: move every VM off a host (migtui.drain).

libvirt: SOURCE is a host's URI, and every running domain on it moves to the --to hosts.
QMP: SOURCE is a comma-separated list of VMs, and --to the VMs waiting for them. One line
per state change (JSON with --json), the summary at the end; exit 0 when every VM moved,
1 when one did not, 2 for bad arguments. The queue lives in this process: it runs to the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

from migtui.backend.libvirt.target import is_libvirt_target
from migtui.cli.common import _refuse_if_read_only
from migtui.cli.parser import UsageError


def _parts(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _options(args: argparse.Namespace):
    from migtui.model.requests import MigrationOptions
    from migtui.model.units import parse_count, parse_rate, parse_time_ms

    per_source = parse_count(args.parallel, "--parallel", 1, 64)
    total = parse_count(args.max_total, "--max-total", 1, 256)
    options = MigrationOptions(
        bandwidth=None if args.bandwidth is None else parse_rate(args.bandwidth, "--bandwidth"),
        downtime_ms=None if args.downtime is None else parse_time_ms(args.downtime, "--downtime"),
        postcopy=args.postcopy, auto_converge=args.auto_converge)
    return options, per_source, total


async def cmd_drain(args: argparse.Namespace) -> int:
    _refuse_if_read_only(args, "drain")
    options, per_source, total = _options(args)  # every value checked before connecting
    if args.policy is not None:
        from migtui.cli.control import _policy

        args.autopilot = args.policy
        _policy(args)
    sources, destinations = _parts(args.source), _parts(args.to)
    if not sources or not destinations:
        raise UsageError("drain SOURCE --to DEST[,DEST...]: give a libvirt host's URI (or QMP VMs) and where to")
    libvirt = [is_libvirt_target(t) for t in sources + destinations]
    if any(libvirt) and not all(libvirt):
        raise UsageError("drain: libvirt hosts drain to libvirt hosts, QMP VMs to QMP VMs; do not mix them")
    if all(libvirt):
        if len(sources) != 1:
            raise UsageError("drain: one libvirt host at a time (its URI); --to takes several")
        if args.migrate_uri is not None:
            _stream_uris(args.migrate_uri)  # a bad template is refused before connecting
        return await _drain_libvirt(args, sources[0], destinations, options, per_source, total)
    if args.migrate_uri is not None:
        raise UsageError("--migrate-uri is for libvirt hosts")
    return await _drain_qmp(args, sources, destinations, options, per_source, total)


def _stream_uris(template: str):
    """--migrate-uri's template as the stream URI for each destination: {host} its name, {n} a count;
    UsageError for a template that does not format."""
    try:
        template.format(host="host", n=1)
    except (KeyError, IndexError, ValueError):
        raise UsageError(f"--migrate-uri {template!r}: its placeholders are {{host}} (the destination's name) "
                         "and {n} (a count), e.g. unix:///run/mig/{host}-{n}.sock") from None
    counter = itertools.count(1)
    return lambda destination: template.format(host=destination.key.split(":", 1)[1], n=next(counter))


async def _drain_libvirt(args, source: str, destinations: list[str], options, per_source: int, total: int) -> int:
    from migtui.backend.libvirt.target import parse_libvirt_target
    from migtui.cli.hosts import host_errors, open_hosts

    targets = [parse_libvirt_target(t) for t in [source, *destinations]]
    backend = await open_hosts(targets, args)
    try:
        errors = host_errors(backend)
        if errors:
            raise UsageError(errors[0])
        home = backend.libvirt_hosts[0].label
        wanted = {f"host:{h.label}" for h in backend.libvirt_hosts[1:]}
        keys = [h.key for h in backend if h.vm.endpoint.host == home and h.vm.run_state == "running"]
        uri_for = None if args.migrate_uri is None else _stream_uris(args.migrate_uri)
        return await _run(args, backend, keys, lambda d: d.key in wanted, options, per_source, total, uri_for,
                          f"{home} ({len(keys)} running domains)")
    finally:
        await backend.close()


async def _drain_qmp(args, sources: list[str], destinations: list[str], options, per_source: int, total: int) -> int:
    import asyncio

    from migtui.backend.qmp.backend import QMPBackend
    from migtui.cli.common import _endpoints, _options as session_options
    from migtui.cli.hosts import CONNECT_TIMEOUT

    backend = QMPBackend(_endpoints(sources + destinations), options=session_options(args))
    backend.start()
    try:
        keys = list(backend.handles())[:len(sources)]
        wanted = set(list(backend.handles())[len(sources):])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        # Every VM's first sample or its reason; polled, with a deadline.
        while loop.time() < deadline and not all(h.vm.sample is not None or h.vm.reason for h in backend):
            await asyncio.sleep(0.05)
        down = [f"{h.vm.name}: {h.vm.reason or f'no answer within {CONNECT_TIMEOUT:g} s'}" for h in backend
                if h.vm.sample is None]
        if down:
            raise UsageError(down[0])
        return await _run(args, backend, keys, lambda d: d.key in wanted, options, per_source, total, None,
                          ", ".join(sources))
    finally:
        await backend.close()


async def _run(args, backend, keys, allowed, options, per_source, total, uri_for, what: str) -> int:
    from migtui.drain import Drain

    pilot = None
    if args.policy is not None:
        from migtui.autopilot import Autopilot
        from migtui.config import load_config

        config = load_config()
        pilot = Autopilot(backend, config.policies, audit=config.audit_log())

    def said(item) -> None:
        if args.json:
            print(json.dumps({"time": round(time.time(), 3), **item.to_json()}), flush=True)
        else:
            to = f" to {item.destination.split(':', 1)[-1]}" if item.destination else ""
            why = f": {item.reason}" if item.reason else ""
            print(f"{item.name}: {item.state}{to}{why}", flush=True)

    drain = Drain(backend, keys, allowed=allowed, options=options, per_source=per_source, total=total,
                  autopilot=pilot, policy=args.policy, on_change=said, uri_for=uri_for)
    print(f"migtui: draining {what}, {per_source} per host and {total} at once; order: {drain.order_text}",
          file=sys.stderr, flush=True)
    try:
        line = await drain.run()
    finally:
        if pilot is not None:
            pilot.close()
    if args.json:
        print(json.dumps({"summary": line, "moved": sum(i.state == "done" for i in drain.items),
                          "of": len(drain.items)}), flush=True)
    else:
        print(f"migtui: {line}", flush=True)
    return 0 if all(i.state == "done" for i in drain.items) else 1
