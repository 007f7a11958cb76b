"""The libvirt hosts' worker thread (migtui.backend.libvirt.threads.SerialWorker), without libvirt:
calls run in order between the ticks of its periodic sampling, fast ticks or slow, and stop()
fails what was queued instead of leaving it waiting."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lab_fixtures import wait_until
from migtui.backend.libvirt.threads import SLEEP_BELOW, SerialWorker, WorkerStopped


@pytest.mark.parametrize("pause", [SLEEP_BELOW / 2, SLEEP_BELOW * 3])  # the sleeping path and the timed wait
async def test_calls_run_between_ticks_in_order(pause):
    ticks: list[float] = []
    worker = SerialWorker("test-worker")
    try:
        worker.every(lambda: ticks.append(time.monotonic()) or pause)
        await wait_until(lambda: len(ticks) >= 2, 5)
        asked = time.monotonic()
        done = await asyncio.gather(*(worker.call(lambda i=i: (i, threading.current_thread().name)) for i in range(3)))
        assert [i for i, _ in done] == [0, 1, 2] and {name for _, name in done} == {"test-worker"}
        assert time.monotonic() - asked < pause + 1.0  # a call waits at most for the tick's pause
        seen = len(ticks)
        await wait_until(lambda: len(ticks) >= seen + 2, 5)  # and the ticks go on after it
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        assert min(gaps) >= pause * 0.9
    finally:
        worker.stop()


async def test_a_kick_restarts_a_stopped_tick_and_stop_fails_what_was_queued():
    ticks: list[int] = []
    worker = SerialWorker("test-worker")
    gate = threading.Event()
    worker.every(lambda: ticks.append(1) and None)  # None: sleep until kicked
    await wait_until(lambda: len(ticks) == 1, 5)
    worker.kick()
    await wait_until(lambda: len(ticks) == 2, 5)
    running = threading.Event()
    busy = worker.call(lambda: running.set() or gate.wait(5))  # holds the thread
    await wait_until(running.is_set, 5)
    queued = worker.call(lambda: "never")
    worker.stop()
    gate.set()
    assert await busy is True
    with pytest.raises(WorkerStopped):
        await queued
    with pytest.raises(WorkerStopped):
        await worker.call(lambda: "after stop")
