"""`migtui exporter`: no console, a Prometheus exposition of these VMs' migrations until a signal."""

from __future__ import annotations

import argparse
import asyncio
import sys

from migtui.cli.common import _check_metrics, _options, _start_metrics, _stop_metrics, _warn_remote, libvirt_backend, \
    split_targets


async def cmd_exporter(args: argparse.Namespace) -> int:
    """No console: sessions on every target (QMP endpoints, libvirt hosts), read by Prometheus at
    each scrape, until a signal."""
    import signal

    from migtui.backend.combined import combine
    from migtui.backend.qmp.backend import QMPBackend

    _check_metrics(args)
    endpoints, hosts = split_targets(args.targets)
    _warn_remote(endpoints, args)
    backends = [QMPBackend(endpoints, options=_options(args))] if endpoints or not hosts else []
    if hosts:
        from migtui.backend.libvirt.backend import LibvirtOptions

        # An exporter only reads: libvirt opened read-only (virConnectOpenReadOnly) is all it needs.
        backends.append(libvirt_backend(hosts, args, LibvirtOptions(read_only=True)))
    fleet = combine(backends)
    metrics = _start_metrics(args, lambda: fleet)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        fleet.start()
        watched = f"{len(endpoints)} VM(s)" if endpoints or not hosts else ""
        if hosts:  # a host's domains are found as it connects
            watched += f"{' and ' if watched else ''}{len(hosts)} libvirt host(s), read-only"
        print(f"migtui exporter: {watched}; metrics on {metrics.url}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await _stop_metrics(metrics)
        await fleet.close()
    return 0
