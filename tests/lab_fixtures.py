"""Pytest fixtures for tests that need real QEMU VMs from migtui.lab.

Import into tests/conftest.py::

    from lab_fixtures import lab_pair, lab_pair_disk, qemu_required  # noqa: F401

Every fixture skips the test (with the reason) when qemu-system-x86_64 is not
installed. The VMs run under TCG so dirty rates are predictable.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from migtui.lab import QEMU_MISSING_MESSAGE, Lab, QemuVM, find_qemu

if find_qemu() is None and os.environ.get("MIGTUI_REQUIRE_QEMU"):
    # CI sets this: there, a missing QEMU is a failure, never a silent skip.
    raise RuntimeError(f"MIGTUI_REQUIRE_QEMU is set but {QEMU_MISSING_MESSAGE}")

qemu_required = pytest.mark.skipif(find_qemu() is None, reason=QEMU_MISSING_MESSAGE)
"""Mark a test (or ``pytestmark``) that needs qemu-system-x86_64."""


def skip_without_qemu() -> None:
    """Skip the running test when QEMU is missing (for fixtures and helpers)."""
    if find_qemu() is None:
        pytest.skip(QEMU_MISSING_MESSAGE)


async def wait_until(
    condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.025
) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() >= deadline:
            pytest.fail(f"condition not met within {timeout:g} s: {condition!r}")
        await asyncio.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` runs; a zombie (dead, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    # The state follows the parenthesised command name, which may hold spaces.
    state = stat[stat.rindex(b")") + 2 :][:1]
    return state not in (b"Z", b"X")


# The paced guest: under -icount shift=7 (128 ns of virtual time per instruction, held to
# the host's clock) it spends PACED_PAGE_DELAY + 6 instructions on each page, so it dirties
# 1e9 / (1606 * 128) ~ 4860 pages/s, ~19 MiB/s, or less when the host is too busy to keep up;
# never more. (Shift 10 would do too, but SeaBIOS alone then takes ~6 s to boot.)
PACED_ICOUNT_SHIFT = 7
PACED_PAGE_DELAY = 1600
PACED_DIRTY_BYTES_PER_S = 1e9 / ((PACED_PAGE_DELAY + 6) * 2**PACED_ICOUNT_SHIFT) * 4096


async def _start_pair(disk: bool, **paced: int) -> tuple[QemuVM, QemuVM, Lab]:
    skip_without_qemu()
    lab = Lab(pairs=1, disk=disk, accel="tcg", **paced)
    await lab.start()
    return lab.sources[0], lab.destinations[0], lab


@pytest_asyncio.fixture
async def lab_pair() -> AsyncIterator[tuple[QemuVM, QemuVM, Lab]]:
    """A fresh TCG pair: (running source, ``-incoming defer`` destination, lab)."""
    source, destination, lab = await _start_pair(disk=False)
    try:
        yield source, destination, lab
    finally:
        await lab.stop()


@pytest_asyncio.fixture
async def lab_pair_disk() -> AsyncIterator[tuple[QemuVM, QemuVM, Lab]]:
    """Like ``lab_pair``, but each VM has a 64 MiB qcow2 drive with id ``disk0``."""
    source, destination, lab = await _start_pair(disk=True)
    try:
        yield source, destination, lab
    finally:
        await lab.stop()


@pytest_asyncio.fixture
async def lab_pair_paced() -> AsyncIterator[tuple[QemuVM, QemuVM, Lab]]:
    """Like ``lab_pair``, but the guest dirties ~19 MiB/s at most (PACED_DIRTY_BYTES_PER_S),
    whatever the host's load: a migration at a bandwidth well above that converges over passes."""
    source, destination, lab = await _start_pair(
        disk=False, page_delay=PACED_PAGE_DELAY, icount_shift=PACED_ICOUNT_SHIFT)
    try:
        yield source, destination, lab
    finally:
        await lab.stop()


__all__ = [
    "PACED_DIRTY_BYTES_PER_S",
    "lab_pair",
    "lab_pair_disk",
    "lab_pair_paced",
    "pid_alive",
    "qemu_required",
    "skip_without_qemu",
    "wait_until",
]
