"""Every VM an operator watches: one session each, on one event loop."""

from __future__ import annotations

import asyncio
from typing import Iterable, Iterator

from migtui.model.endpoint import Endpoint
from migtui.backend.messages import Listener
from migtui.backend.qmp.session import SessionOptions, VMSession

__all__ = ["Fleet"]


class Fleet:
    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        listener: Listener | None = None,
        options: SessionOptions | None = None,
    ) -> None:
        self.sessions: dict[str, VMSession] = {}
        for endpoint in endpoints:
            self.add(endpoint, listener, options)

    def add(self, endpoint: Endpoint, listener: Listener | None = None, options: SessionOptions | None = None) -> VMSession:
        # Names are how operators and scripts point at VMs: keep them unique.
        key, n = endpoint.name, 2
        while key in self.sessions:
            key, n = f"{endpoint.name}-{n}", n + 1
        session = VMSession(endpoint, listener, options)
        session.key = key
        session.vm.name = key
        self.sessions[key] = session
        return session

    def start(self) -> None:
        for session in self.sessions.values():
            session.start()

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions.values()), return_exceptions=True)

    def get(self, name: str) -> VMSession | None:
        """By key, then by the name QEMU reported."""
        if name in self.sessions:
            return self.sessions[name]
        for session in self.sessions.values():
            if session.vm.name == name:
                return session
        return None

    def __iter__(self) -> Iterator[VMSession]:
        return iter(self.sessions.values())

    def __len__(self) -> int:
        return len(self.sessions)
