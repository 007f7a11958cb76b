"""`migtui status`: one sample per target (or a window of them), one line or JSON object each."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Awaitable

from migtui.cli.common import _options, _warn_remote
from migtui.cli.parser import UsageError


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


def print_state(target: str, session, error: str | None, as_json: bool) -> None:
    """One target's state on stdout: a JSON object (--json) or the state line."""
    if as_json:
        print(json.dumps(_state_json(target, session, error), separators=(",", ":")), flush=True)
    else:
        from migtui.present.state import state_line

        print(state_line(session.vm, error), flush=True)


async def error_of(work: Awaitable[None]) -> str | None:
    """None when `work` (connecting, sampling) went through, else why not in one line."""
    from migtui.backend.errors import BackendError

    try:
        await work
    except BackendError as err:
        return str(err)
    except (OSError, EOFError) as err:
        return f"connection lost: {err}"
    return None


STATUS_WINDOW_STEP = 0.25  # seconds between samples of status --window (the console's in-flight rate is 0.5)


async def cmd_status(args: argparse.Namespace) -> int:
    from migtui.backend.qmp.session import VMSession

    window_s = 0.0
    if args.window is not None:
        from migtui.model.units import parse_time_ms

        window_s = parse_time_ms(args.window, "--window") / 1000
    from migtui.cli.common import split_targets

    endpoints, hosts = split_targets(args.targets)
    if hosts:
        if endpoints:
            raise UsageError("status takes QMP endpoints or libvirt hosts, not both at once; run it once for each")
        from migtui.cli.hosts import status_lines

        return await status_lines(hosts, args)
    _warn_remote(endpoints, args)
    options = _options(args)
    sessions = [VMSession(e, options=options) for e in endpoints]

    async def one(session: VMSession) -> None:
        await session.connect()
        if window_s:
            # Samples over the window, so the verdict judges passes, not one reply.
            loop = asyncio.get_running_loop()
            end = loop.time() + window_s
            while loop.time() < end:
                await asyncio.sleep(min(STATUS_WINDOW_STEP, max(0.0, end - loop.time())))  # pacing
                await session.sample()

    errors = await asyncio.gather(*(error_of(one(s)) for s in sessions))
    for target, session, error in zip(args.targets, sessions, errors):
        print_state(target, session, error, as_json=args.json)
        if error:
            print(f"migtui: {target}: {error}", file=sys.stderr)
    await asyncio.gather(*(s.close() for s in sessions))
    return 2 if any(errors) else 0
