"""`migtui demo`: the story that sells migtui, told by the console itself.

The story (migtui.ui.story, as data) runs on a world: the simulator (seeded, in this
process, over real QMP sockets, as `migtui lab --sim`) or, with --real, a lab of real
QEMU VMs. It is the real console (MigtuiApp) with a caption line on every screen
and a Director that moves through the steps: it opens the views, waits for each
step's condition (the stuck verdict, the advice applied, the completion, the end of
the replay), and applies the advice through the dashboard's own path (the
confirmation shows the exact QMP command).

Keys: → / PageDown / n next, ← / PageUp back, space pauses (or, without --auto,
plays on by itself). Back shows an earlier step's view and caption again; the
fleet itself runs on, as live migrations do. Every console key still works.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen

from migtui.config import Config
from migtui.model.endpoint import parse_endpoint
from migtui.model.vm import status_category
from migtui.backend.qmp.backend import QMPBackend
from migtui.backend.qmp.session import SessionOptions
from migtui.record import Recorder
from migtui.ui.app import MigtuiApp
from migtui.ui.dialogs import ConfirmDialog
from migtui.ui.guard import keep_running
from migtui.ui.screens.fleet import FleetScreen
from migtui.ui.story import (ADVICE_KIND, CONFIRM_HOLD, REPLAY_SPEED, SIM_FLEET, SIM_SEED, SIM_SPEEDUP, STORY,
                             SimVMSpec, Step)
from migtui.ui.widgets.caption import Caption

if TYPE_CHECKING:
    from migtui.ui.replay import Playback

# The dashboard and the replay (migtui.ui.screens.dashboard, migtui.ui.replay) are imported where
# the story first shows them: with their graphs (plotext) they are ~35 ms of start-up that the
# first step, the fleet, does not draw, and the demo's start is its first impression.
__all__ = ["DemoApp", "Director", "SimWorld", "LabWorld", "make_app", "run_demo", "DEMO_THEME"]

DEMO_THEME = "migtui-high-contrast"  # projectors wash colours out
TICK = 0.1  # s between the director's looks at the world
MAX_SIM_FACTOR = 4.0  # --speed beyond this shortens only the pauses: samples must still see every pass
MiB = 2**20


class SimWorld:
    """The simulated fleet of story.SIM_FLEET, its migrations started before the console connects."""

    name = "simulator"

    def __init__(self, speed: float = 1.0) -> None:
        self.factor = min(speed, MAX_SIM_FACTOR)
        self.runtime: Path | None = None
        self.fleet = None
        self.endpoints: list[str] = []
        star = next(s for s in SIM_FLEET if s.star)
        self.star, self.star_destination = star.name, star.destination

    async def start(self) -> None:
        from migtui.sim import SimFleet
        from migtui.sim.model import PAGE

        parent = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
        self.runtime = Path(tempfile.mkdtemp(prefix="migtui-demo-", dir=parent if os.path.isdir(parent) else None))
        self.fleet = fleet = SimFleet(self.runtime, speedup=SIM_SPEEDUP * self.factor, seed=SIM_SEED)
        incoming = {s.destination for s in SIM_FLEET if s.destination}
        for spec in SIM_FLEET:
            await fleet.add_vm(spec.name, dialect=spec.dialect, ram=spec.ram_mib * MiB,
                               dirty_rate=int(spec.dirty_mib_s * MiB) // PAGE * PAGE,
                               working_set=spec.working_set_mib * MiB, incoming=spec.name in incoming,
                               zero_fraction=spec.zero_fraction)
        for spec in SIM_FLEET:
            if spec.destination:
                _start_sim_migration(fleet, spec)
        self.endpoints = [vm.endpoint for vm in fleet.vms.values()]

    async def begin(self, app: DemoApp) -> None:
        pass  # already in flight

    async def close(self) -> None:
        if self.fleet is not None:
            await self.fleet.stop()
        if self.runtime is not None:
            shutil.rmtree(self.runtime, ignore_errors=True)

    def cleanup_now(self) -> None:
        if self.runtime is not None:
            shutil.rmtree(self.runtime, ignore_errors=True)


def _start_sim_migration(fleet, spec: SimVMSpec) -> None:
    source, dest = fleet[spec.name], fleet[spec.destination]
    if spec.dialect != "1.4":
        dest.execute("migrate-incoming", {"uri": f"unix:{fleet.runtime_dir / dest.name}.migrate"}, record=False)
        source.set_capability("events")
    source.start_migration(dest.incoming_uri)


class LabWorld:
    """`--real`: the lab's real QEMU VMs; the console starts the migrations once it is connected.

    src1 goes at 32 MiB/s, which the lab guest (it dirties 100-250 MB/s under TCG) cannot
    follow: it is the one stuck. src2 goes at 1 GiB/s and is done in a moment.
    """

    name = "real QEMU"
    STARTS = (("src2", "dst2", 1024 * MiB), ("src1", "dst1", 32 * MiB))

    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.endpoints = [vm.endpoint for vm in lab.vms]
        self.star, self.star_destination = "src1", "dst1"

    async def start(self) -> None:
        pass  # the lab is up

    async def begin(self, app: DemoApp) -> None:
        from migtui.model.requests import MigrationOptions

        while not all(s.connected and s.vm.sample for s in app.backend):
            await asyncio.sleep(0.1)  # pacing: the lab's monitors answer within a second
        for source, dest, bandwidth in self.STARTS:
            await app.backend.get(source).migrate(MigrationOptions(bandwidth=bandwidth),
                                                  destination=app.backend.get(dest))

    async def close(self) -> None:
        pass  # run_lab_no_ui stops the lab

    def cleanup_now(self) -> None:
        self.lab.kill_now()


class Director:
    """Moves the console through the story: views, conditions, captions, the pace."""

    def __init__(self, app: DemoApp, *, auto: bool, speed: float) -> None:
        self.app = app
        self.world = app.world
        self.auto = auto
        self.paused = False
        self.speed = speed
        self.index = 0
        self.entered: list[str] = []  # step keys in the order shown (tests read it)
        self.reached: set[str] = set()  # steps whose condition has held: it stays met when shown again
        self.ready_at: float | None = None
        self.finished = False  # the last step has had its time
        self.playback: Playback | None = None
        self.dialog: ConfirmDialog | None = None
        self._dialog_at = 0.0
        self._offered = False  # the advice was offered since the step was entered
        self._moving = False

    @property
    def step(self) -> Step:
        return STORY[self.index]

    @property
    def star(self):
        return self.app.backend.get(self.world.star)

    # ---- moving through the story -------------------------------------------------

    async def go(self, index: int) -> None:
        if self._moving:
            return
        self._moving = True
        try:
            self.index = max(0, min(len(STORY) - 1, index))
            step = self.step
            self.entered.append(step.key)
            self.ready_at = time.monotonic() if step.key in self.reached else None
            self.finished = False
            self._offered = False
            await self._show(step.view)
        finally:
            self._moving = False
        self.tick()

    async def next(self) -> None:
        step = self.step
        if step.view == "advice" and self.dialog is not None and self.app.screen is self.dialog:
            self._answer_yes()  # "next" on the confirmation applies the advice, as y would
        if self.index < len(STORY) - 1:
            await self.go(self.index + 1)
        elif self.ready_at is not None:
            self.finished = True

    async def back(self) -> None:
        if self.index > 0:
            await self.go(self.index - 1)

    def toggle_pause(self) -> None:
        if not self.auto:
            self.auto, self.paused = True, False  # without --auto, space plays on from here
        else:
            self.paused = not self.paused
        if self.playback is not None and self._on_replay():
            if self.playback.paused == (not self.paused) and not self.playback.at_end:
                self.app.screen.action_toggle_pause()  # the replay holds with the story
        self.tick()

    # ---- views ------------------------------------------------------------------------

    async def _show(self, view: str) -> None:
        if view == "fleet":
            await self._to_fleet()
        elif view in ("dashboard", "advice"):
            await self._to_dashboard()
        elif view == "replay":
            if not self._on_replay():
                await self._to_dashboard()
                self._push_replay()

    async def _to_fleet(self) -> None:
        app = self.app
        while len(app.screen_stack) > 1 and not isinstance(app.screen, FleetScreen):
            await app.pop_screen()

    def _on_replay(self) -> bool:
        from migtui.ui.replay import ReplayDashboard

        return isinstance(self.app.screen, ReplayDashboard)

    async def _to_dashboard(self) -> None:
        from migtui.ui.screens.dashboard import DashboardScreen

        app = self.app
        top = app.screen
        if type(top) is DashboardScreen and top.key == self.world.star:
            return
        await self._to_fleet()
        if isinstance(app.screen, FleetScreen):
            table = app.screen.table
            row = table.row_index(self.world.star)
            if row is not None:
                table.move_cursor(row)  # the audience sees which row opens
        await app.push_screen(DashboardScreen(self.world.star))

    def _push_replay(self) -> None:
        from migtui.ui.replay import Playback, ReplayDashboard

        if self.playback is None:
            path = self._recording()
            if path is None:
                return  # not recorded yet: tick() tries again
            from migtui.record.replay import load_recording

            self.playback = Playback(load_recording(path, self.world.star), speed=min(16.0, REPLAY_SPEED * self.speed))
        elif self.playback.at_end:
            self.playback.toggle_pause()  # shown again: from the start
        self.app.push_screen(ReplayDashboard(self.playback))

    def _recording(self) -> Path | None:
        recorder = self.app.recorder
        if recorder is None:
            return None
        done = [f for f in recorder.finished if f.vm == self.world.star and f.path is not None]
        return done[-1].path if done else None

    def _offer_advice(self) -> None:
        """The dashboard's own advice path: the first advice that can be applied now, confirmed."""
        from migtui.ui.screens.dashboard import DashboardScreen

        screen = self.app.screen
        if self._offered or type(screen) is not DashboardScreen or screen.key != self.world.star:
            return
        advice = getattr(screen, "_advice", [])
        now = [i for i, a in enumerate(advice) if a.now]
        index = next((i for i in now if advice[i].kind == ADVICE_KIND), now[0] if now else None)
        if index is None:
            return  # not yet worked out
        self._offered = True
        screen.query_one("#advice").highlighted = index
        # Read-only takes the audience's keys (migtui serve --public); the story still steers its own VMs.
        app, read_only = self.app, self.app.read_only
        app.read_only = False
        try:
            screen.action_apply_advice()
        finally:
            app.read_only = read_only
        top = self.app.screen_stack[-1]
        self.dialog = top if isinstance(top, ConfirmDialog) else None
        self._dialog_at = time.monotonic()

    def _answer_yes(self) -> None:
        if self.dialog is not None and self.app.screen is self.dialog:
            self.dialog.action_answer(True)

    @property
    def confirming(self) -> bool:
        """The advice's confirmation is up, or was answered yes and its command is on its way."""
        if self.dialog is None:
            return False
        sending = any(w.group == f"action-{self.world.star}" and w.is_running for w in self.app.workers)
        return self.app.screen is self.dialog or sending

    # ---- the clock ----------------------------------------------------------------------

    def ready(self, step: Step) -> bool:
        if step.key in self.reached:
            return True
        session = self.star
        vm = session.vm if session is not None else None
        if step.ready == "connected":
            met = all(s.connected and s.vm.sample is not None for s in self.app.backend)
        elif vm is None:
            met = False
        elif step.ready == "not-converging":
            met = vm.in_flight and vm.assessment().verdict == "not-converging"
        elif step.ready == "advice-applied":
            met = vm.tracker.advice_taken is not None
        elif step.ready == "completed":
            met = vm.migration_status == "completed" and self._recording() is not None
        elif step.ready == "replay-end":
            met = self.playback is not None and self.playback.at_end and self._on_replay()
        else:
            met = False
        if met:
            self.reached.add(step.key)
        return met

    @keep_running
    def tick(self) -> None:
        if self._moving or not self.entered:
            return  # moving, or the story has not begun
        step = self.step
        now = time.monotonic()
        ready = self.ready(step)
        if ready and self.ready_at is None:
            self.ready_at = now
        if step.view == "advice" and not ready:
            self._offer_advice()
            if (self.dialog is not None and self.auto and not self.paused
                    and now - self._dialog_at >= CONFIRM_HOLD / self.speed):
                self._answer_yes()
        if step.view == "replay" and self.playback is None:
            self._push_replay()
        self._caption(ready)
        if (self.auto and not self.paused and ready and self.ready_at is not None
                and now - self.ready_at >= step.dwell / self.speed):
            if self.index < len(STORY) - 1:
                self.app.run_worker(self.next(), group="demo-step", exclusive=True)
            elif not self.finished:
                self.finished = True
                self._caption(ready)

    def caption_text(self, step: Step, ready: bool) -> str:
        in_flight = sum(1 for s in self.app.backend if status_category(s.vm) in ("migrating", "post-copy"))
        confirming = step.confirming and self.confirming
        text = step.caption if ready else step.confirming if confirming else step.waiting
        text = text.format(star=self.world.star, in_flight=in_flight or "a few")
        if self.finished:
            text = "The end: that is migtui. ← goes back, q quits"
        return text

    def state_text(self) -> str:
        if not self.auto:
            return "→ next"
        return "‖ paused" if self.paused else "▶ auto"

    def caption_parts(self, ready: bool | None = None) -> tuple[str, str, str]:
        """The caption's step ("2/5"), text and state, for the current step (`ready`: as known so far)."""
        step = self.step
        ready = step.key in self.reached if ready is None else ready
        return f"{self.index + 1}/{len(STORY)}", self.caption_text(step, ready), self.state_text()

    def _caption(self, ready: bool) -> None:
        try:
            caption = self.app.screen.query_one(Caption)
        except NoMatches:
            return
        caption.show(*self.caption_parts(ready))


