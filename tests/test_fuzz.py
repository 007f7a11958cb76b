"""Hostile or broken QMP, fed through a real socket into the real backend.

A server answers the backend with hypothesis-drawn replies: wrong types,
negative and absurd numbers, unknown statuses and events, errors where
returns belong, garbage lines. Whatever comes, no exception may escape the
session, and what it shows must stay sane. First while it samples, then from
its greeting on: negotiation and identification, in the session and on the
command line.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migtui.model.endpoint import parse_endpoint
from migtui.model.vm import Connection
from migtui.backend.errors import ConnectFailed
from migtui.backend.qmp.session import SessionOptions, VMSession
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


# ---- before the first sample: greeting, negotiation, identification --------------------------
#
# A hostile monitor attacks one of the steps of VMSession.connect(): the greeting, or the reply to
# qmp_capabilities or to one of the queries that identify the VM. Whatever it sends, connect()
# either succeeds with a sane identity or raises ConnectFailed with the VM in an error state and a
# one-line reason; nothing reaches the event loop's exception handler, nothing is left running.

FATAL, BENIGN, EITHER = "fatal", "benign", "either"
COMMANDS = ("query-version", "query-name", "query-status", "query-commands", "query-qmp-schema", "query-migrate",
            "query-migrate-capabilities", "migrate-set-capabilities", "query-migrate-parameters",
            "migrate-set-parameters", "query-block-jobs")
SANE = {  # what QEMU 7.2 answers, trimmed; the steps of connect() in the order it takes them
    "qmp_capabilities": {},
    "query-version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
    "query-name": {"name": "fuzzed"},
    "query-status": {"status": "running", "running": True, "singlestep": False},
    "query-commands": [{"name": name} for name in COMMANDS],
    "query-qmp-schema": [{"name": "migrate", "meta-type": "command", "arg-type": "0"},
                         {"name": "0", "meta-type": "object", "members": [{"name": "uri"}, {"name": "blk"}]}],
    "query-migrate-capabilities": [{"capability": "events", "state": False}, {"capability": "xbzrle", "state": False}],
    "query-migrate-parameters": {"max-bandwidth": 134217728, "downtime-limit": 300, "xbzrle-cache-size": 67108864},
    "query-block-jobs": [],
    "query-migrate": {},
    "migrate-set-capabilities": {},  # connect() turns the events capability on last
}
STEPS = tuple(SANE)
LAST_STEP = "migrate-set-capabilities"
NUMERIC_PARAMETERS = ("max-bandwidth", "downtime-limit", "xbzrle-cache-size", "multifd-channels",
                      "cpu-throttle-initial", "cpu-throttle-increment", "max-cpu-throttle")

# Lines of any length without their newline, around asyncio's 64 KiB default limit and beyond it.
line_lengths = st.one_of(st.integers(1, 4096), st.sampled_from([65535, 65536, 65537, 100_000, 200_000, 300_000]))
garbage_lines = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b""))
events = st.fixed_dictionaries({
    "event": st.one_of(st.sampled_from(["STOP", "RESUME", "MIGRATION", "SHUTDOWN"]), values),
    "data": values,
    "timestamp": st.one_of(st.just({"seconds": 1, "microseconds": 0}), values,
                           st.fixed_dictionaries({"seconds": values, "microseconds": values})),
})
unhashable = st.one_of(st.lists(st.integers(), max_size=2),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
wrong_ids = st.one_of(st.none(), st.integers(), st.booleans(), unhashable, st.text(max_size=8).map(lambda t: "x" + t))
# Valid JSON that is not a reply: not an object, an id that cannot be a key, an error with no id.
shapes = st.one_of(values.filter(lambda v: not isinstance(v, dict)),
                   st.fixed_dictionaries({"return": values, "id": unhashable}),
                   st.fixed_dictionaries({"error": values}),
                   st.dictionaries(st.text(max_size=6), values, max_size=3))
errors = st.one_of(  # QEMU's error shape with a hostile sentence, or a malformed one
    st.fixed_dictionaries({"class": st.text(max_size=10), "desc": st.text(max_size=40)}),
    st.fixed_dictionaries({"class": st.sampled_from(["GenericError"]),
                           "desc": st.sampled_from(["two\nlines", "\x1b[31mred\x1b[0m", "tab\there", "x" * 5000])}),
    values)


def _or_any(*strategies):
    """These, or any JSON value."""
    return st.one_of(values, *strategies)


# Replies of the right shape with wrong contents: what identification must read as "unknown".
wrong_returns = {
    "query-version": _or_any(st.fixed_dictionaries({"qemu": _or_any(st.fixed_dictionaries(
        {"major": _or_any(numbers), "minor": _or_any(numbers), "micro": _or_any(numbers)})), "package": values})),
    "query-name": _or_any(st.fixed_dictionaries({"name": _or_any(st.text(max_size=300), st.just("a\nb"))})),
    "query-status": _or_any(st.fixed_dictionaries({}, optional={"status": values, "running": values})),
    "query-commands": _or_any(
        st.lists(st.fixed_dictionaries({"name": _or_any(st.sampled_from(COMMANDS))}), max_size=12),
        st.dictionaries(st.text(max_size=8), values, max_size=3)),
    "query-qmp-schema": _or_any(st.lists(st.fixed_dictionaries({}, optional={
        "name": _or_any(st.sampled_from(["migrate", "0"]), unhashable), "meta-type": _or_any(st.just("command")),
        "arg-type": _or_any(st.just("0"), unhashable),
        "members": _or_any(st.lists(st.fixed_dictionaries({"name": values}), max_size=3))}), max_size=4)),
    "query-migrate-capabilities": _or_any(st.lists(st.fixed_dictionaries({}, optional={
        "capability": _or_any(st.sampled_from(["events", "xbzrle"]), unhashable), "state": values}), max_size=4)),
    "query-migrate-parameters": _or_any(st.dictionaries(
        st.one_of(st.sampled_from(NUMERIC_PARAMETERS), st.text(max_size=8)), values, max_size=5)),
    "query-block-jobs": _or_any(st.lists(st.fixed_dictionaries({}, optional={
        "type": _or_any(st.just("mirror")), "len": _or_any(numbers), "offset": _or_any(numbers)}), max_size=3)),
    "query-migrate": migrate_reply,
}


def reply_attacks(command: str):
    """What a hostile monitor sends instead of (or around) the reply to `command`.

    (kind, what, after): after "close" the monitor hangs up (so that no case waits for a timeout:
    silence has its own test), after "stay" it goes on, after "reply" it sends the proper reply too.
    """
    after = st.just("close")
    return st.one_of(
        st.tuples(st.just("garbage"), garbage_lines, after),
        st.tuples(st.just("truncated"), st.integers(1, 10**6), after),  # a cut reply, with its newline
        st.tuples(st.just("cut"), st.integers(0, 10**6), st.just("close")),  # closed mid-line
        st.tuples(st.just("unterminated"), line_lengths, after),
        st.tuples(st.just("shape"), shapes, after),
        st.tuples(st.just("event"), events, st.one_of(after, st.just("reply"))),  # an event where the reply belongs
        st.tuples(st.just("error"), errors, st.just("stay")),
        st.tuples(st.just("wrong-id"), wrong_ids, after),
        st.tuples(st.just("wrong-return"), wrong_returns.get(command, values), st.just("stay")),
        st.tuples(st.just("extra"), st.one_of(garbage_lines, shapes.map(json.dumps).map(str.encode)),
                  st.just("close")),  # the reply, then a hostile line (the reported peer)
    )


greeting_attacks = st.one_of(
    st.tuples(st.just("garbage"), garbage_lines, st.just("close")),
    st.tuples(st.just("truncated"), st.integers(1, 10**6), st.just("close")),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just("close")),
    st.tuples(st.just("unterminated"), line_lengths, st.just("close")),
    st.tuples(st.just("wrong-types"), st.one_of(
        values, st.fixed_dictionaries({"QMP": values}),
        st.fixed_dictionaries({"QMP": st.fixed_dictionaries({"version": values, "capabilities": values})})),
        st.just("close")),
    st.tuples(st.just("no-qmp"),
              st.dictionaries(st.text(max_size=6).filter(lambda k: k != "QMP"), values, max_size=3), st.just("close")),
    st.tuples(st.just("event"), events, st.just("close")),
)


def _dump(obj: object) -> bytes:
    return json.dumps(obj, default=str, allow_nan=True).encode()


def _reply(command: str, ident: object) -> bytes:
    reply: dict = {"return": SANE.get(command, {})}
    if ident is not None:
        reply["id"] = ident
    return _dump(reply)


def _render(attack: tuple, command: str | None, ident: object) -> tuple[bytes, str]:
    """The bytes of `attack` on the step `command` (None: the greeting), and what it must do to connect()."""
    kind, arg, after = attack
    proper = _dump(GREETING) if command is None else _reply(command, ident)
    verdict = FATAL
    if kind == "garbage":
        data = arg + b"\n"
    elif kind == "truncated":
        data = proper[: 1 + arg % (len(proper) - 1)] + b"\n"
    elif kind == "cut":
        data = proper[: arg % len(proper)]
    elif kind == "unterminated":
        data = b'{"return": "' + b"x" * arg if arg % 2 else b"x" * arg
    elif kind in ("shape", "wrong-types", "no-qmp"):
        data = _dump(arg) + b"\n"
    elif kind == "event":
        data = _dump(arg) + b"\n"
        if after == "reply":
            data += proper + b"\n"
            # Negotiation reads exactly one message as qmp_capabilities' reply.
            verdict = FATAL if command == "qmp_capabilities" else BENIGN
    elif kind == "error":
        body: dict = {"error": arg}
        if ident is not None:
            body["id"] = ident
        data = _dump(body) + b"\n"
        # Refused: fatal, but for the events capability, which connect() does without.
        well_formed = isinstance(arg, dict) and all(isinstance(arg.get(k), str) for k in ("class", "desc"))
        verdict = BENIGN if command == LAST_STEP and well_formed else FATAL
    elif kind == "wrong-id":
        body = json.loads(proper)
        if arg is None:
            body.pop("id", None)
        else:
            body["id"] = arg
        data = _dump(body) + b"\n"
    elif kind == "wrong-return":
        body = json.loads(proper)
        body["return"] = arg
        data, verdict = _dump(body) + b"\n", BENIGN
    else:  # extra: the reply, then a hostile line, then the close; connect() may be done before it reads them
        data, verdict = proper + b"\n" + arg + b"\n", EITHER
    return data, verdict


class HostilePeer:
    """A QMP monitor that attacks on its first connection as `attacks` say and is sane on every later one.

    `greeting`: an attack instead of the greeting. `attacks`: command -> an attack on its replies.
    """

    def __init__(self, greeting: tuple | None = None, attacks: dict[str, tuple] | None = None) -> None:
        self.greeting = greeting
        self.attacks = dict(attacks or {})
        self.connections = 0
        self.delivered: list[str] = []  # the verdict of each attack that was sent
        self.commands: list[str] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        attacks, self.attacks = self.attacks, {}
        try:
            if self.greeting is not None:
                attack, self.greeting = self.greeting, None
                await self._attack(writer, reader, attack, None, None)
                return
            writer.write(_dump(GREETING) + b"\n")
            stream = JSONStreamer()
            pending: list[str] = []
            while True:
                if not pending:
                    data = await reader.read(65536)
                    if not data:
                        return
                    pending.extend(stream.feed(data))
                    continue
                msg = json.loads(pending.pop(0))
                command, ident = msg.get("execute"), msg.get("id")
                self.commands.append(command)
                attack = attacks.get(command)
                if attack is not None and attack[2] not in ("stay", "reply"):
                    del attacks[command]  # it ends the connection; a reply that does not is sent every time
                if attack is None:
                    writer.write(_reply(command, ident) + b"\n")
                    await writer.drain()
                elif not await self._attack(writer, reader, attack, command, ident):
                    return
        except ConnectionError:
            return
        finally:
            writer.close()

    async def _attack(self, writer, reader, attack: tuple, command: str | None, ident: object) -> bool:
        """Send the attack; False when the connection is to end (closed now, or silent until the client leaves)."""
        data, verdict = _render(attack, command, ident)
        self.delivered.append(verdict)
        writer.write(data)
        await writer.drain()
        after = attack[2]
        if after == "silence":
            while await reader.read(65536):
                pass
        return after in ("stay", "reply")

    @property
    def verdict(self) -> str:
        if FATAL in self.delivered:
            return FATAL
        return BENIGN if all(v == BENIGN for v in self.delivered) else EITHER


def assert_one_line_reason(reason: object) -> None:
    assert isinstance(reason, str) and reason.strip(), repr(reason)
    assert reason.isprintable() and len(reason) <= 200, repr(reason)  # no newline, no escape, bounded


def assert_sane_identity(session: VMSession) -> None:
    from migtui.cli.status import _state_json
    from migtui.present.state import state_line

    vm = session.vm
    assert vm.connection == Connection.CONNECTED and vm.reason is None, (vm.connection, vm.reason)
    assert isinstance(vm.qemu_version, str) and re.fullmatch(r"\d+\.\d+\.\d+", vm.qemu_version), vm.qemu_version
    assert isinstance(vm.name, str) and vm.name.isprintable() and 0 < len(vm.name) <= 200, repr(vm.name)
    assert vm.run_state is None or (isinstance(vm.run_state, str) and vm.run_state.isprintable()), repr(vm.run_state)
    assert vm.dialect in ("modern", "legacy")
    assert all(isinstance(k, str) and type(v) is bool for k, v in vm.capabilities.items()), vm.capabilities
    for name in NUMERIC_PARAMETERS:
        value = vm.parameters.get(name)
        assert value is None or (type(value) in (int, float) and math.isfinite(value) and value >= 0), (name, value)
    # What `migtui status` prints from it.
    assert "\n" not in state_line(session.vm)
    json.dumps(_state_json("t", session))
    vm.advice()


_SOCKETS = Path(tempfile.mkdtemp(prefix="mtf"))  # one directory for all cases (one socket at a time)
atexit.register(shutil.rmtree, _SOCKETS, True)


async def _connect_to(peer: HostilePeer, background: bool, **options) -> tuple[Connection, str | None]:
    """Connect a real session to `peer` through a real socket; the VM's state and reason at the end."""
    loop = asyncio.get_running_loop()
    states: list[tuple[Connection, str | None]] = []
    path = _SOCKETS / "q.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = await asyncio.start_unix_server(peer.serve, path=str(path))
    opts = dict(request_timeout=1, greeting_timeout=1, backoff_max=0.001, poll_interval=60)
    session = VMSession(parse_endpoint(str(path)), options=SessionOptions(**{**opts, **options}))
    session.listener = lambda _message: states.append((session.vm.connection, session.vm.reason))
    try:
        if background:
            await _follow_reconnects(session, peer, states)
        else:
            await _connect_once(session, peer)
    finally:
        await session.close()
        server.close()
        await server.wait_closed()
    # Nothing of the session may outlive close(): qemu.qmp's reader, writer and disconnect tasks included.
    deadline = loop.time() + 2
    while [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] and loop.time() < deadline:
        await asyncio.sleep(0)  # the peer's handler ends as it reads the close: a loop turn or two
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    return session.vm.connection, session.vm.reason


