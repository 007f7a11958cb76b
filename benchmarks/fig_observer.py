"""Figure 3: observer effect of migtui on a real QEMU migration.

Each run is a fresh lab pair (TCG, 1G guests that dirty ~100 MB of RAM as fast as
the vCPU can), migrated over a unix socket with max-bandwidth 32 MiB/s and
downtime-limit 4 s. Those settings converge every time here: the bulk pass sends
the ~98 MiB the guest dirties at the rate limit (~3 s), then the zero pages, and
QEMU switches over as soon as what is left fits in 4 s, so the stop-and-copy
sends the dirtied set unthrottled (tens of ms of downtime). The migration is started and
followed on the VMs' tools monitors; QEMU's own `total-time` and `downtime`
(query-migrate after MIGRATION completed) are the figures.

Conditions, in paired runs (each pair runs all of them, order rotated per pair):
  unwatched     nothing on the main monitors
  watch 0.5 s   `migtui watch --json --interval 0.5 src dst` in its own process
  watch 0.1 s   the same at 0.1 s
  raw 0.1 s     (full mode) benchmarks/raw_poller.py at 0.1 s: the same queries from
                a minimal client, to tell what any poller does to QEMU from migtui's cost
The figure is the median over pairs of watched/unwatched. "early switchovers"
counts runs that completed in under 2.9 s: QEMU switched over before the bulk
pass had sent the dirtied set at the rate limit (bigger downtime, shorter total).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import MIGTUI, PYTHON, bench_env, child_cpu, goal, median, percentile, rnd, spawn, stop

BANDWIDTH = 32 * 2**20
DOWNTIME_LIMIT_MS = 4000
MEM = "1G"


class _Watcher:
    def __init__(self, kind: str, interval: float, targets: list[str], env: dict[str, str]) -> None:
        if kind == "raw":
            argv = [PYTHON, str(Path(__file__).with_name("raw_poller.py")), f"{interval:g}", *targets]
        else:
            migtui = [MIGTUI] if MIGTUI else [PYTHON, "-m", "migtui"]
            argv = [*migtui, "watch", "--json", "--interval", f"{interval:g}", *targets]
        self.proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.lines = 0
        self.errors = 0
        self.ready = threading.Event()
        self.targets = len(targets)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines += 1
            try:
                if json.loads(line).get("error"):
                    self.errors += 1
            except ValueError:
                self.errors += 1
            if self.lines >= self.targets:
                self.ready.set()
        self.ready.set()

    def stop(self) -> None:
        stop(self.proc)
        self._thread.join(5)


async def _migration(kind: str, interval: float | None, env: dict[str, str]) -> dict[str, Any]:
    from qemu.qmp import QMPClient

    from migtui.lab import Lab

    async with Lab(pairs=1, accel="tcg", mem=MEM) as lab:
        src, dst = lab.sources[0], lab.destinations[0]
        s, d = QMPClient("bench-src"), QMPClient("bench-dst")
        await s.connect(str(src.tools_qmp_path))
        await d.connect(str(dst.tools_qmp_path))
        watcher = None
        cpu_before = child_cpu()
        try:
            uri = f"unix:{lab.runtime_dir}/migrate.sock"
            await d.execute("migrate-incoming", {"uri": uri})
            await s.execute("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]})
            await s.execute("migrate-set-parameters",
                            {"max-bandwidth": BANDWIDTH, "downtime-limit": DOWNTIME_LIMIT_MS})
            if interval is not None:
                watcher = _Watcher(kind, interval, [f"src=unix:{src.qmp_path}", f"dst=unix:{dst.qmp_path}"], env)
                if not await asyncio.to_thread(watcher.ready.wait, 20):
                    raise RuntimeError(f"{kind} watcher printed nothing in 20 s")
            began = time.time()
            await s.execute("migrate", {"uri": uri})
            status = None
            finished_at = None

            async def follow() -> None:
                nonlocal status, finished_at
                async for event in s.events:
                    if event["event"] == "MIGRATION" and event["data"]["status"] in ("completed", "failed", "cancelled"):
                        status = event["data"]["status"]
                        stamp = event["timestamp"]
                        finished_at = stamp["seconds"] + stamp["microseconds"] / 1e6
                        return

            await asyncio.wait_for(follow(), 120)
            # QEMU 7.2 sets COMPLETED (and emits the event) before migration_calculate_complete()
            # fills in total-time and downtime: a query-migrate in between reads 0 for both, more
            # often when other processes compete for the CPU. Ask again until they are there.
            zero_replies = 0
            while True:
                reply = await s.execute("query-migrate")
                if reply.get("total-time") or zero_replies >= 40:
                    break
                zero_replies += 1
                await asyncio.sleep(0.05)
            lines = errors = 0
            if watcher is not None:
                watcher.stop()
                lines, errors = watcher.lines, watcher.errors
                watcher = None
            # Should QEMU still answer 0, the total comes from the clock (migrate sent -> MIGRATION
            # completed's timestamp) and the downtime is unknown.
            reported = bool(reply.get("total-time"))
            wall_ms = (finished_at - began) * 1000 if finished_at else None
            return {
                "status": status,
                "total_ms": rnd(wall_ms, 1),
                "qemu_total_ms": reply.get("total-time") if reported else None,
                "downtime_ms": reply.get("downtime") if reported else None,
                "passes": (reply.get("ram") or {}).get("dirty-sync-count"),
                "zero_replies_after_completed": zero_replies,
                "watch_lines": lines,
                "watch_errors": errors,
                "watch_cpu_s": rnd(child_cpu() - cpu_before, 3) if interval is not None else None,
            }
        finally:
            if watcher is not None:
                watcher.stop()
            await s.disconnect()
            await d.disconnect()


async def run(quick: bool, tmp: Path) -> dict[str, Any]:
    env = bench_env(tmp)
    n_pairs = 2 if quick else 10
    conditions: list[tuple[str, str, float | None]] = [
        ("unwatched", "", None), ("watch_0.5s", "migtui", 0.5), ("watch_0.1s", "migtui", 0.1)]
    if not quick:
        # The control: the same query-migrate rate from a minimal client, to tell migtui's cost from QEMU's.
        conditions.append(("raw_0.1s", "raw", 0.1))
    pairs: list[dict[str, Any]] = []
    for i in range(n_pairs):
        k = i % len(conditions)
        order = conditions[k:] + conditions[:k]
        pair: dict[str, Any] = {"order": [name for name, _, _ in order]}
        for name, kind, interval in order:
            pair[name] = await _migration(kind, interval, env)
        pairs.append(pair)

    def ratios(key: str, cond: str) -> list[float]:
        out = []
        for pair in pairs:
            base, watched = pair["unwatched"].get(key), pair[cond].get(key)
            if pair["unwatched"]["status"] == pair[cond]["status"] == "completed" and base and watched is not None:
                out.append(watched / base)
        return out

    values: dict[str, Any] = {"pairs": pairs}
    goals = []
    for cond, _, _ in conditions[1:]:
        for key in ("total_ms", "downtime_ms"):
            r = ratios(key, cond)
            values[f"{cond}_{key}_ratios"] = [rnd(x, 3) for x in r]
            values[f"{cond}_{key}_median_ratio"] = rnd(median(r), 3)
            values[f"{cond}_{key}_ratio_quartiles"] = [rnd(percentile(r, 25), 3), rnd(percentile(r, 75), 3)]
            if cond.startswith("watch"):
                goals.append(goal(f"{key.replace('_ms', '')} {cond.replace('_', ' ')} / unwatched (median of pairs)",
                                  median(r), 1.02, "<=", "x"))
    for cond, _, _ in conditions:
        for key in ("total_ms", "downtime_ms"):
            values[f"{cond}_{key}_median"] = median([p[cond][key] for p in pairs if p[cond][key] is not None])
        values[f"{cond}_early_switchovers"] = sum(1 for p in pairs if (p[cond]["total_ms"] or 0) < 2900)
    values["zero_replies_after_completed"] = {
        c: sum(p[c]["zero_replies_after_completed"] for p in pairs) for c, _, _ in conditions}
    values["completed"] = sum(p[c]["status"] == "completed" for p in pairs for c, _, _ in conditions)
    values["runs"] = len(pairs) * len(conditions)
    params = {"pairs": n_pairs, "mem": MEM, "max_bandwidth": BANDWIDTH, "downtime_limit_ms": DOWNTIME_LIMIT_MS,
              "accel": "tcg", "watcher": "migtui watch --json --interval S src dst (own process)"}
    return {"params": params, "values": values, "goals": goals}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(asyncio.run(run("--quick" in sys.argv, Path(d))), indent=1))
