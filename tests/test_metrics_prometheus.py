"""A real Prometheus (Debian's) scrapes `migtui exporter` watching a real QEMU 7.2 migration.

Prometheus is started on loopback with a 1 s scrape of the exporter; PromQL over its HTTP
API must show the remaining bytes falling over the migration and `_succeeded` at the end.
Without prometheus this skips with the reason; in CI (MIGTUI_REQUIRE_QEMU=1) it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lab_fixtures import lab_pair_paced, qemu_required, wait_until  # noqa: F401 (a fixture)
from migtui.model.requests import MigrationOptions
from migtui.backend.qmp.controls import start_migration
from test_metrics import dashboard_targets

pytestmark = [qemu_required, pytest.mark.qemu]

PROMETHEUS = shutil.which("prometheus")
MISSING = "prometheus is not installed (apt-get install prometheus)"


def _need_prometheus() -> str:
    if PROMETHEUS is None:
        if os.environ.get("MIGTUI_REQUIRE_QEMU"):
            pytest.fail(f"MIGTUI_REQUIRE_QEMU is set but {MISSING}")  # CI: never a silent skip
        pytest.skip(MISSING)
    return PROMETHEUS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _until(check: Callable[[], object | Awaitable[object]], timeout: float, what: str) -> object:
    """The first truthy result of check() (awaited if need be), polled until the deadline; fail after it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while loop.time() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.2)  # pacing between polls
    pytest.fail(f"{what}: not within {timeout:g} s (last answer: {last!r})")


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def _get(self, path: str, **params: str) -> dict:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, promql: str) -> dict:
        return await asyncio.to_thread(self._get, "/api/v1/query", query=promql)

    async def query_range(self, promql: str, start: float, end: float, step: float = 1.0) -> dict:
        return await asyncio.to_thread(self._get, "/api/v1/query_range", query=promql, start=f"{start:.3f}",
                                       end=f"{end:.3f}", step=f"{step:g}")

    async def ready(self) -> bool:
        def get() -> bool:
            try:
                with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as reply:
                    return reply.status == 200
            except OSError:
                return False

        return await asyncio.to_thread(get)

    async def scalar(self, promql: str) -> float | None:
        """The value of a query that selects one series (None while it selects none)."""
        result = (await self.query(promql))["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@contextlib.asynccontextmanager
async def _process(argv: list[str], log: Path, **kwargs):
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out, start_new_session=True,
                                                    **kwargs)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


async def test_prometheus_scrapes_a_real_migration(lab_pair_paced, open_session, tmp_path):
    prometheus = _need_prometheus()
    source, destination, _ = lab_pair_paced
    # migtui's own session migrates; the exporter watches both VMs on their second monitors,
    # as an exporter beside a console would (QEMU serves one client per monitor).
    src = open_session(source.endpoint)
    dst = open_session(destination.endpoint)
    assert await src.wait_connected(10) and await dst.wait_connected(10)

    exporter_port = _free_port()
    exporter_log = tmp_path / "exporter.log"
    targets = [f"{vm.name}=unix:{vm.tools_qmp_path}" for vm in (source, destination)]
    async with _process([sys.executable, "-m", "migtui", "exporter", "--metrics", f"127.0.0.1:{exporter_port}",
                         *targets], exporter_log):
        await _until(lambda: "metrics on" in exporter_log.read_text(), 15,
                     f"the exporter's start line in {exporter_log}")
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: migtui\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n")
        web_port = _free_port()
        prometheus_log = tmp_path / "prometheus.log"
        async with _process([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{web_port}"], prometheus_log) as proc:
            prom = Prometheus(f"http://127.0.0.1:{web_port}")
            await _until(lambda: _ready_or_dead(prom, proc, prometheus_log), 30, "prometheus ready")
            # Scraped, with the exporter connected to the source, before the migration starts.
            await _until(lambda: prom.scalar('migtui_vm_connected{job="migtui",name="src1"}'), 30,
                         "the exporter connected to src1, as scraped")

            began = time.time()
            await start_migration(src, MigrationOptions(bandwidth=32 * 2**20, downtime_ms=300), destination=dst)
            await wait_until(lambda: src.vm.sample is not None and src.vm.sample.finished, timeout=120)
            assert src.vm.migration_status == "completed", src.vm.sample
            await _until(lambda: prom.scalar('kubevirt_vmi_migration_succeeded{name="src1"} == 1'), 15,
                         "kubevirt_vmi_migration_succeeded = 1 for src1")

            # Every scraped value of the remaining bytes, as stored: falling to 0 at the end.
            data = await prom.query('kubevirt_vmi_migration_data_remaining_bytes{name="src1"}[10m]')
            assert len(data["result"]) == 1, data
            series = data["result"][0]
            assert series["metric"]["backend"] == "qmp" and series["metric"]["host"] == socket.gethostname()
            remaining = [float(v) for _, v in series["values"]]
            total = await prom.scalar('kubevirt_vmi_migration_data_total_bytes{name="src1"}')
            print(f"remaining bytes as scraped: {remaining}; total {total}")
            in_flight = [v for v in remaining if v > 0]
            assert len(in_flight) >= 2, remaining
            assert remaining[-1] == 0 and in_flight[0] > in_flight[-1], remaining
            assert total is not None and max(remaining) <= total
            # PromQL computes the migration's duration; it is QEMU's total-time.
            took = await prom.scalar('kubevirt_vmi_migration_end_time_seconds{name="src1"}'
                                     ' - kubevirt_vmi_migration_start_time_seconds{name="src1"}')
            assert took == pytest.approx(src.vm.derived.elapsed_s, abs=0.01)
            assert await prom.scalar('migtui_migration_verdict{name="src1",verdict="completed"}') == 1
            assert await prom.scalar('kubevirt_vmi_migration_failed{name="src1"}') == 0
            passes = await prom.scalar('max_over_time(migtui_migration_passes{name="src1"}[10m])')
            assert passes is not None and passes >= 2

            # Every query of the Grafana dashboard runs here, as its "All" VMs and hosts ask it
            # (an error is HTTP 400); those that draw this migration have data over it.
            drawn: dict[str, int] = {}
            for title, expr in dashboard_targets():
                promql = expr.replace("$name", ".*").replace("$host", ".*")
                data = await prom.query_range(promql, began - 2, time.time())
                drawn[title] = drawn.get(title, 0) + len(data["result"])
            for title in ("Remaining", "Throughput and dirty rate", "Passes over RAM", "Expected downtime",
                          "Progress", "Verdict now", "Latest migrations", "Succeeded", "Failed", "Watched",
                          "In flight"):
                assert drawn[title] > 0, (title, drawn)


async def _ready_or_dead(prom: Prometheus, proc, log: Path) -> bool:
    if proc.returncode is not None:
        tail = re.sub(r"\s+", " ", log.read_text()[-600:])
        pytest.fail(f"prometheus exited {proc.returncode}: {tail}")
    return await prom.ready()
