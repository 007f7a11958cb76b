"""Watching a headless MigtuiApp's frames: when each one goes out, and what it shows.

Textual's headless driver (run_test) composes every frame but skips turning it
into terminal bytes. `FrameProbe` wraps `App._display` so each frame is also
encoded (`render_segments`, what a real terminal run does next), which keeps the
CPU figures honest, and records the time of each frame. Callers can register a
condition; the first frame after which it holds resolves a future.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable


class FrameProbe:
    def __init__(self, app: Any, encode: bool = True) -> None:
        self.app = app
        self.encode = encode
        self.frames = 0
        self.last_frame: float | None = None
        self.on_frame: list[Callable[[float], None]] = []
        self._waits: list[tuple[Callable[[], bool], asyncio.Future[float]]] = []
        self._orig = app._display
        app._display = self._display  # instance attribute: Screen._compositor_refresh finds it first

    def _display(self, screen: Any, renderable: Any) -> None:
        self._orig(screen, renderable)
        if renderable is None:
            return
        if self.encode and self.app.is_headless and hasattr(renderable, "render_segments"):
            renderable.render_segments(self.app.console)
        now = time.perf_counter()
        self.frames += 1
        self.last_frame = now
        for callback in self.on_frame:
            callback(now)
        if self._waits:
            still = []
            for cond, fut in self._waits:
                if fut.done():
                    continue
                try:
                    ok = cond()
                except Exception:  # noqa: BLE001 - a condition on a screen that is changing
                    ok = False
                if ok:
                    fut.set_result(now)
                else:
                    still.append((cond, fut))
            self._waits = still

    def wait_for(self, cond: Callable[[], bool]) -> asyncio.Future[float]:
        """A future resolved with the perf_counter time of the first frame after which cond() holds."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waits.append((cond, fut))
        return fut
