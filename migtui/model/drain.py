"""Evacuating a host: where each VM goes, in which order, and how many move at once. Pure:
the engine (migtui.drain) starts the migrations through the backend interface.

Placement: each VM goes to the destination with the most free memory that can take it (its
machine type there, its RAM in what is free after the VMs already sent), unless the operator
pinned it. Concurrency: at most `per_source` migrations out of one host and `total` in all
(KubeVirt's parallelOutboundMigrationsPerNode 2 and parallelMigrationsPerCluster 5). Order:
the VMs that will move fastest first (a pre-flight's estimate, else the smallest RAM), so
capacity frees up early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from migtui.model.units import format_bytes, format_duration

__all__ = ["DrainItem", "Place", "ITEM_STATES", "place", "order", "next_to_start", "summary",
           "PER_SOURCE", "TOTAL", "RETRIES"]

ITEM_STATES = ("waiting", "migrating", "done", "failed", "cancelled")
PER_SOURCE, TOTAL = 2, 5  # KubeVirt's defaults
RETRIES = 1  # a VM whose destination went away mid-migration goes back in the queue this many times


@dataclass(frozen=True)
class Place:
    """A destination as placement sees it. None: not known (placement does not rule on it)."""

    key: str
    label: str
    free_memory: int | None = None
    machine_types: frozenset[str] | None = None
    slots: int | None = None  # migrations it can take (a QMP VM waiting with -incoming: 1)


@dataclass
class DrainItem:
    key: str  # the VM's key in the backend
    name: str
    source: str  # the host it leaves
    memory: int | None = None  # guest RAM, bytes
    machine: str | None = None  # its machine type, e.g. pc-i440fx-7.2
    pinned: str | None = None  # a destination key the operator chose
    estimate_s: float | None = None  # a pre-flight's time to move it
    state: str = "waiting"
    destination: str | None = None  # the Place key it went (or goes) to
    reason: str | None = None  # why it failed, or why it was queued again
    started: float | None = None
    ended: float | None = None
    downtime_ms: float | None = None
    attempts: int = 0
    excluded: set[str] = field(default_factory=set)  # destinations that failed it

    def to_json(self) -> dict:
        return {"vm": self.name, "from": self.source, "to": self.destination, "state": self.state,
                "reason": self.reason, "attempts": self.attempts,
                "seconds": None if self.started is None or self.ended is None else round(self.ended - self.started, 1),
                "downtime-ms": self.downtime_ms}


def place(item: DrainItem, places: Iterable[Place], committed: Mapping[str, int],
          taken: Mapping[str, int]) -> Place | str:
    """Where `item` goes, or one line saying why nowhere. `committed`: bytes of RAM already sent
    (or on their way) to each place; `taken`: migrations placed on each, for its slots."""
    why: list[str] = []
    fits: list[tuple[float, int, Place]] = []
    for n, p in enumerate(places):
        if p.key in item.excluded:
            why.append(f"{p.label}: failed it before")
            continue
        if item.pinned is not None and p.key != item.pinned:
            continue
        if p.slots is not None and taken.get(p.key, 0) >= p.slots:
            why.append(f"{p.label}: busy")
            continue
        if item.machine and p.machine_types is not None and item.machine not in p.machine_types:
            why.append(f"{p.label}: no machine type {item.machine}")
            continue
        free = None if p.free_memory is None else p.free_memory - committed.get(p.key, 0)
        if free is not None and item.memory is not None and item.memory > free:
            why.append(f"{p.label}: {format_bytes(free)} free, it needs {format_bytes(item.memory)}")
            continue
        fits.append((free if free is not None else -1.0, -n, p))  # unknown free memory after known
    if fits:
        return max(fits, key=lambda f: (f[0], f[1]))[2]
    if item.pinned is not None and not why:
        return f"pinned to {item.pinned}, which is not a destination"
    return "no destination can take it: " + ("; ".join(why) or "none given")


def order(items: list[DrainItem]) -> tuple[list[DrainItem], str]:
    """The queue's order, and one line saying which order it is."""
    if items and all(i.estimate_s is not None for i in items):
        return sorted(items, key=lambda i: i.estimate_s), "fastest first (the pre-flight's estimates)"
    if all(i.memory is not None for i in items):
        return sorted(items, key=lambda i: i.memory), "smallest RAM first (no pre-flight estimate for every VM)"
    return list(items), "as listed (neither estimates nor RAM sizes known)"


def next_to_start(items: list[DrainItem], per_source: int = PER_SOURCE, total: int = TOTAL) -> list[DrainItem]:
    """The waiting items to start now, in queue order, within both caps."""
    running = [i for i in items if i.state == "migrating"]
    per: dict[str, int] = {}
    for i in running:
        per[i.source] = per.get(i.source, 0) + 1
    out = []
    room = total - len(running)
    for item in items:
        if room <= 0:
            break
        if item.state == "waiting" and per.get(item.source, 0) < per_source:
            out.append(item)
            per[item.source] = per.get(item.source, 0) + 1
            room -= 1
    return out


def summary(items: list[DrainItem], seconds: float) -> str:
    """How many moved, how long, the worst downtime and what failed: one line."""
    moved = [i for i in items if i.state == "done"]
    failed = [i for i in items if i.state in ("failed", "cancelled")]
    worst = max((i.downtime_ms for i in moved if i.downtime_ms is not None), default=None)
    text = f"{len(moved)} of {len(items)} moved in {format_duration(seconds)}"
    if worst is not None:
        text += f", worst downtime {worst:.0f} ms"
    if failed:
        text += "; not moved: " + ", ".join(f"{i.name} ({i.state}: {i.reason or '?'})" for i in failed)
    return text
