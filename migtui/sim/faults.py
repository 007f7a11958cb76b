"""Faults on demand: a frozen or slow monitor, a dropped connection, garbage or an
over-long line on the wire, a failed migration, a QEMU that dies.

Tests and demos call these on a SimVM; the monitor (migtui/sim/transport.py) obeys them.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from migtui.sim.model import PAGE, Migration

if TYPE_CHECKING:
    from migtui.sim.fleet import SimFleet
    from migtui.sim.vm import SimVM

DEFAULT_GARBAGE = b"\x00\xffthis is not JSON }{\r\n"
OVERLONG_LINE = 10 * 2**20 + PAGE  # just over the 10 MiB read buffer of qemu.qmp and libvirt


class FaultSwitches:
    """SimVM's fault switches.  They act on the monitor's state (``_init_monitor``) and on the
    VM's migration through ``sync`` and ``_apply``."""

    fleet: SimFleet
    alive: bool
    migration: Migration | None
    incoming_source: SimVM | None
    incoming_uri: str | None
    _run_state: str

    def freeze(self, seconds: float | None = None) -> None:
        """Stop answering (commands and events are held) for ``seconds``, or until thaw()."""
        self._thawed.clear()
        if self._thaw_timer is not None:
            self._thaw_timer.cancel()
        if seconds is not None:
            self._thaw_timer = asyncio.get_running_loop().call_later(seconds, self.thaw)

    def thaw(self) -> None:
        self._thaw_timer = None
        held, self._held = self._held, []
        for data in held:
            self._write(data)
        self._thawed.set()

    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    def drop_connection(self) -> None:
        """Cut the current client off (as if the socket broke)."""
        if self._writer is not None:
            self._writer.transport.abort()

    def send_garbage(self, data: bytes = DEFAULT_GARBAGE) -> None:
        """Write raw bytes to the client now, or right after the next client's greeting."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)
        else:
            self._pending_raw.append(data)

    def send_long_line(self, size: int = OVERLONG_LINE) -> None:
        """An over-long line: ``size`` bytes with no newline (default: past 10 MiB buffers)."""
        self.send_garbage(b'{"event": "' + b"x" * max(0, size - 11))

    def set_reply_delay(self, seconds: float) -> None:
        """Answer every command ``seconds`` late (events are not delayed)."""
        self.reply_delay = seconds

    def fail_migration(self, desc: str = "Unable to write to socket: Connection reset by peer") -> None:
        """Fail the running migration now (status failed; 7.2 reports error-desc)."""
        self.sync()
        if self.migration is not None:
            self._apply(self.migration.fail(self.fleet.now(), desc))
        elif self.incoming_source is not None:
            self.incoming_source.fail_migration(desc)

    def break_stream(self, desc: str = "Channel error: Input/output error") -> None:
        """The migration stream breaks (a network fault), seen from either end: in post-copy both
        ends park in postcopy-paused (QEMU 3.0+), to be recovered; before it, it fails."""
        self.sync()
        source = self.incoming_source if self.migration is None else self
        m = source.migration if source is not None else None
        if source is None or m is None:
            return
        if m.status in ("postcopy-active", "postcopy-recover"):
            source._apply(m.pause_postcopy(self.fleet.now(), desc))
        else:
            source.fail_migration("Unable to write to socket: Connection reset by peer")

    def kill(self) -> None:
        """The QEMU process dies: monitor gone, no SHUTDOWN event, socket removed."""
        if not self.alive:
            return
        self.sync()
        self._die()
        if self.migration is not None and self.migration.running:
            self._apply(self.migration.fail(self.fleet.now(), "killed"))
        source, self.incoming_source = self.incoming_source, None
        if source is not None:  # the source sees its connection break
            source.fail_migration("Unable to write to socket: Broken pipe")

    def _die(self) -> None:
        self.alive = False
        self._run_state = "shutdown"
        self._shutdown_monitor()
        if self.incoming_uri is not None:
            self.fleet.stop_listening(self)
