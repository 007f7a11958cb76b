"""A Prometheus exposition of every VM migtui watches, through prometheus-client.

Two families of series, each labelled with the VM's `name` (its key in migtui:
NAME= or the socket's name, stable across reconnects), the `host` its QEMU runs
on, its `endpoint` (QMP's, or the libvirt host's URI), and the `backend`
("qmp" or "libvirt"):

- KubeVirt's migration names (`kubevirt_vmi_migration_*`), so dashboards built
  for KubeVirt work. Unlike KubeVirt's, every `_bytes` series is in bytes (or
  bytes/s): KubeVirt's dirty rate is libvirt's pages per second.
- migtui's own judgement (`migtui_migration_*`): the verdict, the ETA and its
  band, QEMU's expected downtime, the passes.

Nothing is updated per sample: a custom collector reads the sessions when
Prometheus scrapes. The state belongs to the asyncio loop, so the HTTP thread
asks the loop for a snapshot (plain numbers, read in one go) and formats the
text itself, off the loop. Never imports Textual.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from migtui.model.endpoint import Endpoint
from migtui.model.guidance import VERDICTS
from migtui.model.sample import counter
from migtui.model.units import InputError
from migtui.model.vm import Connection, VMState

__all__ = ["LABELS", "MetricsServer", "MigrationCollector", "parse_listen", "start_metrics"]

LABELS = ("name", "host", "endpoint", "backend")
# How long a scrape waits for the loop's snapshot; Prometheus's default scrape timeout is 10 s.
SNAPSHOT_TIMEOUT = 5.0
# Above this many VMs, an assessment up to this old (sample time) is good enough for a scrape,
# as for the console's sort: a scrape then never assesses a whole big fleet at once.
BIG_FLEET = 50
BIG_FLEET_MAX_AGE = 2.0

_FORMS = "HOST:PORT, e.g. 127.0.0.1:9720 or [::1]:9720 (port 0: any free port)"


def parse_listen(text: str, option: str = "--metrics") -> tuple[str, int]:
    """'127.0.0.1:9720' or '[::1]:9720' -> (host, port); one line naming the forms otherwise."""
    m = re.fullmatch(r"\[(?P<h6>[^\]]+)\]:(?P<p1>\d{1,5})|(?P<h>[^:\[\]\s]+):(?P<p2>\d{1,5})", text.strip())
    if m is None:
        raise InputError(f"{option} {text!r}: give {_FORMS}")
    port = int(m["p1"] or m["p2"])
    if port > 65535:
        raise InputError(f"{option} {text!r}: port {port} is out of range 0-65535")
    return m["h6"] or m["h"], port


def is_loopback(host: str) -> bool:
    return Endpoint("metrics", "tcp", host=host, port=1).is_local


@dataclass(frozen=True, slots=True)
class _Row:
    """One VM's figures at scrape time; None: not known, so no sample of that series."""

    labels: tuple[str, str, str, str]
    connected: bool
    verdict: str
    migrated: bool  # a migration was seen: the KubeVirt series exist
    processed: float | None = None
    remaining: float | None = None
    total: float | None = None
    dirty: float | None = None
    throughput: float | None = None
    started: float | None = None
    ended: float | None = None
    succeeded: bool = False
    failed: bool = False
    eta: float | None = None
    eta_low: float | None = None
    eta_high: float | None = None
    expected_downtime: float | None = None
    passes: float | None = None