def connect_to(peer: HostilePeer, background: bool, **options) -> tuple[Connection, str | None]:
    """_connect_to() on a loop of its own, whose exception handler must see nothing, even after collection."""
    seen: list[dict] = []

    async def run() -> tuple[Connection, str | None]:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: seen.append(context))
        return await _connect_to(peer, background, **options)

    gc.freeze()  # what exists now is not this case's: collect only what the case made
    try:
        state = asyncio.run(run())
        gc.collect()  # a future whose exception nobody read reports itself when it is collected
    finally:
        gc.unfreeze()
    assert seen == [], seen
    return state


async def _connect_once(session: VMSession, peer: HostilePeer) -> None:
    """The command line's path: one connect()."""
    try:
        await asyncio.wait_for(session.connect(), 10)  # a hang is a failure too
    except ConnectFailed as err:
        assert peer.verdict != BENIGN, (peer.delivered, str(err))
        assert session.vm.connection in (Connection.DISCONNECTED, Connection.MONITOR_BUSY)
        assert session.vm.reason == err.reason
        assert_one_line_reason(err.reason)
        assert session._client is None  # nothing of the connection is kept
        return
    assert peer.verdict != FATAL, (peer.delivered, peer.commands)
    assert_sane_identity(session)


async def _follow_reconnects(session: VMSession, peer: HostilePeer, states: list) -> None:
    """The console's path: the background loop, which reconnects (the peer is sane after its first connection)."""
    session.start()
    task = session._task
    assert task is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    # Until it stays connected: a peer that closes right after the last reply is connected, then not.
    while not (session.connected and session.vm.connection == Connection.CONNECTED):
        assert loop.time() < deadline, (peer.delivered, states)
        connected = asyncio.ensure_future(session._connected.wait())
        await asyncio.wait([task, connected], timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED)
        connected.cancel()
        assert not task.done(), task
        if not session.connected:
            await asyncio.sleep(0.001)  # connected, then dropped: the loop is on its way to reconnect
    failures = [(state, reason) for state, reason in states
                if state in (Connection.DISCONNECTED, Connection.MONITOR_BUSY)]
    for _, reason in failures:
        assert_one_line_reason(reason)
    if peer.verdict == FATAL:
        assert failures and peer.connections >= 2, (peer.delivered, states)
    elif peer.verdict == BENIGN:
        assert not failures and peer.connections == 1, (peer.delivered, states)
    assert_sane_identity(session)


