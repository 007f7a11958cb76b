"""The console: a Textual app on the backend's asyncio loop.

The backend calls `_on_backend` for every sample and event. That call only
marks VMs dirty; one flush a few tens of milliseconds later tells the screen
which VMs changed, so a fleet of hundreds costs one repaint, not hundreds.
Actions run as workers: the UI never waits on QMP.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from textual._context import active_app  # the app a callback runs as (see _on_backend)
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from migtui.autopilot import Autopilot
from migtui.config import Config
from migtui.model.hints import hint_for
from migtui.model.units import InputError
from migtui.backend.api import Backend, VMHandle
from migtui.backend.errors import BackendError, QMPRefused
from migtui.backend.messages import ActionResult, BackendMessage, VMEvent
from migtui.record import Recorder
from migtui.ui.controls import COMMANDS, CONTROL_ACTIONS
from migtui.ui.guard import keep_running
from migtui.ui.messages import FleetChanged
from migtui.ui.themes import DEFAULT_THEME, MigtuiTheme, load_themes

__all__ = ["MigtuiApp", "CONTROL_ACTIONS"]  # CONTROL_ACTIONS: from migtui.ui.controls

FLUSH_DELAY = 0.03  # coalescing window: well under the 100 ms an operator notices
FREEZE_AFTER = 10.0  # s after start: the fleet has connected
REFREEZE_EVERY = 600.0  # s


class MigtuiApp(App[int]):
    CSS_PATH = "migtui.tcss"
    TITLE = "migtui"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("s", "screenshot", "Screenshot", show=False, id="screenshot"),
        Binding("t", "next_theme", "Theme", show=False, id="theme"),
        Binding("r", "poll_now", "Poll", show=False, id="poll"),
    ]

    def __init__(
        self,
        backend: Backend,
        *,
        config: Config | None = None,
        theme: str | None = None,
        read_only: bool = False,
        start_fleet: bool = True,
        screenshot_dir: Path | None = None,
        recorder: Recorder | None = None,
        metrics_url: str | None = None,
    ) -> None:
        super().__init__()
        self.metrics_url = metrics_url  # where --metrics serves the exposition; shown in the header
        self.config = config or Config()
        self.recorder = recorder  # every migration to NDJSON (migtui.record); None: not recorded
        self._record_error: str | None = None
        self.backend = backend
        # A backend that cannot steer any VM (a recording) turns the controls off, as --read-only does.
        self.read_only = read_only or self.config.read_only or backend.read_only is not None
        self.start_fleet = start_fleet
        self.screenshot_dir = screenshot_dir or Path.cwd()
        self.migtui_themes: dict[str, MigtuiTheme] = load_themes()
        for entry in self.migtui_themes.values():
            self.register_theme(entry.theme)
        wanted = theme or self.config.theme or DEFAULT_THEME
        if wanted not in self.migtui_themes and wanted not in self.available_themes:
            names = ", ".join(self.migtui_themes) or "textual-dark"
            raise InputError(f"--theme: unknown theme {wanted!r}; themes: {names}")
        self.theme = wanted if wanted in self.available_themes else "textual-dark"
        self._dirty: set[str] = set()
        self.insecure: list[str] = []  # VMs reached over non-loopback TCP without TLS
        self._flush_scheduled = False
        self._unsubscribe = backend.subscribe(self._on_backend)
        # The autopilot steers only where controls are on; it listens after the app (its steps show next frame).
        self.autopilot: Autopilot | None = None if self.read_only else Autopilot(
            backend, self.config.policies, audit=self.config.audit_log())
        if self.config.keys:
            self.set_keymap({f"migtui.{k}" if not k.startswith("migtui.") else k: v for k, v in self.config.keys.items()})

    # ---- start and stop ----------------------------------------------------

    def on_mount(self) -> None:
        from migtui.ui.screens.fleet import FleetScreen

        self.push_screen(FleetScreen())
        if self.start_fleet:
            self.backend.start()
        shown = ["read-only" if self.read_only else None,
                 f"metrics {self.metrics_url}" if self.metrics_url else None]
        if any(shown):
            self.sub_title = " · ".join(s for s in shown if s)
        tls = self.config.tls_ca_file is not None
        self.insecure = [] if tls else [s.key for s in self.backend
                                         if s.endpoint.kind == "tcp" and not s.endpoint.is_local]
        for key in self.insecure:
            self.log_for(key, "error", "security", "QMP over TCP to a non-loopback host has no authentication: "
                         "anyone who reaches it controls the VM; use [tls] in the config or an SSH tunnel")
        if self.insecure:
            self.notify(f"{len(self.insecure)} VM(s) over non-loopback TCP without TLS: QMP has no authentication",
                        severity="warning", timeout=15)
        # Once the fleet has connected, and every few minutes after, what is alive moves out of
        # the collector's sight: a full collection otherwise walks every session, client and
        # widget, and at 1000 VMs that froze the screen for 0.4-0.7 s every few seconds.
        self.set_timer(FREEZE_AFTER, self.freeze_heap)
        self.set_interval(REFREEZE_EVERY, self.freeze_heap)

    def freeze_heap(self) -> None:
        # Unfreeze first so that cycles that died since the last freeze are collected, not kept.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        if self._after_full_collection not in gc.callbacks:
            gc.callbacks.append(self._after_full_collection)

    @staticmethod
    def _after_full_collection(phase: str, info: dict[str, int]) -> None:
        # What survived a full collection is long-lived: freeze it too, so the next one walks
        # only what came since (the log records, memos and caches of a big fleet otherwise
        # made each take 100-350 ms). freeze_heap collects all of it every REFREEZE_EVERY.
        if phase == "stop" and info.get("generation") == 2:
            gc.freeze()

    async def on_unmount(self) -> None:
        if self._after_full_collection in gc.callbacks:
            gc.callbacks.remove(self._after_full_collection)
        self._unsubscribe()  # no screen is left to tell
        if self.autopilot is not None:
            self.autopilot.close()
        await self.backend.close()
        if self.recorder is not None:
            self.recorder.close()  # migrations still running end their recording with a summary

    # ---- backend to screen -------------------------------------------------

    def _on_backend(self, message: BackendMessage) -> None:
        """Called by the backend on our loop; must stay cheap.

        Whatever context the backend calls from (one started before the console, a libvirt
        callback), this runs as the app: its timers and notifications need Textual's active app.
        """
        if active_app.get(None) is not self:
            token = active_app.set(self)
            try:
                self._on_backend_message(message)
            finally:
                active_app.reset(token)
            return
        self._on_backend_message(message)

    def _on_backend_message(self, message: BackendMessage) -> None:
        self._dirty.add(message.vm)
        if self.recorder is not None:
            self._record(message)
        if isinstance(message, ActionResult) and not message.ok:
            hint = hint_for(str(message.result))
            who = "libvirt" if message.command.startswith("virDomain") else "QEMU"
            self.notify(f"{message.vm}: {who} refused {message.command}: {message.result}"
                        + (f"\n→ {hint}" if hint else ""), severity="error", timeout=10)
        big = len(self.backend) > 50
        if not big and isinstance(message, VMEvent) and message.event in ("MIGRATION", "SHUTDOWN"):
            self.flush()  # status changes go out at once: they are what operators wait for
            return
        if not self._flush_scheduled:
            # A big fleet repaints less often: its samples arrive once a second anyway, and each
            # repaint re-renders every visible cell of the table.
            delay = FLUSH_DELAY if not big else 0.25 if len(self.backend) <= 200 else 1.0
            self.set_timer(delay, self.flush)
            self._flush_scheduled = True  # after: a timer that could not be set must not stop every repaint

    def _record(self, message: BackendMessage) -> None:
        """Write the message to the migration's recording; show the summary when a migration ends."""
        session = self.backend.get(message.vm)
        finished = self.recorder.observe(session, message) if session is not None else None
        if finished is not None:
            self.log_for(finished.vm, "event", "summary", finished.text.split(": ", 1)[-1])
            if len(self.backend) <= 50:  # a big fleet's ends are in each VM's log, not a flood of toasts
                where = f"\nrecorded in {finished.path}" if finished.path else ""
                self.notify(finished.text + where, title="migration ended", timeout=15)
        error = self.recorder.error
        if error and error != self._record_error:
            self._record_error = error
            self.notify(error, title="recording", severity="warning", timeout=15)

    @keep_running
    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._dirty:
            return
        changed, self._dirty = frozenset(self._dirty), set()
        if self.screen_stack:  # empty while the app shuts down
            self.screen.post_message(FleetChanged(changed))

    # ---- what the operator acts on -----------------------------------------

    def operator_takes_over(self, key: str, what: str) -> None:
        """The operator's own control on a VM on autopilot: it lets go first (the operator wins)."""
        if self.autopilot is not None and self.autopilot.engaged(key):
            self.autopilot.release(key, f"the operator took over ({what})")
            self.notify(f"{key}: autopilot off: you took over ({what})", timeout=8)

    def handle(self, key: str | None) -> VMHandle | None:
        return None if key is None else self.backend.get(key)

    def log_for(self, key: str, kind: str, name: str, detail: str) -> None:
        session = self.handle(key)
        if session is not None:
            session.log(kind, name, detail)
            self._dirty.add(key)
            self.flush()

    def run_control(self, key: str, what: str, work: Callable[[], Awaitable[Any]], done: str | None = None) -> None:
        """Run a control in a worker; report QEMU's sentence or migtui's refusal."""

        async def runner() -> None:
            try:
                await work()
            except QMPRefused:
                pass  # the session already logged QEMU's sentence and the backend message notified it
            except (InputError, BackendError) as err:
                self.notify(f"{key}: {err}", title=what, severity="error", timeout=10)
                self.log_for(key, "error", what, str(err))
            except (OSError, EOFError) as err:
                self.notify(f"{key}: connection lost during {what}: {err}", severity="error", timeout=10)
                self.log_for(key, "error", what, f"connection lost: {err}")
            else:
                if done:
                    self.notify(done, title=key, timeout=4)

        self.run_worker(runner(), group=f"action-{key}", exit_on_error=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.read_only and action in CONTROL_ACTIONS:
            return False
        return True

    # ---- app-wide actions --------------------------------------------------

    def action_help(self) -> None:
        from migtui.ui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_next_theme(self) -> None:
        names = list(self.migtui_themes) or ["textual-dark"]
        index = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(index + 1) % len(names)]
        self.notify(f"theme: {self.theme}", timeout=2)

    def action_screenshot(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.save_screenshot(f"migtui-{stamp}.svg", str(self.screenshot_dir))
        self.notify(f"saved {path}", title="screenshot", timeout=5)

    def action_poll_now(self) -> None:
        self.backend.poll_all()

    def plot_colors(self) -> dict[str, str]:
        entry = self.migtui_themes.get(self.theme)
        return dict(entry.plot) if entry else {}

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding, title, help_text in COMMANDS:
            if self.read_only and binding in CONTROL_ACTIONS:
                continue
            target = screen if hasattr(screen, f"action_{binding}") else self
            if hasattr(target, f"action_{binding}"):
                yield SystemCommand(title, help_text, getattr(target, f"action_{binding}"))


