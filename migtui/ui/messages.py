"""Messages the console passes between its parts."""

from __future__ import annotations

from textual.message import Message


class FleetChanged(Message):
    """These VMs have new samples, events or connection states since the last flush."""

    def __init__(self, keys: frozenset[str]) -> None:
        super().__init__()
        self.keys = keys

    def can_replace(self, message: Message) -> bool:
        # An unhandled older flush is merged into this one (toolong's coalescing).
        if isinstance(message, FleetChanged):
            self.keys = self.keys | message.keys
            return True
        return False
