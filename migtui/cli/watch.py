"""`migtui watch`: every target sampled each interval, a line or NDJSON object per target per round."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from migtui.cli.common import _check_metrics, _options, _start_metrics, _stop_metrics, _warn_remote, split_targets
from migtui.cli.parser import UsageError
from migtui.cli.status import error_of, print_state


async def cmd_watch(args: argparse.Namespace) -> int:
    from migtui.model.units import parse_number
    from migtui.backend.qmp.session import VMSession

    interval = parse_number(args.interval, "--interval", 0.05, 3600, "seconds ")
    count = None
    if args.count is not None:
        from migtui.model.units import parse_count

        count = parse_count(args.count, "--count", 1, 10**9)
    _check_metrics(args)
    endpoints, hosts = split_targets(args.targets)
    if hosts:
        if endpoints:
            raise UsageError("watch on libvirt hosts takes only libvirt targets; run it once for the QMP endpoints")
        from migtui.cli.hosts import watch_rounds

        return await watch_rounds(hosts, args, interval, count)
    _warn_remote(endpoints, args)
    options = _options(args, autopoll=False, active_interval=interval)
    sessions = [VMSession(e, options=options) for e in endpoints]
    metrics = _start_metrics(args, lambda: sessions)
    if metrics is not None:
        print(f"migtui: metrics on {metrics.url}", file=sys.stderr, flush=True)

    async def sample(session: VMSession) -> None:
        if not session.connected:
            await session.connect()
            session.start()  # listens for events and reconnects; sampling stays ours
        else:
            await session.sample()

    rounds = 0
    failed = False
    try:
        while count is None or rounds < count:
            started = time.monotonic()
            if len(sessions) == 1:
                errors = [await error_of(sample(sessions[0]))]  # no Task per sample when watching one VM
            else:
                errors = await asyncio.gather(*(error_of(sample(s)) for s in sessions))
            for target, session, error in zip(args.targets, sessions, errors):
                failed |= error is not None
                print_state(target, session, error, as_json=args.json)
            rounds += 1
            if count is not None and rounds >= count:
                break
            # Pacing between rounds, not synchronisation.
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
    finally:
        await _stop_metrics(metrics)
        await asyncio.gather(*(s.close() for s in sessions))
    return 2 if failed and rounds == 1 else 0
