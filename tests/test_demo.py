"""`migtui demo`: the presenter's story on the simulator, driven by pilot tests.

The story runs for real (the seeded simulator over QMP sockets, the console, the
recorder, the replay) at a high --speed, so that a whole telling takes seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from lab_fixtures import pid_alive, qemu_required, wait_until
from migtui.cli import main
from migtui.ui.demo import DEMO_THEME, SimWorld, make_app
from migtui.ui.dialogs import ConfirmDialog
from migtui.ui.replay import ReplayDashboard
from migtui.ui.screens.dashboard import DashboardScreen
from migtui.ui.screens.fleet import FleetScreen
from migtui.ui.story import ADVICE_KIND, CAPTION_WIDTH, STORY
from migtui.ui.widgets.caption import Caption

SIZE = (80, 24)  # a projector's console
FAST = 20.0  # --speed: the story's pauses 20 times shorter, the simulated fleet 4 times faster


@pytest.fixture
async def world():
    world = SimWorld(FAST)
    await world.start()
    yield world
    await world.close()


def caption_line(app) -> str:
    """The caption as drawn: the screen's first row ("" before the first frame)."""
    strips = app.screen._compositor.render_strips()
    return strips[0].text if strips else ""


def texts(step, star="db01", in_flight=3) -> list[str]:
    return [t.format(star=star, in_flight=in_flight) for t in (step.caption, step.waiting, step.confirming) if t]


@pytest.mark.parametrize("read_only", [False, True], ids=["controls", "read-only"])
async def test_auto_tells_the_whole_story_in_order_and_ends_on_the_replay(world, tmp_path, read_only):
    # Read-only (as `migtui serve --public` makes it): the audience's keys are off, the story still runs.
    app = make_app(world, tmp_path, auto=True, speed=FAST, read_only=read_only)
    seen: list[str] = []  # each caption, as drawn, when it changes

    def watch() -> bool:
        line = caption_line(app)
        if line.strip() and (not seen or seen[-1] != line):
            seen.append(line)
        return app.director.finished

    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == DEMO_THEME == "migtui-high-contrast"
        await wait_until(watch, timeout=90, interval=0.02)
        director = app.director
        assert director.entered == [step.key for step in STORY]  # every step once, in order, none skipped
        # Each step's own caption was drawn, in the story's order, with its number.
        star = world.star
        positions = []
        for n, step in enumerate(STORY, 1):
            # How many are in flight is live: any number the world had then.
            want = re.escape(f"{n}/{len(STORY)} {step.caption}").replace(r"\{star\}", star)
            want = want.replace(r"\{in_flight\}", r"\d+")
            hits = [i for i, line in enumerate(seen) if re.match(want, line.strip())]
            assert hits, f"never drew {want!r}; drew: {seen}"
            positions.append(hits[0])
        assert positions == sorted(positions)
        # The advice's confirmation was shown (its caption says so) before it was applied.
        confirming = STORY[2].confirming
        assert any(confirming in line for line in seen), seen
        vm = app.backend.get(star).vm
        assert vm.tracker.advice_taken is not None and vm.migration_status == "completed"
        assert vm.tracker.advice_taken.kind == ADVICE_KIND == "bandwidth"  # the same story every time
        # It ends on the post-mortem: the replay of that migration, played to its end.
        assert isinstance(app.screen, ReplayDashboard) and director.playback.at_end
        assert director.playback.recording.name == star
        assert "completed in" in str(app.screen.query_one("#replay-status").render())
        assert "The end" in caption_line(app)
        if read_only:
            await pilot.press("escape", "m")  # the audience cannot start anything
            assert not isinstance(app.screen, ConfirmDialog) and app.read_only
        # Every caption fitted its line at 80 columns: none lost its end.
        assert all("…" not in line and len(line) <= SIZE[0] for line in seen), seen
        await pilot.press("q")


async def test_presenter_keys_next_back_and_pause(world, tmp_path):
    app = make_app(world, tmp_path, auto=False, speed=FAST)
    async with app.run_test(size=SIZE) as pilot:
        director = app.director
        await wait_until(lambda: director.entered == ["fleet"] and director.ready(STORY[0]), timeout=10)
        assert isinstance(app.screen, FleetScreen) and "→ next" in caption_line(app)
        began = time.monotonic()
        await wait_until(lambda: time.monotonic() - began > 3 * STORY[0].dwell / FAST, timeout=5)
        assert director.index == 0  # without --auto nothing moves on by itself
        await pilot.press("right")
        await wait_until(lambda: isinstance(app.screen, DashboardScreen), timeout=5)
        assert app.screen.key == world.star and caption_line(app).startswith(" 2/5")
        await pilot.press("left")
        await wait_until(lambda: isinstance(app.screen, FleetScreen) and caption_line(app).startswith(" 1/5"),
                         timeout=5)
        await pilot.press("pagedown")  # a clicker's key
        await wait_until(lambda: director.ready(STORY[1]), timeout=30)  # the verdict: not converging
        await pilot.press("n")
        await wait_until(lambda: isinstance(app.screen, ConfirmDialog), timeout=30)  # the advice, to confirm
        assert "migrate-set-parameters" in app.screen.detail or "migrate_set" in app.screen.detail
        await pilot.press("y")  # the dialog's own key
        await wait_until(lambda: director.ready(STORY[2]), timeout=10)
        await pilot.press("right")
        await wait_until(lambda: director.ready(STORY[3]), timeout=30)  # completed, recorded
        await pilot.press("right")
        await wait_until(lambda: isinstance(app.screen, ReplayDashboard), timeout=5)
        await pilot.press("left")  # back from the replay: the live dashboard again
        await wait_until(lambda: type(app.screen) is DashboardScreen and caption_line(app).startswith(" 4/5"),
                         timeout=5)
        await pilot.press("space")  # plays on by itself from here
        assert "▶ auto" in caption_line(app)
        await wait_until(lambda: isinstance(app.screen, ReplayDashboard), timeout=10)
        await pilot.press("space")
        assert "‖ paused" in caption_line(app)
        assert director.entered == ["fleet", "stuck", "fleet", "stuck", "advice", "complete", "replay",
                                    "complete", "replay"]


