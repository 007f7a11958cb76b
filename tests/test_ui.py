"""Pilot tests for the console: every key and dialog, bad input included.

Controls run against the simulator over real QMP sockets, so each test can
check exactly which commands reached the (simulated) QEMU, and that a bad
value sent none. The real-QEMU end-to-end test is in test_ui_qemu.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import pytest_asyncio
from textual.widgets import Button, Checkbox, Input, Label, Select

from lab_fixtures import wait_until
from migtui.model.endpoint import parse_endpoint
from migtui.backend.qmp import controls
from migtui.model.requests import MigrationOptions
from migtui.backend.qmp.backend import QMPBackend
from migtui.backend.qmp.session import SessionOptions
from migtui.sim import SimFleet
from migtui.ui.app import MigtuiApp
from migtui.ui.dialogs import CapabilitiesDialog, ConfirmDialog, StartMigrationDialog, TypedConfirmDialog, ValueDialog
from migtui.ui.screens.dashboard import DashboardScreen
from migtui.ui.screens.fleet import FleetScreen
from migtui.ui.widgets.fleet_table import FleetTable
from migtui.ui.screens.help import HelpScreen
from ui_data import big_fleet, static_fleet

MiB = 2**20
GiB = 2**30
SIZE = (120, 36)
CONTROL_COMMANDS = {"migrate", "migrate-incoming", "migrate_cancel", "migrate-set-parameters",
                    "migrate-set-capabilities", "migrate-start-postcopy", "migrate_set_speed",
                    "migrate_set_downtime", "migrate-set-cache-size"}


def rows(app: MigtuiApp) -> list[str]:
    table = app.screen.query_one("#fleet", FleetTable)
    return [table.get_row(key)[0] for key in table.row_keys]


def header(app: MigtuiApp) -> str:
    return str(app.screen.query_one("#fleet-header").render())


# ---- fixed data: navigation, filter, sort, themes ----------------------------


async def test_fleet_lists_every_vm_with_counts():
    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, FleetScreen)
        assert rows(app) == ["src1", "dst1", "web-03", "db-01", "old-host"]
        text = header(app)
        assert "5 VMs" in text and "1 migrating" in text and "1 disconnected" in text and "1 completed" in text
        table = app.screen.query_one("#fleet", FleetTable)
        # A disconnected VM stays, with its reason.
        assert "QEMU closed the connection" in str(table.get_row("db-01")[-1])
        # The destination does not judge convergence (its source's row does).
        assert table.get_row("dst1")[2] == "receiving" and table.get_row("dst1")[7] == "-"
        assert table.get_row("src1")[2] == "not-converging"


async def test_a_thousand_vms_draw_only_the_rows_on_screen_through_sort_filter_and_scroll():
    app = MigtuiApp(big_fleet(1000), start_fleet=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#fleet", FleetTable)
        on_screen = table.visible_rows()[1] - table.visible_rows()[0]
        drawn = on_screen + 1  # Textual also asks for the line under the horizontal scrollbar
        assert table.row_count == 1000 and 0 < on_screen < 40
        assert table.renders <= drawn
        before = table.renders
        await pilot.press("o", "o", "o")  # sort by progress, biggest first
        await pilot.pause()
        assert app.screen.sort_column == "progress"
        progress = [app.backend.get(k).vm.derived.progress or -1 for k in table.row_keys]
        assert progress == sorted(progress, reverse=True) and progress[0] > 0
        assert table.cursor_key == "vm0000"  # the cursor stays on its VM
        top = table.row_keys[table.visible_rows()[0]]
        assert table.drawn_cells(top)[0] == top  # the rows now on screen are drawn
        assert table.renders - before <= 3 * drawn  # three sorts, each a screenful, not a thousand rows
        before = table.renders
        await pilot.press("pagedown", "pagedown")
        await pilot.pause()
        assert table.cursor_row == table.row_index("vm0000") + 2 * on_screen
        assert table.renders - before <= 2 * drawn
        await pilot.press("slash", "9", "9")
        await pilot.pause()
        assert table.row_count == sum(1 for s in app.backend if "99" in s.vm.name or "99" in str(s.vm.endpoint))
        assert all("99" in key for key in table.row_keys)
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert table.row_count == 1000


async def test_clicking_a_heading_sorts_by_it_and_again_reverses():
    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.click("#fleet", offset=(2, 0))  # the "VM" heading
        await pilot.pause()
        assert app.screen.sort_column == "vm" and not app.screen.sort_reverse
        assert rows(app) == sorted(rows(app))
        await pilot.click("#fleet", offset=(2, 0))
        await pilot.pause()
        assert app.screen.sort_reverse and rows(app) == sorted(rows(app), reverse=True)
        await pilot.click("#fleet", offset=(2, 2))  # the second row opens its dashboard
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)


async def test_filter_with_slash_and_escape_clears():
    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash")
        await pilot.press(*"web")
        await pilot.pause()
        assert rows(app) == ["web-03"]
        assert "1 shown" in header(app)
        await pilot.press("enter")  # keeps the filter, back to the table
        assert rows(app) == ["web-03"]
        await pilot.press("escape")
        await pilot.pause()
        assert len(rows(app)) == 5
        await pilot.press("slash", *"disconn")
        await pilot.pause()
        assert rows(app) == ["db-01"]  # matches the status category too
        await pilot.press("escape")
        await pilot.press("slash", *"not-conv")
        await pilot.pause()
        assert rows(app) == ["src1"]  # and the verdict: what will not converge, at 3 a.m.


async def test_keys_typed_in_one_burst_after_slash_reach_the_filter_not_the_table():
    """A browser (migtui serve) or a paste delivers "/web" in one read: every key must land in the box."""
    from textual import events

    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for key, char in [("slash", "/"), ("w", "w"), ("e", "e"), ("b", "b")]:  # b alone is "bandwidth"
            app.post_message(events.Key(key, char))
        await pilot.pause()
        assert isinstance(app.screen, FleetScreen)  # no bandwidth dialog
        assert app.screen.query_one("#filter", Input).value == "web"
        assert rows(app) == ["web-03"]
        await pilot.press("slash")  # in the box, a slash is text (endpoints have them)
        assert app.screen.query_one("#filter", Input).value == "web/"
        await pilot.press("backspace")
        for key in ("enter", "enter"):  # keep the filter, then open the one VM shown, in one burst
            app.post_message(events.Key(key, "\r"))
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen) and app.screen.key == "web-03"


async def test_sort_cycles_columns():
    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        assert rows(app) == sorted(rows(app))
        assert "sorted by vm" in header(app)
        await pilot.press("o", "o")  # vm -> status -> progress, biggest first
        assert "sorted by progress" in header(app)
        assert rows(app)[0] == "web-03"  # 100%
        await pilot.press("o")
        assert "sorted by throughput" in header(app) and rows(app)[0] == "src1"


async def test_enter_opens_dashboard_and_escape_returns():
    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen) and app.screen.key == "src1"
        head = str(app.screen.query_one("#dash-header").render())
        assert "src1" in head and "active" in head and "pass" in head
        line = str(app.screen.query_one("#dash-progress").render())
        assert "NOT-CONVERGING" in line and "dirtying 94.9 MiB/s against 30.0 MiB/s" in line
        params = str(app.screen.query_one("#params").render())
        assert "max-bandwidth" in params and "xbzrle" in params
        log = app.screen.query_one("#log")
        assert len(log.lines) >= 4
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)


async def test_help_theme_screenshot_and_quit(tmp_path: Path):
    app = MigtuiApp(static_fleet(), start_fleet=False, screenshot_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)
        first = app.theme
        await pilot.press("t")
        assert app.theme != first
        seen = {app.theme}
        for _ in range(3):
            await pilot.press("t")
            seen.add(app.theme)
        assert {"migtui-dark", "migtui-light", "migtui-high-contrast", "migtui-colorblind"} <= seen | {first}
        await pilot.press("s")
        await wait_until(lambda: list(tmp_path.glob("migtui-*.svg")), timeout=5)
        await pilot.press("q")
    assert app.return_code in (0, None)


async def test_tiny_terminal_does_not_crash():
    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        for size in [(80, 24), (20, 6), (1, 1), (200, 60)]:
            await pilot.resize_terminal(*size)
            await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)


async def test_read_only_makes_controls_unreachable():
    app = MigtuiApp(static_fleet(), start_fleet=False, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        for key in "mcbdxkpR":
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, FleetScreen), key
        usable = {k for k, b in app.screen.active_bindings.items() if b.enabled and b.binding.show}
        assert not usable & set("mcbdxkp")
        assert "/" in usable or "slash" in usable  # watching still works
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert not any(t.startswith(("Start migration", "Cancel", "Set ", "Capabilities", "Switch", "Recover"))
                   for t in titles)
        assert "READ-ONLY" in header(app)


async def test_command_palette_lists_every_action():
    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=SIZE):
        titles = " ".join(c.title for c in app.get_system_commands(app.screen))
        for word in ["Start migration (m)", "Cancel migration (c)", "Set bandwidth (b)", "Set downtime limit (d)",
                     "XBZRLE cache", "Capabilities (k)", "post-copy (p)", "Recover post-copy (R)", "Open dashboard", "Filter VMs",
                     "Poll now", "Save screenshot", "Next theme", "Help"]:
            assert word in titles, word


def test_remapped_keys_from_config():
    from migtui.config import Config

    app = MigtuiApp(static_fleet(), start_fleet=False, config=Config(keys={"migrate": "M"}))
    assert app._keymap.get("migtui.migrate") == "M"


def test_unknown_theme_is_refused_in_one_line():
    from migtui.model.units import InputError

    with pytest.raises(InputError, match="unknown theme 'neon'; themes: migtui-"):
        MigtuiApp(static_fleet(), start_fleet=False, theme="neon")


# ---- controls against the simulator -------------------------------------------


@pytest_asyncio.fixture
async def sim(tmp_path):
    fleet = SimFleet(tmp_path / "sim", speedup=1.0, seed=7)
    src = await fleet.add_vm("src", dirty_rate=200 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    dst = await fleet.add_vm("dst", incoming=True, ram=1024 * MiB)
    old = await fleet.add_vm("old", dialect="1.4", ram=512 * MiB)
    yield fleet, src, dst, old
    await fleet.stop()


def console(*sim_vms, **kwargs) -> MigtuiApp:
    fleet = QMPBackend([parse_endpoint(vm.endpoint) for vm in sim_vms], options=SessionOptions(poll_interval=0.2))
    return MigtuiApp(fleet, **kwargs)


def sent(vm) -> list[str]:
    """Commands that change the migration (the session's own `events` switch-on excluded)."""
    return [name for name, args in vm.received if name in CONTROL_COMMANDS
            and args != {"capabilities": [{"capability": "events", "state": True}]}]


async def connected(app: MigtuiApp) -> None:
    await wait_until(lambda: all(s.connected and s.vm.sample for s in app.backend), timeout=10)


async def type_into(pilot, selector: str, text: str) -> None:
    """Focus a field and give it `text`, as typing would (Input.Changed fires)."""
    box = pilot.app.screen.query_one(selector, Input)
    box.focus()
    box.value = text
    await pilot.pause()


async def test_bandwidth_dialog_refuses_bad_values_and_applies_good_ones(sim):
    _, src, dst, _ = sim
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        before = len(src.received)
        for bad, fragment in [("-5M", "negative"), ("fast", "not understood"), ("0", "would stop"),
                              ("9999999T", "too large")]:
            await pilot.press("b")
            assert isinstance(app.screen, ValueDialog)
            await type_into(pilot, "#value", bad)
            assert fragment in str(app.screen.query_one("#value-error", Label).render())
            assert app.screen.query_one("#apply", Button).disabled
            await pilot.press("enter")
            assert isinstance(app.screen, ValueDialog)  # not accepted
            await pilot.press("escape")
        assert sent(src) == [] and len([r for r in src.received[before:] if r[0] != "query-migrate"]) <= 4
        await pilot.press("b")
        await type_into(pilot, "#value", "64M")
        await pilot.press("enter")
        await wait_until(lambda: ("migrate-set-parameters", {"max-bandwidth": 64 * MiB}) in src.received)
        await wait_until(lambda: app.backend.get("src").vm.parameters.get("max-bandwidth") == 64 * MiB)


async def test_downtime_and_xbzrle_dialogs(sim):
    _, src, dst, _ = sim
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("d")
        await type_into(pilot, "#value", "300")
        assert "no unit" in str(app.screen.query_one("#value-error", Label).render())
        await type_into(pilot, "#value", "2s")
        await pilot.press("enter")
        await wait_until(lambda: ("migrate-set-parameters", {"downtime-limit": 2000}) in src.received)
        await pilot.press("x")
        await type_into(pilot, "#value", "100M")
        assert "power of two" in str(app.screen.query_one("#value-error", Label).render())
        await type_into(pilot, "#value", "128M")
        await pilot.press("enter")
        await wait_until(lambda: ("migrate-set-parameters", {"xbzrle-cache-size": 128 * MiB}) in src.received)


async def test_legacy_vm_gets_legacy_commands_in_its_units(sim):
    _, _, _, old = sim
    app = console(old)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        assert app.backend.get("old").vm.dialect == "legacy"
        await pilot.press("b")
        await type_into(pilot, "#value", "64M")
        await pilot.press("enter")
        await pilot.press("d")
        await type_into(pilot, "#value", "2s")
        await pilot.press("enter")
        await wait_until(lambda: ("migrate_set_downtime", {"value": 2.0}) in old.received)
        assert ("migrate_set_speed", {"value": 64 * MiB}) in old.received
        assert "migrate-set-parameters" not in [n for n, _ in old.received]


async def test_m_then_enter_starts_a_migration_to_the_waiting_vm(sim):
    _, src, dst, _ = sim
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("m")
        assert isinstance(app.screen, StartMigrationDialog)
        assert app.screen.query_one("#destination", Select).value == "dst"  # the first waiting VM
        await pilot.press("enter")
        await wait_until(lambda: "migrate" in sent(src), timeout=10)
        assert sent(dst) == ["migrate-incoming"]
        await wait_until(lambda: app.backend.get("src").vm.in_flight, timeout=10)
        # Starting again while it runs is refused before anything is sent.
        await pilot.press("m")
        assert isinstance(app.screen, FleetScreen)
        assert sent(src).count("migrate") == 1


async def test_start_dialog_validates_inline_and_sends_nothing_bad(sim):
    _, src, dst, _ = sim
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("m")
        dialog = app.screen
        dialog.query_one("#destination", Select).value = "__uri__"
        await pilot.pause()
        cases = [("#uri", "10.0.0.1:4444", "no supported scheme"), ("#uri", "", "empty"),
                 ("#uri", "tcp:host", "expected tcp:HOST:PORT")]
        for field, value, fragment in cases:
            await type_into(pilot, field, value)
            assert fragment in str(dialog.query_one("#start-error", Label).render())
            assert dialog.query_one("#start", Button).disabled
        await type_into(pilot, "#uri", "tcp:127.0.0.1:4444")
        for field, value, fragment in [("#bandwidth", "-1", "negative"), ("#downtime", "5", "no unit"),
                                       ("#xbzrle-cache", "3M", "power of two"), ("#multifd", "0", "1 to 255"),
                                       ("#multifd", "x", "whole number")]:
            await type_into(pilot, field, value)
            assert fragment in str(dialog.query_one("#start-error", Label).render()), field
            await pilot.press("enter")
            assert app.screen is dialog
            await type_into(pilot, field, "")
        await pilot.press("escape")
        assert sent(src) == [] and sent(dst) == []


async def test_exec_uri_needs_the_typed_word(sim):
    _, src, dst, _ = sim
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("m")
        app.screen.query_one("#destination", Select).value = "__uri__"
        await type_into(pilot, "#uri", "exec:cat > /dev/null")
        await pilot.press("enter")
        assert isinstance(app.screen, TypedConfirmDialog)
        assert "cat > /dev/null" in str(app.screen.query_one(".dialog-command").render())
        await type_into(pilot, "#typed", "yes")
        await pilot.press("enter")
        assert isinstance(app.screen, TypedConfirmDialog)  # only the word will do
        await pilot.press("escape")
        assert sent(src) == []
        await pilot.press("m")
        app.screen.query_one("#destination", Select).value = "__uri__"
        await type_into(pilot, "#uri", "exec:cat > /dev/null")
        await pilot.press("enter")
        await type_into(pilot, "#typed", "run")
        await pilot.press("enter")
        await wait_until(lambda: ("migrate", {"uri": "exec:cat > /dev/null"}) in src.received)


def _indices(vm, command: str) -> list[int]:
    return [i for i, (name, _) in enumerate(vm.received) if name == command]


async def test_start_runs_the_pre_flight_first(sim):
    _, src, dst, _ = sim
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("m")
        assert "pre-flight" in str(app.screen.query_one("#preflight", Label).render())
        await pilot.press("enter")
        await wait_until(lambda: _indices(src, "migrate"), timeout=10)
        measured = _indices(src, "calc-dirty-rate")
        assert len(measured) == 1 and measured[0] < _indices(src, "migrate")[0]
        log = [(r.name, r.detail) for r in app.backend.get("src").vm.log if r.kind == "action"]
        names = [name for name, _ in log]
        assert names.index("pre-flight") < names.index("migrate"), log
        # 200 MiB/s dirtied against QEMU's default 32 MiB/s: the prediction says so, and warns.
        assert "will not converge" in dict(log)["pre-flight"], log


async def test_check_just_before_start_is_not_measured_again(sim):
    _, src, dst, _ = sim
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("m")
        app.screen.query_one("#check", Button).press()
        await wait_until(lambda: str(app.screen.query_one("#preflight", Label).render())[:1] in "✓✗", timeout=10)
        assert len(_indices(src, "calc-dirty-rate")) == 1
        app.screen.query_one("#start", Button).press()
        await wait_until(lambda: _indices(src, "migrate"), timeout=10)
        assert len(_indices(src, "calc-dirty-rate")) == 1  # the same settings, just measured


async def test_cancel_asks_first_and_capabilities_lock_during_migration(sim):
    _, src, dst, _ = sim
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("c")
        assert isinstance(app.screen, FleetScreen)  # nothing to cancel yet
        await pilot.press("m", "enter")
        await wait_until(lambda: app.backend.get("src").vm.in_flight, timeout=10)
        await pilot.press("k")
        assert isinstance(app.screen, CapabilitiesDialog)
        assert all(box.disabled for box in app.screen.query(Checkbox))
        assert "migration is running" in str(app.screen.query_one("#locked-reason").render())
        await pilot.press("escape")
        await pilot.press("p")
        assert isinstance(app.screen, FleetScreen)  # post-copy was not enabled at start
        assert "migrate-start-postcopy" not in sent(src)
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        assert "migrate_cancel" not in sent(src)
        await pilot.press("c", "y")
        await wait_until(lambda: "migrate_cancel" in sent(src))
        await wait_until(lambda: app.backend.get("src").vm.migration_status == "cancelled", timeout=10)


async def test_postcopy_confirmation_warns_that_the_vm_is_lost_on_failure(sim):
    _, src, dst, _ = sim
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("m")
        app.screen.query_one("#postcopy", Checkbox).value = True
        await pilot.pause()
        await pilot.press("enter")
        await wait_until(lambda: app.backend.get("src").vm.migration_status == "active", timeout=10)
        await pilot.press("p")
        assert isinstance(app.screen, ConfirmDialog)
        assert "lost" in str(app.screen.query_one(".dialog-detail").render())
        await pilot.press("y")
        await wait_until(lambda: "migrate-start-postcopy" in sent(src))


async def test_qemu_refusal_shows_qemus_sentence_in_the_log(sim):
    _, src, dst, _ = sim
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        session = app.backend.get("src")
        app.run_control("src", "migrate", lambda: session.execute("migrate", {"uri": "bogus:nowhere"}))
        await wait_until(lambda: any(r.kind == "error" for r in session.vm.log), timeout=5)
        record = [r for r in session.vm.log if r.kind == "error"][-1]
        assert record.name == "migrate" and record.detail
        await pilot.press("enter")
        await pilot.pause()
        lines = " ".join(str(line.text) for line in app.screen.query_one("#log").lines)
        assert record.detail[:12] in lines


async def test_a_bug_in_drawing_does_not_take_the_console_down(monkeypatch, tmp_path):
    import migtui.ui.screens.fleet as fleet_screen

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=SIZE) as pilot:
        def broken(vm):
            raise ZeroDivisionError("a bug")

        monkeypatch.setattr(fleet_screen, "fleet_cells", broken)
        app._dirty.add("src1")
        app.flush()
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, FleetScreen)
        log = (tmp_path / "migtui" / "errors.log").read_text()
        assert "ZeroDivisionError: a bug" in log
        monkeypatch.undo()
        await pilot.press("slash", "w")  # and it still answers keys
        await pilot.pause()
        assert rows(app) == ["web-03"]


