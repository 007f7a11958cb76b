"""Host evacuation: the plan (placement, order, caps) and a drain of 50 simulated VMs.

The real thing, three libvirt hosts, is in test_libvirt_drain.py.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from lab_fixtures import wait_until
from migtui.backend.qmp.backend import QMPBackend
from migtui.backend.qmp.session import SessionOptions
from migtui.drain import Drain
from migtui.model.drain import DrainItem, Place, next_to_start, order, place, summary
from migtui.model.endpoint import parse_endpoint
from migtui.model.requests import MigrationOptions
from migtui.model.units import InputError
from migtui.sim import SimFleet

MiB, GiB = 2**20, 2**30


def test_each_vm_goes_where_most_memory_is_free_and_its_machine_type_is():
    places = [Place("a", "a", 8 * GiB, frozenset({"pc-i440fx-7.2"})), Place("b", "b", 16 * GiB, frozenset({"q35"})),
              Place("c", "c", 12 * GiB, frozenset({"pc-i440fx-7.2", "q35"}))]
    vm = DrainItem("web", "web", "h1", 4 * GiB, "pc-i440fx-7.2")
    assert place(vm, places, {}, {}).key == "c"  # b has more free, but not its machine type
    assert place(vm, places, {"c": 10 * GiB}, {}).key == "a"  # c has 2 GiB left after what was sent
    big = DrainItem("db", "db", "h1", 32 * GiB, "q35")
    why = place(big, places, {}, {})
    assert isinstance(why, str) and why.startswith("no destination can take it:") and "needs 32.0 GiB" in why
    pinned = DrainItem("web", "web", "h1", 4 * GiB, "pc-i440fx-7.2", pinned="a")
    assert place(pinned, places, {}, {}).key == "a"
    unknown = DrainItem("x", "x", "h1")  # nothing known: any place, the most free first
    assert place(unknown, places, {}, {}).key == "b"
    one = [Place("w", "w", slots=1)]
    assert isinstance(place(unknown, one, {}, {"w": 1}), str)  # a waiting QMP VM takes one migration


def test_the_queue_moves_the_fastest_first_within_both_caps():
    items = [DrainItem(f"v{i}", f"v{i}", f"h{i % 2}", memory=(10 - i) * GiB) for i in range(10)]
    queued, how = order(items)
    assert [i.memory for i in queued] == sorted(i.memory for i in items) and "smallest RAM first" in how
    items[0].estimate_s = 1.0
    assert "as listed" not in order(items)[1]
    first = next_to_start(queued, per_source=2, total=3)
    assert len(first) == 3 and max(sum(i.source == h for i in first) for h in ("h0", "h1")) <= 2
    for i in first:
        i.state = "migrating"
    assert next_to_start(queued, per_source=2, total=3) == []
    first[0].state = "done"
    assert len(next_to_start(queued, per_source=2, total=3)) == 1
    first[1].state, first[1].reason = "failed", "QEMU said no"
    text = summary(queued, 65)
    assert text.startswith("1 of 10 moved in 1m05s") and "(failed: QEMU said no)" in text


@pytest_asyncio.fixture
async def sim(tmp_path):
    fleet = SimFleet(tmp_path / "sim", speedup=20.0, seed=5)
    yield fleet
    await fleet.stop()


async def test_the_simulator_drains_50_vms_with_the_caps_held(sim):
    sources = [await sim.add_vm(f"s{i:02}", ram=64 * MiB) for i in range(50)]
    targets = [await sim.add_vm(f"d{i:02}", ram=64 * MiB, incoming=True) for i in range(50)]
    backend = QMPBackend([parse_endpoint(vm.endpoint) for vm in sources + targets],
                         options=SessionOptions(poll_interval=0.2, active_interval=0.1))
    backend.start()
    try:
        await wait_until(lambda: all(h.connected and h.vm.sample for h in backend), timeout=30)
        seen: list[tuple[str, str]] = []
        drain = Drain(backend, [vm.name for vm in sources], allowed=lambda d: d.key.startswith("d"),
                      options=MigrationOptions(bandwidth=GiB), per_source=4, total=3,
                      on_change=lambda item: seen.append((item.key, item.state)))
        in_flight = []
        backend.subscribe(lambda m: in_flight.append(sum(backend.get(s.name).vm.in_flight for s in sources)))
        line = await drain.run()
        assert line.startswith("50 of 50 moved"), line
        assert max(in_flight) <= 3  # the total cap binds (one source host: the simulator's)
        assert len({i.destination for i in drain.items}) == 50  # a waiting VM takes one migration
        assert all(backend.get(d.name).vm.run_state == "running" for d in targets)
        assert [s for _, s in seen].count("done") == 50
    finally:
        await backend.close()


async def test_a_drain_refuses_what_it_cannot_do(sim):
    src = await sim.add_vm("src")
    backend = QMPBackend([parse_endpoint(src.endpoint)], options=SessionOptions(poll_interval=0.2))
    backend.start()
    try:
        with pytest.raises(InputError, match="at least 1 per source host"):
            Drain(backend, ["src"], per_source=0)
        with pytest.raises(InputError, match="no VM named 'nope'"):
            Drain(backend, ["nope"])
        await wait_until(lambda: backend.get("src").vm.sample is not None, timeout=10)
        drain = Drain(backend, ["src"])  # no VM waits for it
        assert (await drain.run()).startswith("0 of 1 moved") and drain.items[0].state == "failed"
        assert drain.items[0].reason == "no destination can take it: none given"
    finally:
        await backend.close()


@pytest.mark.parametrize("argv, says", [
    (["a", "--to", "b", "--parallel", "0"], "--parallel: 0 is out of range; give 1 to 64"),
    (["qemu+tcp://127.0.0.1:1/system", "--to", "unix:/x.qmp"], "do not mix them"),
    (["a", "--to", "b", "--policy", "zz"], "--policy zz: no such policy; there are: cautious, finish"),
    (["qemu+tcp://127.0.0.1:1/system", "--to", "qemu+tcp://127.0.0.1:2/system", "--migrate-uri", "unix:///{hots}"],
     "its placeholders are {host}"),
])
def test_each_bad_drain_gets_one_line_before_anything_connects(argv, says):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "migtui", "drain", *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1
