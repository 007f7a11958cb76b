"""The libvirt backend: every domain on the libvirt hosts an operator names, one row each.

What it costs: nothing per idle domain but events. A domain's job is sampled
(virDomainGetJobStats) only while it has one, at the active interval, all of one host's in
one batch that the host's worker thread times itself, waking the event loop once per batch;
a job is found by libvirt's MIGRATION_ITERATION event (QEMU
syncs its first pass as the migration starts), by the destination domain appearing on
another watched host, or by the sweep when a host (re)connects. The outcome, with its final
figures, comes from JOB_COMPLETED, or from the completed job's statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from typing import Any, Callable, Iterable, Mapping
from xml.etree import ElementTree

from migtui.backend.api import Backend, Destination, HostView, VMHandle
from migtui.backend.audit import AuditLog
from migtui.backend.errors import BackendError, Busy, NotConnected, Refused
from migtui.backend.libvirt.domain import CAPABILITY_FLAGS, LibvirtDomain, Placement
from migtui.backend.libvirt.events import ensure_event_thread, import_libvirt
from migtui.backend.libvirt.host import KEEPALIVE_COUNT, KEEPALIVE_INTERVAL, HostLost, LibvirtHost, describe_libvirt_error
from migtui.backend.libvirt.target import LibvirtTarget
from migtui.backend.libvirt.threads import in_daemon_thread
from migtui.backend.libvirt.units import JOB_COMPLETED, JOB_NONE, bandwidth_from_libvirt, bandwidth_to_libvirt, \
    dirty_rate_from_libvirt, sample_from_job_stats
from migtui.backend.messages import ActionResult, Listener, VMEvent, VMUpdated, settings_update
from migtui.model.history import PassMark
from migtui.model.requests import MigrationOptions
from migtui.model.sample import parse_query_migrate
from migtui.model.vm import EventRecord

__all__ = ["LibvirtBackend", "LibvirtOptions", "LibvirtRefused", "READ_ONLY"]

READ_ONLY = "read-only: libvirt was opened with virConnectOpenReadOnly"
# How long a job that vanished without statistics waits for JOB_COMPLETED or the destination to say how it ended.
JOB_SETTLE_SECONDS = 2.0
GONE_SETTLE_SECONDS = 1.0  # how long a domain sampling found gone waits for the lifecycle event that says why
# Samples taken faster than this go to the loop in batches this long (at 2 Hz, two at a time): an
# operator reads a figure about once a second, and each hand-over wakes the loop, which costs more
# than the sample (figure 8). A job's end or failure, and a sample the loop wants shown at once (a
# job appeared, an operator's refresh), go at once; a new pass's first sample is taken at once.
HAND_OVER_S = 1.0


class LibvirtRefused(BackendError):
    """libvirt refused a call; the message is libvirt's own sentence."""


class LibvirtOptions:
    def __init__(self, active_interval: float = 0.5, backoff_max: float = 5.0, read_only: bool = False,
                 audit: AuditLog | None = None,
                 migration_uri: Callable[[str], str | None] | None = None,
                 start_timeout: float = 15.0) -> None:
        self.active_interval = active_interval  # seconds between job samples while a job runs
        self.backoff_max = backoff_max
        self.read_only = read_only
        self.audit = audit or AuditLog(None)
        # The migration stream's URI (VIR_MIGRATE_PARAM_URI) for the destination host's libvirt URI,
        # or None: libvirt picks one. The lab gives a unix socket (libvirt refuses loopback addresses).
        self.migration_uri = migration_uri
        self.start_timeout = start_timeout  # how long a started migration may take to show its job


