"""What migtui knows about one VM: who it is, whether we can reach it, and its migration."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from migtui.model.derived import MigrationTracker
from migtui.model.endpoint import Endpoint
from migtui.model.sample import MigrationSample
from migtui.model.units import format_duration

__all__ = ["Connection", "EventRecord", "VMState", "unreachable"]


class Connection(str, enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    UNRESPONSIVE = "unresponsive"  # connected, but a request has outlived its timeout
    MONITOR_BUSY = "monitor busy"  # another client holds QEMU's only QMP session
    DISCONNECTED = "disconnected"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A line of the VM's log: a QMP event, an operator action, or an error."""

    time: float
    kind: str  # "event", "action" or "error"
    name: str  # event name or command
    detail: str  # the data or QEMU's sentence, ready to print
    passes: tuple[int, int] | None = None  # MIGRATION_PASS: the first and last pass this line stands for


LOG_RECORDS = 200

# The verdict and ETA are brought up to date at most this often (sample seconds) while a
# migration keeps its status and its pass: they move with passes and rates, not with each
# reply, and at a fast poll re-assessing every reply cost more than the rest of a sample's
# path. A new status, a new pass or new settings bring them up to date at once, and so does
# the sample after (the rates over two decide).
VERDICT_REFRESH_S = 1.0
# ...stretched to this many samples, up to VERDICT_REFRESH_MAX_S: at the console's 2 Hz a
# verdict every third sample, not every other (figure 8: the verdict was a quarter of a
# sample's CPU), its ETAs no further from fresh ones in the simulator (tests/test_vm_verdict.py).
VERDICT_REFRESH_SAMPLES = 3
VERDICT_REFRESH_MAX_S = 1.5


