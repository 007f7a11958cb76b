"""The QMP simulator (migtui.sim), spoken to with plain qemu.qmp and raw sockets.

Protocol tests mostly drive simulated time with a fake clock, so states are reached
deterministically; where real time is involved (faults, the second client) the tests
wait on conditions with deadlines.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lab_fixtures import qemu_required
from qemu.qmp import ExecInterruptedError, ExecuteError, QMPClient

from migtui.sim import SimFleet, SimVM
from migtui.sim.jsonstream import JSONStreamer
from migtui.sim.model import FINISHED, PAGE, WINDOW, Guest, Knobs, Migration

MiB = 2**20
DATA = Path(__file__).parent / "data"
QEMU = shutil.which("qemu-system-x86_64")
SINK = "exec:cat > /dev/null"


def _load_capture() -> Any:
    spec = importlib.util.spec_from_file_location("capture_qemu72_keys",
                                                  DATA / "capture_qemu72_keys.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


capture = _load_capture()


def _load_capture_10() -> Any:
    spec = importlib.util.spec_from_file_location("capture_qemu10_keys", DATA / "capture_qemu10_keys.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


capture10 = _load_capture_10()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    # Short on purpose: AF_UNIX paths stop at 107 bytes and pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="migtui-sim-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def make_fleet(runtime_dir: Path) -> AsyncIterator[Callable[..., SimFleet]]:
    fleets: list[SimFleet] = []

    def make(**kwargs: Any) -> SimFleet:
        fleet = SimFleet(runtime_dir / f"f{len(fleets)}", **kwargs)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        await fleet.stop()


class Client(QMPClient):
    """qemu.qmp's client, with replies typed Any so tests can index them."""

    async def execute(self, cmd: str, arguments: Mapping[str, object] | None = None,
                      oob: bool = False) -> Any:
        return await super().execute(cmd, arguments, oob)


@asynccontextmanager
async def qmp(vm: SimVM) -> AsyncIterator[Client]:
    client = Client(vm.name)
    await asyncio.wait_for(client.connect(str(vm.socket_path)), 5)
    try:
        yield client
    finally:
        await client.disconnect()