class LibvirtBackend(Backend):
    def __init__(self, targets: Iterable[LibvirtTarget], listener: Listener | None = None,
                 options: LibvirtOptions | None = None) -> None:
        super().__init__()
        self.libvirt = import_libvirt()
        self.options = options or LibvirtOptions()
        self.read_only = READ_ONLY if self.options.read_only else None
        if listener is not None:
            self.subscribe(listener)
        self.libvirt_hosts: list[LibvirtHost] = [LibvirtHost(self, t) for t in targets]  # hosts() is their view
        self.domains: dict[str, LibvirtDomain] = {}  # UUID -> domain, in the order they were found
        self._keys: dict[str, LibvirtDomain] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._plan_queued = False
        self._hand_over_at_once = False  # a poll_soon() since the last plan wants its batch shown at once
        self._context = contextvars.copy_context()

    # ---- Backend ---------------------------------------------------------------

    def handles(self) -> dict[str, VMHandle]:
        return dict(self._keys)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._keys)  # not handles(), a copy: assess_max_age() asks at every sample

    def start(self) -> None:
        ensure_event_thread()
        # libvirt's callbacks come from its own thread, with no context: run them in the starter's,
        # so subscribers see the context vars they set up (Textual's active app, say).
        self._context = contextvars.copy_context()
        self._loop = asyncio.get_running_loop()
        for host in self.libvirt_hosts:
            host.start()
            host.sample_every(lambda host=host: self._sample_on_thread(host))

    async def close(self) -> None:
        await asyncio.gather(*(h.close() for h in self.libvirt_hosts), return_exceptions=True)

    def poll_soon(self, at_once: bool = True) -> None:
        """Sample every job now (a pass began, a job appeared): once, however many ask at once.
        at_once: that batch goes to the loop at once; else with the next second's (a new pass's
        first figures: taken as it begins, shown within the second; the event said it began)."""
        self._hand_over_at_once = self._hand_over_at_once or at_once
        if not self._plan_queued and self._loop is not None:
            self._plan_queued = True
            self._loop.call_soon(self._plan, True)

    def poll_all(self) -> None:
        self.poll_soon()
        for host in self.libvirt_hosts:
            if not host.connected:
                host.retry_now()

    def hosts(self) -> list[HostView]:
        return [HostView(h.label, h.target.shown_uri, h.connected, h.reason,
                         sum(1 for d in self.domains.values() if d.home is h)) for h in self.libvirt_hosts]

    def destinations(self, source: VMHandle) -> list[Destination]:
        if not isinstance(source, LibvirtDomain):
            return []
        return [Destination(f"host:{h.label}", f"{h.label}  (libvirt {h.libvirt_version or '?'}, "
                                               f"QEMU {h.qemu_version or '?'}, {h.target.shown_uri})", h,
                            free_memory=h.free_memory, machine_types=h.machine_types)
                for h in self.libvirt_hosts if h is not source.home and h.connected]

    def run_state(self, state: int, reason: int, incoming: bool) -> str:
        """libvirt's domain state in QMP's run-state words, which the console colours and counts."""
        lv = self.libvirt
        if incoming:
            return "inmigrate"
        if state == lv.VIR_DOMAIN_RUNNING:
            return "running"
        if state == lv.VIR_DOMAIN_PAUSED:
            if reason == lv.VIR_DOMAIN_PAUSED_MIGRATION:
                return "finish-migrate"  # the source, stopped for the switch-over
            if reason in (lv.VIR_DOMAIN_PAUSED_POSTCOPY, lv.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED):
                return "postmigrate"
            return "paused"
        return {lv.VIR_DOMAIN_SHUTDOWN: "shutdown", lv.VIR_DOMAIN_SHUTOFF: "shut off",
                lv.VIR_DOMAIN_CRASHED: "crashed", lv.VIR_DOMAIN_PMSUSPENDED: "suspended"}.get(state, "unknown")

    # ---- connecting a host (called by LibvirtHost._run) ----------------------------

    async def connect_host(self, host: LibvirtHost) -> None:
        loop = asyncio.get_running_loop()
        found = await host.call(self._open_and_sweep, host, loop)
        conn, info, domains = found
        host.conn = conn
        host.hostname, host.libvirt_version, host.qemu_version, (host.free_memory, host.machine_types) = info
        if host.target.label is None and host.hostname:
            label, n = host.hostname, 2
            while any(h is not host and h.label == label for h in self.libvirt_hosts):
                label, n = f"{host.hostname}-{n}", n + 1
            host.label = label
        seen = set()
        for uuid, name, dom, state, reason, stats, settings, shape in domains:
            domain = self._domain(host, uuid, name)
            if domain is None:
                continue
            seen.add(uuid)
            domain.vm.memory, domain.vm.machine = shape
            self._place(domain, host, dom, state, reason, stats)
            self._apply_settings(domain, settings)
        # Domains this host had before it went away and has no longer: gone while we could not see.
        for domain in list(self.domains.values()):
            if domain.uuid not in seen and host.label in domain.placements:
                self._unplace(domain, host, "not running on it any more")
        self.poll_soon()

    def _open_and_sweep(self, host: LibvirtHost, loop: asyncio.AbstractEventLoop):
        """On the host's thread: open, register for events, list the running and paused domains."""
        lv = self.libvirt
        try:
            if self.options.read_only:
                conn = lv.openReadOnly(host.uri)
            else:
                conn = _open(lv, host.uri)
        except lv.libvirtError as err:
            raise HostLost(describe_libvirt_error(err)) from None
        if conn is None:
            raise HostLost("libvirt returned no connection")
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
            conn.registerCloseCallback(self._closed_cb, (host, loop))
            for event_id, callback in (
                (lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_cb),
                (lv.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, self._iteration_cb),
                (lv.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._job_completed_cb),
            ):
                conn.domainEventRegisterAny(None, event_id, callback, (host, loop))
            hostname = conn.getHostname()
            info = (hostname, _version(conn.getLibVersion()), _version(conn.getVersion()), _capacity(lv, conn))
            domains = []
            for dom in conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                if not host.target.wants(dom.name()):
                    continue
                with contextlib.suppress(lv.libvirtError):
                    state, reason = dom.state()
                    domains.append((dom.UUIDString(), dom.name(), dom, state, reason, _job_stats(lv, dom),
                                    _read_settings(lv, dom), _shape(lv, dom)))
        except lv.libvirtError as err:
            with contextlib.suppress(Exception):
                conn.close()
            raise HostLost(describe_libvirt_error(err)) from None
        return conn, info, domains

    # ---- libvirt's callbacks: on the event thread; each goes to the loop as it is ----------

    def _closed_cb(self, conn: Any, reason: int, opaque: Any) -> None:
        host, loop = opaque
        lv = self.libvirt
        why = {lv.VIR_CONNECT_CLOSE_REASON_EOF: "libvirtd gone: the connection closed (end of file)",
               lv.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: f"libvirtd silent: no keepalive answer for "
                                                      f"{KEEPALIVE_INTERVAL * KEEPALIVE_COUNT} s",
               lv.VIR_CONNECT_CLOSE_REASON_ERROR: "connection to libvirtd lost (libvirtd gone, or the network)",
               lv.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by migtui"}.get(reason, f"closed (reason {reason})")
        self._to_loop(loop, host.lost, why)

    def _to_loop(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
        """Run fn(*args) on the loop, in the starter's context (libvirt's thread has none)."""
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(fn, *args, context=self._context)

    def _lifecycle_cb(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        host, loop = opaque
        self._to_loop(loop, self._on_lifecycle, host, dom, dom.UUIDString(), dom.name(), event, detail)

    def _iteration_cb(self, conn: Any, dom: Any, iteration: int, opaque: Any) -> None:
        host, loop = opaque
        self._to_loop(loop, self._on_iteration, host, dom, dom.UUIDString(), dom.name(), iteration, time.time())

    def _job_completed_cb(self, conn: Any, dom: Any, params: dict, opaque: Any) -> None:
        host, loop = opaque
        self._to_loop(loop, self._on_job_completed, host, dom, dom.UUIDString(), dom.name(), dict(params),
                      time.time())

    # ---- what events do, on the loop ------------------------------------------------------

    def _on_lifecycle(self, host: LibvirtHost, dom: Any, uuid: str, name: str, event: int, detail: int) -> None:
        if host.conn is None:
            return
        lv = self.libvirt
        domain = self._domain(host, uuid, name)
        if domain is None:
            return
        what = _lifecycle_text(lv, event, detail)
        domain.log("event", "lifecycle", f"{what} on {host.label}")
        self.post(VMEvent(domain.key, "LIFECYCLE", {"event": what, "host": host.label}, time.time()))
        if event in (lv.VIR_DOMAIN_EVENT_STOPPED, lv.VIR_DOMAIN_EVENT_UNDEFINED):
            if event == lv.VIR_DOMAIN_EVENT_UNDEFINED and host.label not in domain.placements:
                return
            self._unplace(domain, host, what)
            return
        placement = domain.placements.get(host.label)
        if placement is None:
            domain.placements[host.label] = placement = Placement(host, dom)
        if event == lv.VIR_DOMAIN_EVENT_STARTED and detail == lv.VIR_DOMAIN_EVENT_STARTED_MIGRATED:
            placement.incoming = True  # a migration arrives: its source has a job, sample it
            for other in domain.placements.values():
                if other is not placement:
                    other.job = True
            self.poll_soon()
        asyncio.ensure_future(self._refresh(domain, host))

    def _on_iteration(self, host: LibvirtHost, dom: Any, uuid: str, name: str, iteration: int, when: float) -> None:
        domain = self._domain(host, uuid, name)
        if domain is None:
            return
        placement = domain.placements.get(host.label)
        if placement is None:
            domain.placements[host.label] = placement = Placement(host, dom)
        if not placement.job:
            placement.job = True
            domain.update_home()
        domain.vm.tracker.history.mark_pass(PassMark(when, iteration))
        domain.vm.log_append(EventRecord(when, "event", "MIGRATION_ITERATION", f"pass {iteration}",
                                         (iteration, iteration)))
        self.post(VMEvent(domain.key, "MIGRATION_ITERATION", {"iteration": iteration}, when))
        self.poll_soon(at_once=False)
        if placement.host is domain.home:
            # libvirt applies a job's tuning as QEMU starts it, after the job shows: read it once a pass.
            asyncio.ensure_future(self.refresh_settings(domain))

    def _on_job_completed(self, host: LibvirtHost, dom: Any, uuid: str, name: str, params: dict,
                          when: float) -> None:
        domain = self._domain(host, uuid, name)
        if domain is None:
            return
        placement = domain.placements.get(host.label)
        if placement is not None and placement.incoming:
            return  # the destination's copy of the statistics: the source's row has them
        params.setdefault("type", JOB_COMPLETED)
        self._add_sample(domain, params, when)
        if placement is not None:
            placement.job = False
        domain.update_home()
        self.post(VMEvent(domain.key, "JOB_COMPLETED", {"host": host.label}, when))

    # ---- domains: found, placed, moved ----------------------------------------------------------

    def _domain(self, host: LibvirtHost, uuid: str, name: str) -> LibvirtDomain | None:
        """The row for this UUID, made when first seen on a host that wants it."""
        domain = self.domains.get(uuid)
        if domain is not None:
            return domain
        if not host.target.wants(name):
            return None
        key = name if name not in self._keys else f"{name}@{host.label}"
        domain = LibvirtDomain(self, key, uuid, name, host)
        domain.vm.capabilities = {c: False for c in CAPABILITY_FLAGS}
        self.domains[uuid] = domain
        self._keys[key] = domain
        self.post(VMUpdated(key, "identity"))
        return domain

    def _place(self, domain: LibvirtDomain, host: LibvirtHost, dom: Any, state: int, reason: int,
               stats: Mapping[str, Any] | None) -> None:
        placement = domain.placements.get(host.label)
        if placement is None:
            placement = domain.placements[host.label] = Placement(host, dom)
        placement.dom, placement.state, placement.reason = dom, state, reason
        job = bool(stats) and stats.get("type", JOB_NONE) != JOB_NONE
        placement.job = job
        if job:
            operation = stats.get("operation")
            placement.incoming = operation == self.libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN
        elif state == self.libvirt.VIR_DOMAIN_RUNNING:
            placement.incoming = False
        domain.update_home()
        self.post(VMUpdated(domain.key, "identity"))
        if job and not placement.incoming:
            self._add_sample(domain, stats, time.time())
        elif domain.vm.sample is None and not placement.incoming:
            self._record(domain, parse_query_migrate({"status": "none"}, time.time()))  # idle, as QMP says it
        elif not job and not placement.incoming and domain.vm.in_flight and not self._incoming_elsewhere(domain, placement):
            # The job ended while migtui could not see it (libvirtd restarted: it cancels the
            # migrations it was driving): how it ended, as libvirt kept it.
            completed = (stats or {}).get("completed")
            if completed:
                self._add_sample(domain, completed, time.time())
            else:
                self._job_vanished(domain)

    @staticmethod
    def _incoming_elsewhere(domain: LibvirtDomain, placement: Placement) -> bool:
        """A destination elsewhere still waits for this migration: the source's job is not over."""
        return any(p.incoming for p in domain.placements.values() if p is not placement)

    def _unplace(self, domain: LibvirtDomain, host: LibvirtHost, why: str) -> None:
        removed = domain.placements.pop(host.label, None)
        if removed is not None and not removed.incoming and why != "gone":
            domain.stopped = f"{why} on {host.label}"  # what libvirt said of the source: the row keeps it
        if domain.vm.in_flight:
            # The destination went (the migration failed or was cancelled): ask the source how it ended.
            for placement in domain.placements.values():
                asyncio.ensure_future(self._refresh(domain, placement.host))
        if not domain.placements:
            migrated = domain.vm.sample is not None and domain.vm.sample.status not in ("none", "unknown")
            if not migrated:
                # A domain that stopped with nothing to show: it leaves the fleet.
                self.domains.pop(domain.uuid, None)
                self._keys.pop(domain.key, None)
                self.post(VMUpdated(domain.key, "identity"))
                return
            domain.gone = f"{domain.stopped or f'{why} on {host.label}'}; last seen there"
            if domain.vm.in_flight:
                # libvirt ended the job with the domain (destroyed, crashed): the figures it last
                # showed stay, and the migration is over.
                last = domain.vm.sample
                domain.log("error", "job", f"the domain stopped mid-migration: {domain.gone}")
                failed = {**(last.info if last else {}), "status": "failed",
                          "error-desc": f"the domain stopped mid-migration: {domain.gone}"}
                self._record(domain, parse_query_migrate(failed, time.time()))
        domain.update_home()
        self.post(VMUpdated(domain.key, "identity"))

    async def _refresh(self, domain: LibvirtDomain, host: LibvirtHost) -> None:
        """Read one domain's state and job again on one host, after an event said it changed."""
        placement = domain.placements.get(host.label)
        if placement is None or not host.connected:
            return
        try:
            state, reason, stats = await host.call(_state_and_job, self.libvirt, placement.dom)
        except self.libvirt.libvirtError as err:
            if _gone(self.libvirt, err):
                self._unplace(domain, host, "gone")
            return
        except Exception:
            return
        self._place(domain, host, placement.dom, state, reason, stats)
        if stats and stats.get("type", JOB_NONE) != JOB_NONE:
            self.poll_soon()
        if domain.vm.memory is None:  # a domain that came after the sweep (started, migrated in)
            with contextlib.suppress(Exception):
                domain.vm.memory, domain.vm.machine = await host.call(_shape, self.libvirt, placement.dom)

    # ---- sampling --------------------------------------------------------------------------

    def _plan(self, now: bool = False) -> None:
        """Tell each host's worker which jobs to sample (the ones whose job placement it holds);
        `now`: sample them at once. A host given jobs after none starts sampling at once."""
        self._plan_queued = False
        # poll_soon()'s wish is its own plan's: a plan without `now` (a job ended) leaves it there.
        at_once = now and self._hand_over_at_once
        if now:
            self._hand_over_at_once = False
        jobs: dict[LibvirtHost, list[tuple[LibvirtDomain, Placement]]] = {h: [] for h in self.libvirt_hosts}
        for domain in self.domains.values():
            placement = domain.job_placement()
            if placement is not None and placement.host in jobs:
                jobs[placement.host].append((domain, placement))
        for host, items in jobs.items():
            started = bool(items) and not host.sampled
            host.sampled = tuple(items)
            if items and (now or started):
                host.kick_sampling(at_once or started)

    def _sample_on_thread(self, host: LibvirtHost) -> float | None:
        """On the host's worker thread: one batch of its jobs, handed to the loop in one call.
        Returns the seconds to the next batch, or None (no job: sleep until kicked)."""
        items, conn, loop = host.sampled, host.conn, self._loop
        asked, host.hand_over_next = host.hand_over_next, False  # read first: a kick meanwhile is the next tick's
        if not items or conn is None or loop is None:
            if loop is not None:
                self._hand_over(host, loop)
            return None
        when = time.time()
        try:
            results = _sample_batch(self.libvirt, conn, [p.dom for _, p in items])
        except HostLost as err:
            self._hand_over(host, loop)
            self._to_loop(loop, host.lost, str(err))
            return None
        except Exception:  # a libvirt-python surprise: try again next time
            return self.options.active_interval
        pending = host.pending
        pending.append((items, results, when))
        interval = self.options.active_interval
        # The batch goes now if the next one would be over HAND_OVER_S after the oldest waiting (half
        # an interval's slack: ticks jitter), if the loop asked for it, or if a job ended or failed.
        # By age alone otherwise: however often kicks come, nothing waits much past HAND_OVER_S.
        if asked or when - pending[0][2] + interval * 1.5 > HAND_OVER_S or not _all_running(results):
            self._hand_over(host, loop)
        return interval

    def _hand_over(self, host: LibvirtHost, loop: asyncio.AbstractEventLoop) -> None:
        """On the worker thread: the batches sampled since the last hand-over, to the loop in one call."""
        if host.pending:
            batches, host.pending = host.pending, []
            self._to_loop(loop, self._on_batches, host, batches)

    def _on_batches(self, host: LibvirtHost, batches: list[tuple[Any, list[Any], float]]) -> None:
        """One hand-over: every sample recorded in order, each domain's verdict brought up to date
        once, at its last (nobody can look in between: at 2 Hz that halves the verdicts)."""
        observed: dict[str, LibvirtDomain] = {}
        for items, results, when in batches:
            self._on_batch(host, items, results, when, observed)
        max_age = self.assess_max_age()
        for domain in observed.values():
            domain.vm.refresh_assessment(max_age)

    async def _poll_host(self, host: LibvirtHost, domains: list[LibvirtDomain]) -> None:
        """One batch of these domains' jobs from the loop (the worker times its own batches)."""
        items = tuple((d, d.placements[host.label]) for d in domains if host.label in d.placements)
        try:
            results = await host.call(_sample_batch, self.libvirt, host.conn, [p.dom for _, p in items])
        except HostLost as err:
            host.lost(str(err))
            return
        self._on_batch(host, items, results, time.time())

    def _on_batch(self, host: LibvirtHost, items: tuple[tuple[LibvirtDomain, Placement], ...],
                  results: list[tuple[int | None, int, dict[str, Any], str | None]], when: float,
                  observed: dict[str, LibvirtDomain] | None = None) -> None:
        """A batch of one host's job statistics, on the loop: samples, and jobs that ended. With
        `observed`, running jobs' samples are recorded unassessed and their domains put there."""
        changed = False
        for (domain, placement), (state, reason, stats, error) in zip(items, results):
            if error is not None:
                if error == "gone" and placement.job:
                    # libvirt's lifecycle event says why (destroyed, crashed, shut down) and may come a
                    # moment after: give it that moment before the row says only "gone".
                    placement.job = False
                    changed = True
                    asyncio.get_running_loop().call_later(GONE_SETTLE_SECONDS, self._gone_later, domain, host, placement)
                continue
            if state is not None:
                placement.state, placement.reason = state, reason
            job = stats.get("type", JOB_NONE) != JOB_NONE
            if job and stats.get("operation") == self.libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN:
                placement.incoming = True
                placement.job = True
                domain.update_home()
                if domain.job_placement() is not placement:
                    changed = True
                    continue
            if not job:
                if not domain.vm.in_flight and (domain.migrating or self._incoming_elsewhere(domain, placement)):
                    continue  # the migration is still setting up (the destination prepares): keep asking
                placement.job = False
                changed = True
                completed = stats.get("completed")
                if completed and domain.vm.in_flight:
                    self._add_sample(domain, completed, when)
                elif domain.vm.in_flight:
                    self._job_vanished(domain)
                domain.update_home()
                continue
            last = domain.vm.sample
            if last is not None and when < last.time:
                continue  # sampled before what is shown already (JOB_COMPLETED, say, came first)
            self._add_sample(domain, stats, when, assess=observed is None)
            if observed is not None:
                observed[domain.key] = domain
        if changed:
            self._plan()

    def _gone_later(self, domain: LibvirtDomain, host: LibvirtHost, placement: Placement) -> None:
        if domain.placements.get(host.label) is placement:  # no lifecycle event came to say more
            self._unplace(domain, host, "gone")

    def _job_vanished(self, domain: LibvirtDomain) -> None:
        """The job is gone and the source kept no statistics of it (a source domain that left with
        its migration has none): JOB_COMPLETED or the destination's lifecycle say more, shortly."""
        if not domain.settling:
            domain.settling = True
            asyncio.get_running_loop().call_later(JOB_SETTLE_SECONDS, self._settle, domain)

    def _settle(self, domain: LibvirtDomain) -> None:
        domain.settling = False
        if not domain.vm.in_flight or domain.job_placement() is not None:
            return  # JOB_COMPLETED came, or the job is back in sight
        last = domain.vm.sample.info if domain.vm.sample else {}
        if any(p.host is not domain.home and not p.incoming for p in domain.placements.values()) \
                or domain.home is domain.migrating_to:
            reply = {**last, "status": "completed"}  # it runs at the destination: the event was missed
        else:
            reply = {**last, "status": "cancelled",
                     "error-desc": "the job ended while migtui could not see it, and libvirt kept no statistics "
                                   "(a restarted libvirtd cancels the migrations it drove)"}
        self._record(domain, parse_query_migrate(reply, time.time()))

    def _add_sample(self, domain: LibvirtDomain, stats: Mapping[str, Any], when: float, assess: bool = True) -> None:
        sample = sample_from_job_stats(stats, when, postcopy=domain.postcopy, postcopy_failed=domain.postcopy_failed)
        if sample.status == "none" and domain.vm.in_flight:
            self._job_vanished(domain)
            return
        self._record(domain, sample, assess)

    def _record(self, domain: LibvirtDomain, sample, assess: bool = True) -> None:
        """Record a sample and post it; assess=False: the caller brings the verdict up to date after."""
        vm = domain.vm
        starts, ends = sample.in_flight and not vm.in_flight, sample.finished and vm.in_flight
        vm.observe(sample, self.assess_max_age(), assess=assess)
        if starts or ends:
            # A job's tuning is the job's (migrateToURI3's bandwidth, a downtime set before): read it
            # as it starts and as it ends, which is when libvirt changes it.
            asyncio.ensure_future(self.refresh_settings(domain))
        if sample.in_flight:
            domain.job_seen.set()
        self.post(VMUpdated(domain.key, "sample", sample=sample))

    # ---- settings --------------------------------------------------------------------------

    def _apply_settings(self, domain: LibvirtDomain, settings: Mapping[str, Any]) -> None:
        vm = domain.vm
        vm.parameters = {**vm.parameters, **settings}
        self.post_settings(domain)

    def post_settings(self, domain: LibvirtDomain) -> None:
        self.post(settings_update(domain.key, domain.vm.parameters, domain.vm.capabilities))

    async def refresh_settings(self, domain: LibvirtDomain) -> None:
        placement = domain.job_placement() or domain.placements.get(domain.home.label)
        if placement is None or not placement.host.connected:
            return
        with contextlib.suppress(Exception):
            self._apply_settings(domain, await placement.host.call(_read_settings, self.libvirt, placement.dom))

    # ---- the pre-flight ------------------------------------------------------------------------

    async def measure_dirty_rate(self, domain: LibvirtDomain, placement: Placement, seconds: int = 1) -> float:
        """The guest's dirty rate in bytes/s, measured by libvirt for `seconds` (libvirt 7.2+, QEMU 5.2+).
        The next migration's ETA starts from it while pass 1 reports no dirty rate yet."""
        lv, host = self.libvirt, placement.host
        try:
            await host.call(placement.dom.startDirtyRateCalc, seconds, 0)
        except lv.libvirtError as err:
            raise LibvirtRefused(f"libvirt refused to measure the dirty rate: {describe_libvirt_error(err)}") from None
        except AttributeError:
            raise LibvirtRefused("this libvirt-python has no virDomainStartDirtyRateCalc (libvirt 7.2+)") from None
        deadline = time.monotonic() + seconds + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # libvirt measures for `seconds`; ask again shortly
            status, rate = await host.call(_dirty_rate, lv, host.conn, placement.dom)
            if status == lv.VIR_DOMAIN_DIRTYRATE_MEASURED:
                if not isinstance(rate, (int, float)) or rate < 0:
                    raise LibvirtRefused(f"libvirt measured no usable dirty rate ({rate!r})")
                measured = dirty_rate_from_libvirt(rate)
                domain.vm.tracker.dirty_rate_prior = [(float(seconds), measured)]
                return measured
        raise LibvirtRefused(f"libvirt did not finish measuring the dirty rate within {seconds + 10} s")

    # ---- controls ----------------------------------------------------------------------------

    async def call_audited(self, domain: LibvirtDomain, host: LibvirtHost, call: str, arguments: dict[str, Any],
                           fn: Callable[[], Any]) -> Any:
        """One state-changing libvirt call: on the host's thread, audited, logged, reported."""
        if not host.connected:
            raise NotConnected(f"{call}: {host.label} is not connected: {host.reason or 'connecting'}")
        try:
            result = await host.call(fn)
        except self.libvirt.libvirtError as err:
            text = describe_libvirt_error(err)
            self._report(domain, call, arguments, False, text, text)
            raise LibvirtRefused(f"libvirt refused {call}: {text}") from None
        self._report(domain, call, arguments, True, result,
                     " ".join(f"{k}={v}" for k, v in arguments.items()) or "ok")
        return result

    def _report(self, domain: LibvirtDomain, call: str, arguments: dict[str, Any], ok: bool, result: Any,
                logged: str) -> None:
        """A state-changing call's outcome: the audit line, the VM's log line, the ActionResult."""
        self.options.audit.record(domain.vm.name, str(domain.endpoint), call, arguments, ok, result)
        domain.log("action" if ok else "error", call, logged)
        self.post(ActionResult(domain.key, call, arguments, ok, result, time.time()))

    async def start_migration(self, domain: LibvirtDomain, destination: LibvirtHost,
                              options: MigrationOptions, stream: str | None = None) -> str:
        """virDomainMigrateToURI3, peer to peer, on a thread and a connection of its own; returns
        once libvirt shows the job (or refuses), while the migration runs on."""
        lv = self.libvirt
        source = domain.home
        caps = domain.vm.capabilities
        flags = lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER
        params: dict[str, Any] = {}
        names = ["VIR_MIGRATE_LIVE", "VIR_MIGRATE_PEER2PEER"]

        def flag(name: str) -> None:
            nonlocal flags
            flags |= getattr(lv, name)
            names.append(name)

        if options.xbzrle or caps.get("xbzrle"):
            flag("VIR_MIGRATE_COMPRESSED")
            params[lv.VIR_MIGRATE_PARAM_COMPRESSION] = "xbzrle"
            if options.xbzrle_cache:
                params[lv.VIR_MIGRATE_PARAM_COMPRESSION_XBZRLE_CACHE] = int(options.xbzrle_cache)
        if options.auto_converge or caps.get("auto-converge"):
            flag("VIR_MIGRATE_AUTO_CONVERGE")
        if options.postcopy or caps.get("postcopy-ram"):
            flag("VIR_MIGRATE_POSTCOPY")
        if options.multifd or caps.get("multifd"):
            flag("VIR_MIGRATE_PARALLEL")
            if options.multifd:
                params[lv.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = int(options.multifd)
        if options.block:
            flag("VIR_MIGRATE_NON_SHARED_DISK")
        if options.persist_destination:
            flag("VIR_MIGRATE_PERSIST_DEST")
        if options.undefine_source:
            flag("VIR_MIGRATE_UNDEFINE_SOURCE")
        if options.bandwidth:
            params[lv.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_to_libvirt(options.bandwidth)
        if stream is None and self.options.migration_uri is not None:
            stream = self.options.migration_uri(destination.uri)
        if stream:
            params[lv.VIR_MIGRATE_PARAM_URI] = stream
        arguments = {"dconnuri": destination.uri, "params": dict(params), "flags": "|".join(names)}
        placement = domain.placements.get(source.label)
        if placement is None:
            raise NotConnected(f"migrate: {domain.vm.name} is not on {source.label} any more")
        if options.downtime_ms is not None:
            # Not a migrateToURI3 parameter: set on the domain first, as virsh migrate-setmaxdowntime does.
            await self.call_audited(domain, source, "virDomainMigrateSetMaxDowntime",
                                    {"downtime-limit": options.downtime_ms},
                                    lambda: placement.dom.migrateSetMaxDowntime(int(options.downtime_ms), 0))
        placement.job = True  # sample it from now: the first pass's event may take a while
        await self._migrate_to_uri(domain, source, destination, params, flags, arguments)
        self._report(domain, "virDomainMigrateToURI3", arguments, True, "started",
                     f"to {destination.label} ({'|'.join(names[2:]) or 'live'})")
        return destination.uri

    async def _migrate_to_uri(self, domain: LibvirtDomain, source: LibvirtHost, destination: LibvirtHost,
                              params: dict[str, Any], flags: int, arguments: dict[str, Any],
                              resuming: bool = False) -> None:
        """virDomainMigrateToURI3 on a daemon thread and a connection of its own (it blocks until the
        migration ends); returns once libvirt shows the job (`resuming`: once post-copy is no longer
        failed), or raises LibvirtRefused with its reason."""
        lv, uuid = self.libvirt, domain.uuid

        def run() -> None:
            conn = None
            try:
                conn = _open(lv, source.uri)
                dom = conn.lookupByUUIDString(uuid)
                dom.migrateToURI3(destination.uri, params, flags)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

        domain.migrating_to = destination
        future = in_daemon_thread(run, name=f"migtui-libvirt-migrate-{domain.vm.name}")
        domain._migration = future
        future.add_done_callback(lambda f: self._migration_ended(domain, destination, arguments, f))
        self.poll_soon()
        if resuming:  # the broken job is in flight all along: resumed when libvirt's state says so
            deadline = time.monotonic() + self.options.start_timeout
            while domain.postcopy_failed and not future.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # lifecycle events change the state; polled, with a deadline
        else:  # started when libvirt shows the job, or ended (done or refused), whichever comes first
            domain.job_seen.clear()
            seen = asyncio.ensure_future(domain.job_seen.wait())
            try:
                await asyncio.wait({future, seen}, timeout=self.options.start_timeout,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                seen.cancel()
        if future.done() and future.exception() is not None:
            # _migration_ended reports it (audit, log, ActionResult); the caller gets libvirt's reason.
            raise LibvirtRefused(f"libvirt refused virDomainMigrateToURI3: {describe_libvirt_error(future.exception())}")

    def recovery(self, domain: LibvirtDomain) -> tuple[LibvirtHost, LibvirtHost, dict[str, Any], int, list[str]]:
        """(source, destination, params, flags, flag names) that resume `domain`'s broken post-copy
        (VIR_MIGRATE_POSTCOPY_RESUME), or Refused saying why not; sends nothing."""
        lv = self.libvirt
        if not domain.postcopy_failed:
            raise Refused(f"{domain.vm.name} is not paused in post-copy (status {domain.vm.migration_status}): "
                          "nothing to recover")
        ends = list(domain.placements.values())
        source = next((p.host for p in ends if p.state == lv.VIR_DOMAIN_PAUSED), None)
        destination = next((p.host for p in ends if p.state == lv.VIR_DOMAIN_RUNNING), None)
        if source is None or destination is None or source is destination:
            # Broken before the guest ran at the destination, libvirt rolls it back to the source itself.
            raise Refused(f"{domain.vm.name}: migtui sees no post-copy split across two watched hosts (a paused "
                          "source and a running destination): watch both hosts to recover it here")
        for host in (source, destination):
            if not host.connected:
                raise NotConnected(f"recover: {host.label} is not connected: {host.reason or 'connecting'}")
        names = ["VIR_MIGRATE_LIVE", "VIR_MIGRATE_PEER2PEER", "VIR_MIGRATE_POSTCOPY", "VIR_MIGRATE_POSTCOPY_RESUME"]
        flags = 0
        for name in names:
            flags |= getattr(lv, name)
        params: dict[str, Any] = {}
        stream = self.options.migration_uri(destination.uri) if self.options.migration_uri is not None else None
        if stream:
            params[lv.VIR_MIGRATE_PARAM_URI] = stream
        return source, destination, params, flags, names

    async def recover_postcopy(self, domain: LibvirtDomain) -> None:
        """Resume a post-copy whose stream broke: the destination listens anew, the source sends the rest."""
        source, destination, params, flags, names = self.recovery(domain)
        if domain.migrating:
            raise Busy(f"{domain.vm.name}: libvirt is still ending the broken migration; try again in a moment")
        arguments = {"dconnuri": destination.uri, "params": dict(params), "flags": "|".join(names)}
        try:
            await self._migrate_to_uri(domain, source, destination, params, flags, arguments, resuming=True)
        except LibvirtRefused as err:
            if "actively monitored" in str(err):  # the broken migration's own call has not returned yet
                raise Busy(f"{domain.vm.name}: libvirt is still ending the broken migration; press R again in "
                           "a moment") from None
            raise
        self._report(domain, "virDomainMigrateToURI3", arguments, True, "resumed",
                     f"post-copy resumed to {destination.label}")

    def _migration_ended(self, domain: LibvirtDomain, destination: LibvirtHost, arguments: dict[str, Any],
                         future: asyncio.Future[None]) -> None:
        domain.migrating_to = None
        if future.cancelled():
            return
        err = future.exception()
        if err is not None:
            text = describe_libvirt_error(err)
            self._report(domain, "virDomainMigrateToURI3", arguments, False, text, text)
        self.poll_soon()

    # ---- hosts --------------------------------------------------------------------------------

    def host_changed(self, host: LibvirtHost) -> None:
        """A host connected or went away: its domains' rows say so, and keep their last sample."""
        if host.reason:
            for domain in self.domains.values():
                if domain.home is host:
                    domain.log("error", str(host.connection), f"{host.label}: {host.reason}")
        for domain in list(self.domains.values()):
            if domain.home is host or host.label in domain.placements:
                domain.update_home()
        self.post(VMUpdated(f"host:{host.label}", "connection", connection=host.connection, reason=host.reason))


# ---- on a host's thread -----------------------------------------------------------------------


def _no_prompt(credentials: list, _opaque: Any) -> int:
    """libvirt's auth callback: migtui never prompts (the console owns the terminal): refuse."""
    return -1


def _open(lv: Any, uri: str) -> Any:
    """A read-write connection; no interactive prompt, ever: a host that wants a password is refused with a reason."""
    return lv.openAuth(uri, [[lv.VIR_CRED_AUTHNAME, lv.VIR_CRED_PASSPHRASE], _no_prompt, None], 0)


def _version(number: int) -> str:
    major, rest = divmod(int(number), 1_000_000)
    minor, micro = divmod(rest, 1000)
    return f"{major}.{minor}.{micro}"


def _job_stats(lv: Any, dom: Any) -> dict[str, Any]:
    """The job's statistics; with no job, the last completed job's under "completed" (how a job
    that ended while migtui could not see it ended)."""
    try:
        return _with_completed(lv, dom, dom.jobStats())
    except lv.libvirtError:
        return {}


def _with_completed(lv: Any, dom: Any, stats: dict[str, Any]) -> dict[str, Any]:
    """`stats` as read; with no job, the last completed job's statistics under "completed"."""
    if stats.get("type", JOB_NONE) == JOB_NONE:
        with contextlib.suppress(lv.libvirtError):
            return {"type": JOB_NONE, "completed": dom.jobStats(lv.VIR_DOMAIN_JOB_STATS_COMPLETED)}
    return stats


def _shape(lv: Any, dom: Any) -> tuple[int | None, str | None]:
    """(RAM in bytes, machine type) of a domain, for placement; None where libvirt will not say."""
    memory = machine = None
    with contextlib.suppress(lv.libvirtError, IndexError, TypeError):
        memory = int(dom.info()[1]) * 1024  # maxMem, KiB
    with contextlib.suppress(lv.libvirtError, ElementTree.ParseError):
        kind = ElementTree.fromstring(dom.XMLDesc(0)).find("os/type")
        machine = kind.get("machine") if kind is not None else None
    return memory, machine


def _capacity(lv: Any, conn: Any) -> tuple[int | None, frozenset[str] | None]:
    """(free memory in bytes, every machine type its QEMU has) of a host, for placement."""
    free = machines = None
    with contextlib.suppress(lv.libvirtError, TypeError):
        free = int(conn.getFreeMemory())
    with contextlib.suppress(lv.libvirtError, ElementTree.ParseError):
        caps = ElementTree.fromstring(conn.getCapabilities())
        names = set()
        for machine in caps.iter("machine"):
            names.update(n for n in (machine.text, machine.get("canonical")) if n)
        machines = frozenset(names) or None
    return free, machines


def _state_and_job(lv: Any, dom: Any) -> tuple[int, int, dict[str, Any]]:
    state, reason = dom.state()
    return state, reason, _job_stats(lv, dom)


def _read_settings(lv: Any, dom: Any) -> dict[str, Any]:
    """The tuning libvirt reports, in QMP's names and units."""
    out: dict[str, Any] = {}
    with contextlib.suppress(lv.libvirtError):
        out["max-bandwidth"] = bandwidth_from_libvirt(dom.migrateGetMaxSpeed(0))
    with contextlib.suppress(lv.libvirtError, AttributeError):
        out["downtime-limit"] = int(dom.migrateGetMaxDowntime(0))
    with contextlib.suppress(lv.libvirtError, AttributeError):
        out["xbzrle-cache-size"] = int(dom.migrateGetCompressionCache(0))
    return out


def _all_running(results: list[tuple[int | None, int, dict[str, Any], str | None]]) -> bool:
    """Every job of the batch still runs (no state read, no error): nothing the loop must see at once."""
    for state, _, _, error in results:
        if state is not None or error is not None:
            return False
    return True


def _dirty_rate(lv: Any, conn: Any, dom: Any) -> tuple[int, Any]:
    """(dirtyrate.calc_status, dirtyrate.megabytes_per_second) from the domain's statistics."""
    found = conn.domainListGetStats([dom], lv.VIR_DOMAIN_STATS_DIRTYRATE, 0)
    values = found[0][1] if found else {}
    return values.get("dirtyrate.calc_status", lv.VIR_DOMAIN_DIRTYRATE_UNSTARTED), \
        values.get("dirtyrate.megabytes_per_second")


def _gone(lv: Any, err: Any) -> bool:
    return err.get_error_code() in (lv.VIR_ERR_NO_DOMAIN, lv.VIR_ERR_OPERATION_INVALID)


def _sample_batch(lv: Any, conn: Any, doms: list[Any]) -> list[tuple[int | None, int, dict[str, Any], str | None]]:
    """Every job of one host in one trip to its thread: (state, reason, stats, error) per domain.
    A job that ended carries the completed job's statistics under "completed". The state is read
    only then (state None otherwise): while the job runs, lifecycle events carry its changes
    (post-copy, the switch-over), and a second call per sample would double the round trips."""
    out = []
    for dom in doms:
        try:
            stats = dom.jobStats()
            state, reason = None, 0
            if stats.get("type", JOB_NONE) == JOB_NONE:
                state, reason = dom.state()
                stats = _with_completed(lv, dom, stats)
            out.append((state, reason, stats, None))
        except lv.libvirtError as err:
            if _gone(lv, err):
                out.append((0, 0, {}, "gone"))
                continue
            if conn is None or not conn.isAlive():
                raise HostLost(describe_libvirt_error(err)) from None
            out.append((0, 0, {}, describe_libvirt_error(err)))
    return out


_LIFECYCLE = ("defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown", "pmsuspended",
              "crashed")


def _lifecycle_text(lv: Any, event: int, detail: int) -> str:
    word = _LIFECYCLE[event] if 0 <= event < len(_LIFECYCLE) else f"event {event}"
    details = {
        lv.VIR_DOMAIN_EVENT_STARTED: {lv.VIR_DOMAIN_EVENT_STARTED_MIGRATED: "migrated in",
                                      lv.VIR_DOMAIN_EVENT_STARTED_BOOTED: "booted"},
        lv.VIR_DOMAIN_EVENT_SUSPENDED: {lv.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED: "for the switch-over",
                                        lv.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY: "post-copy",
                                        lv.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED: "post-copy failed"},
        lv.VIR_DOMAIN_EVENT_RESUMED: {lv.VIR_DOMAIN_EVENT_RESUMED_MIGRATED: "migrated",
                                      lv.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY: "post-copy"},
        lv.VIR_DOMAIN_EVENT_STOPPED: {lv.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated away",
                                      lv.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
                                      lv.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
                                      lv.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shut down",
                                      lv.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed"},
    }.get(event, {})
    extra = details.get(detail)
    return f"{word} ({extra})" if extra else word

