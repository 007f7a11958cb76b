"""End to end: the real console against real QEMU lab VMs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab_fixtures import on_both_qemus, pid_alive, qemu_required, wait_until
from migtui.model.endpoint import parse_endpoint
from migtui.backend.qmp.backend import QMPBackend
from migtui.backend.qmp.session import SessionOptions
from migtui.ui.app import MigtuiApp
from migtui.ui.dialogs import StartMigrationDialog
from migtui.ui.widgets.fleet_table import FleetTable

pytestmark = [qemu_required, pytest.mark.qemu]


def cell(app: MigtuiApp, row: str, column: str) -> str:
    return app.screen.query_one("#fleet", FleetTable).get_cell(row, column)


@on_both_qemus
async def test_press_m_confirm_and_see_completed(lab_pair):
    source, destination, lab = lab_pair
    fleet = QMPBackend([parse_endpoint(source.endpoint), parse_endpoint(destination.endpoint)],
                  options=SessionOptions(active_interval=0.2))
    app = MigtuiApp(fleet)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(lambda: all(s.connected and s.vm.sample for s in fleet), timeout=15)
        # The table shows them once the next coalesced update lands.
        await wait_until(lambda: cell(app, "src1", "run-state") == "running", timeout=5)
        await wait_until(lambda: cell(app, "dst1", "run-state") == "inmigrate", timeout=5)
        await pilot.press("m")
        assert isinstance(app.screen, StartMigrationDialog)
        # Which QEMU each end runs, as a cross-version migration needs to be judged.
        version = re.escape(lab.qemu_version)
        assert re.search(rf"Migrate src1 \(QEMU {version}\)", str(app.screen.query_one(".dialog-title").render()))
        shown = str(app.screen.query_one("#destination").query_one("SelectCurrent").query_one("#label").render())
        assert re.match(rf"dst1  \(QEMU {version}, ", shown), shown
        # What the VM's QEMU lacks is offered greyed out: 9.1 removed blk.
        assert app.screen.query_one("#block").disabled is lab.qemu_version.startswith("10.")
        # The lab guest dirties ~100 MB/s: give it settings that converge.
        app.screen.query_one("#bandwidth").value = "4G"
        app.screen.query_one("#downtime").value = "20s"
        await pilot.pause()
        await pilot.press("enter")
        await wait_until(lambda: "completed" in _status(app), timeout=60)
        await wait_until(lambda: cell(app, "dst1", "run-state") == "running", timeout=15)
        assert "100%" in cell(app, "src1", "progress")
        # Start ran the pre-flight first, by default: its figures time pass 1, its prediction is logged.
        src = fleet.get("src1")
        log = [(r.name, r.detail) for r in src.vm.log if r.kind == "action"]
        names = [name for name, _ in log]
        assert "pre-flight" in names and names.index("pre-flight") < names.index("migrate"), log
        assert "converge" in dict(log)["pre-flight"], log
        rate = src.vm.tracker.dirty_rate_prior
        assert rate and rate[0][0] == 1.0 and rate[0][1] > 0, rate
        zero = src.vm.tracker.zero_pages_prior
        assert zero and any(z is not None for z in zero), zero


def _status(app: MigtuiApp) -> str:
    try:
        return cell(app, "src1", "status")
    except Exception:
        return ""


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
@on_both_qemus
def test_migtui_lab_in_a_terminal_then_q_leaves_nothing(tmp_path: Path, qemu: str | None):
    """The README's main command, in a real terminal: shows both VMs, q quits, no QEMU left."""
    session = f"migtui-test-{os.getpid()}"
    env_prefix = f"XDG_RUNTIME_DIR={tmp_path} "
    with_qemu = f" --qemu {qemu}" if qemu else ""
    command = f"{env_prefix}{sys.executable} -m migtui lab --accel tcg{with_qemu}; echo EXITED $? > {tmp_path}/rc"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command], check=True)
    try:
        screen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                    text=True).stdout
            if "src1" in screen and "dst1" in screen and "2 VMs" in screen:
                break
            time.sleep(0.1)  # polling the terminal, with a deadline
        assert "src1" in screen and "dst1" in screen, screen
        assert "2 VMs" in screen
        assert ("QEMU 10.0." if qemu else "QEMU 7.") in screen, screen  # which QEMU the lab runs
        pids = [int(p) for p in subprocess.run(["pgrep", "-f", f"qemu-system-x86_64 .*-pidfile {tmp_path}/"],
                                               capture_output=True, text=True).stdout.split()]
        assert len(pids) == 2
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (tmp_path / "rc").exists():
            time.sleep(0.1)
        assert (tmp_path / "rc").read_text().strip() == "EXITED 0"
        assert not any(pid_alive(pid) for pid in pids)
        assert [p for p in tmp_path.iterdir() if p.name != "rc"] == []  # runtime directory removed
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_closing_the_terminal_under_migtui_lab_leaves_nothing(tmp_path: Path):
    """The terminal goes away (SIGHUP): every QEMU the lab started is gone and its directory removed."""
    session = f"migtui-hup-{os.getpid()}"
    command = f"XDG_RUNTIME_DIR={tmp_path} {sys.executable} -m migtui lab --accel tcg"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command], check=True)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(pids) < 2:
            pids = [int(p) for p in subprocess.run(["pgrep", "-f", f"qemu-system-x86_64 .*-pidfile {tmp_path}/"],
                                                   capture_output=True, text=True).stdout.split()]
            time.sleep(0.1)  # polling for the lab to come up, with a deadline
        assert len(pids) == 2
        migtui_pids = [int(p) for p in subprocess.run(["pgrep", "-f", f"migtui lab --accel tcg"],
                                                      capture_output=True, text=True).stdout.split()]
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (any(pid_alive(p) for p in pids + migtui_pids) or list(tmp_path.iterdir())):
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in pids), "QEMU left behind"
    assert not any(pid_alive(p) for p in migtui_pids), "migtui still running"
    assert list(tmp_path.iterdir()) == []


