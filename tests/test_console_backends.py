"""The console's pilot tests, once per backend (as harlequin runs its tests once per adapter).

Each test gets a console on one backend, showing a VM that has migrated:
- "qmp": the QMP backend on the simulator, and a migration started through the VM's handle;
- "replay": the replay backend on a recording, at its end.
The console knows neither: it only has migtui.backend.api. What one backend can do and the
other cannot (steer a VM) is asserted from the backend's own answer, never from its name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import pytest_asyncio
from textual.widgets import Input

from lab_fixtures import wait_until
from migtui.backend.api import Backend, ControlRefused
from migtui.backend.qmp.backend import QMPBackend
from migtui.backend.qmp.session import SessionOptions
from migtui.backend.replay import CANNOT_STEER, Playback, ReplayBackend
from migtui.model.endpoint import parse_endpoint
from migtui.model.requests import MigrationOptions, ParamChange
from migtui.record import Recorder, load_recording
from migtui.sim import SimFleet
from migtui.ui.app import MigtuiApp
from migtui.ui.dialogs import ValueDialog
from migtui.ui.screens.dashboard import DashboardScreen
from migtui.ui.screens.fleet import FleetScreen
from migtui.ui.widgets.fleet_table import FleetTable
from test_record import feed_migration

MiB = 2**20
SIZE = (120, 36)
BACKENDS = ["qmp", "replay"]


@dataclass
class Console:
    app: MigtuiApp
    backend: Backend
    kind: str
    source: str  # the key of the VM that migrated

    async def migrated(self) -> None:
        """Have the source's migration over, the way its backend can."""
        handle = self.backend.get(self.source)
        await wait_until(lambda: handle.vm.sample is not None, timeout=10)
        if handle.features.migrate:
            # Slow enough (256 MiB at 32 MiB/s: 0.4 s at the simulator's 20x) for several samples in flight.
            await handle.migrate(MigrationOptions(bandwidth=32 * MiB), destination=self.backend.get("dst1"))
        await wait_until(lambda: handle.vm.migration_status == "completed", timeout=30)


@pytest_asyncio.fixture(params=BACKENDS)
async def console(request, tmp_path):
    if request.param == "qmp":
        sim = SimFleet(tmp_path / "sim", speedup=20.0, seed=3)
        src = await sim.add_vm("src1", ram=256 * MiB, dirty_rate=8 * MiB, working_set=16 * MiB)
        dst = await sim.add_vm("dst1", incoming=True, ram=256 * MiB)
        backend = QMPBackend([parse_endpoint(vm.endpoint) for vm in (src, dst)],
                             options=SessionOptions(active_interval=0.05, poll_interval=0.2))
        try:
            yield Console(MigtuiApp(backend), backend, "qmp", "src1")
        finally:
            await sim.stop()
    else:
        recorder = Recorder(tmp_path / "recordings")
        # Two recorded VMs, as the simulated fleet has two.
        paths = [feed_migration(recorder, key=key)[0].path for key in ("src1", "dst1")]
        backend = ReplayBackend([Playback(load_recording(path), paused=True, at_end=True) for path in paths])
        yield Console(MigtuiApp(backend), backend, "replay", "src1")


def table_rows(app: MigtuiApp) -> list[str]:
    table = app.screen.query_one("#fleet", FleetTable)
    return [table.get_row(key)[0] for key in table.row_keys]


async def test_the_fleet_lists_every_vm_of_the_backend(console):
    app = console.app
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, FleetScreen)
        await wait_until(lambda: len(table_rows(app)) == len(console.backend), timeout=10)
        assert sorted(table_rows(app)) == sorted(h.vm.name for h in console.backend)
        header = str(app.screen.query_one("#fleet-header").render())
        assert f"{len(console.backend)} VMs" in header


async def test_the_dashboard_draws_the_migration_from_either_backend(console):
    app = console.app
    async with app.run_test(size=SIZE) as pilot:
        await console.migrated()
        await wait_until(lambda: console.source in app.screen.query_one("#fleet", FleetTable).row_keys, timeout=10)
        table = app.screen.query_one("#fleet", FleetTable)
        table.move_cursor(row=table.row_keys.index(console.source))
        await pilot.press("enter")
        await wait_until(lambda: isinstance(app.screen, DashboardScreen), timeout=5)
        handle = console.backend.get(console.source)
        await wait_until(lambda: "completed" in str(app.screen.query_one("#dash-header").render()), timeout=10)
        graph = app.screen.query_one("#graph-throughput")
        # The graph draws the VM's history (the backend may have added a sample since the last frame).
        await wait_until(lambda: len(graph._points) > 2, timeout=5)
        assert len(graph._points) <= len(handle.vm.tracker.history.points)
        assert len(app.screen.query_one("#log").lines) >= 1  # the migration's events
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)


async def test_a_control_goes_down_to_the_backend_or_the_backend_says_why_not(console):
    app = console.app
    async with app.run_test(size=SIZE) as pilot:
        handle = console.backend.get(console.source)
        await wait_until(lambda: handle.vm.sample is not None, timeout=10)
        await pilot.press("b")
        await pilot.pause()
        if handle.features.set_parameters:
            assert isinstance(app.screen, ValueDialog)
            box = app.screen.query_one("#value", Input)
            box.value = "48M"
            await pilot.pause()
            await pilot.press("enter")
            await wait_until(lambda: handle.vm.parameters.get("max-bandwidth") == 48 * MiB, timeout=10)
            assert any(r.name == "migrate-set-parameters" for r in handle.vm.log)  # audited in its log
        else:
            # The key is off, and the handle refuses with the backend's one line.
            assert isinstance(app.screen, FleetScreen) and app.read_only and "read-only" in app.sub_title
            with pytest.raises(ControlRefused, match=CANNOT_STEER):
                await handle.set_parameters(ParamChange({"max-bandwidth": 48 * MiB}))
            assert handle.vm.parameters.get("max-bandwidth") != 48 * MiB


async def test_the_help_and_the_filter_work_on_either_backend(console):
    app = console.app
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: len(table_rows(app)) == len(console.backend), timeout=10)
        await pilot.press("slash", *"src", "enter")
        await wait_until(lambda: table_rows(app) == ["src1"], timeout=5)
        await pilot.press("question_mark")
        await pilot.pause()
        assert "HelpScreen" in type(app.screen).__name__
