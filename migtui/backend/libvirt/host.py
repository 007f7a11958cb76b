"""One libvirt host: its watch connection, its state, and reconnection with backoff.

Every libvirt call on the watch connection runs on the host's one worker thread, in order
(never on the event loop: a blocking call there stalls events and keepalives). migtui's own
migrations get a thread and a connection each (virDomainMigrateToURI3 blocks for the whole
migration). The connection's close callback and keepalive tell a dead libvirtd within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from migtui.backend.libvirt.target import LibvirtTarget
from migtui.backend.libvirt.threads import SerialWorker
from migtui.backend.wake import Wake, stop_task
from migtui.model.vm import Connection

if TYPE_CHECKING:
    from migtui.backend.libvirt.backend import LibvirtBackend

__all__ = ["LibvirtHost", "HostLost", "describe_libvirt_error"]

# A libvirtd silent this long (keepalive: every 5 s, 3 missed) is closed by libvirt itself.
KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 3
CLOSE_TIMEOUT = 2.0  # seconds a closing connection may take before migtui lets go of it


class HostLost(Exception):
    """The host's connection failed; str() is the one line to show."""


class LibvirtHost:
    def __init__(self, backend: LibvirtBackend, target: LibvirtTarget) -> None:
        self.backend = backend
        self.target = target
        parts = urlsplit(target.uri)
        # Until libvirt names the host: the operator's NAME=, else the URI's host.
        self.label = target.label or parts.hostname or "localhost"
        self.connection = Connection.CONNECTING
        self.reason: str | None = None
        self.hostname: str | None = None
        self.qemu_version: str | None = None
        self.libvirt_version: str | None = None
        # For placement (a drain): read as it connects; None where libvirt will not say.
        self.free_memory: int | None = None
        self.machine_types: frozenset[str] | None = None
        self.conn: Any = None  # libvirt.virConnect, the watch connection
        self.connected_event = asyncio.Event()
        self._lost = asyncio.Event()
        self._worker = SerialWorker(f"migtui-libvirt-{self.label}")
        # The jobs the worker samples, as (LibvirtDomain, Placement) pairs: set on the loop
        # (LibvirtBackend._plan), read by the worker's tick; a tuple, replaced whole.
        self.sampled: tuple[Any, ...] = ()
        # Batches sampled and not yet handed to the loop: the worker thread's alone.
        self.pending: list[tuple[Any, list[Any], float]] = []
        # Set on the loop with a kick that wants its batch shown at once (a job appeared, a refresh
        # asked for): the next batch goes over then, not with the next second's; cleared by the worker.
        self.hand_over_next = False
        self._task: asyncio.Task[None] | None = None
        self._wake = Wake()
        self._closing = False

    @property
    def connected(self) -> bool:
        return self.connection == Connection.CONNECTED

    @property
    def uri(self) -> str:
        return self.target.uri

    def __repr__(self) -> str:
        return f"<LibvirtHost {self.label} {self.connection}>"

    # ---- calls ---------------------------------------------------------------

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn on this host's worker thread; libvirt's errors come back as they are."""
        return await self._worker.call(fn, *args)

    def sample_every(self, tick: Callable[[], float | None]) -> None:
        """Run tick() on the worker thread between calls, again after the seconds it returns."""
        self._worker.every(tick)

    def kick_sampling(self, at_once: bool = True) -> None:
        """Sample now; at_once: hand that batch to the loop at once, not with the next second's."""
        if at_once:
            self.hand_over_next = True
        self._worker.kick()

    # ---- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"migtui-libvirt-{self.label}")

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        await stop_task(task)
        conn, self.conn = self.conn, None
        if conn is not None:
            # Bounded: a silent libvirtd must not hold up quitting (keepalive ends it within 15 s anyway).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call(_close_connection, conn), CLOSE_TIMEOUT)
        self._worker.stop()

    def retry_now(self) -> None:
        self._wake.set()

    def lost(self, reason: str) -> None:
        """The watch connection broke (close callback, keepalive, a failed call): reconnect."""
        if self.connected:
            self._set_state(Connection.DISCONNECTED, reason)
        self._lost.set()

    async def _run(self) -> None:
        backoff_first = 0.5
        backoff = backoff_first
        while not self._closing:
            try:
                self._lost.clear()
                await self.backend.connect_host(self)
                backoff = backoff_first
                self._set_state(Connection.CONNECTED, None)
                await self._lost.wait()
            except asyncio.CancelledError:
                raise
            except HostLost as err:
                self._set_state(Connection.DISCONNECTED, str(err))
            except Exception as err:  # the console outlives any one host's trouble
                self._set_state(Connection.DISCONNECTED, describe_libvirt_error(err))
            conn, self.conn = self.conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.call(_close_connection, conn), CLOSE_TIMEOUT)
            if self._closing:
                return
            self._wake.clear()
            await self._wake.wait(backoff)  # retry_now() cuts it short
            backoff = min(backoff * 2, self.backend.options.backoff_max)

    def _set_state(self, state: Connection, reason: str | None) -> None:
        if state == Connection.CONNECTED:
            self.connected_event.set()
        else:
            self.connected_event.clear()
        if self.connection == state and self.reason == reason:
            return
        self.connection, self.reason = state, reason
        self.backend.host_changed(self)


def _close_connection(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.unregisterCloseCallback()
    with contextlib.suppress(Exception):
        conn.close()


def describe_libvirt_error(err: BaseException) -> str:
    """One line for what libvirt (or ssh under it) said: libvirtd gone, authentication refused, ..."""
    text = ""
    get = getattr(err, "get_error_message", None)
    if callable(get):
        text = get() or ""
    text = " ".join((text or str(err) or type(err).__name__).split())
    lowered = text.lower()
    if "connection refused" in lowered or "no such file or directory" in lowered and "socket" in lowered:
        why = "libvirtd unreachable (nothing listens)"
    elif "authentication" in lowered or "permission denied" in lowered or "access denied" in lowered:
        why = "authentication refused"
    elif "host key verification failed" in lowered or "publickey" in lowered:
        why = "ssh refused the key (is the key in ssh-agent or ~/.ssh, and the host key known?)"
    elif "name or service not known" in lowered or "could not resolve" in lowered:
        why = "unknown host"
    elif "end of file" in lowered or "socket is closed" in lowered or "broken pipe" in lowered:
        why = "libvirtd gone"
    else:
        why = None
    text = text if len(text) <= 160 else text[:159] + "…"
    return f"{why}: {text}" if why else text
