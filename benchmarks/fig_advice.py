"""Advice, applied on the real lab guest: does the first piece finish the migration?

For each bandwidth, a real QEMU 7.2 lab pair (TCG) is migrated at that bandwidth and
QEMU's default 300 ms downtime limit, which the lab guest (it sweeps ~98 MiB as fast
as TCG lets it) cannot converge at. Once migtui says not-converging, the first advice
that can be applied now is sent as migtui's dashboard sends it, and followed up; if the
follow-up says it did not work, the next one is applied (at most three). Prints one JSON
object per bandwidth and a Markdown table for the README.

    .venv/bin/python benchmarks/fig_advice.py [--bandwidths 16M,32M,64M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import until  # noqa: E402
from migtui.lab.lab import Lab  # noqa: E402
from migtui.model.endpoint import parse_endpoint  # noqa: E402
from migtui.model.guidance import follow_up  # noqa: E402
from migtui.model.units import parse_rate  # noqa: E402
from migtui.model.requests import MigrationOptions  # noqa: E402
from migtui.backend.qmp.controls import cancel_migration, start_migration  # noqa: E402
from migtui.backend.qmp.session import SessionOptions, VMSession  # noqa: E402

WITHIN = 60.0  # seconds after the first advice in which it is to complete


async def one(bandwidth: int) -> dict:
    lab = Lab(pairs=1, accel="tcg")
    await lab.start()
    src = VMSession(parse_endpoint(lab.sources[0].endpoint), options=SessionOptions(active_interval=0.25))
    dst = VMSession(parse_endpoint(lab.destinations[0].endpoint))
    out: dict = {"bandwidth-bytes-per-s": bandwidth, "downtime-limit-ms": 300, "applied": [], "follow-ups": []}
    try:
        src.start()
        dst.start()
        assert await src.wait_connected(10) and await dst.wait_connected(10)
        await start_migration(src, MigrationOptions(bandwidth=bandwidth, downtime_ms=300), destination=dst)
        vm = src.vm
        if not await until(lambda: vm.assessment().verdict == "not-converging", 90):
            out["result"] = f"never said not-converging (last {vm.assessment().verdict}: {vm.assessment().why})"
            return out
        out["not-converging-at-pass"] = vm.derived.passes
        first_at = None
        while len(out["applied"]) < 3:
            now = [a for a in vm.advice() if a.change is not None]
            if not now:
                out["told"] = vm.advice()[0].text if vm.advice() else None
                break
            adv = now[0]
            await src.set_parameters(adv.change)  # the console's path: dialect, audit, refresh, follow-up
            first_at = first_at or time.monotonic()
            out["applied"].append({"text": adv.text, "set": adv.change.to_json(), "pass": vm.derived.passes,
                                   "t": round(time.monotonic() - first_at, 1)})

            def settled() -> bool:
                fu = vm.follow_up()
                if fu is not None and (not out["follow-ups"] or out["follow-ups"][-1] != fu.state):
                    out["follow-ups"].append(fu.state)
                return vm.migration_status in ("completed", "failed", "cancelled") or (
                    fu is not None and fu.state == "did-not-work")

            await until(settled, WITHIN + first_at - time.monotonic() if len(out["applied"]) == 1 else WITHIN)
            if vm.migration_status in ("completed", "failed", "cancelled"):
                break
        out["status"] = vm.migration_status
        out["completed-s-after-first"] = round(time.monotonic() - first_at, 1) if first_at and \
            vm.migration_status == "completed" else None
        out["first-worked"] = bool(len(out["applied"]) == 1 and out["completed-s-after-first"] is not None
                                   and out["completed-s-after-first"] <= WITHIN)
        if vm.in_flight:
            await cancel_migration(src)
        return out
    finally:
        for s in (src, dst):
            await s.close()
        await lab.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bandwidths", default="16M,32M,64M")
    args = p.parse_args()
    rows = []
    for text in args.bandwidths.split(","):
        r = asyncio.run(one(int(parse_rate(text, "--bandwidths"))))
        print(json.dumps(r), flush=True)
        rows.append(r)
    print("| lab guest at | first advice | completed within 60 s of it | advice applied | then |")
    print("|---|---|---|---|---|")
    for r in rows:
        first = r["applied"][0]["text"].split(":", 1)[0] if r["applied"] else "-"
        then = f"completed {r['completed-s-after-first']}s after the first" if r.get("completed-s-after-first") \
            is not None else (r.get("told") or r.get("result") or r.get("status"))
        print(f"| {r['bandwidth-bytes-per-s'] // 2**20} MiB/s, 300ms | {first} | "
              f"{'yes' if r.get('first-worked') else 'no'} | {len(r['applied'])} | {then} |")


if __name__ == "__main__":
    main()
