"""The command line on libvirt targets: `status`, `watch` and the controls, through the libvirt backend.

A libvirt URI stands for a host and every domain on it (`#NAME` narrows it); a control needs
one domain (`qemu+ssh://host1/system#web-01`) and, for `migrate`, a destination host (`--to URI`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from migtui.cli.common import libvirt_backend
from migtui.cli.parser import UsageError

# How long a host may take to answer before the command says why not.
CONNECT_TIMEOUT = 10.0


async def open_hosts(targets, args: argparse.Namespace, **options: Any):
    """A started libvirt backend on these hosts, once each has connected or said why not."""
    from migtui.backend.libvirt.backend import LibvirtOptions
    from migtui.config import Config

    config = getattr(args, "config", None) or Config()
    read_only = bool(getattr(args, "read_only", False) or config.controls_off or options.pop("read_only", False))
    backend = libvirt_backend(targets, args, LibvirtOptions(read_only=read_only, audit=config.audit_log(), **options))
    backend.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_TIMEOUT
    # Each host's first connection (and its sweep of domains) or its first reason; polled, with a deadline.
    while loop.time() < deadline and not all(h.connected or h.reason for h in backend.hosts()):
        await asyncio.sleep(0.05)
    return backend


def host_errors(backend) -> list[str]:
    """One line per host that is not connected."""
    return [f"{h.name} ({h.where}): {h.reason or 'no answer within %gs' % CONNECT_TIMEOUT}"
            for h in backend.hosts() if not h.connected]


async def status_lines(targets, args: argparse.Namespace) -> int:
    """`status` on libvirt hosts: a line (or JSON object) per domain, one line on stderr per host down."""
    from migtui.cli.status import print_state

    backend = await open_hosts(targets, args, read_only=True)
    try:
        for handle in backend:
            print_state(str(handle.endpoint), handle, None, as_json=args.json)
        errors = host_errors(backend)
        for line in errors:
            print(f"migtui: {line}", file=sys.stderr)
        for host in backend.hosts():
            if host.connected and not host.vms:  # else an empty host is an empty answer
                print(f"migtui: {host.name} ({host.where}): no running or paused domain to show", file=sys.stderr)
        return 2 if errors else 0
    finally:
        await backend.close()


async def watch_rounds(targets, args: argparse.Namespace, interval: float, count: int | None) -> int:
    from migtui.cli.common import _start_metrics, _stop_metrics
    from migtui.cli.status import print_state

    backend = await open_hosts(targets, args, read_only=True, active_interval=min(interval, 1.0))
    metrics = _start_metrics(args, lambda: backend)
    if metrics is not None:
        print(f"migtui: metrics on {metrics.url}", file=sys.stderr, flush=True)
    reported: set[str] = set()
    rounds = 0
    try:
        while count is None or rounds < count:
            for handle in backend:
                print_state(str(handle.endpoint), handle, None, as_json=args.json)
            for line in host_errors(backend):
                if line not in reported:  # once per reason, not once per round
                    reported.add(line)
                    print(f"migtui: {line}", file=sys.stderr, flush=True)
            rounds += 1
            if count is not None and rounds >= count:
                break
            await asyncio.sleep(interval)  # pacing between rounds, not synchronisation
    finally:
        await _stop_metrics(metrics)
        await backend.close()
    return 0


async def one_domain(text: str, args: argparse.Namespace, extra_hosts=(), **options: Any):
    """(backend, domain) for a target that names one domain, or UsageError saying what to give."""
    from migtui.backend.libvirt.target import parse_libvirt_target

    target = parse_libvirt_target(text)
    if len(target.domains) != 1 or any(c in target.domains[0] for c in "*?["):
        raise UsageError(f"{text}: name one domain after #, e.g. {target.shown_uri}#web-01")
    backend = await open_hosts([target, *extra_hosts], args, **options)
    handle = backend.get(target.domains[0])
    if handle is None:
        errors = host_errors(backend)
        await backend.close()
        raise UsageError(errors[0] if errors else f"{text}: no running domain {target.domains[0]} on that host")
    return backend, handle


async def migrate(args: argparse.Namespace, options) -> int:
    """`migrate URI#DOMAIN --to URI`: peer to peer, libvirt host to libvirt host."""
    from migtui.backend.libvirt.target import is_libvirt_target, parse_libvirt_target
    from migtui.present.state import state_line

    if args.to is None or not is_libvirt_target(args.to):
        raise UsageError("a libvirt domain migrates to another libvirt host: give --to qemu+ssh://HOST/system "
                         "(or qemu+tcp://, qemu+tls://)")
    to = parse_libvirt_target(args.to)
    backend, handle = await one_domain(args.source, args, [to])
    pilot = None
    try:
        if args.check:
            from migtui.cli.control import _preflight

            return await _preflight(handle, options)
        if args.autopilot is not None:
            from migtui.cli.control import _engage

            pilot = _engage(args, backend, handle.key)
        destination = next((d for d in backend.destinations(handle) if d.target.uri == to.uri), None)
        if destination is None:
            raise UsageError(f"--to {args.to}: " + (", ".join(host_errors(backend)) or "the domain already runs there"))
        said = None if args.no_preflight else await handle.preflight_before_start(options)
        await handle.migrate(options, destination, uri=args.migrate_uri)
        print(f"migtui: {handle.vm.name}: migrating to {destination.label}", file=sys.stderr)
        from migtui.cli.control import _say_preflight

        _say_preflight(handle, said)
        if not args.wait:
            return 0
        last = ""
        while not (handle.vm.sample is not None and handle.vm.sample.finished):
            line = state_line(handle.vm)
            if line != last:
                print(line, flush=True)
                last = line
            await asyncio.sleep(0.5)  # pacing the lines, not synchronisation
        if handle.vm.migration_status == "completed":
            # The last line from where it runs now: libvirt's call returns after the destination resumed it.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while (handle.migrating or handle.host is not destination.target) and loop.time() < deadline:
                await asyncio.sleep(0.1)
        print(state_line(handle.vm), flush=True)
        return 0 if handle.vm.migration_status == "completed" else 1
    finally:
        if pilot is not None:
            pilot.close()
        await backend.close()


async def control(args: argparse.Namespace, what: str, work) -> int:
    """cancel, set, caps, postcopy on one domain: `work(handle)` returns the line to print."""
    backend, handle = await one_domain(args.source, args)
    try:
        line = await work(handle)
        if line:
            print(line)
    finally:
        await backend.close()
    return 0