class DemoApp(MigtuiApp):
    TITLE = "migtui demo"
    BINDINGS = [
        # Priority: a presenter's clicker sends these, and they must work on every screen.
        Binding("right,pagedown,n", "demo_next", "Next", priority=True, show=False),
        Binding("left,pageup", "demo_back", "Back", priority=True, show=False),
        Binding("space", "demo_pause", "Pause", priority=True, show=False),
    ]

    def __init__(self, world, *, auto: bool = False, speed: float = 1.0, **kwargs: Any) -> None:
        self.world = world
        self._captioned: weakref.WeakSet[Screen] = weakref.WeakSet()  # screens that have their caption
        super().__init__(**kwargs)
        self.director = Director(self, auto=auto, speed=speed)

    def on_mount(self) -> None:
        super().on_mount()
        self.screen_change_signal.subscribe(self, self._caption_on)
        self._caption_on(self.screen)
        self.set_interval(TICK, self.director.tick)
        self.run_worker(self.world.begin(self), group="demo-world", exit_on_error=False)
        self.call_after_refresh(lambda: self.run_worker(self.director.go(0), group="demo-step"))

    def notify(self, message: str, *, title: str = "", **kwargs: Any) -> None:
        if title == "migration ended":
            if not message.startswith(f"{self.world.star}:"):
                return  # the story's own migration only: at 80x24 a toast covers a third of the screen
            message = message.split("\nrecorded in ", 1)[0]  # a demo's recordings go with it
        super().notify(message, title=title, **kwargs)

    def push_screen(self, screen: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(screen, Screen) and not screen.is_mounted and screen not in self._captioned:
            self._captioned.add(screen)
            # Composed with it, already written: no frame without the caption (the very first
            # frame has the story's first one, before the story begins).
            screen.compose_add_child(Caption(*self.director.caption_parts()))
        return super().push_screen(screen, *args, **kwargs)

    def _caption_on(self, screen: Screen) -> None:
        if screen not in self._captioned:  # a screen pushed by name, or the default one
            self._captioned.add(screen)
            screen.mount(Caption(*self.director.caption_parts()))
        self.director.tick()

    async def action_demo_next(self) -> None:
        await self.director.next()

    async def action_demo_back(self) -> None:
        await self.director.back()

    def action_demo_pause(self) -> None:
        self.director.toggle_pause()


def _session_options(options: SessionOptions | None, speed: float) -> SessionOptions:
    factor = min(speed, MAX_SIM_FACTOR)
    base = options or SessionOptions()
    return SessionOptions(active_interval=0.5 / factor, ssl=base.ssl, audit=base.audit)


def make_app(world, recordings: Path, *, auto: bool = False, speed: float = 1.0, theme: str | None = None,
             read_only: bool = False, config: Config | None = None,
             options: SessionOptions | None = None) -> DemoApp:
    """The console on the world's VMs, with the story; its recordings go to `recordings`."""
    fleet = QMPBackend([parse_endpoint(e) for e in world.endpoints], options=_session_options(options, speed))
    return DemoApp(world, auto=auto, speed=speed, backend=fleet, config=config, theme=theme or DEMO_THEME,
                   read_only=read_only, recorder=Recorder(recordings, retention=None))


async def _run_app(world, **kwargs: Any) -> int:
    recordings = Path(tempfile.mkdtemp(prefix="migtui-demo-recordings-"))  # a demo's go with it
    try:
        app = make_app(world, recordings, **kwargs)
        await app.run_async()
        return app.return_code or 0
    finally:
        shutil.rmtree(recordings, ignore_errors=True)


def _cleanup_on_signal(world) -> None:
    """SIGTERM or SIGHUP (a closed terminal, `migtui serve` ending a visit): clean up now and exit;
    the console may never get to run an asyncio handler once its terminal is gone."""

    def handler(signum: int, _frame: object) -> None:
        try:
            world.cleanup_now()
        finally:
            os._exit(128 + signum)

    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, handler)


async def run_demo(*, real: bool = False, auto: bool = False, theme: str | None = None, read_only: bool = False,
                   speed: float = 1.0, config: Config | None = None, options: SessionOptions | None = None) -> int:
    """`migtui demo`: on the simulator (no audit: its VMs are made up), or with `real` on a lab of real QEMU."""
    if not real:
        world = SimWorld(speed)
        try:
            await world.start()
            _cleanup_on_signal(world)
            sim_options = SessionOptions(ssl=None, audit=None)
            return await _run_app(world, auto=auto, speed=speed, theme=theme, read_only=read_only, config=config,
                                  options=sim_options)
        finally:
            await world.close()
    from migtui.lab.lab import run_lab_no_ui

    async def main(lab) -> int:
        world = LabWorld(lab)
        _cleanup_on_signal(world)
        return await _run_app(world, auto=auto, speed=speed, theme=theme, read_only=read_only, config=config,
                              options=options)

    return await run_lab_no_ui(2, "128M", False, accel="auto", main=main, out=sys.stderr)