class Raw:
    """A raw stream client, to see exact bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, vm: SimVM) -> Raw:
        return cls(*await asyncio.open_unix_connection(str(vm.socket_path), limit=2**26))

    async def line(self, timeout: float = 5) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(await asyncio.wait_for(self.reader.readline(), timeout))
        return msg

    async def send(self, obj: Any) -> None:
        self.writer.write(json.dumps(obj).encode())  # no newline: QMP is not line-based
        await self.writer.drain()

    async def reply(self, timeout: float = 5) -> dict[str, Any]:
        while True:
            msg = await self.line(timeout)
            if "event" not in msg:
                return msg

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):  # some tests check the server cut us off
            await self.writer.wait_closed()


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


async def error_of(call: Awaitable[Any]) -> tuple[str, str]:
    with pytest.raises(ExecuteError) as info:
        await call
    return info.value.error_class, str(info.value)


def history(client: QMPClient) -> list[dict[str, Any]]:
    """Every event the client has seen, as plain dicts."""
    return [dict(e) for e in client.events.history]


def caps(**states: bool) -> dict[str, Any]:
    return {"capabilities": [{"capability": k.replace("_", "-"), "state": v}
                             for k, v in states.items()]}


# -- the pure model ----------------------------------------------------------------------

def run_model(guest: Guest, knobs: Knobs, until: float, step: float = 0.25,
              seed: int = 0, blk: bool = False) -> Migration:
    m = Migration(guest, knobs, start=0.0, rng=random.Random(seed), blk=blk)
    t = 0.0
    while t < until and m.status not in FINISHED:
        t = min(until, t + step)
        m.advance(t)
    return m


def knobs_14() -> Knobs:
    return Knobs(max_bandwidth=32 * MiB, downtime_limit=0.03,
                 zero_bandwidth_unlimited=False, seed_expected_downtime=True)


def test_model_converges_when_threshold_reachable() -> None:
    knobs = Knobs()  # 7.2 defaults: 128 MiB/s, 300 ms
    m = run_model(Guest(ram=512 * MiB, dirty_rate=16 * MiB, working_set=64 * MiB), knobs, 60)
    assert m.status == "completed"
    assert m.passes >= 3
    # What was left at switch-over fitted in bandwidth x downtime-limit (plus page headers).
    assert m.c.downtime_bytes <= knobs.max_bandwidth * knobs.downtime_limit * 1.01
    assert m.downtime_ms is not None and 0 < m.downtime_ms < 300
    assert m.total_time_ms is not None and m.total_time_ms > m.downtime_ms


def test_model_does_not_converge_when_dirtying_outpaces_bandwidth() -> None:
    knobs = knobs_14()
    guest = Guest(ram=512 * MiB, dirty_rate=64 * MiB, working_set=128 * MiB)
    m = Migration(guest, knobs, start=0.0, rng=random.Random(0))
    passes = []
    for t in (30.0, 60.0, 120.0, 240.0):
        m.advance(t)
        assert m.status == "active"
        assert m.remaining_bytes > knobs.max_bandwidth * knobs.downtime_limit
        passes.append(m.passes)
    assert passes == sorted(set(passes)), passes  # passes keep climbing
    # The seed's estimate: dirty bytes rate / bandwidth, far over the 30 ms limit.
    assert m.expected_downtime_ms > 100


def test_model_is_lazy_and_cadence_independent() -> None:
    def make() -> Migration:
        return Migration(Guest(ram=256 * MiB, dirty_rate=200 * MiB, working_set=96 * MiB),
                         Knobs(), start=0.0, rng=random.Random(7))

    one_jump, fine, odd = make(), make(), make()
    one_jump.advance(300.0)
    for i in range(1, 3001):
        fine.advance(i * 0.1)
    t = 0.0
    while t < 300.0:
        t = min(300.0, t + 0.37)
        odd.advance(t)
    for m in (fine, odd):
        assert (m.status, m.passes) == (one_jump.status, one_jump.passes)
        assert m.c.transferred == pytest.approx(one_jump.c.transferred, rel=1e-9)


def test_model_seed_makes_runs_repeatable() -> None:
    def run(seed: int) -> tuple[float, int, float]:
        m = run_model(Guest(ram=256 * MiB, dirty_rate=40 * MiB, working_set=64 * MiB),
                      Knobs(), 60, seed=seed)
        return m.setup_time_ms, m.passes, m.c.transferred

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_model_windows_are_capped_at_a_tenth_of_the_bandwidth() -> None:
    knobs = Knobs(max_bandwidth=10 * MiB)
    m = Migration(Guest(ram=512 * MiB, zero_fraction=0.0), knobs, start=0.0,
                  rng=random.Random(0))
    m.advance(0.0125)  # past setup
    start = m.t
    for k in range(1, 21):
        m.advance(start + k * WINDOW)
        assert m.c.transferred <= k * knobs.max_bandwidth / 10 * 1.0001
    assert m.c.transferred == pytest.approx(20 * knobs.max_bandwidth / 10)
    assert m.mbps == pytest.approx(10 * MiB * 8 / 1e6)


def test_model_zero_pages_are_duplicates_and_block_goes_first() -> None:
    guest = Guest(ram=64 * MiB, working_set=8 * MiB, zero_fraction=0.75, disk=32 * MiB)
    m = Migration(guest, Knobs(max_bandwidth=16 * MiB), start=0.0, rng=random.Random(0),
                  blk=True)
    m.advance(1.0)
    assert 0 < m.c.disk_transferred < guest.disk
    assert m.c.transferred == 0  # no RAM before the disk is done
    m.advance(60.0)
    assert m.status == "completed" and m.disk_left == 0
    assert m.c.duplicate == pytest.approx(0.75 * guest.pages)
    assert m.c.normal == pytest.approx(0.25 * guest.pages)


def test_model_xbzrle_hits_depend_on_cache_versus_working_set() -> None:
    def miss_rate(cache: int) -> float:
        knobs = Knobs(xbzrle=True, xbzrle_cache_size=cache, max_bandwidth=64 * MiB,
                      downtime_limit=0.01)
        guest = Guest(ram=256 * MiB, dirty_rate=96 * MiB, working_set=100 * MiB)
        m = Migration(guest, knobs, start=0.0, rng=random.Random(0))
        m.advance(30.0)
        assert m.passes > 3
        return m.cache_miss_rate

    assert miss_rate(32 * MiB) == pytest.approx(0.68, abs=0.01)  # 1 - 32/100
    assert miss_rate(128 * MiB) == pytest.approx(0.0, abs=0.01)


def test_model_postcopy_stops_source_then_completes() -> None:
    knobs = Knobs(postcopy_ram=True)
    m = Migration(Guest(ram=256 * MiB, dirty_rate=400 * MiB, working_set=128 * MiB), knobs,
                  start=0.0, rng=random.Random(0))
    m.advance(5.0)
    assert m.status == "active"
    m.start_postcopy(5.0)
    kinds = [(e.kind, e.value) for e in m.advance(30.0)]
    assert kinds.index(("status", "postcopy-active")) < kinds.index(("stop", None)) \
        < kinds.index(("dest-resume", None)) < kinds.index(("status", "completed"))
    assert m.c.postcopy_bytes > 0 and m.remaining_bytes == 0


# -- the protocol -------------------------------------------------------------------------

# QMP is UTF-8: a lone surrogate cannot be encoded at all, so it is no input for the splitter.
_utf8 = st.characters(codec="utf-8")
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=_utf8, max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet=_utf8, max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8)


@given(st.lists(st.dictionaries(st.text(alphabet=_utf8, max_size=6), _json, max_size=4), min_size=1, max_size=5),
       st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=6))
def test_stream_splitter_finds_objects_however_bytes_arrive(
        objects: list[dict[str, Any]], cuts: list[int]) -> None:
    # QMP is not line-based: values may arrive glued together or cut anywhere, mid-UTF-8.
    data = "".join(json.dumps(o, ensure_ascii=False) + (" " if i % 2 else "")
                   for i, o in enumerate(objects)).encode()
    streamer, texts, pos, i = JSONStreamer(), [], 0, 0
    while pos < len(data):
        size = cuts[i % len(cuts)]
        texts += streamer.feed(data[pos:pos + size])
        pos, i = pos + size, i + 1
    assert [json.loads(t) for t in texts] == objects


@pytest.mark.parametrize("dialect", ["1.4", "7.2"])
async def test_handshake_negotiation_and_id_echo(make_fleet: Callable[..., SimFleet],
                                                 dialect: str) -> None:
    fleet = make_fleet()
    vm = await fleet.add_vm("hs", dialect=dialect)
    raw = await Raw.open(vm)
    greeting = await raw.line()
    major, minor = (1, 4) if dialect == "1.4" else (7, 2)
    assert greeting == {"QMP": {"version": {"qemu": {"major": major, "minor": minor, "micro": 0},
                                            "package": ""},
                                "capabilities": [] if dialect == "1.4" else ["oob"]}}
    await raw.send({"execute": "query-status", "id": "early"})
    reply = await raw.reply()
    assert reply["id"] == "early" and reply["error"]["class"] == "CommandNotFound"
    assert reply["error"]["desc"].startswith(
        "Expecting capabilities negotiation with 'qmp_capabilities'")
    await raw.send({"execute": "qmp_capabilities", "id": 1})
    assert await raw.reply() == {"return": {}, "id": 1}
    await raw.send({"execute": "query-name", "id": {"any": ["json"]}})
    assert await raw.reply() == {"return": {"name": "hs"}, "id": {"any": ["json"]}}
    await raw.send({"execute": "query-status"})  # no id: none echoed
    assert await raw.reply() == {"return": {"status": "running", "singlestep": False,
                                            "running": True}}
    await raw.send({"execute": "no-such-thing", "id": 2})
    assert await raw.reply() == {"id": 2, "error": {
        "class": "CommandNotFound", "desc": "The command no-such-thing has not been found"}}
    await raw.send({"execute": "migrate", "arguments": {"uri": 5}})
    assert (await raw.reply())["error"]["desc"].startswith("Invalid parameter type for 'uri'")
    await raw.close()
    assert vm.received == [("query-name", {}), ("query-status", {}), ("no-such-thing", {}),
                           ("migrate", {"uri": 5})]


@pytest.mark.parametrize("dialect", ["1.4", "7.2", "10.0"])
def test_every_advertised_command_has_a_handler(dialect: str) -> None:
    from migtui.sim.dialects import DIALECTS

    for name in DIALECTS[dialect].commands:
        assert callable(getattr(SimVM, "_cmd_" + name.replace("-", "_"), None)), name


async def test_optional_tcp_listener(make_fleet: Callable[..., SimFleet]) -> None:
    fleet = make_fleet()
    vm = await fleet.add_vm("net", tcp=True)
    assert vm.tcp_address is not None
    client = Client("tcp")
    await asyncio.wait_for(client.connect(vm.tcp_address), 5)
    assert await client.execute("query-name") == {"name": "net"}
    await client.disconnect()


async def test_14_dialect_commands(make_fleet: Callable[..., SimFleet]) -> None:
    clock = FakeClock()
    fleet = make_fleet(clock=clock)
    vm = await fleet.add_vm("old", dialect="1.4", ram=256 * MiB, working_set=16 * MiB)
    async with qmp(vm) as c:
        assert await c.execute("query-migrate") == {}
        assert await c.execute("query-migrate-capabilities") == [
            {"capability": "xbzrle", "state": False}]
        assert await error_of(c.execute("migrate-set-parameters", {"max-bandwidth": 1})) == (
            "CommandNotFound", "The command migrate-set-parameters has not been found")
        cls, _ = await error_of(c.execute("query-qmp-schema"))
        assert cls == "CommandNotFound"
        assert await error_of(c.execute("migrate", {"uri": "ftp:x"})) == (
            "GenericError", "Parameter 'uri' expects a valid migration protocol")
        # migrate_set_downtime takes seconds; the seed's first expected-downtime is that limit.
        await c.execute("migrate_set_downtime", {"value": 0.5})
        await c.execute("migrate_set_speed", {"value": -5})  # clamped to 0
        await c.execute("migrate-set-cache-size", {"value": 100 * MiB})
        assert await c.execute("query-migrate-cache-size") == 64 * MiB  # power of two
        await c.execute("migrate", {"uri": SINK})
        assert await c.execute("query-migrate") == {}  # MIG_STATE_SETUP reports nothing
        clock.advance(2.0)
        info = await c.execute("query-migrate")
        assert info["status"] == "active" and info["expected-downtime"] == 500
        assert info["ram"]["transferred"] == 0  # speed 0 stalls the seed's buffered file
        assert await error_of(c.execute("migrate", {"uri": SINK})) == (
            "GenericError", "There's a migration process in progress")
        cls, desc = await error_of(c.execute("migrate-set-capabilities", caps(xbzrle=True)))
        assert desc == "There's a migration process in progress"
        await c.execute("migrate_set_speed", {"value": 1 * MiB})
        clock.advance(1.0)
        sent = (await c.execute("query-migrate"))["ram"]["transferred"]
        assert 0 < sent <= 1 * MiB
        await c.execute("migrate_cancel")
        assert await c.execute("query-migrate") == {"status": "cancelled"}
    assert vm.knobs.downtime_limit == 0.5
    assert [name for name, _ in vm.received] == [
        "query-migrate", "query-migrate-capabilities", "migrate-set-parameters",
        "query-qmp-schema", "migrate", "migrate_set_downtime", "migrate_set_speed",
        "migrate-set-cache-size", "query-migrate-cache-size", "migrate", "query-migrate",
        "query-migrate", "migrate", "migrate-set-capabilities", "migrate_set_speed",
        "query-migrate", "migrate_cancel", "query-migrate"]
    assert vm.received[5] == ("migrate_set_downtime", {"value": 0.5})


async def test_14_query_migrate_fields_follow_the_seed(make_fleet: Callable[..., SimFleet]) -> None:
    clock = FakeClock()
    fleet = make_fleet(clock=clock)
    vm = await fleet.add_vm("old", dialect="1.4", ram=64 * MiB, disk=8 * MiB)
    async with qmp(vm) as c:
        await c.execute("migrate-set-capabilities", caps(xbzrle=True))
        await c.execute("migrate", {"uri": SINK, "blk": True})
        clock.advance(0.05)
        active = await c.execute("query-migrate")
        assert capture.key_paths(active) == sorted([
            "status", "total-time", "expected-downtime",
            "ram", "ram.transferred", "ram.remaining", "ram.total", "ram.duplicate",
            "ram.normal", "ram.normal-bytes", "ram.dirty-pages-rate",
            "disk", "disk.transferred", "disk.remaining", "disk.total",
            "xbzrle-cache", "xbzrle-cache.cache-size", "xbzrle-cache.bytes",
            "xbzrle-cache.pages", "xbzrle-cache.cache-miss", "xbzrle-cache.overflow"])
        assert active["expected-downtime"] == 30  # the seed's 30 ms default
        clock.advance(60)
        done = await c.execute("query-migrate")
        assert capture.key_paths(done) == sorted([
            "status", "downtime", "ram", "ram.transferred", "ram.remaining", "ram.total",
            "ram.duplicate", "ram.normal", "ram.normal-bytes",
            "xbzrle-cache", "xbzrle-cache.cache-size", "xbzrle-cache.bytes",
            "xbzrle-cache.pages", "xbzrle-cache.cache-miss", "xbzrle-cache.overflow"])
        assert done["status"] == "completed" and done["ram"]["remaining"] == 0
        status = await c.execute("query-status")
        assert status["status"] == "postmigrate"
        assert [e["event"] for e in history(c)] == ["STOP"]  # no MIGRATION in 1.4


async def _sim_72_keys(fleet: SimFleet, clock: FakeClock) -> dict[str, Any]:
    """The capture script's scenario, replayed against the simulator."""
    src = await fleet.add_vm("src", ram=128 * MiB, disk=4 * MiB)
    dst = await fleet.add_vm("dst", ram=128 * MiB, disk=4 * MiB, incoming=True)
    async with qmp(src) as s, qmp(dst) as d:
        assert s.greeting is not None
        out: dict[str, Any] = {
            "greeting-capabilities": s.greeting._raw["QMP"]["capabilities"],
            "migrate-capabilities": [c["capability"]
                                     for c in await s.execute("query-migrate-capabilities")],
            "migrate-parameters": sorted(await s.execute("query-migrate-parameters")),
        }

        async def keys(client: Client) -> list[str]:
            paths: list[str] = capture.key_paths(await client.execute("query-migrate"))
            return paths

        states = {"none": await keys(s)}
        await s.execute("migrate-set-capabilities", caps(events=True))
        await s.execute("migrate-set-parameters", {"max-bandwidth": 1 * MiB})
        await s.execute("migrate", {"uri": SINK})
        clock.advance(0.5)
        states["active"] = await keys(s)
        await s.execute("migrate_cancel")
        states["cancelled"] = await keys(s)
        await s.execute("migrate", {"uri": f"unix:{fleet.runtime_dir}/nobody-listens"})
        src.fail_migration("Failed to connect to 'nobody-listens': Connection refused")
        states["failed"] = await keys(s)
        await s.execute("migrate-set-capabilities", caps(xbzrle=True))
        await s.execute("migrate", {"uri": SINK, "blk": True})
        clock.advance(0.5)
        states["active-xbzrle-blk"] = await keys(s)
        await s.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40})
        clock.advance(10)
        states["completed-xbzrle-blk"] = await keys(s)
        await s.execute("cont")
        await s.execute("migrate-set-capabilities", caps(xbzrle=False))
        await d.execute("migrate-set-capabilities", caps(events=True))
        await d.execute("migrate-incoming", {"uri": f"unix:{fleet.runtime_dir}/mig.sock"})
        states["incoming-setup"] = await keys(d)
        await s.execute("migrate", {"uri": f"unix:{fleet.runtime_dir}/mig.sock"})
        clock.advance(10)
        states["completed"] = await keys(s)
        states["incoming-completed"] = await keys(d)
        out["query-migrate"] = states
        out["source-events"] = [
            " ".join([e["event"], *map(str, e.get("data", {}).values())])
            for e in history(s) if e["event"] != "MIGRATION_PASS"]
    return out


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "qemu-version"}