@pytest.mark.parametrize("theme", ["migtui-high-contrast"])
async def test_every_caption_fits_one_line_at_80_columns(theme):
    """Snapshot-like: each caption, drawn at 80x24 in the projector theme, whole and legible."""
    from textual.app import App

    from migtui.ui.themes import load_themes

    class One(App):
        def compose(self):
            yield Caption()

    app = One()
    entry = load_themes()[theme]
    app.register_theme(entry.theme)
    app.theme = theme
    async with app.run_test(size=SIZE) as pilot:
        caption = app.query_one(Caption)
        variants = [t for step in STORY for t in texts(step)]
        variants.append("The end: that is migtui. ← goes back, q quits")
        assert max(len(t) for t in variants) <= CAPTION_WIDTH
        for text in variants:
            for state in ("▶ auto", "‖ paused", "→ next"):
                caption.show("5/5", text, state)
                await pilot.pause()
                line = app.screen._compositor.render_strips()[0].text
                assert line.startswith(f" 5/5 {text}") and line.rstrip().endswith(state), line
        # It stands out from the screen: the accent behind the theme's background colour as text.
        style = caption.rich_style
        assert style.bgcolor is not None and style.color is not None and style.bgcolor != style.color
        assert style.bold


def test_demo_refuses_a_bad_speed_in_one_line(capsys):
    assert main(["demo", "--speed", "0"]) == 2
    err = capsys.readouterr().err
    assert "--speed" in err and len(err.strip().splitlines()) == 1


# ---- on the real lab ----------------------------------------------------------------


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30).stdout


@qemu_required
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_demo_real_in_a_terminal_finds_the_stuck_migration_and_applies_the_advice_to_real_qemu(tmp_path):
    """`migtui demo --real --auto` as a presenter runs it, at 80x24: real QEMU VMs (the lab), src1
    not converging at 32 MiB/s, the advice confirmed and sent to QEMU, then q leaves nothing."""
    session = f"migtui-demo-real-{os.getpid()}"
    state = tmp_path / "state"
    command = (f"XDG_RUNTIME_DIR={tmp_path} XDG_STATE_HOME={state} {sys.executable} -m migtui demo --real --auto "
               f"--speed 4; echo EXITED $? > {tmp_path}/rc")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command], check=True)
    screens: dict[str, list[str]] = {}  # each caption line (in the order shown), with its screens
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(c.startswith(" 3/5 Applied:") for c in screens):
            screen = _tmux("capture-pane", "-p", "-t", session)
            caption = screen.split("\n", 1)[0].split("▌")[0].rstrip()  # ▌: the edge of a toast over it
            screens.setdefault(caption, []).append(screen)
            time.sleep(0.1)  # polling the terminal, with a deadline
        captions = list(screens)
        stuck = next((c for c in captions if c.startswith(" 2/5 src1 is stuck: NOT-CONVERGING")), None)
        applying = next((c for c in captions if c.startswith(" 3/5 Applying the advice")), None)
        applied = next((c for c in captions if c.startswith(" 3/5 Applied:")), None)
        assert stuck and applying and applied, captions
        assert captions.index(stuck) < captions.index(applying) < captions.index(applied), captions
        # The verdict with its why, on src1's own dashboard; the confirmation shows the QMP command.
        assert any(re.search(r"NOT-CONVERGING: .+", s) and "src1" in s.splitlines()[1] for s in screens[stuck])
        assert any("migrate-set-parameters" in s for s in screens[applying]), screens[applying]
        # It reached real QEMU: after the demo's own start at 32 MiB/s, a higher max-bandwidth, accepted.
        audit = [json.loads(line) for line in (state / "migtui" / "audit.ndjson").read_text().splitlines()]
        sets = [a for a in audit if a["vm"] == "src1" and a["command"] == "migrate-set-parameters"]
        assert sets[0]["arguments"] == {"max-bandwidth": 32 * 2**20}
        assert len(sets) == 2 and sets[1]["ok"] and sets[1]["arguments"]["max-bandwidth"] > 32 * 2**20, sets
        pids = [int(p) for p in subprocess.run(["pgrep", "-f", f"qemu-system-x86_64 .*-pidfile {tmp_path}/"],
                                               capture_output=True, text=True).stdout.split()]
        assert len(pids) == 4  # the lab's two pairs
        _tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (tmp_path / "rc").exists():
            time.sleep(0.1)  # polling for the exit, with a deadline
        assert (tmp_path / "rc").read_text().strip() == "EXITED 0"
        assert not any(pid_alive(pid) for pid in pids)
    finally:
        _tmux("kill-session", "-t", session)
