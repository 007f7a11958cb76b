"""Snapshot tests of every screen, on the fixed fleet in ui_data.py.

Regenerate after an intended change with: pytest tests/test_snapshots.py --snapshot-update
(then look at the report, and at the SVGs, before committing them).
"""

from __future__ import annotations

import os
import time

import pytest
from textual.widgets import Input

from migtui.ui.app import MigtuiApp
from ui_data import static_fleet

os.environ["TZ"] = "UTC"  # the event log prints local times
time.tzset()


def app(**kwargs) -> MigtuiApp:
    return MigtuiApp(static_fleet(), start_fleet=False, **kwargs)


async def still(pilot) -> None:
    """Stop cursors blinking and let every update land, so each run draws the same frame."""
    for box in pilot.app.query(Input):
        box.cursor_blink = False
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


@pytest.mark.parametrize("size", [(120, 36), (80, 24)])
def test_fleet(snap_compare, size):
    assert snap_compare(app(), terminal_size=size, run_before=still)


@pytest.mark.parametrize("size", [(120, 36), (80, 24), (200, 60)])
def test_dashboard(snap_compare, size):
    async def open_dashboard(pilot):
        await pilot.press("enter")
        await still(pilot)

    assert snap_compare(app(), terminal_size=size, run_before=open_dashboard)


def test_start_migration_dialog(snap_compare):
    # The start dialog is composed directly: `m` needs a live connection.
    from migtui.ui.dialogs import StartMigrationDialog

    async def push(pilot):
        fleet = pilot.app.backend
        pilot.app.push_screen(StartMigrationDialog(fleet.get("web-03"), fleet.destinations(fleet.get("web-03"))))
        await still(pilot)

    assert snap_compare(app(), terminal_size=(100, 36), run_before=push)


def test_capabilities_dialog_locked_during_migration(snap_compare):
    from migtui.ui.dialogs import CapabilitiesDialog

    async def push(pilot):
        pilot.app.push_screen(CapabilitiesDialog(pilot.app.backend.get("src1")))
        await still(pilot)

    assert snap_compare(app(), terminal_size=(100, 36), run_before=push)


def test_help(snap_compare):
    assert snap_compare(app(), terminal_size=(100, 40), press=["question_mark"], run_before=still)


@pytest.mark.parametrize("theme", ["migtui-light", "migtui-high-contrast", "migtui-colorblind"])
def test_themes(snap_compare, theme):
    async def open_dashboard(pilot):
        await pilot.press("enter")
        await still(pilot)

    assert snap_compare(app(theme=theme), terminal_size=(120, 36), run_before=open_dashboard)


def test_read_only_footer(snap_compare):
    assert snap_compare(app(read_only=True), terminal_size=(100, 24), run_before=still)