async def test_72_key_sets_match_captured_qemu(make_fleet: Callable[..., SimFleet]) -> None:
    clock = FakeClock()
    recorded = json.loads((DATA / "qemu72_keys.json").read_text())
    assert recorded["qemu-version"].startswith("7.2.")
    sim = await _sim_72_keys(make_fleet(clock=clock), clock)
    assert _comparable(sim) == _comparable(recorded)


@pytest.mark.qemu
@qemu_required
async def test_72_key_sets_match_live_qemu(make_fleet: Callable[..., SimFleet]) -> None:
    assert QEMU is not None
    live = await asyncio.to_thread(capture.capture, QEMU)
    if not live["qemu-version"].startswith("7.2."):
        pytest.skip(f"the installed QEMU is {live['qemu-version']}, not 7.2")
    clock = FakeClock()
    sim = await _sim_72_keys(make_fleet(clock=clock), clock)
    assert _comparable(sim) == _comparable(live)


async def _refusal(client: Client, name: str, args: dict[str, Any]) -> str:
    _, desc = await error_of(client.execute(name, args))
    return desc


async def _sim_10_keys(fleet: SimFleet, clock: FakeClock) -> dict[str, Any]:
    """capture_qemu10_keys.py's scenario, replayed against the simulator's 10.0 dialect."""
    src = await fleet.add_vm("src", dialect="10.0", ram=128 * MiB)
    dst = await fleet.add_vm("dst", dialect="10.0", ram=128 * MiB, incoming=True)

    async def keys(client: Client) -> list[str]:
        paths: list[str] = capture.key_paths(await client.execute("query-migrate"))
        return paths

    def events(client: Client) -> list[str]:
        return [" ".join([e["event"], *map(str, e.get("data", {}).values())])
                for e in history(client) if e["event"] != "MIGRATION_PASS"]

    async with qmp(src) as s, qmp(dst) as d:
        assert s.greeting is not None
        out: dict[str, Any] = {
            "greeting-capabilities": s.greeting._raw["QMP"]["capabilities"],
            "migrate-capabilities": [c["capability"] for c in await s.execute("query-migrate-capabilities")],
            "migrate-parameters": sorted(await s.execute("query-migrate-parameters")),
        }
        states = {"none": await keys(s)}
        await s.execute("migrate-set-capabilities", caps(events=True))
        out["refusals"] = {
            "migrate blk": await _refusal(s, "migrate", {"uri": SINK, "blk": True}),
            "multifd with xbzrle": await _refusal(s, "migrate-set-capabilities", caps(multifd=True, xbzrle=True)),
            "compress capability": await _refusal(s, "migrate-set-capabilities", caps(compress=True)),
        }
        await s.execute("migrate-set-parameters", {"max-bandwidth": 1 * MiB})
        await s.execute("migrate", {"uri": SINK})
        clock.advance(0.5)
        states["active"] = await keys(s)
        await s.execute("migrate_cancel")
        states["cancelled"] = await keys(s)
        await s.execute("migrate", {"uri": f"unix:{fleet.runtime_dir}/nobody-listens"})
        src.fail_migration("Failed to connect to 'nobody-listens': Connection refused")
        states["failed"] = await keys(s)
        await s.execute("migrate-set-capabilities", caps(xbzrle=True))
        await s.execute("migrate", {"uri": SINK})
        clock.advance(0.5)
        states["active-xbzrle"] = await keys(s)
        await s.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40})
        clock.advance(10)
        states["completed-xbzrle"] = await keys(s)
        await s.execute("cont")
        await s.execute("migrate-set-capabilities", caps(xbzrle=False))
        await d.execute("migrate-set-capabilities", caps(events=True))
        await d.execute("migrate-incoming", {"uri": f"unix:{fleet.runtime_dir}/mig.sock"})
        states["incoming-setup"] = await keys(d)
        await s.execute("migrate", {"uri": f"unix:{fleet.runtime_dir}/mig.sock"})
        clock.advance(10)
        states["completed"] = await keys(s)
        states["incoming-completed"] = await keys(d)
        out["source-events"] = events(s)

    # Paused before switch-over, then continued: `device` until the last pages are sent.
    src = await fleet.add_vm("dev-src", dialect="10.0", ram=128 * MiB)
    dst = await fleet.add_vm("dev-dst", dialect="10.0", ram=128 * MiB, incoming=True)
    async with qmp(src) as s, qmp(dst) as d:
        await s.execute("migrate-set-capabilities", caps(events=True, pause_before_switchover=True))
        await d.execute("migrate-incoming", {"uri": f"unix:{fleet.runtime_dir}/dev.sock"})
        await s.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40, "downtime-limit": 20000})
        await s.execute("migrate", {"uri": f"unix:{fleet.runtime_dir}/dev.sock"})
        clock.advance(1)
        assert (await s.execute("query-migrate"))["status"] == "pre-switchover"
        await s.execute("migrate-continue", {"state": "pre-switchover"})
        states["device"] = await keys(s)
        clock.advance(1)
        assert (await s.execute("query-migrate"))["status"] == "completed"
        out["device-events"] = events(s)

    # A switch to post-copy.
    src = await fleet.add_vm("pc-src", dialect="10.0", ram=128 * MiB)
    dst = await fleet.add_vm("pc-dst", dialect="10.0", ram=128 * MiB, incoming=True)
    async with qmp(src) as s, qmp(dst) as d:
        for client in (s, d):
            await client.execute("migrate-set-capabilities", caps(events=True, postcopy_ram=True))
        await d.execute("migrate-incoming", {"uri": f"unix:{fleet.runtime_dir}/pc.sock"})
        await s.execute("migrate-set-parameters", {"max-bandwidth": 1 * MiB, "downtime-limit": 1})
        await s.execute("migrate", {"uri": f"unix:{fleet.runtime_dir}/pc.sock"})
        clock.advance(0.5)
        await s.execute("migrate-start-postcopy")
        clock.advance(0.5)
        states["postcopy-active"] = await keys(s)
        await s.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40})
        clock.advance(10)
        assert (await s.execute("query-migrate"))["status"] == "completed"
        out["postcopy-events"] = events(s)
    out["query-migrate"] = states
    return out