class _TrackersOwn:
    """A VMState attribute that is its tracker's, read and written there: one copy."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, vm: Any, owner: type | None = None) -> Any:
        return self if vm is None else getattr(vm.tracker, self.name)

    def __set__(self, vm: Any, value: Any) -> None:
        if getattr(vm.tracker, self.name) != value:
            vm._assessed = None  # the verdict weighs the settings: new ones, a new verdict
        setattr(vm.tracker, self.name, value)


@dataclass
class VMState:
    endpoint: Endpoint
    name: str
    connection: Connection = Connection.CONNECTING
    reason: str | None = None  # why it is not connected, in one line
    qemu_version: str | None = None
    run_state: str | None = None
    dialect: str | None = None  # "modern" or "legacy"
    # Where migtui's migrate-incoming told this destination to listen (QEMU runs it once per
    # process): the next start migrates there. Forgotten on reconnect, when it may be a new QEMU.
    incoming_uri: str | None = None
    # The machine type it runs (qom-get /machine type, e.g. pc-i440fx-7.2) and every one its
    # QEMU has (query-machines, aliases too); None until read or where QEMU cannot say.
    machine: str | None = None
    machine_types: frozenset[str] | None = None
    memory: int | None = None  # the guest's RAM in bytes, where the backend reads it (placement weighs it)
    tracker: MigrationTracker = field(default_factory=MigrationTracker)
    # The dashboard's event log; bounded per VM (a fleet of 1000 fast-passing migrations
    # filled 500 records each: ~125 MB). The recording keeps every event.
    log: deque[EventRecord] = field(default_factory=lambda: deque(maxlen=LOG_RECORDS))
    problems: tuple[str, ...] = ()  # what was wrong with the last reply
    log_total: int = 0  # records ever appended, passes joined into one line included
    # (sample, verdict, pass, whether it may be held: not from a first sample, its sample number)
    _assessed: tuple[Any, Any, Any, bool, int] | None = field(default=None, repr=False, compare=False)
    _shown: tuple[Any, Any, Any] | None = field(default=None, repr=False, compare=False)  # (sample, verdict, aged)
    _samples_seen: int = field(default=0, repr=False, compare=False)  # distinct samples observed or assessed
    _counted: Any = field(default=None, repr=False, compare=False)  # the sample counted last
    _counted_passes: Any = field(default=None, repr=False, compare=False)  # its pass
    _pass_began: int = field(default=0, repr=False, compare=False)  # the count at that pass's first sample

    # The settings are the tracker's (guidance reads them there): one copy, whoever writes it.
    # parameters: QEMU's names and modern units (max-bandwidth bytes/s, downtime-limit ms, ...).
    parameters = _TrackersOwn()
    capabilities = _TrackersOwn()
    vcpus = _TrackersOwn()
    kvm = _TrackersOwn()

    def observe(self, sample: MigrationSample, max_age: float = 0.0, *, assess: bool = True) -> None:
        """Take a new sample of this VM's migration: what a backend calls for each reply.

        Adds it to the tracker (history and derived figures) and keeps its problems; then,
        while a migration is in flight, brings the verdict up to date (refresh_assessment),
        on screen or not, so each look costs a few samples' work and a sort by verdict or ETA
        never reads whole histories at once. `max_age` is how old, in sample seconds, that
        verdict may stay (the backend's Backend.assess_max_age(): a few seconds in a big
        fleet, else 0). assess=False only records: a backend feeding many samples at once (a
        replay's seek, a libvirt hand-over) calls refresh_assessment() once after the last.
        """
        self.tracker.add(sample)
        self.problems = sample.problems
        self._count(sample)
        if assess:
            self.refresh_assessment(max_age)

    def _count(self, sample: Any) -> None:
        """Count a sample once, observed or first looked at (a tracker fed directly is looked at
        only), and note the count at which its pass began."""
        if self._counted is not sample:
            self._counted = sample
            self._samples_seen += 1
            passes = self.tracker.derived.passes
            if passes != self._counted_passes:
                self._counted_passes, self._pass_began = passes, self._samples_seen

    def refresh_assessment(self, max_age: float = 0.0) -> None:
        """While a migration is in flight, compute its verdict now if the one held is older
        than `max_age` (see assessment); readers then only read. And as it ends: its final
        reply (downtime-bytes over downtime) teaches the guest and its host, seen or not."""
        last = self.tracker.last
        if last is not None and (last.in_flight or last.finished):
            self.assessment(max_age=max_age)

    def assessment(self, max_age: float = 0.0):  # -> migtui.model.guidance.Assessment
        """The verdict on the latest migration: computed again for a new status, pass or
        settings and the sample after, else every VERDICT_REFRESH_S of samples (at least
        VERDICT_REFRESH_SAMPLES samples, at most VERDICT_REFRESH_MAX_S); in between, the one
        held with its ETAs counted down.

        max_age > 0 accepts one computed from an earlier sample of the same migration up to
        that many seconds older (sample time), across passes: a big fleet's sort need not
        assess every VM.
        """
        from migtui.model.guidance import assess

        last = self.tracker.last
        passes = self.tracker.derived.passes
        shown = self._shown
        self._count(last)
        cached = self._assessed
        holds = False  # the new verdict may be held: it ran out, or comes after its pass's first sample
        if cached is not None and cached[0] is not last:
            before = cached[0]
            age = None if last is None or before is None else last.time - before.time
            if age is None or before.status != last.status:
                cached = None
            elif not last.in_flight and before.info == last.info:
                pass  # idle or finished, and QEMU repeats itself: nothing can have changed
            elif last.finished:
                cached = None  # QEMU says more of the end (7.2 fills in its times a reply later)
            elif max_age > 0 and 0 <= age <= max_age:
                pass
            else:
                # QEMU 1.4 counts no passes: its remaining rises at each sync, as any QEMU's does.
                new_pass = cached[2] != passes
                if new_pass or _rose(before.get("ram", "remaining"), last.get("ram", "remaining")):
                    # Looked at first past the pass's first sample (a backend's hand-over of several,
                    # assessed at its last): the rates over two are in, so it may be held.
                    cached, holds = None, new_pass and self._samples_seen > self._pass_began
                elif not (cached[3] and 0 <= age < VERDICT_REFRESH_MAX_S and (
                        age < VERDICT_REFRESH_S or self._samples_seen - cached[4] < VERDICT_REFRESH_SAMPLES)):
                    cached, holds = None, True
        if cached is None:
            # A verdict from the first sample of a pass, a status or settings holds for no second
            # sample: the rates over two are what decide (the judge on the current pass needs its
            # drain, the first throughput of a migration is QEMU's guess).
            cached = self._assessed = (last, assess(self.tracker), passes, holds, self._samples_seen)
        if shown is None or shown[0] is not last or shown[1] is not cached[1]:
            # One held from an earlier sample: its ETAs count down to the sample now.
            age = last.time - cached[0].time if last is not None and cached[0] is not None else 0.0
            shown = self._shown = (last, cached[1], cached[1].aged(age) if last is not None and last.in_flight else cached[1])
        # Any state but connected, once a migration was seen: reconnect attempts go through
        # `connecting`, and the last verdict is no truer then.
        if last is not None and last.in_flight and self.connection != Connection.CONNECTED:
            return unreachable(shown[2], last.time, self.connection, self.reason)
        return shown[2]

    def advice(self):  # -> list[migtui.model.guidance.Advice]
        from migtui.model.guidance import advise

        return advise(self.tracker, self.parameters, self.capabilities, modern=self.dialect != "legacy")

    def follow_up(self):  # -> migtui.model.guidance.FollowUp | None
        """Whether the advice applied to this migration worked (None: none applied)."""
        from migtui.model.guidance import follow_up

        return follow_up(self.tracker, self.parameters, self.capabilities, modern=self.dialect != "legacy")

    def log_append(self, record: EventRecord) -> None:
        """Add a record; a pass that follows passes joins their line ("passes 4–15 in 38s").

        A migration that never converges passes over RAM again and again: one line per
        pass would push everything else out of the LOG_RECORDS. Any other record ends
        the run. The recording (migtui.record) keeps every pass.
        """
        last = self.log[-1] if self.log else None
        if (record.passes is not None and last is not None and last.passes is not None
                and last.name == record.name and last.passes[1] < record.passes[0]):
            first, latest = last.passes[0], record.passes[1]
            self.log[-1] = EventRecord(last.time, last.kind, last.name,
                                       f"passes {first}–{latest} in {format_duration(record.time - last.time)}",
                                       (first, latest))
        else:
            self.log.append(record)
        self.log_total += 1

    @property
    def sample(self):  # -> MigrationSample | None
        return self.tracker.last

    @property
    def derived(self):
        return self.tracker.derived

    @property
    def migration_status(self) -> str:
        return self.tracker.last.status if self.tracker.last else "unknown"

    @property
    def in_flight(self) -> bool:
        return self.tracker.last is not None and self.tracker.last.in_flight


def _rose(before: float | None, now: float | None) -> bool:
    return before is not None and now is not None and now > before


def unreachable(last_verdict, seen: float, connection: Connection, reason: str | None):
    """The verdict on a migration whose QEMU is gone or silent (guidance.unreachable)."""
    from migtui.model.guidance import unreachable as judged

    state = "reconnecting" if connection == Connection.CONNECTING else f"{connection}: {reason or 'no reason given'}"
    return judged(last_verdict, seen, state)


def status_category(vm: VMState) -> str:
    """One word for colouring and counting: what an operator scans the fleet for."""
    if vm.connection in (Connection.DISCONNECTED, Connection.MONITOR_BUSY):
        return "disconnected"
    if vm.connection == Connection.UNRESPONSIVE:
        return "unresponsive"
    if vm.connection == Connection.CONNECTING and vm.sample is None:
        return "connecting"
    status = vm.migration_status
    if status in ("failed", "cancelled", "completed"):
        return status
    if status == "postcopy-paused":
        return "postcopy-paused"  # the stream broke: the VM's memory is split across two hosts
    if status.startswith("postcopy"):
        return "post-copy"
    if vm.run_state == "inmigrate":
        return "incoming" if vm.in_flight else "waiting"
    if vm.in_flight:
        return "migrating"
    return "idle"
