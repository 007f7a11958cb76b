"""A recording as a read-only backend: the VM as it was at the playhead.

The replay view, the demo and the console's tests read a recording through the same
interface as a live VM (migtui.backend.api). Nothing talks to QEMU: every control says
that a recording cannot be steered. The playhead (Playback) moves on by the wall clock at a
speed, or by seeks; each move feeds the recorded samples, events and settings up to it
(migtui.record.replay.Cursor) and tells subscribers which VM changed.
"""

from __future__ import annotations

import time

from migtui.backend.api import Backend, Features, VMHandle
from migtui.backend.messages import VMUpdated
from migtui.record.replay import Cursor, Recording

__all__ = ["Playback", "ReplayBackend", "ReplayHandle", "SPEEDS", "SEEK_SECONDS", "CANNOT_STEER"]

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
SEEK_SECONDS = 10.0
CANNOT_STEER = "a recording cannot be steered"
_FEATURES = Features(why_not=CANNOT_STEER)


class ReplayHandle(VMHandle):
    """One recorded VM; every control raises ControlRefused with CANNOT_STEER."""

    def __init__(self, key: str, cursor: Cursor) -> None:
        self.key = key
        self.cursor = cursor
        self.vm = cursor.vm
        self.endpoint = cursor.vm.endpoint

    @property
    def connected(self) -> bool:
        return False  # nothing to reach: controls refuse before they try

    @property
    def features(self) -> Features:
        return _FEATURES


class Playback:
    """A recording, a cursor over it and a playhead: what a replay view plays (ReplayApp, the demo)."""

    def __init__(self, recording: Recording, *, speed: float = 1.0, paused: bool = False,
                 at_end: bool = False) -> None:
        self.recording = recording
        self.cursor = Cursor(recording)
        self.speed = min(SPEEDS, key=lambda s: abs(s - speed))
        self.paused = paused or at_end
        self.playhead = self.cursor.end if at_end else self.cursor.start
        self._last_tick = time.monotonic()
        self.on_move = None  # called with whether the VM changed, after each move (the backend's post)
        self.cursor.seek(self.playhead)

    @property
    def at_end(self) -> bool:
        return self.playhead >= self.cursor.end

    def restart_clock(self) -> None:
        """Measure the next tick from now (a view that starts playing later)."""
        self._last_tick = time.monotonic()

    def tick(self) -> bool:
        """Move on by the wall-clock time since the last tick, at the speed; True if the VM changed."""
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        if self.paused:
            return False
        target = self.playhead + elapsed * self.speed
        if target >= self.cursor.end:
            target = self.cursor.end
            self.paused = True  # stop at the end; space plays again from the start
        return self.move(target)

    def move(self, target: float) -> bool:
        self.playhead = min(max(target, self.cursor.start), self.cursor.end)
        changed = self.cursor.seek(self.playhead)
        if changed and self.on_move is not None:
            self.on_move()
        return changed

    def toggle_pause(self) -> bool:
        self._last_tick = time.monotonic()
        if self.paused and self.at_end:
            self.paused = False
            return self.move(self.cursor.start)
        self.paused = not self.paused
        return self.move(self.playhead)

    def seek(self, seconds: float) -> bool:
        return self.move(self.playhead + float(seconds))

    def slower(self) -> bool:
        self.speed = SPEEDS[max(0, SPEEDS.index(self.speed) - 1)]
        return self.move(self.playhead)

    def faster(self) -> bool:
        self.speed = SPEEDS[min(len(SPEEDS) - 1, SPEEDS.index(self.speed) + 1)]
        return self.move(self.playhead)

    def to_start(self) -> bool:
        return self.move(self.cursor.start)

    def to_end(self) -> bool:
        return self.move(self.cursor.end)


class ReplayBackend(Backend):
    """Recorded VMs, each at its own playhead; read-only."""

    read_only = CANNOT_STEER

    def __init__(self, playbacks: list[Playback]) -> None:
        super().__init__()
        self.playbacks: dict[str, Playback] = {}
        self._handles: dict[str, VMHandle] = {}
        for playback in playbacks:
            name, key, n = playback.cursor.vm.name, playback.cursor.vm.name, 2
            while key in self._handles:  # two recordings of one VM: keep keys unique
                key, n = f"{name}-{n}", n + 1
            self.playbacks[key] = playback
            self._handles[key] = ReplayHandle(key, playback.cursor)
            playback.on_move = self._moved(key)

    @classmethod
    def of(cls, recording: Recording, **playback) -> "ReplayBackend":
        return cls([Playback(recording, **playback)])

    def handles(self) -> dict[str, VMHandle]:
        return self._handles

    def _moved(self, key: str):
        def post() -> None:
            vm = self._handles[key].vm
            vm.refresh_assessment(self.assess_max_age())  # once per move, however many samples it fed
            last = vm.sample
            self.post(VMUpdated(key, "sample", sample=last))

        return post

    def tick(self) -> bool:
        """Move every playhead on by the wall clock; True if any VM changed."""
        return any([playback.tick() for playback in self.playbacks.values()])