async def test_10_key_sets_match_captured_qemu(make_fleet: Callable[..., SimFleet]) -> None:
    clock = FakeClock()
    recorded = json.loads((DATA / "qemu10_keys.json").read_text())
    assert recorded["qemu-version"].startswith("10.0.")
    sim = await _sim_10_keys(make_fleet(clock=clock), clock)
    for key in recorded:  # one part at a time: a difference names its part
        if key != "qemu-version":
            assert (key, sim[key]) == (key, recorded[key])
    assert _comparable(sim) == _comparable(recorded)


@pytest.mark.qemu
@pytest.mark.parametrize("qemu", ["10.0"], indirect=True)
async def test_10_key_sets_recorded_are_live_qemus(qemu: str) -> None:
    """qemu10_keys.json is what real QEMU 10.0 answers (as recaptured now)."""
    recorded = json.loads((DATA / "qemu10_keys.json").read_text())
    live = await asyncio.to_thread(capture10.capture, qemu)
    assert live["qemu-version"].startswith("10.0.") and recorded["qemu-version"].startswith("10.0.")
    assert _comparable(live) == _comparable(recorded)


async def test_72_events_follow_the_events_capability(make_fleet: Callable[..., SimFleet]) -> None:
    clock = FakeClock()
    fleet = make_fleet(clock=clock)
    quiet = await fleet.add_vm("quiet", ram=64 * MiB)
    loud = await fleet.add_vm("loud", ram=64 * MiB)
    async with qmp(quiet) as q, qmp(loud) as c:
        await c.execute("migrate-set-capabilities", caps(events=True))
        for client in (q, c):
            await client.execute("migrate", {"uri": SINK})
        clock.advance(5)
        # The fleet's ticker notices completion without anyone asking.
        await wait_until(lambda: quiet.migration is not None
                         and quiet.migration.status == "completed"
                         and loud.migration is not None and loud.migration.status == "completed")
        events: list[tuple[str, Any]] = []
        while True:
            event: dict[str, Any] = dict(await asyncio.wait_for(c.events.get(), 5))
            events.append((event["event"], event.get("data")))
            if events[-1] == ("MIGRATION", {"status": "completed"}):
                break
        quiet_events = [e["event"] for e in q.events.clear()]
    passes = [data["pass"] for name, data in events if name == "MIGRATION_PASS"]
    assert passes == list(range(1, len(passes) + 1)) and len(passes) >= 3
    assert [e for e in events if e[0] != "MIGRATION_PASS"] == [
        ("MIGRATION", {"status": "setup"}), ("MIGRATION", {"status": "active"}),
        ("STOP", None), ("MIGRATION", {"status": "completed"})]
    assert quiet_events == ["STOP"]  # no MIGRATION* without the capability
    assert quiet.run_state == loud.run_state == "postmigrate"