async def test_source_killed_mid_migration_is_unreachable_on_its_dashboard(lab_pair):
    """kill -9 of the source QEMU while it migrates: the last verdict is history. The VM's
    verdict says unreachable and when it was last seen, and so does its dashboard's line."""
    from migtui.model.requests import MigrationOptions
    from migtui.backend.qmp.controls import start_migration
    from migtui.ui.screens.dashboard import DashboardScreen

    source, destination, _ = lab_pair
    fleet = QMPBackend([parse_endpoint(source.endpoint), parse_endpoint(destination.endpoint)],
                  options=SessionOptions(active_interval=0.2))
    app = MigtuiApp(fleet)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(lambda: all(s.connected and s.vm.sample for s in fleet), timeout=15)
        src, dst = fleet.get("src1"), fleet.get("dst1")
        # 1 ms at 16 MiB/s: the lab guest never converges, so it is still migrating when killed.
        await start_migration(src, MigrationOptions(bandwidth=16 * 2**20, downtime_ms=1), destination=dst)
        await wait_until(lambda: src.vm.in_flight and len(src.vm.tracker.history.points) >= 3, timeout=15)
        app.push_screen(DashboardScreen("src1"))
        await wait_until(lambda: "DECIDING" in _dashboard_line(app) or "NOT-CONVERGING" in _dashboard_line(app),
                         timeout=10)
        before = src.vm.assessment().verdict
        # What the console would show at each change after the kill, reconnect attempts included.
        shown: list[tuple[str, str]] = []
        relay = src.listener

        def watch(message) -> None:
            shown.append((str(src.vm.connection), src.vm.assessment().verdict))
            relay(message)

        src.listener = watch
        await source.kill()
        await wait_until(lambda: src.vm.assessment().verdict == "unreachable", timeout=15)
        why = src.vm.assessment().why
        assert re.search(r"last seen \d\d:\d\d:\d\d, then " + before, why), why
        assert src.vm.assessment().eta_s is None
        await wait_until(lambda: "UNREACHABLE" in _dashboard_line(app), timeout=5)
        line = _dashboard_line(app)
        # (reconnecting, for the moment of an attempt)
        assert re.search(r"UNREACHABLE: (disconnected: .*|reconnecting); last seen \d\d:\d\d:\d\d", line), line
        # The session tries again (0.5 s, then 1 s later): the stale verdict never comes back.
        await wait_until(lambda: sum(c == "connecting" for c, _ in shown) >= 2, timeout=10)
        assert [v for _, v in shown] == ["unreachable"] * len(shown), shown
        await pilot.pause()