async def test_advice_is_applied_with_a_after_showing_the_exact_command(tmp_path):
    fleet = SimFleet(tmp_path / "fast", speedup=20.0, seed=7)  # passes come quickly
    src = await fleet.add_vm("src", dirty_rate=200 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    dst = await fleet.add_vm("dst", incoming=True, ram=1024 * MiB)
    try:
        await _apply_advice(src, dst)
    finally:
        await fleet.stop()


async def _apply_advice(src, dst):
    app = console(src, dst)
    async with app.run_test(size=(160, 45)) as pilot:
        await connected(app)
        await pilot.press("m")
        app.screen.query_one("#bandwidth").value = "32M"
        await pilot.pause()
        await pilot.press("enter")  # 200 MiB/s dirtied against 32 MiB/s: will not converge
        await wait_until(lambda: app.backend.get("src").vm.in_flight, timeout=10)
        await pilot.press("enter")
        assert isinstance(app.screen, DashboardScreen)
        await wait_until(lambda: app.screen.query_one("#advice").option_count > 0, timeout=20)
        advice = app.screen._advice
        index = next(i for i, a in enumerate(advice) if a.change is not None)
        app.screen.query_one("#advice").highlighted = index
        chosen = advice[index]
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmDialog)
        detail = str(app.screen.query_one(".dialog-detail").render())
        [(command, args)] = app.backend.get("src").dialect.set_parameters(chosen.change.parameters)
        assert command in detail
        await pilot.press("y")
        await wait_until(lambda: (command, args) in src.received, timeout=10)
        if chosen.kind in ("bandwidth", "downtime"):
            # Followed up: the event log says whether it worked, from the passes after it.
            vm = app.backend.get("src").vm
            assert vm.tracker.advice_taken is not None or vm.migration_status == "completed"

            def said() -> list[str]:
                return [r.detail for r in vm.log if r.name == "advice"]

            await wait_until(lambda: any("worked" in d or "working" in d or "did not work" in d for d in said()),
                             timeout=30)
            assert chosen.text.split(":", 1)[0] in said()[-1], said()


