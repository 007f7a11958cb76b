"""Split a QMP byte stream into JSON texts, as QEMU's json-streamer does.

QMP is not line-based: clients (qemu.qmp among them) send objects with no newline, so
a value ends when its brackets balance.  A bare scalar at top level ends at whitespace.
"""
from __future__ import annotations

import codecs

MAX_VALUE = 64 * 2**20  # QEMU's MAX_TOKEN_SIZE: a longer value is dropped with an error
OVERFLOW = "\0overflow"  # stands in for a value that was dropped for its size

_OPEN = "{["
_CLOSE = "}]"


class JSONStreamer:
    def __init__(self, max_value: int = MAX_VALUE) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf: list[str] = []
        self._size = 0
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._max = max_value

    def feed(self, data: bytes) -> list[str]:
        """Returns the complete texts in ``data``; OVERFLOW stands for a dropped one."""
        out: list[str] = []
        text = self._decoder.decode(data)
        start = 0  # start of the current run of text to append to the buffer
        for i, ch in enumerate(text):
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                continue
            if ch == '"':
                self._in_string = True
            elif ch in _OPEN:
                self._depth += 1
            elif ch in _CLOSE:
                self._depth -= 1
                if self._depth <= 0:
                    self._append(text[start:i + 1])
                    start = i + 1
                    out.append(self._take())
            elif ch.isspace() and self._depth == 0:
                self._append(text[start:i])
                start = i + 1
                if self._buf:  # a bare scalar (or garbage) ends here
                    out.append(self._take())
        self._append(text[start:])
        if self._size > self._max:
            self._take()
            out.append(OVERFLOW)
        return out

    def _append(self, piece: str) -> None:
        if piece:
            self._buf.append(piece)
            self._size += len(piece)

    def _take(self) -> str:
        text = "".join(self._buf).strip()
        self._buf, self._size, self._depth = [], 0, 0
        self._in_string = self._escape = False
        return text