@pytest.mark.parametrize("dialect", ["1.4", "7.2"])
async def test_migration_between_sim_vms_completes_destination(
        make_fleet: Callable[..., SimFleet], dialect: str) -> None:
    clock = FakeClock()
    fleet = make_fleet(clock=clock)
    src = await fleet.add_vm("src", dialect=dialect, ram=128 * MiB, dirty_rate=4 * MiB)
    dst = await fleet.add_vm("dst", dialect=dialect, ram=128 * MiB, incoming=True)
    async with qmp(src) as s, qmp(dst) as d:
        assert (await d.execute("query-status"))["status"] == "inmigrate"
        if dialect == "7.2":
            await d.execute("migrate-incoming", {"uri": f"unix:{fleet.runtime_dir}/in.sock"})
        assert dst.incoming_uri is not None
        await s.execute("migrate", {"uri": dst.incoming_uri})
        clock.advance(0.2)
        assert dst.status == "active" and dst.run_state == "inmigrate"
        clock.advance(120)
        assert (await s.execute("query-migrate"))["status"] == "completed"
        assert await d.execute("query-status") == {"status": "running", "singlestep": False,
                                                   "running": True}
        resume = await asyncio.wait_for(d.events.get(), 5)
        assert resume["event"] == "RESUME"
    assert src.run_state == "postmigrate"


