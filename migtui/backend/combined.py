"""Several backends as one: QMP endpoints and libvirt hosts, mixed on one command line.

Each handle stays its backend's; this only merges the lists, the messages and the lifecycles,
so the console, the recorder and the metrics keep talking to one Backend.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from migtui.backend.api import Backend, Destination, HostView, VMHandle

__all__ = ["CombinedBackend", "combine"]


class CombinedBackend(Backend):
    def __init__(self, backends: Sequence[Backend]) -> None:
        super().__init__()
        self.backends = list(backends)
        for backend in self.backends:
            backend.subscribe(self.post)
        why = {b.read_only for b in self.backends}
        self.read_only = why.pop() if len(why) == 1 else None

    def handles(self) -> dict[str, VMHandle]:
        merged: dict[str, VMHandle] = {}
        for backend in self.backends:
            for key, handle in backend.handles().items():
                merged.setdefault(key, handle)  # a libvirt domain named like a QMP endpoint: the first wins
        return merged

    def start(self) -> None:
        for backend in self.backends:
            backend.start()

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends), return_exceptions=True)

    def poll_all(self) -> None:
        for backend in self.backends:
            backend.poll_all()

    def hosts(self) -> list[HostView]:
        return [h for b in self.backends for h in b.hosts()]

    def owner(self, handle: VMHandle) -> Backend | None:
        return next((b for b in self.backends if handle.key in b.handles()
                     and b.handles()[handle.key] is handle), None)

    def waiting(self, source: VMHandle) -> list[VMHandle]:
        owner = self.owner(source)
        return owner.waiting(source) if owner is not None else []

    def destinations(self, source: VMHandle) -> list[Destination]:
        owner = self.owner(source)
        return owner.destinations(source) if owner is not None else []


def combine(backends: Sequence[Backend]) -> Backend:
    """One backend: the only one as it is, or several combined."""
    return backends[0] if len(backends) == 1 else CombinedBackend(backends)
