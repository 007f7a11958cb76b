"""`migtui replay FILE`: the dashboard of a recorded migration, with a playhead.

The post-mortem view. The dashboard is the live one (DashboardScreen), on the
replay backend (migtui.backend.replay): a VM that a Cursor fills with the
recorded samples, events and settings up to the playhead. Nothing ever talks to
QEMU, and every control is off.

Keys: space pause/resume, left/right seek 10 s, [ and ] speed down/up
(0.25x..16x), home/end; the line at the top says where the playhead is.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from migtui.model.units import InputError, parse_number
from migtui.backend.replay import SEEK_SECONDS, SPEEDS, Playback, ReplayBackend
from migtui.record.recorder import summary_text
from migtui.record.replay import Cursor, Recording, load_recording
from migtui.ui.controls import CONTROL_ACTIONS
from migtui.ui.guard import keep_running
from migtui.ui.screens.dashboard import DashboardScreen
from migtui.ui.widgets.event_log import EventLog
from migtui.ui.themes import DEFAULT_THEME, MigtuiTheme, load_themes

__all__ = ["Playback", "ReplayApp", "ReplayDashboard", "SPEEDS", "SEEK_SECONDS", "run_replay", "playhead_text"]

TICK = 0.1  # seconds between playhead steps while playing


def _clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    minutes, rest = divmod(seconds, 60)
    if minutes >= 60:
        hours, minutes = divmod(int(minutes), 60)
        return f"{hours}:{minutes:02d}:{rest:04.1f}"
    return f"{int(minutes):02d}:{rest:04.1f}"


def _speed(speed: float) -> str:
    return f"{speed:g}x"


def playhead_text(playback: Playback) -> str:
    cursor = playback.cursor
    rec = playback.recording
    state = "paused" if playback.paused else "playing"
    at_end = playback.at_end
    if at_end:
        state = "end"
    line = (f"{'■' if playback.paused or at_end else '▶'} REPLAY {rec.name} · "
            f"{_clock(playback.playhead - cursor.start)} / {_clock(cursor.end - cursor.start)} · "
            f"{_speed(playback.speed)} · {state} · sample {cursor.samples_shown}/{len(rec.samples)}")
    if at_end:
        line += f" · {summary_text(rec.final_summary())}"
    return line


class ReplayDashboard(DashboardScreen):
    """The live dashboard plus a playhead line; controls are off, the replay keys are on."""

    BINDINGS = [
        Binding("space", "toggle_pause", "Play/Pause", priority=True),
        Binding("left", "seek(-10)", "-10s", priority=True),
        Binding("right", "seek(10)", "+10s", priority=True),
        Binding("left_square_bracket", "slower", "Slower", priority=True),
        Binding("right_square_bracket", "faster", "Faster", priority=True),
        Binding("home", "to_start", "Start", priority=True),
        Binding("end", "to_end", "End", priority=True),
    ]
    DEFAULT_CSS = """
    #replay-status {
        height: auto;
        padding: 0 1;
        background: $accent 40%;
        color: $foreground;
        text-style: bold;
    }
    """

    def __init__(self, playback: Playback, tick: float | None = TICK) -> None:
        # Its own read-only backend: whichever app shows it (the replay, the demo), it reads the recording.
        self.backend = ReplayBackend([playback])
        super().__init__(next(iter(self.backend.handles())))
        self.playback = playback
        self.tick = tick  # None: the playhead moves only by keys (export, tests)

    @property
    def handle(self):
        return self.backend.get(self.key)

    def compose(self) -> ComposeResult:
        yield Static(id="replay-status")
        yield from super().compose()

    def on_mount(self) -> None:
        # The log must not take the seek keys for scrolling.
        self.query_one("#log", EventLog).can_focus = False
        self.update_status()
        if self.tick is not None:
            self.playback.restart_clock()
            self.set_interval(self.tick, self._advance)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in CONTROL_ACTIONS or action == "poll_now":
            return False  # a recording cannot be steered
        return True

    def _follow_up(self, vm) -> None:
        # Whether advice worked, as the recording shows it; nothing is logged or told: it is the past.
        fu = vm.follow_up()
        self.query_one("#advice").border_subtitle = fu.text if fu is not None else ""

    def _advance(self) -> None:
        self._shown(self.playback.tick())

    def _shown(self, changed: bool) -> None:
        if changed:
            self.show()
        self.update_status()

    def action_toggle_pause(self) -> None:
        self._shown(self.playback.toggle_pause())

    def action_seek(self, seconds: float) -> None:
        self._shown(self.playback.seek(seconds))

    def action_slower(self) -> None:
        self._shown(self.playback.slower())

    def action_faster(self) -> None:
        self._shown(self.playback.faster())

    def action_to_start(self) -> None:
        self._shown(self.playback.to_start())

    def action_to_end(self) -> None:
        self._shown(self.playback.to_end())

    @keep_running
    def show(self) -> None:
        """Redraw from the cursor's VM (the event log shows its log as the cursor rebuilt it)."""
        self.update_all()

    @keep_running
    def update_status(self) -> None:
        self.query_one("#replay-status", Static).update(Text(playhead_text(self.playback)))