async def test_start_dialog_preflight_predicts_and_migrates_nothing(sim):
    _, src, dst, _ = sim  # src dirties 200 MiB/s
    app = console(src, dst)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("m")
        await type_into(pilot, "#bandwidth", "64M")
        app.screen.query_one("#check", Button).press()
        await wait_until(lambda: "✗" in str(app.screen.query_one("#preflight", Label).render()), timeout=15)
        assert "will not converge" in str(app.screen.query_one("#preflight", Label).render())
        assert "calc-dirty-rate" in [n for n, _ in src.received]
        assert "migrate" not in sent(src)
        await type_into(pilot, "#bandwidth", "4G")
        await type_into(pilot, "#downtime", "2s")
        app.screen.query_one("#check", Button).press()
        await wait_until(lambda: "✓" in str(app.screen.query_one("#preflight", Label).render()), timeout=15)
        assert "migrate" not in sent(src)


# ---- what fits on the screen ----------------------------------------------------


def screen_lines(app: MigtuiApp) -> list[str]:
    """The screen as the operator sees it, one string per row."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def footer_items(app: MigtuiApp) -> tuple[list[str], str]:
    """The footer's "key description" items as drawn, and what is right of them (the palette key)."""
    line = screen_lines(app)[-1]
    keys, palette = line.rsplit("▏", 1)
    return [item.strip() for item in keys.split("  ") if item.strip()], palette.strip()


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (100, 30)])
async def test_the_footer_shows_whole_keys_only_the_important_ones_first(size):
    from migtui.config import Config

    app = MigtuiApp(static_fleet(), start_fleet=False, config=Config(keys={"cancel": "ctrl+x"}))
    async with app.run_test(size=size) as pilot:
        for screen, needed in [(FleetScreen, {"Dashboard", "Migrate", "Cancel", "Help", "Quit"}),
                               (DashboardScreen, {"Back", "Advice", "Migrate", "Cancel", "Help", "Quit"})]:
            await pilot.pause()
            assert isinstance(app.screen, screen)
            bindings = [b for _, b, _, _ in app.screen.active_bindings.values() if b.show]
            whole = {f"{app.get_key_display(b)} {b.description}" for b in bindings}
            items, palette = footer_items(app)
            assert palette == "^p palette"
            assert items and set(items) <= whole, f"cut: {set(items) - whole}"  # "x X" was drawn at 80
            assert needed <= {item.split(" ", 1)[1] for item in items}
            assert "^x Cancel" in items  # a remapped key, as remapped
            await pilot.press("enter")