async def test_72_controls(make_fleet: Callable[..., SimFleet]) -> None:
    clock = FakeClock()
    fleet = make_fleet(clock=clock)
    vm = await fleet.add_vm("new", ram=256 * MiB, dirty_rate=512 * MiB, working_set=128 * MiB)
    async with qmp(vm) as c:
        for args, desc in [
            ({"downtime-limit": -1},
             "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms"),
            ({"xbzrle-cache-size": 1000}, ("Parameter 'xbzrle_cache_size' expects a power of "
                                           "two no less than the target page size")),
            ({"bogus": 1}, "Parameter 'bogus' is unexpected"),
        ]:
            assert await error_of(c.execute("migrate-set-parameters", args)) == (
                "GenericError", desc)
        assert await error_of(c.execute("migrate_set_speed", {"value": 1})) == (
            "CommandNotFound", "The command migrate_set_speed has not been found")
        assert await error_of(c.execute("migrate-set-capabilities",
                                        caps(nope=True))) == (
            "GenericError", "Parameter 'capability' does not accept value 'nope'")
        await c.execute("migrate-set-capabilities", caps(postcopy_ram=True, events=True))
        await c.execute("migrate", {"uri": SINK})
        clock.advance(10)
        assert (await c.execute("query-migrate"))["status"] == "active"  # not converging
        # Parameters change mid-migration; the downtime limit is big enough now.
        await c.execute("migrate-set-parameters", {"downtime-limit": 2000 * 1000,
                                                   "max-bandwidth": 2**30})
        params = await c.execute("query-migrate-parameters")
        assert params["downtime-limit"] == 2000000 and params["max-bandwidth"] == 2**30
        clock.advance(10)
        info = await c.execute("query-migrate")
        assert info["status"] == "completed" and info["ram"]["page-size"] == PAGE
        assert info["ram"]["dirty-sync-count"] > 2 and info["setup-time"] >= 0
        assert await error_of(c.execute("migrate", {"uri": SINK})) == (
            "GenericError", "Can't migrate the vm that was paused due to previous migration")
        await c.execute("cont")
        await c.execute("migrate-set-parameters", {"downtime-limit": 300,
                                                   "max-bandwidth": 128 * MiB})
        await c.execute("migrate", {"uri": SINK})
        clock.advance(1)
        await c.execute("migrate-start-postcopy")
        clock.advance(30)
        info = await c.execute("query-migrate")
        assert info["status"] == "completed" and info["ram"]["postcopy-bytes"] > 0
        statuses = [e["data"]["status"] for e in history(c) if e["event"] == "MIGRATION"]
        assert statuses[-3:] == ["active", "postcopy-active", "completed"]
        schema = await c.execute("query-qmp-schema")
        assert {"migrate-set-parameters", "migrate-incoming"} <= {
            e["name"] for e in schema if e["meta-type"] == "command"}


