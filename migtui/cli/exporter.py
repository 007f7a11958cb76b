"""`migtui exporter`: no console, a Prometheus exposition of these VMs' migrations until a signal."""

from __future__ import annotations

import argparse
import asyncio
import sys

from migtui.cli.common import _check_metrics, _endpoints, _options, _start_metrics, _stop_metrics, _warn_remote


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