async def test_the_advice_confirmation_wraps_its_whole_sentence_at_80x24(tmp_path):
    fleet = SimFleet(tmp_path / "fast", speedup=20.0, seed=7)  # passes come quickly
    src = await fleet.add_vm("src", dirty_rate=200 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    dst = await fleet.add_vm("dst", incoming=True, ram=1024 * MiB)
    app = console(src, dst)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await connected(app)
            session = app.backend.get("src")
            app.run_control("src", "migrate", lambda: controls.start_migration(
                session, MigrationOptions(bandwidth=32 * MiB), destination=app.backend.get("dst")))
            await wait_until(lambda: session.vm.in_flight, timeout=10)  # 200 MiB/s dirtied against 32: stuck
            await pilot.press("enter")
            await wait_until(lambda: app.screen.query_one("#advice").option_count > 0, timeout=20)
            await pilot.press("a")
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, ConfirmDialog) and len(dialog.question) > 60  # longer than the box is wide
            box = dialog.query_one(".dialog-box").content_region  # inside its border
            strips = dialog._compositor.render_strips()[box.y:box.bottom]
            shown = " ".join(" ".join(strip.crop(box.x, box.right).text for strip in strips).split())
            assert " ".join(dialog.question.split()) in shown  # every word, in order: none past the edge
            assert " ".join(dialog.detail.split()) in shown
    finally:
        await fleet.stop()


