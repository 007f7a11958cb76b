"""Figure 4: event to screen, on real QEMU.

A lab pair (TCG, 1G) and the console in this process (MigtuiApp.run_test,
160x45, the fleet screen, default session options). The source is migrated
repeatedly to `exec:cat > /dev/null` (32 MiB/s, downtime-limit 4 s: ~3 s each),
started from its tools monitor, then resumed with `cont` for the next run.

For each QMP event the console's session receives for the source, the event's
own QMP timestamp (QEMU's wall clock when it emitted it) is compared with the
wall time of the first frame (see screen_probe.py) in which the fleet table
shows it:
  MIGRATION status=S    the source's "migration" cell reads S
  MIGRATION_PASS n      the source's "pass" cell reads n or more (1 exactly for pass 1)
A status the table never shows because the next one arrived first (setup is
followed by active within ~10 ms) is counted as superseded, not as a latency.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import goal, percentile, rnd, summary
from screen_probe import FrameProbe

BANDWIDTH = 32 * 2**20
DOWNTIME_LIMIT_MS = 4000


def _latencies(events: list[tuple[str, dict, float]], frames: list[tuple[float, str, str]]) -> dict[str, Any]:
    """Event timestamp -> first frame showing it. `frames` holds only the frames where a cell changed."""
    status_lat: list[float] = []
    pass_lat: list[float] = []
    superseded: list[str] = []
    status_times = [when for name, _, when in events if name == "MIGRATION"]

    def first(when: float, until: float, shows: Any) -> float | None:
        before = [f for f in frames if f[0] < when]
        if before and shows(before[-1][1], before[-1][2]):
            return when  # a poll got there a hair before the event did
        return next((t for t, status, passes in frames if when <= t < until and shows(status, passes)), None)

    for name, data, when in events:
        if name == "MIGRATION":
            want = data.get("status")
            until = next((t for t in status_times if t > when), float("inf"))
            hit = first(when, until, lambda status, _: status == want)
            if hit is None:
                superseded.append(want)
            else:
                status_lat.append(hit - when)
        elif name == "MIGRATION_PASS":
            n = data.get("pass")

            def shows(status: str, passes: str) -> bool:
                if not passes.isdigit():
                    return False
                return int(passes) == 1 and status != "completed" if n == 1 else int(passes) >= n

            hit = first(when, float("inf"), shows)
            if hit is not None:
                pass_lat.append(hit - when)
    return {"status_ms": [x * 1000 for x in status_lat], "pass_ms": [x * 1000 for x in pass_lat],
            "superseded": superseded}


async def run(quick: bool, tmp: Path) -> dict[str, Any]:
    from qemu.qmp import QMPClient
    from migtui.lab import Lab
    from migtui.model.endpoint import parse_endpoint
    from migtui.backend.qmp.backend import QMPBackend
    from migtui.backend.messages import VMEvent
    from migtui.ui.app import MigtuiApp
    from migtui.ui.widgets.fleet_table import FleetTable

    n_migrations = 2 if quick else 10
    events: list[tuple[str, dict, float]] = []
    frames: list[tuple[float, str, str]] = []  # (wall time, status cell, pass cell), on change only
    async with Lab(pairs=1, accel="tcg", mem="1G") as lab:
        src, dst = lab.sources[0], lab.destinations[0]
        fleet = QMPBackend([parse_endpoint(f"src1=unix:{src.qmp_path}"), parse_endpoint(f"dst1=unix:{dst.qmp_path}")])
        app = MigtuiApp(fleet)
        for session in fleet:
            inner = session.listener

            def listener(message: Any, inner: Any = inner) -> None:
                if isinstance(message, VMEvent) and message.vm == "src1":
                    events.append((message.event, dict(message.data), message.time))
                inner(message)

            session.listener = listener
        probe = FrameProbe(app)
        cache: dict[str, Any] = {}

        def on_frame(_: float) -> None:
            screen = app.screen
            if cache.get("screen") is not screen:
                cache["screen"], cache["table"] = screen, screen.query_one("#fleet", FleetTable)
            table = cache["table"]
            # What the frame shows: the row as the table last drew it (None: not drawn yet).
            drawn = table.drawn_cells("src1")
            if drawn is None:
                return
            status, passes = drawn[1], drawn[8]
            if not frames or frames[-1][1:] != (status, passes):
                frames.append((time.time(), status, passes))

        probe.on_frame.append(on_frame)
        tools = QMPClient("bench-tools")
        await tools.connect(str(src.tools_qmp_path))
        try:
            async with app.run_test(size=(160, 45)):
                session = fleet.get("src1")
                assert session is not None
                deadline = time.monotonic() + 20
                while not (session.connected and session.vm.capabilities.get("events")):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the console did not connect to the source with events on")
                    await asyncio.sleep(0.05)
                await tools.execute("migrate-set-parameters",
                                    {"max-bandwidth": BANDWIDTH, "downtime-limit": DOWNTIME_LIMIT_MS})
                for _ in range(n_migrations):
                    await asyncio.sleep(1.0)
                    await tools.execute("migrate", {"uri": "exec:cat > /dev/null"})

                    async def done() -> None:
                        async for event in tools.events:
                            if event["event"] == "MIGRATION" and event["data"]["status"] in (
                                    "completed", "failed", "cancelled"):
                                return

                    await asyncio.wait_for(done(), 60)
                    await asyncio.sleep(1.0)  # let the console show it
                    await tools.execute("cont")
        finally:
            await tools.disconnect()
    found = _latencies(events, frames)
    status_ms, pass_ms = found["status_ms"], found["pass_ms"]
    values = {
        "migration_event_to_frame_ms": summary(status_ms, 1),
        "migration_pass_to_frame_ms": summary(pass_ms, 1),
        "migration_event_ms_all": [rnd(x, 1) for x in status_ms],
        "superseded_statuses": found["superseded"],
        "events_seen": len(events),
        "frames_with_changes": len(frames),
        "frames_total": probe.frames,
    }
    return {
        "params": {"migrations": n_migrations, "vms": 2, "size": [160, 45], "clock": "QMP event timestamp vs "
                   "time.time() at the frame"},
        "values": values,
        "goals": [goal("MIGRATION event to frame, p95", percentile(status_ms, 95), 100.0, "<=", "ms")],
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(asyncio.run(run("--quick" in sys.argv, Path(d))), indent=1))
