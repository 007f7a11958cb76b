"""The one place migtui reaches into qemu.qmp: its client class, with the overrides the sampling path needs.

Checked against qemu.qmp 0.0.3 to 0.0.6 (pyproject pins `qemu.qmp>=0.0.3,<0.1`; the tests run
0.0.6). What is overridden, and why it is safe:
- `_cb_outbound`, `_cb_inbound`: documented hooks of QMPClient ("may be overridden"); ours
  skip the per-message debug formatting unless debug logging is on.
- `_do_send`: the documented send hook; ours writes the bytes (and a TLS nudge, below).
- `_bh_recv_message`, `_bh_disconnect`: qemu.qmp's reader-task body and teardown. Not public:
  `_DIRECT` checks each is there, and send() falls back to the stock execute() if one is not.
- `_writer`, `_reader`: the StreamWriter/Reader the protocol holds; send() writes to the
  former and hooks the latter's feed_data (only when it is asyncio's StreamReader).
- `events._history`: the default listener's unbounded list of events, made a bounded deque.
Nothing else in migtui touches qemu.qmp's internals.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any

from qemu.qmp import ExecInterruptedError, ExecuteError, QMPClient
from qemu.qmp.message import Message
from qemu.qmp.models import ErrorResponse
from qemu.qmp.protocol import Runstate
from qemu.qmp.qmp_client import BadReplyError

__all__ = ["Client", "EVENT_HISTORY", "disconnect", "quiet_loop_errors"]

# Events qemu.qmp's listener keeps in its own history (it keeps all of them otherwise).
EVENT_HISTORY = 32


def quiet_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Leftovers of connections torn down on purpose (cancelled drains, resets) are not news."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, (asyncio.CancelledError, ConnectionError, EOFError)):
            return
        logging.getLogger("migtui").debug("asyncio: %s", context.get("message"), exc_info=error)

    loop.set_exception_handler(handler)


def _nudge(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.write(b"\n")


# The qemu.qmp internals _Client's direct request path overrides or calls (as in
# qemu.qmp 0.0.6); should a release lack one, send() falls back to the stock execute().
_DIRECT = all(hasattr(QMPClient, name) for name in ("_bh_recv_message", "_readline", "_bh_disconnect", "_on_message"))


class Client(QMPClient):
    """qemu.qmp's client, without its per-message debug formatting, plus a direct request path.

    The stock inbound/outbound hooks re-serialise every message to JSON for a
    debug log line even when debug logging is off: a fifth of a 1000-VM
    console's CPU. These hooks exist to be overridden; ours format only when
    someone is listening.

    send() is the sampling path: the stock execute() builds and copies a
    `Message`, hands it to a writer task through a queue, and routes the reply
    back through a queue per request (several Task switches, a Queue and its
    Event per call). send() writes the bytes itself and returns a future that
    is resolved with the reply dict as soon as its line arrives (_hook_reader),
    or else by the reader task. Connection, negotiation, events and every
    other command stay on qemu.qmp's own path; a reply whose id send() did not
    register goes there too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._heads: dict[str, bytes] = {}  # command -> b'{"execute": "CMD", "id": "'
        self._hooked: object = None  # the StreamReader whose feed_data routes replies
        # qemu.qmp's default listener keeps a history of every event, forever: a migration
        # that passes every second grew it by 3600 messages an hour. Keep the latest few.
        if isinstance(getattr(self.events, "_history", None), list):
            self.events._history = collections.deque(maxlen=EVENT_HISTORY)  # type: ignore[assignment]

    def _cb_outbound(self, msg):  # type: ignore[no-untyped-def]
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("--> %s", msg)
        return msg

    def _cb_inbound(self, msg):  # type: ignore[no-untyped-def]
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("<-- %s", msg)
        return msg

    tls = False

    def _do_send(self, msg) -> None:  # type: ignore[no-untyped-def]
        assert self._writer is not None
        self._write(bytes(msg) + b"\n")

    def _write(self, data: bytes) -> None:
        writer = self._writer
        assert writer is not None
        writer.write(data)
        if self.tls:
            # QEMU 7.2's TLS chardev holds a lone TLS record until the next one
            # arrives (seen here: the reply comes only after more bytes). A
            # second record with a harmless newline makes it read the first.
            asyncio.get_running_loop().call_later(0.005, _nudge, writer)

    # ---- the direct request path -----------------------------------------

    def send(self, command: str, args: dict[str, Any] | None = None) -> asyncio.Future[dict[str, Any]]:
        """Send `command` now; the future gets QEMU's whole reply (see result()).

        Cancelling the future abandons the request (its late reply is dropped).
        When the connection ends first, the future fails with ExecInterruptedError.
        """
        loop = asyncio.get_running_loop()
        if not _DIRECT:
            return loop.create_task(self._stock_reply(command, args))
        if self.runstate != Runstate.RUNNING or self._writer is None:
            # qemu.qmp's own error for this state (StateError); runstate RUNNING here also
            # means _bh_disconnect has not run yet, so it will fail this future if it must.
            return loop.create_task(self._stock_reply(command, args))
        if self._hooked is not self._reader:
            self._hook_reader()
        self._next_id += 1
        ident = f"mt{self._next_id}"
        if args is None:
            head = self._heads.get(command)
            if head is None:
                head = self._heads[command] = json.dumps({"execute": command})[:-1].encode() + b', "id": "'
            data = head + ident.encode() + b'"}\n'
        else:
            data = json.dumps({"execute": command, "arguments": args, "id": ident}).encode() + b"\n"
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("--> %s", data.decode(errors="replace").rstrip())
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._replies[ident] = future
        try:
            self._write(data)
        except BaseException:
            del self._replies[ident]
            raise
        return future

    def rewait(self, future: asyncio.Future[dict[str, Any]]) -> asyncio.Future[dict[str, Any]] | None:
        """A new future for the reply that `future` (from send(), now cancelled) was waiting for.

        None when no reply will come to it any more (it came, or the connection ended).
        """
        for ident, registered in self._replies.items():
            if registered is future:
                replacement: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._replies[ident] = replacement
                return replacement
        return None

    async def _stock_reply(self, command: str, args: dict[str, Any] | None) -> dict[str, Any]:
        try:
            return {"return": await self.execute(command, args)}
        except ExecuteError as err:
            return dict(err.received)

    async def request(self, command: str, args: dict[str, Any] | None = None) -> Any:
        """execute() by the direct path: QEMU's return value; raises ExecuteError like execute()."""
        return self.result(await self.send(command, args), command, args)

    @staticmethod
    def result(reply: dict[str, Any], command: str, args: dict[str, Any] | None = None) -> Any:
        """The return value of a reply from send(); ExecuteError for QEMU's error, as execute() raises."""
        if "return" in reply:
            return reply["return"]
        sent = Message({"execute": command, **({"arguments": args} if args is not None else {})})
        received = Message(reply)
        if "error" in reply:
            try:
                error = ErrorResponse(received)
            except (KeyError, TypeError) as err:
                raise BadReplyError("QMP error reply is malformed", received, sent) from err
            raise ExecuteError(error, sent, received)
        raise BadReplyError("QMP reply is missing a 'error' or 'return' member", received, sent)

    def _hook_reader(self) -> None:
        """Route replies to send() as bytes arrive, before they reach the reader task.

        Whole lines that answer a send() resolve its future right in the
        transport's data callback, as a plain asyncio client would be woken:
        one event-loop turn per reply instead of three (the reader task's
        wake-up, its readline, then the caller). Anything else, and any chunk
        that is not whole lines on an empty buffer, goes to the StreamReader
        untouched, for qemu.qmp's reader task (and _bh_recv_message below).
        """
        reader = self._reader
        self._hooked = reader
        if reader is None or not isinstance(getattr(reader, "_buffer", None), bytearray):
            return  # not the StreamReader this was written for: the reader task routes everything
        feed = reader.feed_data

        def feed_data(data: bytes) -> None:
            if self._replies and data.endswith(b"\n") and not reader._buffer:  # type: ignore[attr-defined]
                data = self._route(data)
                if not data:
                    return
            feed(data)

        reader.feed_data = feed_data  # type: ignore[method-assign]

    def _answer(self, line: bytes) -> bool:
        """If `line` is the reply to a send(), resolve its future and say so.

        A line that is not JSON is left to qemu.qmp's reader, which reports it."""
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return False
        if type(obj) is not dict:
            return False
        ident = obj.get("id")
        future = self._replies.pop(ident, None) if type(ident) is str else None
        if future is None:
            return False
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("<-- %s", obj)
        if not future.done():  # done: cancelled by its waiter; drop the reply
            future.set_result(obj)
        return True

    def _route(self, data: bytes) -> bytes:
        """Resolve the send() futures answered in `data` (whole lines); return the other lines."""
        lines = data.split(b"\n")
        lines.pop()  # after the last newline: empty
        kept = [line for line in lines if not self._answer(line)]
        if len(kept) == len(lines):
            return data
        return b"\n".join(kept) + b"\n" if kept else b""

    async def _bh_recv_message(self) -> None:
        # The reader task's loop body: the stock one is `_on_message(await _recv())`.
        line = await self._readline()
        if self._replies and self._answer(line):
            return
        msg = self._cb_inbound(Message(line, eager=True))
        await self._on_message(msg)

    async def _bh_disconnect(self) -> None:
        try:
            await super()._bh_disconnect()
        finally:
            replies, self._replies = self._replies, {}
            for future in replies.values():
                if not future.done():
                    future.set_exception(ExecInterruptedError("Disconnected"))


async def disconnect(client: QMPClient, timeout: float) -> BaseException | None:
    """Disconnect; returns what had ended the connection, which qemu.qmp's disconnect() re-raises."""
    try:
        await asyncio.wait_for(client.disconnect(), timeout)
    except asyncio.TimeoutError:
        return None
    except Exception as err:
        return err
    return None