async def test_scrolling_right_keeps_the_vm_name_column_and_moves_the_rest():
    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#fleet", FleetTable)
        top, bottom = table.visible_rows()
        shown = table.row_keys[top:bottom]
        width = table.scrollable_content_region.width
        before = [table.render_line(y).text for y in range(len(shown) + 1)]  # the heading, then the rows
        await pilot.press(*["right"] * 8)
        await wait_until(lambda: table.scroll_offset.x == 8, timeout=5)
        await pilot.pause()
        after = [table.render_line(y).text for y in range(len(shown) + 1)]
        frozen = before[0].index("migration") - 1  # the name column, with its padding
        assert after[0][:frozen].split() == ["VM"]
        for key, line in zip(shown, after[1:]):
            assert line[:frozen].strip() == app.backend.get(key).vm.name  # every row still starts with its name
        for old, new in zip(before, after):
            assert new[:frozen] == old[:frozen] and new[frozen:width - 8] == old[frozen + 8:]  # the rest moved by 8
        assert "migration" not in after[0]  # the second column scrolled out of sight


async def test_the_dashboard_log_folds_a_run_of_passes_into_one_line_updated_in_place():
    from migtui.model.units import format_duration
    from migtui.model.vm import EventRecord

    app = MigtuiApp(static_fleet(), start_fleet=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        await pilot.pause()
        vm = app.backend.get("src1").vm
        log = app.screen.query_one("#log")
        text = lambda: " ".join(" ".join(line.text for line in log.lines).split())  # noqa: E731 (as wrapped)
        before = len(log.records)
        start = vm.log[-1].time

        def record(t, kind, name, detail, passes=None):
            vm.log_append(EventRecord(start + t, kind, name, detail, passes))
            app._dirty.add("src1")
            app.flush()

        for number in range(4, 16):
            record(number, "event", "MIGRATION_PASS", f"pass={number}", (number, number))
            await pilot.pause()
            assert len(log.records) == before + 1  # one line for the run, redrawn as it grows
            assert text().endswith(f"MIGRATION_PASS passes 4–{number} in {format_duration(number - 4)}" if number > 4
                                   else "MIGRATION_PASS pass=4")
        assert "pass=5" not in text() and text().count("passes 4–") == 1
        record(15.5, "action", "migrate-set-parameters", "max-bandwidth=1073741824")
        record(16, "event", "MIGRATION_PASS", "pass=16", (16, 16))
        record(17, "event", "MIGRATION_PASS", "pass=17", (17, 17))
        await pilot.pause()
        assert len(log.records) == before + 3
        stamp = lambda t: time.strftime("%H:%M:%S", time.localtime(start + t))  # noqa: E731
        assert text().endswith(f"MIGRATION_PASS passes 4–15 in 11s {stamp(15.5)} migrate-set-parameters "
                               f"max-bandwidth=1073741824 {stamp(16)} MIGRATION_PASS passes 16–17 in 1.0s")


async def test_a_10_0_switch_over_shows_device_on_the_fleet_and_the_dashboard(tmp_path):
    """QEMU 10.0 reports `device` in every switch-over (Proxmox's loop died on it). The simulated
    10.0 holds it long enough to be seen: a 32 MiB/s link sends the whole guest after stopping it."""
    fleet = SimFleet(tmp_path / "sim", speedup=1.0, seed=3)
    try:
        src = await fleet.add_vm("src", dialect="10.0", ram=64 * MiB, zero_fraction=0.1)
        dst = await fleet.add_vm("dst", dialect="10.0", ram=64 * MiB, incoming=True)
        src.knobs.link_bandwidth = 32 * MiB
        sessions = QMPBackend([parse_endpoint(vm.endpoint) for vm in (src, dst)],
                         options=SessionOptions(active_interval=0.1))
        app = MigtuiApp(sessions)
        async with app.run_test(size=(160, 40)) as pilot:
            await connected(app)
            session = app.backend.get("src")
            assert session.vm.qemu_version == "10.0.2" and not session.dialect.has_block_migration
            # A downtime limit over what the whole guest takes: it stops the guest at once.
            await controls.start_migration(session, MigrationOptions(downtime_ms=20_000),
                                           destination=app.backend.get("dst"))
            await wait_until(lambda: session.vm.migration_status == "device", timeout=10)
            table = app.screen.query_one("#fleet", FleetTable)
            await wait_until(lambda: table.get_cell("src", "status") == "device", timeout=5)
            assert table.get_cell("src", "verdict") == "switching-over"
            app.push_screen(DashboardScreen("src"))
            await wait_until(lambda: "SWITCHING-OVER" in _dash_line(app), timeout=5)
            assert "guest stopped: sending the last" in _dash_line(app)
            await wait_until(lambda: session.vm.migration_status == "completed", timeout=15)
            await wait_until(lambda: app.backend.get("dst").vm.run_state == "running", timeout=5)
            await wait_until(lambda: "completed" in _dash_line(app).lower(), timeout=5)
            await pilot.pause()
    finally:
        await fleet.stop()


def _dash_line(app: MigtuiApp) -> str:
    try:
        return str(app.screen.query_one("#dash-progress").render())
    except Exception:
        return ""


def test_the_dashboard_header_shows_what_qemu_splits_out():
    # QEMU 7.2+ reports bytes sent in downtime, pre-copy against post-copy bytes and the throttle.
    from migtui.model import MigrationTracker, parse_query_migrate
    from migtui.model.endpoint import parse_endpoint
    from migtui.model.vm import Connection, VMState
    from migtui.ui.screens.dashboard import header_lines

    vm = VMState(parse_endpoint("src=unix:/nonexistent"), "src", connection=Connection.CONNECTED)
    vm.tracker = MigrationTracker()
    ram = {"transferred": 900 * MiB, "remaining": 100 * MiB, "total": GiB, "precopy-bytes": 700 * MiB,
           "postcopy-bytes": 200 * MiB, "downtime-bytes": 0, "dirty-sync-count": 4}
    vm.tracker.add(parse_query_migrate({"status": "postcopy-active", "total-time": 9000, "ram": ram,
                                        "cpu-throttle-percentage": 40}, 1000.0))
    first, _ = header_lines(vm)
    assert "pre-copy 700 MiB / post-copy 200 MiB" in first and "throttle 40%" in first, first
    assert "sent in downtime" not in first  # nothing yet
    done = dict(ram, remaining=0, **{"downtime-bytes": 3 * MiB})
    vm.tracker.add(parse_query_migrate({"status": "completed", "total-time": 9500, "downtime": 40, "ram": done},
                                       1000.5))
    first, _ = header_lines(vm)
    assert "sent in downtime 3.0 MiB" in first and "throttle" not in first, first


def test_the_dashboard_shows_the_dirty_limit_and_how_long_it_holds_the_vcpus():
    # QEMU 8.1+ reports the dirty limit's figures (microseconds) only while it throttles.
    from migtui.model import MigrationTracker, parse_query_migrate
    from migtui.model.endpoint import parse_endpoint
    from migtui.model.vm import Connection, VMState
    from migtui.ui.screens.dashboard import header_lines, parameter_lines

    vm = VMState(parse_endpoint("src=unix:/nonexistent"), "src", connection=Connection.CONNECTED)
    vm.tracker = MigrationTracker()
    vm.capabilities = {"dirty-limit": True, "auto-converge": False}
    vm.parameters = {"max-bandwidth": 128 * MiB, "downtime-limit": 300, "vcpu-dirty-limit": 20}
    vm.vcpus = 4
    assert "vcpu-dirty-limit  20 MB/s x 4 vCPUs" in parameter_lines(vm)
    ram = {"transferred": 500 * MiB, "remaining": 100 * MiB, "total": GiB, "dirty-sync-count": 6}
    vm.tracker.add(parse_query_migrate({"status": "active", "total-time": 9000, "ram": ram}, 1000.0))
    assert "dirty limit" not in header_lines(vm)[0]  # not throttling yet
    vm.tracker.add(parse_query_migrate({"status": "active", "total-time": 9500, "ram": ram,
                                        "dirty-limit-throttle-time-per-round": 12500,
                                        "dirty-limit-ring-full-time": 800}, 1000.5))
    assert "dirty limit: vCPUs held 12.5ms per round, ring full every 0.8ms" in header_lines(vm)[0]
    vm.capabilities = {"dirty-limit": False}
    assert not [line for line in parameter_lines(vm) if "vcpu-dirty-limit" in line]


@pytest.mark.parametrize("dialect", ["7.2", "10.0"])
async def test_R_recovers_a_simulated_postcopy_whose_stream_broke(tmp_path, dialect):
    """The simulator's post-copy recovery, for demos: a stream broken in post-copy parks both
    ends; R shows the QMP, y sends migrate-recover then migrate with resume, and it completes."""
    fleet = SimFleet(tmp_path / "sim", speedup=1.0, seed=5)
    try:
        src = await fleet.add_vm("src", dialect=dialect, ram=128 * MiB, dirty_rate=64 * MiB)
        dst = await fleet.add_vm("dst", dialect=dialect, ram=128 * MiB, incoming=True)
        app = MigtuiApp(QMPBackend([parse_endpoint(vm.endpoint) for vm in (src, dst)],
                                   options=SessionOptions(active_interval=0.1)))
        async with app.run_test(size=(160, 40)) as pilot:
            await connected(app)
            source, destination = app.backend.get("src"), app.backend.get("dst")
            await controls.start_migration(source, MigrationOptions(bandwidth=32 * MiB, postcopy=True),
                                           destination=destination)
            await controls.set_parameters(source, {"max-postcopy-bandwidth": 2 * MiB})  # still in post-copy when broken
            await wait_until(lambda: source.vm.migration_status == "active", timeout=10)
            await controls.start_postcopy(source)
            await wait_until(lambda: dst.status == "postcopy-active", timeout=10)
            src.break_stream()
            table = app.screen.query_one("#fleet", FleetTable)
            await wait_until(lambda: table.get_cell("src", "status") == table.get_cell("dst", "status")
                             == "postcopy-paused", timeout=10)
            await controls.set_parameters(source, {"max-postcopy-bandwidth": 0})
            await pilot.press("R")
            await wait_until(lambda: isinstance(app.screen, ConfirmDialog), timeout=5)
            shown = " ".join(str(w.render()) for w in app.screen.query(".dialog-detail"))
            assert '1. on dst (destination): {"execute": "migrate-recover"' in shown, shown
            assert '"resume": true' in shown
            assert "migrate-recover" not in [name for name, _ in dst.received]  # nothing before y
            await pilot.press("y")
            await wait_until(lambda: source.vm.migration_status == "completed", timeout=20)
            await wait_until(lambda: destination.vm.migration_status == "completed"
                             and destination.vm.run_state == "running", timeout=10)
            assert [name for name, _ in dst.received if name == "migrate-recover"] == ["migrate-recover"]
            assert ("migrate", True) in [(n, a.get("resume")) for n, a in src.received]
    finally:
        await fleet.stop()


async def test_the_start_dialog_offers_the_dirty_limit_only_where_qemu_has_it(tmp_path):
    """10.0 on KVM with a dirty ring: a dirty limit row, checked as typed, refused with auto-converge;
    10.0 without KVM: the row, disabled, saying why; 7.2 (no dirty-limit capability): no row."""
    fleet = SimFleet(tmp_path / "sim", speedup=1.0, seed=2)
    try:
        kvm = await fleet.add_vm("kvm", dialect="10.0", ram=256 * MiB, dirty_rate=8 * MiB, vcpus=2, dirty_ring=True)
        tcg = await fleet.add_vm("tcg", dialect="10.0", ram=256 * MiB)
        old = await fleet.add_vm("old", ram=256 * MiB)
        dst = await fleet.add_vm("dst", dialect="10.0", ram=256 * MiB, incoming=True, vcpus=2, dirty_ring=True)
        app = console(kvm, tcg, old, dst)
        async with app.run_test(size=(120, 44)) as pilot:
            await connected(app)
            def row(dialog) -> tuple:
                boxes = list(dialog.query("#dirty-limit").results(Input))
                return (len(boxes), boxes[0].disabled if boxes else None, boxes[0].placeholder if boxes else None)

            for key, expect in (("old", (0, None, None)), ("tcg", (1, True, "this VM runs without KVM"))):
                dialog = StartMigrationDialog(app.backend.get(key), app.backend.destinations(app.backend.get(key)))
                await app.push_screen(dialog)
                await pilot.pause()
                count, disabled, placeholder = row(dialog)
                assert (count, disabled) == expect[:2] and (expect[2] or "") in (placeholder or ""), key
                dialog.dismiss(None)
                await pilot.pause()
            assert rows(app)[0] == "kvm"
            await pilot.press("m")  # the first row's
            dialog = app.screen
            count, disabled, placeholder = row(dialog)
            assert (count, disabled) == (1, False) and "MB/s per vCPU" in placeholder
            error = dialog.query_one("#start-error", Label)
            for value, fragment in (("0", "out of range"), ("lots", "not understood"), ("1.5M", "whole number")):
                await type_into(pilot, "#dirty-limit", value)
                assert fragment in str(error.render()) and dialog.query_one("#start", Button).disabled
            await type_into(pilot, "#dirty-limit", "20")
            dialog.query_one("#auto-converge", Checkbox).value = True
            await pilot.pause()
            assert "QEMU refuses it with auto-converge" in str(error.render())
            dialog.query_one("#auto-converge", Checkbox).value = False
            await pilot.pause()
            assert str(error.render()) == ""
            await pilot.press("enter")
            await wait_until(lambda: "migrate" in sent(kvm), timeout=10)
            assert ("migrate-set-parameters", {"vcpu-dirty-limit": 20}) in kvm.received
            assert kvm.caps["dirty-limit"] and not kvm.caps["auto-converge"]
            assert sent(tcg) == [] and sent(old) == []
    finally:
        await fleet.stop()
