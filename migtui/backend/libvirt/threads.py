"""Daemon threads for libvirt's blocking calls, with results as asyncio futures.

Not concurrent.futures: its workers are joined at interpreter exit, so a call stuck on a
silent libvirtd, or a virDomainMigrateToURI3 that runs for the whole migration, would keep
migtui from quitting. A daemon thread never holds the process: `q` quits at once, and the
migration goes on under libvirt, which drives it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, Callable

from migtui.backend.errors import NotConnected

__all__ = ["SerialWorker", "WorkerStopped", "in_daemon_thread"]


class WorkerStopped(NotConnected):
    """A call after the host's connection was closed (the backend was closed)."""


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _run(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], fn: Callable[..., Any], args: tuple) -> None:
    try:
        value, ok = fn(*args), True
    except BaseException as err:  # handed to the awaiting side as it is
        value, ok = err, False
    _answer(loop, future, ok, value)


def _answer(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, ok, value)
    except RuntimeError:
        pass  # the loop has closed: nobody waits any more


_TICK = object()  # a queue entry: run the periodic tick now
# Ticks this close together sleep between them: a call then waits at most this long.
SLEEP_BELOW = 0.1


class SerialWorker:
    """One daemon thread running calls in order: a host's watch connection, one call at a time.

    Between calls it can run a periodic tick of its own (a host's job sampling): the thread
    sleeps and samples as a bare loop would, and wakes the event loop once per batch, where
    a poll task on the loop cost four loop iterations per sample (timer, task, result, task).
    """

    def __init__(self, name: str) -> None:
        self._stopped = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._tick: Callable[[], float | None] | None = None
        self._kicked = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_tick: float | None = None
        slept = False  # the tick's pause was slept through: the next tick is due now
        while True:
            if slept and self._queue.empty():
                job = _TICK  # nothing came meanwhile (no timed wait, no Empty raised)
            else:
                timeout = None if next_tick is None else max(0.0, next_tick - time.monotonic())
                try:
                    job = self._queue.get(timeout=timeout)
                except queue.Empty:
                    job = _TICK
            if job is None:
                return
            if job is _TICK:
                self._kicked = False
                tick = self._tick
                pause = None if tick is None or self._stopped else tick()
                slept = pause is not None and pause <= SLEEP_BELOW
                if slept:
                    # Sampling fast: sleep as a bare loop does (a timed wait on the queue, and the
                    # Empty it raises, cost ~35 µs more per tick here); then what was queued meanwhile
                    # runs before the next tick.
                    time.sleep(pause)
                    pause = 0.0
                next_tick = None if pause is None else time.monotonic() + pause
                continue
            if self._stopped:
                loop, future, _, _ = job  # queued before stop(): never run, never left waiting
                _answer(loop, future, False, WorkerStopped("the connection was closed"))
                continue
            _run(*job)

    def every(self, tick: Callable[[], float | None]) -> None:
        """Run tick() on this thread now and then again after the seconds it returns, between
        calls, until it returns None; kick() starts it again."""
        self._tick = tick
        self.kick()

    def kick(self) -> None:
        """Run the tick now (once, however many kicks come before it runs)."""
        if not self._kicked and not self._stopped:
            self._kicked = True
            self._queue.put(_TICK)

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._stopped:
            future.set_exception(WorkerStopped("the connection was closed"))
        else:
            self._queue.put((loop, future, fn, args))
        return future

    def stop(self) -> None:
        """No more calls (they fail at once); the thread ends after the one it runs (or, stuck, with the process)."""
        self._stopped = True
        self._queue.put(None)


def in_daemon_thread(fn: Callable[..., Any], *args: Any, name: str = "migtui-libvirt") -> asyncio.Future[Any]:
    """fn(*args) on a daemon thread of its own; its result (or exception) as a future."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    threading.Thread(target=_run, args=(loop, future, fn, args), name=name, daemon=True).start()
    return future