step_attacks = st.one_of(*(st.tuples(st.just(step), reply_attacks(step)) for step in STEPS))


@settings(max_examples=1600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step_attacks, min_size=1, max_size=3, unique_by=lambda a: a[0]).map(dict), st.booleans())
def test_hostile_negotiation_and_identification_never_escape(attacks, background):
    connect_to(HostilePeer(attacks=attacks), background)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(greeting_attacks, st.booleans())
def test_hostile_greetings_never_escape(greeting, background):
    connect_to(HostilePeer(greeting=greeting), background)


unended = st.tuples(st.sampled_from(["unterminated", "cut"]), line_lengths, st.just("silence"))
silent_attacks = st.one_of(
    st.tuples(st.just("greeting"), unended),
    st.tuples(st.sampled_from(STEPS), st.one_of(
        unended,
        st.tuples(st.just("event"), events, st.just("silence")),
        # an id that cannot be the reply's, but is one (an unhashable id is a protocol error, at once)
        st.tuples(st.just("wrong-id"), st.one_of(st.none(), st.integers(), st.text(max_size=8).map(lambda t: "x" + t)),
                  st.just("silence")),
    )),
)


@settings(max_examples=48, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(silent_attacks)
def test_a_peer_that_stops_mid_identification_times_out_into_an_error(attack):
    """No reply at all (a line never ended, an event or a wrong id instead of it): a bounded wait, then an error."""
    step, how = attack
    peer = HostilePeer(greeting=how) if step == "greeting" else HostilePeer(attacks={step: how})

    started = time.monotonic()
    state, reason = connect_to(peer, False, request_timeout=0.2, greeting_timeout=0.3)
    # Bounded by the timeouts: the greeting's covers negotiation, each request has its own.
    assert time.monotonic() - started < 2
    assert peer.delivered and peer.verdict == FATAL
    if step == "greeting":  # a monitor that never finishes its greeting reads as one held by another client
        assert state == Connection.MONITOR_BUSY, (state, reason)
    elif step == "qmp_capabilities" and how[0] == "event":  # negotiation reads the one message as its reply
        assert state == Connection.DISCONNECTED and "not a QMP monitor" in reason, (state, reason)
    else:  # it greeted: it is QEMU, and not busy, but it does not answer
        assert state == Connection.DISCONNECTED and "no answer to" in reason, (state, reason)


# ---- the reported peer, on the command line -----------------------------------------------------

# It answers qmp_capabilities, then sends a reply of the wrong types and a 200 KB line with no end.
# qemu.qmp's reader dies on the second line as its session starts, and its connect() then failed
# its own assert: `migtui status --json` printed an AssertionError traceback.
REPORTED = b'{"return": {}}\n{"return": [1, 2], "id": [5]}\n' + b"x" * 200_000


async def _reported_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list) -> None:
    writer.write(_dump(GREETING) + b"\n")
    stream = JSONStreamer()
    first = True
    try:
        while data := await reader.read(65536):
            for text in stream.feed(data):
                seen.append(json.loads(text).get("execute"))
                if first:
                    writer.write(REPORTED)
                    first = False
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_the_reported_peer_fails_connect_with_one_line_and_reconnects():
    seen: list = []
    path = _SOCKETS / "reported.sock"
    server = await asyncio.start_unix_server(lambda r, w: _reported_peer(r, w, seen), path=str(path))
    states: list = []
    session = VMSession(parse_endpoint(str(path)), options=SessionOptions(backoff_max=0.05))
    session.listener = lambda _message: states.append((session.vm.connection, session.vm.reason))
    try:
        try:
            await session.connect()
        except ConnectFailed as err:
            assert "QMP protocol error" in err.reason and session.vm.reason == err.reason
        else:
            raise AssertionError("connected to the reported peer")
        assert session.vm.connection == Connection.DISCONNECTED
        # The background loop keeps trying, with backoff, and fails the same way each time.
        session.start()
        deadline = asyncio.get_running_loop().time() + 5
        while len([s for s, _ in states if s == Connection.DISCONNECTED]) < 3:
            assert asyncio.get_running_loop().time() < deadline, states
            await asyncio.sleep(0.01)
        assert not session._task.done()
        failures = [reason for state, reason in states if state == Connection.DISCONNECTED]
        assert all(reason == failures[0] and "QMP protocol error" in reason for reason in failures), failures
    finally:
        await session.close()
        server.close()
        await server.wait_closed()
    assert set(seen) == {"qmp_capabilities"}  # nothing was asked of it after negotiation


@pytest.mark.parametrize("args", [["status", "--json"], ["watch", "--count", "1"],
                                  ["migrate", "--uri", "unix:/nonexistent"]], ids=["status", "watch", "migrate"])
async def test_the_reported_peer_gets_one_line_and_exit_2_on_the_command_line(args):
    seen: list = []
    path = _SOCKETS / f"cli-{args[0]}.sock"
    server = await asyncio.start_unix_server(lambda r, w: _reported_peer(r, w, seen), path=str(path))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "migtui", args[0], f"unix:{path}", *args[1:],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = (b.decode() for b in await asyncio.wait_for(proc.communicate(), 60))
    finally:
        server.close()
        await server.wait_closed()
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in out + err, err
    shown = err.strip().splitlines() if args[0] != "watch" else out.strip().splitlines()
    assert len(shown) == 1 and "QMP protocol error" in shown[0], (out, err)
    if args[0] == "status":
        assert json.loads(out)["error"] in shown[0]  # --json says it too, as the error member
    if args[0] == "watch":
        assert err == ""  # watch reports each round on stdout
    assert set(seen) == {"qmp_capabilities"}  # migrate: no migrate, nor anything else, was sent
