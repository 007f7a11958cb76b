"""Hostile or broken QMP, fed through a real socket into the real backend.

A server answers the backend with hypothesis-drawn replies: wrong types,
negative and absurd numbers, unknown statuses and events, errors where
returns belong, garbage lines. Whatever comes, no exception may escape the
session, and what it shows must stay sane.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migtui.model.endpoint import parse_endpoint
from migtui.model.vm import Connection
from migtui.qmp.session import SessionOptions, VMSession
from migtui.sim.jsonstream import JSONStreamer

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}, "capabilities": []}}
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=8)
section = st.dictionaries(st.sampled_from(["transferred", "remaining", "total", "dirty-pages-rate", "mbps",
                                           "page-size", "dirty-sync-count", "cache-miss-rate", "overflow", "x"]),
                          st.one_of(numbers, scalars), max_size=6)
migrate_reply = st.one_of(
    st.fixed_dictionaries({}, optional={
        "status": st.one_of(st.sampled_from(["active", "completed", "failed", "setup", "device", "warp"]), scalars),
        "total-time": st.one_of(numbers, scalars), "expected-downtime": numbers, "downtime": numbers,
        "ram": st.one_of(section, values), "disk": st.one_of(section, values), "xbzrle-cache": section,
        "error-desc": scalars,
    }),
    values,
)
answer = st.one_of(
    migrate_reply.map(lambda r: ("return", r)),
    st.tuples(st.just("error"), st.fixed_dictionaries({"class": st.text(max_size=10), "desc": st.text(max_size=30)})),
    st.tuples(st.just("event"), st.fixed_dictionaries({"event": st.text(min_size=1, max_size=20), "data": values})),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b)),
)


async def _serve(path: Path, answers: list, done: asyncio.Event) -> asyncio.AbstractServer:
    script = list(answers)  # shared: after a garbage line, the reconnected session gets the rest

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(GREETING).encode() + b"\n")
        stream = JSONStreamer()  # QMP clients need not end a command with a newline
        pending: list[str] = []
        try:
            while True:
                if not pending:
                    data = await reader.read(65536)
                    if not data:
                        return
                    pending.extend(stream.feed(data))
                    continue
                msg = json.loads(pending.pop(0))
                command, ident = msg.get("execute"), msg.get("id")
                reply: object = {"return": {}}
                if command == "query-commands":
                    reply = {"return": [{"name": n} for n in ("query-migrate", "migrate-set-parameters",
                                                               "query-migrate-parameters", "migrate-set-capabilities",
                                                               "query-migrate-capabilities")]}
                elif command == "query-status":
                    reply = {"return": {"status": "running", "running": True}}
                elif command == "query-migrate-capabilities":
                    reply = {"return": [{"capability": "events", "state": False}]}
                elif command == "query-migrate" and script:
                    kind, body = script.pop(0)
                    if kind == "event":
                        writer.write(json.dumps({**body, "timestamp": {"seconds": 1, "microseconds": 0}},
                                                default=str).encode() + b"\n")
                    elif kind == "garbage":
                        writer.write(body + b"\n")
                        await writer.drain()
                        return
                    reply = {"error": body} if kind == "error" else {"return": body} if kind == "return" else {"return": {}}
                elif command == "query-migrate":
                    done.set()
                if ident is not None and isinstance(reply, dict):
                    reply["id"] = ident
                writer.write(json.dumps(reply, default=str, allow_nan=True).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            return
        finally:
            writer.close()

    return await asyncio.start_unix_server(client, path=str(path))


async def _run(answers: list) -> None:
    with tempfile.TemporaryDirectory(prefix="mtf") as tmp:
        path = Path(tmp) / "q.sock"
        done = asyncio.Event()
        server = await _serve(path, answers, done)
        errors: list[BaseException] = []
        session = VMSession(parse_endpoint(str(path)), options=SessionOptions(
            poll_interval=0.001, active_interval=0.001, request_timeout=1, greeting_timeout=1, backoff_max=0.01))
        session.start()
        try:
            await asyncio.wait_for(done.wait(), 5)  # the script ran out: every answer was served
        except asyncio.TimeoutError:
            raise AssertionError(f"the session stopped asking: {session.vm.connection} {list(session.vm.log)}") from None
        task = session._task
        assert task is not None
        if task.done() and not task.cancelled() and task.exception() is not None:
            errors.append(task.exception())
        vm = session.vm
        assert vm.connection in set(Connection)
        d = vm.derived
        if d.progress is not None:
            assert 0.0 <= d.progress <= 1.0
        for value in (d.throughput_bps, d.dirty_bytes_per_s, d.eta_s, d.remaining_bytes):
            assert value is None or (math.isfinite(value) and value >= 0)
        json.dumps(d.to_json())  # --json must always serialise
        await session.close()
        server.close()
        await server.wait_closed()
        assert errors == []


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(answer, min_size=1, max_size=6))
def test_backend_survives_any_replies(answers):
    asyncio.run(_run(answers))
