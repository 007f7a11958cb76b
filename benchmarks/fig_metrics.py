"""Figure 7: the cost of a Prometheus scrape (--metrics, `migtui exporter`).

A simulated fleet (mixed dialects, some migrations in flight, x10 time) runs in its
own process; this process holds one started session per VM, as the exporter does, and
serves the exposition on loopback (migtui.metrics, prometheus-client's HTTP server in its
thread). Once every VM is connected and sampled:

- scrape_s: wall time of one HTTP GET of /metrics from another thread, as Prometheus
  would see it (connect, the snapshot on the loop, formatting, transfer);
- snapshot_s: the part that holds the asyncio loop (reading every VM's state and
  verdict), timed on the loop itself;
- scrape_cpu_s: this process's CPU per scrape over a burst of back-to-back scrapes,
  less the same span's CPU without scrapes (the sessions sample meanwhile).

Medians of several rounds, spaced so that samples arrive between them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import SimProcess, bench_env, goal, median, summary


async def _measure(endpoints: list[str], rounds: int, burst: int) -> dict[str, Any]:
    from migtui.metrics import start_metrics
    from migtui.model.endpoint import parse_endpoint
    from migtui.model.vm import Connection
    from migtui.backend.qmp.backend import QMPBackend

    fleet = QMPBackend(parse_endpoint(e) for e in endpoints)
    fleet.start()
    server = start_metrics("127.0.0.1:0", lambda: fleet, asyncio.get_running_loop(), print)
    collector = server.collector

    def fetch() -> tuple[float, int]:
        began = time.perf_counter()
        with urllib.request.urlopen(server.url, timeout=30) as reply:
            body = reply.read()
        return time.perf_counter() - began, len(body)

    try:
        deadline = time.monotonic() + 60
        while not all(s.vm.connection == Connection.CONNECTED and s.vm.sample is not None for s in fleet):
            if time.monotonic() > deadline:
                raise RuntimeError("the simulated fleet did not connect within 60 s")
            await asyncio.sleep(0.1)
        scrape, snapshot, size = [], [], 0
        for _ in range(rounds):
            await asyncio.sleep(0.6)  # pacing: new samples between rounds, so verdicts are recomputed
            began = time.perf_counter()
            collector.snapshot()
            snapshot.append(time.perf_counter() - began)
            await asyncio.sleep(0.6)
            took, size = await asyncio.to_thread(fetch)
            scrape.append(took)
        # CPU per scrape: a burst of back-to-back scrapes against the same span without.
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(burst):
            await asyncio.to_thread(fetch)
        cpu_burst, span = time.process_time() - cpu0, time.perf_counter() - wall0
        cpu1 = time.process_time()
        await asyncio.sleep(span)
        cpu_idle = time.process_time() - cpu1
        text = (await asyncio.to_thread(lambda: urllib.request.urlopen(server.url, timeout=30).read())).decode()
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        in_flight = sum(1 for s in fleet if s.vm.in_flight)
    finally:
        await asyncio.to_thread(server.close)
        await fleet.close()
    return {"scrape": scrape, "snapshot": snapshot, "bytes": size, "series": series, "in_flight": in_flight,
            "cpu_per_scrape": max(0.0, cpu_burst - cpu_idle) / burst}


def run(quick: bool, tmp: Path) -> dict[str, Any]:
    n_vms = 100
    rounds = 7 if quick else 21
    env = bench_env(tmp)
    with SimProcess(n_vms, 10, env, tmp / "sim.log") as sim:
        endpoints = sim.start()
        m = asyncio.run(_measure(endpoints, rounds, 10 if quick else 30))
    values = {
        "scrape_s": summary(m["scrape"], 4),
        "snapshot_on_loop_s": summary(m["snapshot"], 5),
        "scrape_cpu_s": round(m["cpu_per_scrape"], 5),
        "exposition_bytes": m["bytes"],
        "series": m["series"],
        "in_flight_at_end": m["in_flight"],
    }
    return {
        "params": {"vms": n_vms, "rounds": rounds, "dialect": "mixed", "speedup": 10},
        "values": values,
        "goals": [
            # A quarter of the 1 s interval of the real-Prometheus test; Prometheus's default is 15 s.
            goal("scrape of 100 VMs, wall (median)", median(m["scrape"]), 0.25, "<=", "s"),
            # Under a tenth of the in-flight poll interval (0.5 s): sampling is not held up.
            goal("time the loop is held per scrape (median)", median(m["snapshot"]), 0.05, "<=", "s",
                 "mostly the verdicts of migrations with new samples (the console has them already)"),
        ],
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run("--quick" in sys.argv, Path(d)), indent=1))