async def test_second_client_waits_for_the_first(make_fleet: Callable[..., SimFleet]) -> None:
    fleet = make_fleet()
    vm = await fleet.add_vm("one")
    first = await Raw.open(vm)
    assert "QMP" in await first.line()
    second = await Raw.open(vm)  # the connect itself succeeds
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(second.reader.readline(), 0.3)
    await first.close()
    assert "QMP" in await second.line()
    await second.close()


async def test_fault_freeze_holds_replies_until_thawed(make_fleet: Callable[..., SimFleet]) -> None:
    fleet = make_fleet()
    vm = await fleet.add_vm("ice")
    async with qmp(vm) as c:
        vm.freeze()
        pending = asyncio.ensure_future(c.execute("query-name"))
        done, _ = await asyncio.wait({pending}, timeout=0.3)
        assert not done and vm.received == []  # frozen: not even read
        vm.thaw()
        assert await asyncio.wait_for(pending, 5) == {"name": "ice"}
        vm.freeze(0.3)
        start = time.monotonic()
        assert await asyncio.wait_for(c.execute("query-name"), 5) == {"name": "ice"}
        assert time.monotonic() - start >= 0.25


async def test_fault_reply_delay(make_fleet: Callable[..., SimFleet]) -> None:
    fleet = make_fleet()
    vm = await fleet.add_vm("slow")
    async with qmp(vm) as c:
        vm.set_reply_delay(0.3)
        start = time.monotonic()
        await c.execute("query-status")
        assert time.monotonic() - start >= 0.28
        vm.set_reply_delay(0)


async def test_fault_drop_connection_then_reconnect(make_fleet: Callable[..., SimFleet]) -> None:
    fleet = make_fleet()
    vm = await fleet.add_vm("flaky")
    raw = await Raw.open(vm)
    await raw.line()
    vm.drop_connection()
    assert await asyncio.wait_for(raw.reader.read(), 5) == b""
    await raw.close()
    async with qmp(vm) as c:  # the VM lives on: a new client is served
        assert await c.execute("query-name") == {"name": "flaky"}


async def test_fault_garbage_and_overlong_line(make_fleet: Callable[..., SimFleet]) -> None:
    fleet = make_fleet()
    vm = await fleet.add_vm("noisy")
    raw = await Raw.open(vm)
    await raw.line()
    vm.send_garbage(b"garbage\n")
    assert await asyncio.wait_for(raw.reader.readline(), 5) == b"garbage\n"
    vm.send_long_line(2 * MiB)
    data = await asyncio.wait_for(raw.reader.readexactly(2 * MiB), 5)
    assert b"\n" not in data
    await raw.close()
    # Armed while no client is there: it arrives right after the next greeting.
    await wait_until(lambda: not vm.connected)
    vm.send_garbage()
    raw = await Raw.open(vm)
    await raw.line()
    assert b"not JSON" in await asyncio.wait_for(raw.reader.readline(), 5)
    await raw.close()
    # qemu.qmp gives up on a line longer than its 10 MiB buffer.
    client = Client("victim")
    await client.connect(str(vm.socket_path))
    vm.send_long_line()
    with pytest.raises(ExecInterruptedError):
        await asyncio.wait_for(client.execute("query-name"), 5)
    with pytest.raises(ValueError, match="limit"):
        await client.disconnect()  # qemu.qmp reports why the session died


@pytest.mark.parametrize("dialect", ["1.4", "7.2"])
async def test_fault_fail_migration(make_fleet: Callable[..., SimFleet], dialect: str) -> None:
    clock = FakeClock()
    fleet = make_fleet(clock=clock)
    vm = await fleet.add_vm("doomed", dialect=dialect, ram=256 * MiB)
    async with qmp(vm) as c:
        if dialect == "7.2":
            await c.execute("migrate-set-capabilities", caps(events=True))
        await c.execute("migrate", {"uri": SINK})
        clock.advance(0.5)
        vm.fail_migration("Unable to write to socket: Connection reset by peer")
        info = await c.execute("query-migrate")
        if dialect == "7.2":
            assert info == {"status": "failed",
                            "error-desc": "Unable to write to socket: Connection reset by peer"}
            last = [e for e in history(c) if e["event"] == "MIGRATION"][-1]
            assert last["data"] == {"status": "failed"}
        else:
            assert info == {"status": "failed"}
        assert (await c.execute("query-status"))["status"] == "running"
    assert vm.status == "failed"


async def test_kill_and_quit(make_fleet: Callable[..., SimFleet]) -> None:
    fleet = make_fleet()
    doomed = await fleet.add_vm("doomed")
    leaving = await fleet.add_vm("leaving")
    raw = await Raw.open(doomed)
    await raw.line()
    doomed.kill()
    assert await asyncio.wait_for(raw.reader.read(), 5) == b""
    await raw.close()
    assert not doomed.socket_path.exists() and doomed.run_state == "shutdown"
    raw = await Raw.open(leaving)
    await raw.line()
    await raw.send({"execute": "qmp_capabilities"})
    await raw.reply()
    await raw.send({"execute": "quit", "id": "bye"})
    assert await raw.line() == {"return": {}, "id": "bye"}
    event = await raw.line()
    assert event["event"] == "SHUTDOWN" and event["data"]["reason"] == "host-qmp-quit"
    assert await asyncio.wait_for(raw.reader.read(), 5) == b""
    await raw.close()
    assert leaving.run_state == "shutdown"


