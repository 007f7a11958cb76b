"""A fleet of simulated VMs in one asyncio process, with one clock and one ticker.

Simulated time runs ``speedup`` times faster than the injected clock.  Idle VMs cost
nothing; VMs with a running migration are advanced by a single shared ticker, so events
(and destinations completing) happen on time even when no client asks.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

from migtui.sim.model import Guest
from migtui.sim.vm import SimVM

TICK = 0.05  # seconds of real time between ticker rounds


def uri_key(uri: str) -> tuple[str, str] | None:
    """How a source's URI finds a listening destination: unix by path, tcp by port."""
    scheme, _, rest = uri.partition(":")
    if scheme == "unix":
        return ("unix", str(Path(rest).absolute()))
    if scheme == "tcp":
        return ("tcp", rest.rpartition(":")[2].split(",")[0])
    return None


class SimFleet:
    def __init__(self, runtime_dir: Path, speedup: float = 1.0, seed: int = 0, *,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], float] = time.time) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.runtime_dir = Path(runtime_dir)
        self.speedup = speedup
        self.seed = seed
        self.vms: dict[str, SimVM] = {}
        self._clock = clock
        self._t0 = clock()
        self._wall0 = wallclock()
        self._listening: dict[tuple[str, str], SimVM] = {}
        self._active: set[SimVM] = set()
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None

    # -- time ---------------------------------------------------------------------------
    def now(self) -> float:
        """Simulated seconds since the fleet started."""
        return (self._clock() - self._t0) * self.speedup

    def timestamp(self, t: float | None = None) -> tuple[int, int]:
        """Event timestamp (seconds, microseconds) of simulated time ``t`` (default: now)."""
        wall = self._wall0 + (self.now() if t is None else t) / self.speedup
        seconds = int(wall)
        return seconds, int((wall - seconds) * 1_000_000)

    # -- VMs ------------------------------------------------------------------------------
    async def add_vm(self, name: str, dialect: str = "7.2", ram: int = 512 * 2**20,
                     dirty_rate: int = 0, working_set: int = 64 * 2**20,
                     incoming: bool = False, disk: int = 0, *,
                     zero_fraction: float = 0.5, page_change: float = 0.05,
                     tcp: bool = False, vcpus: int = 1, kvm: bool = False, dirty_ring: bool = False) -> SimVM:
        if name in self.vms:
            raise ValueError(f"a VM named {name!r} already exists")
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        guest = Guest(ram=ram, dirty_rate=dirty_rate, working_set=working_set,
                      zero_fraction=zero_fraction, page_change=page_change, disk=disk,
                      vcpus=vcpus, kvm=kvm or dirty_ring, dirty_ring=dirty_ring)
        # A string seed is hashed deterministically: runs repeat for a given fleet seed.
        rng = random.Random(f"{self.seed}:{name}")
        vm = SimVM(self, name, dialect, guest, incoming=incoming, rng=rng)
        await vm.start(tcp=tcp)
        self.vms[name] = vm
        return vm

    def __getitem__(self, name: str) -> SimVM:
        return self.vms[name]

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        await asyncio.gather(*(vm.close() for vm in self.vms.values()))
        self._active.clear()

    # -- what SimVM asks of the fleet -----------------------------------------------------
    def listen(self, vm: SimVM, uri: str) -> None:
        """``vm`` waits for an incoming migration on ``uri``."""
        key = uri_key(uri)
        if key is not None:
            self._listening[key] = vm

    def listening_on(self, uri: str) -> SimVM | None:
        """The live VM waiting for an incoming migration on ``uri``, if any."""
        key = uri_key(uri)
        vm = self._listening.get(key) if key is not None else None
        return vm if vm is not None and vm.alive else None

    def stop_listening(self, vm: SimVM) -> None:
        for key in [k for k, v in self._listening.items() if v is vm]:
            del self._listening[key]

    def connect_migration(self, uri: str) -> SimVM | None:
        """The destination listening on ``uri``; it accepts one connection, like QEMU."""
        vm = self.listening_on(uri)
        if vm is not None:
            self.stop_listening(vm)
        return vm

    def start_ticking(self, vm: SimVM) -> None:
        """Advance ``vm`` on the shared ticker while its migration runs."""
        self._active.add(vm)
        self._wake.set()
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def stop_ticking(self, vm: SimVM) -> None:
        self._active.discard(vm)

    async def _tick(self) -> None:
        while True:
            if not self._active:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(TICK)
            for vm in list(self._active):
                vm.sync()
