"""The console, headless, on a simulated fleet in another process: figure 2's measured process.

    python benchmarks/console_driver.py --vms N --endpoints FILE --out FILE [--history 7200] [--window 20] [--rounds 3]

1. With --history H, builds N MigrationTrackers and feeds each H synthetic
   in-flight `query-migrate` samples through parse_query_migrate (H=7200: one
   hour at 2/s), to stand in for an hour of history; prints PREFILLED. This
   happens before the simulator starts (the caller waits for PREFILLED), so the
   simulated fleet is equally old when measured, whatever H.
2. Waits for the endpoints file, builds the Fleet (default SessionOptions: idle
   VMs polled at 1 Hz, VMs with a migration in flight at 2 Hz) and gives each
   session one prefilled tracker. With --backend-window S, first runs the same
   sessions with no console for S seconds (then closes them): the backend's
   own share of the CPU.
3. Runs MigtuiApp.run_test(size=(160, 45)) on the fleet screen; every frame is also
   encoded to terminal bytes (screen_probe.FrameProbe), as a real terminal run does.
4. Waits until every session is connected, settles, prints WINDOW-START, measures
   its own CPU time over --window seconds of wall time untouched, prints WINDOW-END.
5. RSS, then key latencies: `o` (sort), `/` and typed text (filter), `escape`,
   pagedown/pageup. For each key: from before pilot.press() to the first frame
   after the table reflects the key ("frame"), and to after `await pilot.pause()`
   ("pilot", which also waits for the process to go idle).
Writes one JSON object to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import percentile, proc_rss_mb, rnd, summary  # noqa: E402
from screen_probe import FrameProbe  # noqa: E402

MiB = 2**20


def _log(text: str) -> None:
    print(f"[driver {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def synthetic_reply(i: int, k: int) -> dict[str, Any]:
    """The i-th reply of an hour-long, non-converging migration (fresh objects each time, as JSON would give)."""
    t = i * 0.5
    passes = 1 + i // 6
    transferred = int((30 + k % 7) * MiB * t)
    return {
        "status": "active", "total-time": int(t * 1000), "setup-time": 12 + k % 5, "expected-downtime": 3100 + i % 97,
        "ram": {"transferred": transferred, "remaining": 90 * MiB + (i % 6) * MiB + k, "total": 4096 * MiB,
                "duplicate": 20000 + i, "skipped": 0, "normal": transferred // 4096, "normal-bytes": transferred,
                "dirty-pages-rate": 24300 + i % 50, "mbps": 251.6 + (i % 7) / 10, "dirty-sync-count": passes,
                "page-size": 4096, "pages-per-second": 7680 + i % 13, "precopy-bytes": transferred,
                "downtime-bytes": 0, "postcopy-bytes": 0, "dirty-sync-missed-zero-copy": 0,
                "multifd-bytes": 0, "postcopy-requests": 0},
    }


class GcClock:
    """Time spent in each generation's collections (gc.callbacks), between reset() calls."""

    def __init__(self) -> None:
        self.began: float | None = None
        self.reset()
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.began = time.perf_counter()
        elif self.began is not None:
            gen, took = info["generation"], time.perf_counter() - self.began
            self.count[gen] += 1
            self.total[gen] += took
            self.longest[gen] = max(self.longest[gen], took)

    def report(self) -> dict[str, Any]:
        return {f"gen{g}": {"collections": self.count[g], "total_ms": rnd(self.total[g] * 1000, 1),
                            "longest_ms": rnd(self.longest[g] * 1000, 1)} for g in range(3)}


def prefill(n_vms: int, samples: int) -> tuple[list[Any], float]:
    """n_vms MigrationTrackers, each fed `samples` synthetic samples; and the CPU seconds it took."""
    from migtui.model.derived import MigrationTracker
    from migtui.model.sample import parse_query_migrate
    from migtui.backend.qmp.session import SessionOptions

    from migtui.model.guidance import assess

    history_len = SessionOptions().history_len  # what every session's tracker gets
    began = time.process_time()
    start = time.time() - samples * 0.5
    trackers = []
    for k in range(n_vms):
        tracker = MigrationTracker(history_len)
        for i in range(samples):
            tracker.add(parse_query_migrate(synthetic_reply(i, k), start + i * 0.5))
        # The console assesses migrations as their samples arrive: after an hour its guidance
        # memo is current. One look at the end leaves the same state (and memory) behind.
        assess(tracker)
        trackers.append(tracker)
    return trackers, time.process_time() - began


