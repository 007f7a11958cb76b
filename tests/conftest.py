"""Shared fixtures. Real-QEMU fixtures live in lab_fixtures.py and skip with a reason without QEMU."""

from __future__ import annotations

import contextlib
import os
import tempfile

# Tests never read the developer's config nor write to their state directory (audit log, error log);
# subprocesses inherit these.
_STATE = tempfile.mkdtemp(prefix="migtui-test-state-")
os.environ["XDG_STATE_HOME"] = _STATE
os.environ["MIGTUI_CONFIG"] = os.path.join(_STATE, "no-config.toml")
os.environ.pop("MIGTUI_READ_ONLY", None)
os.environ.pop("MIGTUI_AUDIT", None)
os.environ.pop("MIGTUI_QEMU", None)  # the lab fixtures choose their QEMU themselves
from collections.abc import AsyncIterator, Callable

import pytest_asyncio

from lab_fixtures import (  # noqa: F401
    lab_pair, lab_pair_disk, libvirt_hosts, libvirt_required, pid_alive, qemu, qemu_required, wait_until,
)
from migtui.model.endpoint import parse_endpoint
from migtui.backend.messages import BackendMessage
from migtui.backend.qmp.session import SessionOptions, VMSession


@pytest_asyncio.fixture
async def open_session() -> AsyncIterator[Callable[..., VMSession]]:
    """open_session(endpoint, **SessionOptions) -> a started session, closed after the test."""
    sessions: list[VMSession] = []

    def make(endpoint: str, messages: list[BackendMessage] | None = None, **options) -> VMSession:
        listener = messages.append if messages is not None else None
        session = VMSession(parse_endpoint(endpoint), listener, SessionOptions(**options))
        session.start()
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        with contextlib.suppress(Exception):
            await session.close()
