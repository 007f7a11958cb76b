"""Pytest fixtures for tests that need real QEMU VMs from migtui.lab.

Import into tests/conftest.py::

    from lab_fixtures import lab_pair, lab_pair_disk, qemu_required  # noqa: F401

Every fixture skips the test (with the reason) when qemu-system-x86_64 is not
installed. The VMs run under TCG so dirty rates are predictable.

The VMs run the system's QEMU (Debian's 7.2 here). A test marked ``@on_both_qemus``
runs twice, on it and on QEMU 10.0 (``$MIGTUI_QEMU10``, which ``.ci/qemu10`` installs and
``.ci/run`` exports); without 10.0 that half skips, or fails under MIGTUI_REQUIRE_QEMU.

The libvirt tests run on private libvirt hosts (migtui.lab.libvirt_hosts): ``libvirt_required`` and
``libvirt_hosts`` skip with the reason without root, libvirtd or libvirt-python, and fail under
MIGTUI_REQUIRE_LIBVIRT (CI sets it, after .ci/libvirt installed them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from migtui.lab import QEMU_MISSING_MESSAGE, Lab, QemuVM, find_qemu
from migtui.lab.libvirt_hosts import LibvirtHosts, missing_for_lab

if find_qemu() is None and os.environ.get("MIGTUI_REQUIRE_QEMU"):
    # CI sets this: there, a missing QEMU is a failure, never a silent skip.
    raise RuntimeError(f"MIGTUI_REQUIRE_QEMU is set but {QEMU_MISSING_MESSAGE}")

qemu_required = pytest.mark.skipif(find_qemu() is None, reason=QEMU_MISSING_MESSAGE)
"""Mark a test (or ``pytestmark``) that needs qemu-system-x86_64."""


def skip_without_qemu() -> None:
    """Skip the running test when QEMU is missing (for fixtures and helpers)."""
    if find_qemu() is None:
        pytest.skip(QEMU_MISSING_MESSAGE)


QEMU10_ENV = "MIGTUI_QEMU10"
QEMU10_MISSING_MESSAGE = (
    "QEMU 10.0 not found: run .ci/qemu10 (once as root) and export MIGTUI_QEMU10=<the path it prints>"
)


def find_qemu10() -> str | None:
    """$MIGTUI_QEMU10, else where .ci/qemu10 puts it by default; None when neither is there."""
    path = os.environ.get(QEMU10_ENV)
    if path:
        if not os.access(path, os.X_OK):
            pytest.fail(f"{QEMU10_ENV}={path}: no such executable")  # asked for, and wrong
        return path
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    default = cache / "migtui" / "qemu-10.0" / "bin" / "qemu-system-x86_64"
    return str(default) if os.access(default, os.X_OK) else None


on_both_qemus = pytest.mark.parametrize("qemu", ["7.2", "10.0"], indirect=True)
"""Run a test on the system's QEMU (7.2) and on QEMU 10.0: its lab fixtures and ``qemu`` get each."""


def require_qemu10() -> str:
    """QEMU 10.0's path; else the running test skips (fails under MIGTUI_REQUIRE_QEMU)."""
    path = find_qemu10()
    if path is None:
        if os.environ.get("MIGTUI_REQUIRE_QEMU"):
            pytest.fail(f"MIGTUI_REQUIRE_QEMU is set but {QEMU10_MISSING_MESSAGE}")
        pytest.skip(QEMU10_MISSING_MESSAGE)
    return path


@pytest.fixture
def qemu(request: pytest.FixtureRequest) -> str | None:
    """The binary the lab fixtures run: None for the system's QEMU, or QEMU 10.0's path."""
    if getattr(request, "param", "7.2") == "7.2":
        skip_without_qemu()
        return None
    return require_qemu10()


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


@contextlib.asynccontextmanager
async def _pair(disk: bool, qemu: str | None, **paced: int) -> AsyncIterator[tuple[QemuVM, QemuVM, Lab]]:
    """A started TCG lab pair, stopped afterwards: (running source, destination, lab)."""
    skip_without_qemu()
    lab = Lab(pairs=1, disk=disk, accel="tcg", qemu=qemu, **paced)
    await lab.start()
    try:
        yield lab.sources[0], lab.destinations[0], lab
    finally:
        await lab.stop()


@pytest_asyncio.fixture
async def lab_pair(qemu: str | None) -> AsyncIterator[tuple[QemuVM, QemuVM, Lab]]:
    """A fresh TCG pair: (running source, ``-incoming defer`` destination, lab)."""
    async with _pair(disk=False, qemu=qemu) as pair:
        yield pair


@pytest_asyncio.fixture
async def lab_pair_disk(qemu: str | None) -> AsyncIterator[tuple[QemuVM, QemuVM, Lab]]:
    """Like ``lab_pair``, but each VM has a 64 MiB qcow2 drive with id ``disk0``."""
    async with _pair(disk=True, qemu=qemu) as pair:
        yield pair


@pytest_asyncio.fixture
async def lab_pair_paced(qemu: str | None) -> AsyncIterator[tuple[QemuVM, QemuVM, Lab]]:
    """Like ``lab_pair``, but the guest dirties ~19 MiB/s at most (PACED_DIRTY_BYTES_PER_S),
    whatever the host's load: a migration at a bandwidth well above that converges over passes."""
    async with _pair(disk=False, qemu=qemu, page_delay=PACED_PAGE_DELAY, icount_shift=PACED_ICOUNT_SHIFT) as pair:
        yield pair


LIBVIRT_PYTHON_MISSING_MESSAGE = (
    "libvirt-python not installed: .venv/bin/pip install -e '.[libvirt]' "
    "(building it needs Debian's libvirt-dev pkg-config gcc python3-dev)"
)


def libvirt_missing() -> str | None:
    """None when the libvirt tests can run here, else one line: what is missing and what to install."""
    missing = missing_for_lab()
    if missing is None:
        try:
            import libvirt  # noqa: F401
        except ImportError:
            missing = LIBVIRT_PYTHON_MISSING_MESSAGE
    return missing


def require_libvirt() -> None:
    """Skip the running test when the libvirt lab cannot run here; fail instead under MIGTUI_REQUIRE_LIBVIRT."""
    missing = libvirt_missing()
    if missing is not None:
        if os.environ.get("MIGTUI_REQUIRE_LIBVIRT"):
            pytest.fail(f"MIGTUI_REQUIRE_LIBVIRT is set but {missing}")
        pytest.skip(missing)


@pytest.fixture
def libvirt_required() -> None:
    """Use (``pytestmark = pytest.mark.usefixtures("libvirt_required")``) on tests that need the libvirt lab."""
    require_libvirt()


@pytest.fixture(scope="module")
def libvirt_hosts() -> Iterator[LibvirtHosts]:
    """Two private libvirt hosts (host1, host2), shared by a module's tests and removed after its last one.

    A test removes the domains it made (``destroy_guest``) and leaves both libvirtds running.
    """
    require_libvirt()
    with LibvirtHosts(2) as hosts:
        yield hosts


__all__ = [
    "PACED_DIRTY_BYTES_PER_S",
    "QEMU10_MISSING_MESSAGE",
    "find_qemu10",
    "libvirt_hosts",
    "libvirt_missing",
    "libvirt_required",
    "lab_pair",
    "lab_pair_disk",
    "lab_pair_paced",
    "on_both_qemus",
    "pid_alive",
    "qemu",
    "qemu_required",
    "require_libvirt",
    "require_qemu10",
    "skip_without_qemu",
    "wait_until",
]