def _dashboard_line(app: MigtuiApp) -> str:
    try:
        return str(app.screen.query_one("#dash-progress").render())
    except Exception:
        return ""


@on_both_qemus
async def test_postcopy_broken_is_an_emergency_and_R_recovers_it_to_completion(lab_pair):
    """migrate-pause breaks the stream in post-copy: the fleet and the dashboard say so and
    what to do; R shows the exact QMP, y sends it, and the VM completes on the destination."""
    from migtui.model.requests import MigrationOptions
    from migtui.backend.qmp.controls import set_parameters, start_migration, start_postcopy
    from migtui.ui.dialogs import ConfirmDialog
    from migtui.ui.screens.dashboard import DashboardScreen

    source, destination, _ = lab_pair
    fleet = QMPBackend([parse_endpoint(source.endpoint), parse_endpoint(destination.endpoint)],
                  options=SessionOptions(active_interval=0.2))
    app = MigtuiApp(fleet)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(lambda: all(s.connected and s.vm.sample for s in fleet), timeout=15)
        src, dst = fleet.get("src1"), fleet.get("dst1")
        await start_migration(src, MigrationOptions(bandwidth=32 * 2**20, downtime_ms=1, postcopy=True),
                              destination=dst)
        await set_parameters(src, {"max-postcopy-bandwidth": 4 * 2**20})  # slow: still in post-copy when broken
        await wait_until(lambda: src.vm.migration_status == "active", timeout=20)
        await start_postcopy(src)
        await wait_until(lambda: src.vm.migration_status == dst.vm.migration_status == "postcopy-active", timeout=20)
        await src.execute("migrate-pause")
        await wait_until(lambda: cell(app, "src1", "status") == cell(app, "dst1", "status") == "postcopy-paused",
                         timeout=20)
        # The fleet's summary counts it first, as the emergency it is.
        await wait_until(lambda: str(app.screen.query_one("#fleet-header").render()).split(" · ")[1:2]
                         == ["2 postcopy-paused"], timeout=5)
        await set_parameters(src, {"max-postcopy-bandwidth": 0})
        app.push_screen(DashboardScreen("dst1"))  # from the destination's end too
        await wait_until(lambda: "split across both hosts" in _dashboard_line(app), timeout=10)
        assert "recover with R" in _dashboard_line(app)
        await pilot.press("R")
        await wait_until(lambda: isinstance(app.screen, ConfirmDialog), timeout=5)
        shown = " ".join(str(w.render()) for w in app.screen.query(".dialog-detail"))
        assert re.search(r'1\. on dst1 \(destination\): \{"execute": "migrate-recover", "arguments": '
                         r'\{"uri": "unix:[^"]+"\}\}', shown), shown
        assert re.search(r'2\. on src1 \(source\): \{"execute": "migrate", "arguments": \{"uri": "unix:[^"]+", '
                         r'"resume": true\}\}', shown), shown
        assert src.vm.migration_status == "postcopy-paused"  # nothing sent before y
        await pilot.press("y")
        await wait_until(lambda: src.vm.migration_status == "completed", timeout=60)
        await wait_until(lambda: dst.vm.run_state == "running" and dst.vm.migration_status == "completed", timeout=15)
