"""The asyncio pieces the backends share: a flag a poll loop waits on with a timeout, safe to
cancel, and stopping a background task."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Wake", "stop_task"]


async def stop_task(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has ended, whatever it ended with."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class Wake:
    """A wake-up flag, and a wait for it with a timeout: one future and one timer per wait
    (a session's poll_now(), a backend's poll loop).

    Not asyncio.wait_for: on Python 3.11 it drops a cancellation that arrives
    as the event fires, and the session could then never be closed. Awaiting
    a plain future takes a cancellation as it comes, and costs no Task (the
    poll loop waits here once per poll interval, for every VM). One waiter at
    a time: the poll loop, or _run() between reconnects.
    """

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    async def wait(self, timeout: float) -> None:
        """Return when set() is called, or after `timeout` seconds."""
        if self._flag:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._waiter is waiter:
                self._waiter = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
