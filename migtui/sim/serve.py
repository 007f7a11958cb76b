"""Start a demo fleet: a few migrations already running, some converging, some not."""
from __future__ import annotations

import random
import resource
from pathlib import Path

from migtui.sim.fleet import SimFleet
from migtui.sim.model import PAGE

ROLES = ("web", "db", "cache", "api", "batch", "queue")
MiB = 2**20


def _raise_fd_limit(needed: int) -> None:
    """Each VM holds a listening socket and a client: big fleets outgrow 1024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def serve(n_vms: int, dialect: str, runtime_dir: Path, speedup: float = 10.0,
                seed: int = 0) -> SimFleet:
    """A fleet of ``n_vms`` VMs; a quarter are destinations already being migrated to.

    Every other migration converges (dirty rate well under the bandwidth); the rest
    dirty faster than the bandwidth and keep adding passes until someone steps in.
    Returns the running fleet; the caller owns it and must ``await fleet.stop()``.
    """
    _raise_fd_limit(4 * n_vms + 256)
    rng = random.Random(seed)
    fleet = SimFleet(Path(runtime_dir), speedup=speedup, seed=seed)
    if dialect not in ("1.4", "7.2", "10.0", "mixed"):
        raise ValueError(f"dialect {dialect!r}: give 1.4, 7.2, 10.0 or mixed")
    n_pairs = n_vms // 4 if n_vms >= 2 else 0
    names = [f"{ROLES[i % len(ROLES)]}{i // len(ROLES) + 1:02d}" for i in range(n_vms)]
    sources, dests = names[:n_pairs], names[n_vms - n_pairs:]
    # "mixed": every third VM (and every third pair, both ends alike) speaks the seed's 1.4.
    dialects = {name: ("1.4" if i % 3 == 2 else "7.2") if dialect == "mixed" else dialect
                for i, name in enumerate(names)}
    for k, (source_name, dest_name) in enumerate(zip(sources, dests)):
        dialects[source_name] = dialects[dest_name] = ("1.4" if k % 3 == 2 else "7.2") if dialect == "mixed" else dialect
    for i, name in enumerate(names):
        bandwidth = 32 * MiB if dialects[name] == "1.4" else 128 * MiB
        ram = rng.choice((1, 2, 4)) * 1024 * MiB
        working_set = rng.choice((64, 128, 256, 512)) * MiB
        if name in sources and sources.index(name) % 2 == 1:
            dirty = rng.uniform(1.5, 3.0) * bandwidth  # will not converge
        else:
            dirty = rng.uniform(0.05, 0.4) * bandwidth
        ten = dialects[name] == "10.0"  # on KVM with a dirty ring: the dirty limit is a lever there
        await fleet.add_vm(name, dialect=dialects[name], ram=ram, working_set=working_set,
                           dirty_rate=int(dirty) // PAGE * PAGE, incoming=name in dests,
                           zero_fraction=rng.uniform(0.2, 0.8), vcpus=2 if ten else 1, dirty_ring=ten)
    for source_name, dest_name in zip(sources, dests):
        source, dest = fleet[source_name], fleet[dest_name]
        if dialects[source_name] != "1.4":
            dest.execute("migrate-incoming",
                         {"uri": f"unix:{fleet.runtime_dir / dest_name}.migrate"}, record=False)
            source.set_capability("events")
        assert dest.incoming_uri is not None
        source.start_migration(dest.incoming_uri)
    return fleet