def _sum(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


def _row(key: str, session, local_host: str, max_age: float) -> _Row:
    vm: VMState = session.vm
    endpoint = session.endpoint
    host = endpoint.host if endpoint.kind in ("tcp", "libvirt") else local_host  # libvirt: the domain's host
    labels = (key, host or "", str(endpoint), "libvirt" if endpoint.kind == "libvirt" else "qmp")
    assessment = vm.assessment(max_age=max_age)
    sample = vm.sample
    connected = vm.connection == Connection.CONNECTED
    if sample is None or sample.status in ("none", "unknown"):
        return _Row(labels, connected, assessment.verdict, False)
    tracker, derived = vm.tracker, vm.derived
    ram, disk = sample.section("ram"), sample.section("disk")
    ended = None
    if sample.finished:
        # The tracker's history holds the first reply in the final status at QEMU's time of
        # the end (start + total-time when QEMU gives total-time, else when it was seen).
        last = tracker.history.last()
        ended = last.time if last is not None and last.status == sample.status else sample.time
    downtime_ms = sample.get(None, "expected-downtime") if sample.in_flight else None
    return _Row(
        labels, connected, assessment.verdict, True,
        processed=_sum(counter(ram, "transferred"), counter(disk, "transferred")),
        remaining=derived.remaining_bytes,
        total=_sum(counter(ram, "total"), counter(disk, "total")),
        dirty=derived.dirty_bytes_per_s,
        throughput=derived.throughput_bps,
        started=tracker.started_at,
        ended=ended,
        succeeded=sample.status == "completed",
        failed=sample.status == "failed",
        eta=assessment.eta_s,
        eta_low=assessment.eta_low_s,
        eta_high=assessment.eta_high_s,
        expected_downtime=None if downtime_ms is None else downtime_ms / 1000,
        passes=derived.passes,
    )


# (name, help, the _Row field): KubeVirt's names first, then migtui's.
_SERIES = (
    ("kubevirt_vmi_migration_data_processed_bytes",
     "Bytes of the migration stream sent so far (RAM, and disks with block migration).", "processed"),
    ("kubevirt_vmi_migration_data_remaining_bytes", "Bytes left to send (RAM, and disks with block migration).",
     "remaining"),
    ("kubevirt_vmi_migration_data_total_bytes", "Bytes of guest RAM (and disks with block migration) to migrate.",
     "total"),
    ("kubevirt_vmi_migration_dirty_memory_rate_bytes",
     "Bytes per second the guest dirties (QEMU's dirty-pages-rate times the page size).", "dirty"),
    ("kubevirt_vmi_migration_memory_transfer_rate_bytes", "Bytes per second sent, on QEMU's clock.", "throughput"),
    ("kubevirt_vmi_migration_start_time_seconds", "When the migration started, in seconds since the epoch.",
     "started"),
    ("kubevirt_vmi_migration_end_time_seconds", "When the migration ended, in seconds since the epoch.", "ended"),
    ("migtui_migration_eta_seconds", "migtui's estimate of the seconds left; absent when it will not finish "
     "at these settings.", "eta"),
    ("migtui_migration_eta_low_seconds", "The optimistic end of the ETA's band.", "eta_low"),
    ("migtui_migration_eta_high_seconds", "The pessimistic end of the ETA's band; absent when the pessimistic "
     "rates would not converge.", "eta_high"),
    ("migtui_migration_expected_downtime_seconds", "QEMU's expected-downtime of the migration in flight.",
     "expected_downtime"),
    ("migtui_migration_passes", "Passes over RAM so far (QEMU's dirty-sync-count).", "passes"),
)


class MigrationCollector(Collector):
    """Reads the VMs of `sessions()` (each with .key, .vm and .endpoint) at every scrape.

    With `loop`, the sessions are read on that loop (they are its state) while the
    scrape's thread waits; without one, in the caller's thread.
    """

    def __init__(self, sessions: Callable[[], Iterable], loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._sessions = sessions
        self._loop = loop
        self._local_host = socket.gethostname()

    def snapshot(self) -> list[_Row]:
        sessions = list(self._sessions())
        max_age = BIG_FLEET_MAX_AGE if len(sessions) > BIG_FLEET else 0.0
        rows, seen = [], set()
        for session in sessions:
            key = getattr(session, "key", None) or session.vm.name
            unique, n = key, 2
            while unique in seen:  # two targets of one name (watch does not rename them): two series
                unique, n = f"{key}-{n}", n + 1
            seen.add(unique)
            rows.append(_row(unique, session, self._local_host, max_age))
        return rows

    def _snapshot_on_loop(self) -> list[_Row]:
        loop = self._loop
        if loop is None:
            return self.snapshot()
        try:
            if asyncio.get_running_loop() is loop:
                return self.snapshot()
        except RuntimeError:
            pass
        future: concurrent.futures.Future[list[_Row]] = concurrent.futures.Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self.snapshot())
                except BaseException as err:  # the scrape fails with it (HTTP 500), the loop goes on
                    future.set_exception(err)

        loop.call_soon_threadsafe(run)
        try:
            return future.result(timeout=SNAPSHOT_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"migtui's loop gave no snapshot within {SNAPSHOT_TIMEOUT:g} s") from None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rows = self._snapshot_on_loop()
        for name, help_text, field in _SERIES:
            family = GaugeMetricFamily(name, help_text, labels=LABELS)
            for row in rows:
                value = getattr(row, field)
                if value is not None:
                    family.add_metric(row.labels, value)
            yield family
        succeeded = GaugeMetricFamily("kubevirt_vmi_migration_succeeded",
                                      "1 when the latest migration completed, else 0.", labels=LABELS)
        failed = GaugeMetricFamily("kubevirt_vmi_migration_failed",
                                   "1 when the latest migration failed, else 0 (cancelled is not failed).",
                                   labels=LABELS)
        verdict = GaugeMetricFamily("migtui_migration_verdict",
                                    "1 for migtui's verdict on the VM's latest migration, 0 for every other.",
                                    labels=LABELS + ("verdict",))
        connected = GaugeMetricFamily("migtui_vm_connected", "1 when migtui holds the VM's QMP monitor, else 0.",
                                      labels=LABELS)
        for row in rows:
            if row.migrated:
                succeeded.add_metric(row.labels, 1.0 if row.succeeded else 0.0)
                failed.add_metric(row.labels, 1.0 if row.failed else 0.0)
            for name in VERDICTS:
                verdict.add_metric(row.labels + (name,), 1.0 if name == row.verdict else 0.0)
            connected.add_metric(row.labels, 1.0 if row.connected else 0.0)
        yield from (succeeded, failed, verdict, connected)


class MetricsServer:
    """The HTTP endpoint (prometheus-client's, in a daemon thread) and its registry."""

    def __init__(self, host: str, port: int, collector: MigrationCollector) -> None:
        self.collector = collector
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._httpd, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.host = host
        self.port = self._httpd.server_port  # the one bound, when port 0 asked for any
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._httpd.shutdown()
            self._httpd.server_close()


def start_metrics(text: str, sessions: Callable[[], Iterable], loop: asyncio.AbstractEventLoop | None,
                  warn: Callable[[str], None], option: str = "--metrics") -> MetricsServer:
    """Listen on HOST:PORT; InputError with one line when it is malformed or cannot be bound.

    A host other than loopback gets a warning through `warn`: the exposition has no
    authentication, and it names every VM and where its QMP monitor is.
    """
    host, port = parse_listen(text, option)
    if not is_loopback(host):
        warn(f"{option} {text}: not loopback; the exposition has no authentication and names every VM and "
             "its QMP endpoint (QMP has none either): bind 127.0.0.1 and scrape through a tunnel, or firewall it")
    try:
        return MetricsServer(host, port, MigrationCollector(sessions, loop))
    except OSError as err:
        raise InputError(f"{option} {text}: cannot listen there: {err.strerror or err}") from None
