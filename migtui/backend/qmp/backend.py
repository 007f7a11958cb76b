"""The QMP backend: every VM an operator gave as a QMP endpoint, one session each, on one event loop."""

from __future__ import annotations

import asyncio
from typing import Iterable

from migtui.backend.api import Backend, VMHandle
from migtui.backend.messages import Listener
from migtui.backend.qmp.session import SessionOptions, VMSession
from migtui.model.endpoint import Endpoint

__all__ = ["QMPBackend"]


class QMPBackend(Backend):
    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        listener: Listener | None = None,
        options: SessionOptions | None = None,
    ) -> None:
        super().__init__()
        self.options = options
        self.sessions: dict[str, VMSession] = {}
        if listener is not None:
            self.subscribe(listener)
        for endpoint in endpoints:
            self.add(endpoint, options)

    def add(self, endpoint: Endpoint, options: SessionOptions | None = None) -> VMSession:
        # Names are how operators and scripts point at VMs: keep them unique.
        key, n = endpoint.name, 2
        while key in self.sessions:
            key, n = f"{endpoint.name}-{n}", n + 1
        session = VMSession(endpoint, self.post, options or self.options)
        session.key = key
        session.vm.name = key
        session.assess_max_age = self.assess_max_age  # the fleet's size decides how often
        session.vm.tracker.host_lessons = self.lessons_for(endpoint.source_host)
        self.sessions[key] = session
        return session

    def handles(self) -> dict[str, VMHandle]:
        return self.sessions  # type: ignore[return-value]  # every VMSession is a VMHandle

    def get(self, name: str) -> VMSession | None:  # type: ignore[override]
        return super().get(name)  # type: ignore[return-value]

    def start(self) -> None:
        for session in self.sessions.values():
            session.start()

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.sessions.values()), return_exceptions=True)

    def __iter__(self):  # -> Iterator[VMSession]
        return iter(self.sessions.values())