def _wait_for_file(path: Path, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no endpoints in {path} after {timeout:g} s")
        time.sleep(0.1)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


async def _wait_connected(fleet: Any, timeout: float) -> int:
    from migtui.model.vm import Connection

    deadline = time.perf_counter() + timeout
    while True:
        connected = sum(1 for s in fleet if s.vm.connection == Connection.CONNECTED)
        if connected == len(fleet) or time.perf_counter() > deadline:
            return connected
        await asyncio.sleep(0.2)


async def backend_only(endpoints: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The same sessions polling the same VMs with no console: what the backend alone costs."""
    from migtui.model.endpoint import parse_endpoint
    from migtui.backend.qmp.backend import QMPBackend
    from migtui.backend.messages import VMUpdated

    samples = [0]

    def listener(message: Any) -> None:
        if isinstance(message, VMUpdated) and message.what == "sample":
            samples[0] += 1

    fleet = QMPBackend((parse_endpoint(e) for e in endpoints), listener)
    fleet.start()
    try:
        connected = await _wait_connected(fleet, args.connect_timeout)
        await asyncio.sleep(args.settle)
        cpu0, wall0, samples0 = time.process_time(), time.perf_counter(), samples[0]
        await asyncio.sleep(args.backend_window)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await fleet.close()
    _log(f"backend only: {connected} connected, cpu share {cpu / wall:.3f}")
    return {"connected": connected, "window_s": rnd(wall, 2), "cpu_share": rnd(cpu / wall, 4),
            "samples_per_s": rnd((samples[0] - samples0) / wall, 1)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from textual.widgets import Input

    from migtui.model.endpoint import parse_endpoint
    from migtui.backend.qmp.backend import QMPBackend
    from migtui.backend.messages import VMUpdated
    from migtui.ui.app import MigtuiApp
    from migtui.ui.widgets.fleet_table import FleetTable

    result: dict[str, Any] = {}
    gc.collect()
    result["rss_mb_start"] = proc_rss_mb()
    trackers: list[Any] = []
    if args.history:
        # Before the simulator exists, so the fleet is the same age when measured, whatever the history.
        _log(f"prefilling {args.vms} trackers x {args.history} samples")
        trackers, cpu = prefill(args.vms, args.history)
        result["prefill_cpu_s"] = rnd(cpu, 1)
        gc.collect()
        result["rss_mb_after_prefill"] = proc_rss_mb()
        result["history_points"] = sum(len(t.history) for t in trackers)
    print("PREFILLED", flush=True)
    endpoints = _wait_for_file(Path(args.endpoints), args.connect_timeout + 300)
    if args.backend_window:
        result["backend_only"] = await backend_only(endpoints, args)
    fleet = QMPBackend(parse_endpoint(e) for e in endpoints)
    for session, tracker in zip(fleet, trackers):
        session.vm.tracker = tracker
    gc.collect()
    result["rss_mb_fleet_built"] = proc_rss_mb()

    app = MigtuiApp(fleet)
    samples = [0]
    for session in fleet:
        inner = session.listener

        def listener(message: Any, inner: Callable[[Any], None] = inner) -> None:
            if isinstance(message, VMUpdated) and message.what == "sample":
                samples[0] += 1
            inner(message)

        session.listener = listener
    probe = FrameProbe(app)
    rng = random.Random(1)
    began = time.perf_counter()
    async with app.run_test(size=(160, 45)) as pilot:
        connected = await _wait_connected(fleet, args.connect_timeout)
        result["connected"] = connected
        result["connect_s"] = rnd(time.perf_counter() - began, 2)
        _log(f"{connected}/{len(fleet)} connected after {result['connect_s']} s")
        await asyncio.sleep(args.settle)
        if args.gc_freeze:  # what-if: everything alive now moves out of the collector's sight
            gc.collect()
            gc.freeze()
            result["gc_frozen_objects"] = gc.get_freeze_count()

        # ---- CPU share, untouched ----
        print("WINDOW-START", flush=True)
        gc_clock = GcClock()
        cpu0, wall0, frames0, samples0 = time.process_time(), time.perf_counter(), probe.frames, samples[0]
        await asyncio.sleep(args.window)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        print("WINDOW-END", flush=True)
        result["window_s"] = rnd(wall, 2)
        result["cpu_s"] = rnd(cpu, 3)
        result["cpu_share"] = rnd(cpu / wall, 4)
        result["frames_per_s"] = rnd((probe.frames - frames0) / wall, 2)
        result["samples_per_s"] = rnd((samples[0] - samples0) / wall, 1)
        result["gc_window"] = gc_clock.report()
        began_gc = time.perf_counter()
        gc.collect()
        result["full_gc_ms"] = rnd((time.perf_counter() - began_gc) * 1000, 1)
        gc_clock.reset()
        result["rss_mb"] = proc_rss_mb()
        _log(f"cpu share {result['cpu_share']}, rss {result['rss_mb']}")

        # ---- key latencies ----
        screen = app.screen
        table = screen.query_one("#fleet", FleetTable)
        box = screen.query_one("#filter", Input)
        lat: dict[str, list[tuple[float | None, float]]] = {}
        presses: list[list[Any]] = []
        print("KEYS-START", flush=True)

        async def measure(kind: str, key: str, cond: Callable[[], bool]) -> None:
            fut = probe.wait_for(cond)
            t0 = time.perf_counter()
            await pilot.press(key)
            try:
                t_frame: float | None = await asyncio.wait_for(asyncio.shield(fut), 15)
            except asyncio.TimeoutError:
                t_frame = None
            await pilot.pause()
            t_pilot = time.perf_counter()
            frame_ms = None if t_frame is None else (t_frame - t0) * 1000
            lat.setdefault(kind, []).append((frame_ms, (t_pilot - t0) * 1000))
            presses.append([key, rnd(frame_ms, 1), rnd((t_pilot - t0) * 1000, 1)])
            await asyncio.sleep(rng.uniform(0.15, 0.45))  # land on different phases of the polling

        for _ in range(args.rounds):
            for _ in range(8):  # every sort column once
                before = screen.sort_column
                await measure("sort", "o", lambda before=before: screen.sort_column != before)
            await pilot.press("home")
            await pilot.pause()
            for key in ("pagedown", "pagedown", "pageup", "pageup"):
                row, y = table.cursor_row, table.scroll_y
                await measure("scroll", key, lambda row=row, y=y: table.cursor_row != row and table.scroll_y != y)
            await measure("filter", "slash", lambda: bool(box.display and box.has_focus))
            typed = ""
            for char in args.filter_text:
                typed += char
                await measure("filter", char, lambda typed=typed: screen.filter_text == typed)
            await measure("filter", "escape", lambda: screen.filter_text == "" and not box.display)
        print("KEYS-END", flush=True)
        result["gc_keys"] = gc_clock.report()
        result["presses"] = presses  # [key, frame ms, pilot ms] in order
        result["keys"] = {}
        all_frame = [f for samples_ in lat.values() for f, _ in samples_]
        all_pilot = [p for samples_ in lat.values() for _, p in samples_]
        for kind, pairs in lat.items():
            result["keys"][kind] = {"frame_ms": summary([f for f, _ in pairs if f is not None], 1),
                                    "pilot_ms": summary([p for _, p in pairs], 1)}
        result["keys"]["all"] = {"frame_ms": summary([f for f in all_frame if f is not None], 1),
                                 "pilot_ms": summary(all_pilot, 1)}
        result["key_frame_p95_ms"] = rnd(percentile([f for f in all_frame if f is not None], 95), 1)
        result["key_pilot_p95_ms"] = rnd(percentile(all_pilot, 95), 1)
        result["key_frame_timeouts"] = sum(1 for f in all_frame if f is None)
        result["rss_mb_end"] = proc_rss_mb()
        _log(f"keys p95 frame {result['key_frame_p95_ms']} ms, pilot {result['key_pilot_p95_ms']} ms")
        exit_began = time.perf_counter()
    result["exit_s"] = rnd(time.perf_counter() - exit_began, 2)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", required=True, help="waited for: written once the simulator runs")
    parser.add_argument("--vms", type=int, required=True, help="how many trackers to prefill")
    parser.add_argument("--out", required=True)
    parser.add_argument("--history", type=int, default=0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--backend-window", type=float, default=0.0,
                        help="first measure the sessions alone, with no console, for this long")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--filter-text", default="web")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="what-if: gc.freeze() once connected, before measuring (not what migtui does)")
    parser.add_argument("--connect-timeout", type=float, default=90.0)
    args = parser.parse_args()
    out = asyncio.run(main(args))
    Path(args.out).write_text(json.dumps(out))