class ReplayApp(App[int]):
    CSS_PATH = "migtui.tcss"
    TITLE = "migtui replay"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("s", "screenshot", "Screenshot", show=False),
        Binding("t", "next_theme", "Theme", show=False),
    ]

    def __init__(
        self,
        recording: Recording,
        *,
        speed: float = 1.0,
        paused: bool = False,
        at_end: bool = False,
        theme: str | None = None,
        tick: float | None = TICK,
        screenshot_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.playback = Playback(recording, speed=speed, paused=paused, at_end=at_end)
        self.read_only = True
        self.tick = tick  # None: the playhead moves only by keys (export, tests)
        self.screenshot_dir = screenshot_dir or Path.cwd()
        self.migtui_themes: dict[str, MigtuiTheme] = load_themes()
        for entry in self.migtui_themes.values():
            self.register_theme(entry.theme)
        wanted = theme or DEFAULT_THEME
        if wanted not in self.migtui_themes and wanted not in self.available_themes:
            names = ", ".join(self.migtui_themes) or "textual-dark"
            raise InputError(f"--theme: unknown theme {wanted!r}; themes: {names}")
        self.theme = wanted if wanted in self.available_themes else "textual-dark"

    # What a caller reads of the playback (tests, export).
    recording = property(lambda self: self.playback.recording)
    cursor = property(lambda self: self.playback.cursor)
    playhead = property(lambda self: self.playback.playhead)
    paused = property(lambda self: self.playback.paused)
    speed = property(lambda self: self.playback.speed)

    # ---- what DashboardScreen asks of its app -------------------------------

    def handle(self, key: str | None):
        screen = self.screen if self.screen_stack else None
        return screen.handle if isinstance(screen, ReplayDashboard) and screen.key == key else None

    def plot_colors(self) -> dict[str, str]:
        entry = self.migtui_themes.get(self.theme)
        return dict(entry.plot) if entry else {}

    def log_for(self, key: str, kind: str, name: str, detail: str) -> None:
        pass  # nothing happens to a recording

    # ---- playing -------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(ReplayDashboard(self.playback, tick=self.tick))
        if self.recording.warnings:
            self.notify("; ".join(self.recording.warnings), title=str(self.recording.path), severity="warning",
                        timeout=10)

    async def action_pop_screen(self) -> None:
        if isinstance(self.screen, ReplayDashboard):
            self.exit(0)  # escape on the dashboard leaves the replay
        else:
            await super().action_pop_screen()

    def action_screenshot(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.save_screenshot(f"migtui-replay-{stamp}.svg", str(self.screenshot_dir))
        self.notify(f"saved {path}", title="screenshot", timeout=5)

    def action_next_theme(self) -> None:
        names = list(self.migtui_themes) or ["textual-dark"]
        index = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(index + 1) % len(names)]
        screen = self.screen
        if isinstance(screen, ReplayDashboard):
            screen.on_screen_resume()  # graph colours follow the theme


async def run_replay(
    path: Path | str,
    *,
    vm: str | None = None,
    speed: float | str = 1.0,
    paused: bool = False,
    at_end: bool = False,
    theme: str | None = None,
) -> int:
    """`migtui replay FILE`: raises InputError/RecordingError (one line) for what cannot be replayed."""
    factor = parse_number(speed, "--speed", SPEEDS[0], SPEEDS[-1], "a factor ")
    recording = load_recording(path, vm)
    app = ReplayApp(recording, speed=factor, paused=paused, at_end=at_end, theme=theme)
    await app.run_async()
    return app.return_code or 0