async def test_endpoint_and_serve(runtime_dir: Path) -> None:
    from migtui.sim import serve

    fleet = await serve(8, "7.2", runtime_dir / "demo", speedup=50, seed=1)
    try:
        vm = next(iter(fleet.vms.values()))
        assert vm.endpoint == f"{vm.name}=unix:{vm.socket_path}"
        migrating = [v for v in fleet.vms.values() if v.migration is not None]
        assert len(migrating) == 2
        converging, stuck = migrating
        assert stuck.migration is not None
        await wait_until(lambda: converging.status == "completed"
                         and stuck.migration is not None and stuck.migration.passes > 3,
                         timeout=10)
        assert stuck.status == "active"
    finally:
        await fleet.stop()


@pytest.mark.parametrize("dialect", ["7.2", "10.0"])
async def test_postcopy_stream_break_pauses_both_ends_and_recovers_as_real_qemu(
        make_fleet: Callable[..., SimFleet], dialect: str) -> None:
    """A stream broken in post-copy parks both ends in postcopy-paused; migrate-recover on the
    destination and migrate with resume on the source take them through postcopy-recover to
    completion. Replies, refusals and the MIGRATION events per end are real QEMU's (7.2 and
    10.0 captured on lab pairs: migrate-pause, a resume to an address nobody listens on,
    migrate-recover, the resume)."""
    ten = dialect == "10.0"
    clock = FakeClock()
    fleet = make_fleet(clock=clock)
    src = await fleet.add_vm("src", dialect=dialect, ram=128 * MiB, dirty_rate=64 * MiB)
    dst = await fleet.add_vm("dst", dialect=dialect, ram=128 * MiB, incoming=True)
    rec = f"unix:{fleet.runtime_dir}/rec.sock"
    async with qmp(src) as s, qmp(dst) as d:
        for c in (s, d):
            await c.execute("migrate-set-capabilities", caps(events=True, postcopy_ram=True))
        pause_refused = ("migrate-pause is currently only supported during "
                         + ("postcopy-active or postcopy-recover state" if ten else "postcopy-active state"))
        assert await error_of(s.execute("migrate-pause")) == ("GenericError", pause_refused)
        assert await error_of(d.execute("migrate-recover", {"uri": rec})) == (
            "GenericError", "Migrate recover can only be run when postcopy is paused.")
        await s.execute("migrate-set-parameters", {"max-bandwidth": 32 * MiB, "max-postcopy-bandwidth": 4 * MiB})
        await d.execute("migrate-incoming", {"uri": f"unix:{fleet.runtime_dir}/in.sock"})
        await s.execute("migrate", {"uri": dst.incoming_uri})
        clock.advance(1)
        await s.execute("migrate-start-postcopy")
        clock.advance(1)
        assert src.status == dst.status == "postcopy-active"
        dst.break_stream()  # the fault, seen from the destination's end
        assert src.status == dst.status == "postcopy-paused"
        info = await s.execute("query-migrate")
        assert info["status"] == "postcopy-paused"
        assert info.get("error-desc") == ("Channel error: Input/output error" if ten else None)
        assert ("downtime" in info) is ten and ("expected-downtime" in info) is not ten
        assert (await d.execute("query-migrate"))["status"] == "postcopy-paused"
        assert (await d.execute("query-status"))["status"] == "running"  # the guest runs there
        assert (await s.execute("query-status"))["status"] == "finish-migrate"
        for client, cmd, args, desc in [
            (s, "migrate-pause", {}, pause_refused),
            (s, "migrate-recover", {"uri": rec}, "Migrate recover can only be run when postcopy is paused."),
            (s, "migrate", {"uri": rec}, "There's a migration process in progress"),
            (d, "migrate", {"uri": rec, "resume": True}, "Cannot resume if there is no paused migration"),
        ]:
            assert await error_of(client.execute(cmd, args)) == ("GenericError", desc)
        # A resume to where nobody listens: 10.0 tries and parks again saying why, 7.2 just stays.
        assert await s.execute("migrate", {"uri": f"unix:{fleet.runtime_dir}/nobody.sock", "resume": True}) == {}
        info = await s.execute("query-migrate")
        assert info["status"] == "postcopy-paused"
        assert info.get("error-desc") == (
            f"Failed to connect to '{fleet.runtime_dir}/nobody.sock': No such file or directory" if ten else None)
        assert await d.execute("migrate-recover", {"uri": rec}) == {}
        info = await d.execute("query-migrate")
        assert info == {"status": "postcopy-paused", "socket-address": [{"path": rec[5:], "type": "unix"}]}
        await s.execute("migrate-set-parameters", {"max-postcopy-bandwidth": 0})
        assert await s.execute("migrate", {"uri": rec, "resume": True}) == {}
        clock.advance(5)
        assert (await s.execute("query-migrate"))["status"] == "completed"
        assert (await d.execute("query-migrate"))["status"] == "completed"
        assert (await d.execute("query-status"))["status"] == "running"

        def statuses(c: Client) -> list[str]:
            seen = [e["data"]["status"] for e in history(c) if e["event"] == "MIGRATION"]
            return seen[seen.index("postcopy-paused"):]

        assert statuses(s) == (["postcopy-paused", "postcopy-recover-setup", "postcopy-paused",
                                "postcopy-recover-setup", "postcopy-recover", "postcopy-active", "completed"]
                               if ten else ["postcopy-paused", "postcopy-recover", "postcopy-active", "completed"])
        assert statuses(d) == (["postcopy-paused", "postcopy-recover", "postcopy-active", "completed"] if ten
                               else ["postcopy-paused", "setup", "postcopy-recover", "postcopy-active", "completed"])
