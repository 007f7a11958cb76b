"""Regenerate screenshots/ from a real `migtui lab` run: python -m migtui.screenshots [DIR].

A tool that chooses its parts (the lab, the QMP backend, the console), so it sits beside the
command line, not in the UI.

Starts a lab pair of real QEMU VMs (the simulated lab where QEMU is missing),
drives the console headless the way an operator would, and saves an SVG of
each screen. Every run shows live data, so the pictures differ run to run;
the snapshot tests (tests/test_snapshots.py) are the fixed ones.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from migtui.lab import Lab, find_qemu
from migtui.model.endpoint import parse_endpoint
from migtui.backend.qmp.backend import QMPBackend
from migtui.backend.qmp.session import SessionOptions
from migtui.ui.app import MigtuiApp

SIZE = (120, 36)


async def _wait(condition, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("the lab did not get there in time")
        await asyncio.sleep(0.05)


async def capture(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    if find_qemu() is None:
        print("screenshots: qemu-system-x86_64 missing; install qemu-system-x86", file=sys.stderr)
        raise SystemExit(2)
    saved: list[Path] = []
    async with Lab(pairs=1, accel="tcg") as lab:
        fleet = QMPBackend([parse_endpoint(vm.endpoint) for vm in lab.vms], options=SessionOptions(active_interval=0.5))
        app = MigtuiApp(fleet)
        async with app.run_test(size=SIZE) as pilot:

            async def shot(name: str) -> None:
                await pilot.pause()
                path = app.save_screenshot(f"{name}.svg", str(out))
                saved.append(Path(path))

            await _wait(lambda: all(s.connected and s.vm.sample for s in fleet), 20)
            await shot("fleet-idle")
            await pilot.press("m")
            await shot("start-migration")
            await pilot.press("enter")  # QEMU's defaults: the lab guest will not converge
            source = fleet.get("src1")
            await _wait(lambda: (source.vm.derived.passes or 0) >= 12, 60)
            await shot("fleet-migrating")
            await pilot.press("enter")
            await shot("dashboard-not-converging")
            await pilot.press("k")
            await shot("capabilities-locked")
            await pilot.press("escape", "b")
            await pilot.press(*"4G")
            await shot("bandwidth")
            await pilot.press("enter")
            await _wait(lambda: source.vm.migration_status == "completed", 60)
            await shot("dashboard-completed")
            await pilot.press("escape", "question_mark")
            await shot("help")
    return saved


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "screenshots"
    for path in asyncio.run(capture(out)):
        print(path)


if __name__ == "__main__":
    main()
