"""The Prometheus exposition (migtui.metrics): names, units, labels, and the --metrics option.

Against the console tests' hand-built fleet (tests/ui_data.py), whose replies are shaped
like QEMU 7.2's; the scrape of a real migration by a real Prometheus is in
tests/test_metrics_prometheus.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from migtui.cli import main
from migtui.metrics import LABELS, MigrationCollector, parse_listen, start_metrics
from migtui.model.guidance import VERDICTS
from migtui.model.units import InputError
from ui_data import MiB, T0, static_fleet

KUBEVIRT = [f"kubevirt_vmi_migration_{n}" for n in (
    "data_processed_bytes", "data_remaining_bytes", "data_total_bytes", "dirty_memory_rate_bytes",
    "memory_transfer_rate_bytes", "start_time_seconds", "end_time_seconds", "succeeded", "failed")]
MIGTUI = ["migtui_migration_verdict", "migtui_migration_eta_seconds", "migtui_migration_eta_low_seconds",
          "migtui_migration_eta_high_seconds", "migtui_migration_expected_downtime_seconds",
          "migtui_migration_passes", "migtui_vm_connected"]


def scrape(fleet) -> dict[str, dict[tuple, float]]:
    """{series name: {labels as sorted pairs: value}}, parsed back from the text format."""
    registry = CollectorRegistry()
    registry.register(MigrationCollector(lambda: fleet))
    return parse(generate_latest(registry).decode())


def parse(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(series: dict[tuple, float], name: str) -> float:
    found = [v for labels, v in series.items() if ("name", name) in labels]
    assert len(found) == 1, (name, series)
    return found[0]


def test_every_name_is_exposed_with_the_labels_of_a_vm():
    got = scrape(static_fleet())
    assert set(KUBEVIRT + MIGTUI) <= set(got), sorted(set(KUBEVIRT + MIGTUI) - set(got))
    for name, series in got.items():
        for labels in series:
            keys = [k for k, _ in labels]
            expected = sorted(LABELS + ("verdict",)) if name == "migtui_migration_verdict" else sorted(LABELS)
            assert keys == expected, (name, labels)
            assert dict(labels)["backend"] == "qmp"
    endpoint = {dict(l)["name"]: (dict(l)["endpoint"], dict(l)["host"]) for l in got["migtui_vm_connected"]}
    assert endpoint["web-03"] == ("tcp:127.0.0.1:4444", "127.0.0.1")
    assert endpoint["src1"] == ("unix:/run/migtui-lab/src1.qmp", socket.gethostname())


def test_kubevirt_series_are_in_bytes_and_seconds():
    got = scrape(static_fleet())
    # src1's last reply: dirty-pages-rate 24300 pages/s of 4096 bytes, remaining 95 MiB of 512 MiB.
    assert one(got["kubevirt_vmi_migration_dirty_memory_rate_bytes"], "src1") == 24300 * 4096
    assert one(got["kubevirt_vmi_migration_data_remaining_bytes"], "src1") == 95 * MiB
    assert one(got["kubevirt_vmi_migration_data_total_bytes"], "src1") == 512 * MiB
    transferred = int(30 * MiB * 119.5)  # the last of 240 samples, 0.5 s apart, at 30 MiB/s
    assert one(got["kubevirt_vmi_migration_data_processed_bytes"], "src1") == transferred
    assert one(got["kubevirt_vmi_migration_memory_transfer_rate_bytes"], "src1") == pytest.approx(30 * MiB)
    assert one(got["migtui_migration_expected_downtime_seconds"], "src1") == pytest.approx(3.1)
    # web-03 completed after QEMU's total-time of 8200 ms, seen at T0.
    assert one(got["kubevirt_vmi_migration_start_time_seconds"], "web-03") == pytest.approx(T0 - 8.2)
    assert one(got["kubevirt_vmi_migration_end_time_seconds"], "web-03") == pytest.approx(T0)
    assert one(got["kubevirt_vmi_migration_succeeded"], "web-03") == 1
    assert one(got["kubevirt_vmi_migration_failed"], "web-03") == 0
    assert one(got["kubevirt_vmi_migration_succeeded"], "src1") == 0
    # Still in flight: no end. Never migrated (legacy's {} reply): no migration series at all.
    assert not [l for l in got["kubevirt_vmi_migration_end_time_seconds"] if ("name", "src1") in l]
    for name in KUBEVIRT:
        assert not [l for l in got.get(name, {}) if ("name", "legacy") in l], name


def test_one_verdict_per_vm_and_no_eta_when_it_will_not_finish():
    got = scrape(static_fleet())
    verdicts: dict[str, list[str]] = {}
    for labels, value in got["migtui_migration_verdict"].items():
        d = dict(labels)
        verdicts.setdefault(d["name"], [])
        assert value in (0, 1)
        if value:
            verdicts[d["name"]].append(d["verdict"])
    assert len(got["migtui_migration_verdict"]) == len(VERDICTS) * 5
    assert verdicts == {"src1": ["not-converging"], "dst1": verdicts["dst1"], "web-03": ["completed"],
                        "db-01": ["unreachable"], "legacy": ["idle"]}
    assert len(verdicts["dst1"]) == 1
    assert not [l for l in got.get("migtui_migration_eta_seconds", {}) if ("name", "src1") in l]
    assert one(got["migtui_vm_connected"], "db-01") == 0
    assert one(got["migtui_vm_connected"], "src1") == 1


def test_a_converging_migration_has_an_eta_inside_its_band():
    fleet = static_fleet()
    session = fleet.get("db-01")
    from migtui.model.sample import parse_query_migrate
    from migtui.model.vm import Connection

    session.vm.connection = Connection.CONNECTED
    tracker = session.vm.tracker
    tracker.parameters["downtime-limit"] = 300
    for i in range(1, 21):  # 100 MiB/s against a guest that dirties 10 MiB/s
        t = 3 + i * 0.5
        sent = int(90 * MiB + 100 * MiB * i * 0.5)
        tracker.add(parse_query_migrate(
            {"status": "active", "total-time": int(t * 1000),
             "ram": {"transferred": sent, "remaining": max(20 * MiB, 1024 * MiB - sent), "total": 1024 * MiB,
                     "dirty-pages-rate": 2560, "page-size": 4096, "dirty-sync-count": 1 + i // 10}}, T0 + t))
    got = scrape(fleet)
    assessment = session.vm.assessment()
    assert assessment.eta_s is not None
    eta = one(got["migtui_migration_eta_seconds"], "db-01")
    assert eta == pytest.approx(assessment.eta_s)
    assert one(got["migtui_migration_eta_low_seconds"], "db-01") <= eta
    if assessment.eta_high_s is not None:
        assert eta <= one(got["migtui_migration_eta_high_seconds"], "db-01")


@pytest.mark.parametrize("text, host, port", [
    ("127.0.0.1:9720", "127.0.0.1", 9720), ("[::1]:0", "::1", 0), ("localhost:80", "localhost", 80),
])
def test_listen_addresses(text, host, port):
    assert parse_listen(text) == (host, port)


@pytest.mark.parametrize("text", ["9720", ":9720", "localhost", "[::1]", "host:99999", "host:-1", "a b:1", ""])
def test_bad_listen_addresses_are_one_line_naming_the_form(text):
    with pytest.raises(InputError) as err:
        parse_listen(text)
    assert "HOST:PORT" in str(err.value) or "out of range" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("argv", [
    ["exporter", "--metrics", "9720", "unix:/nonexistent.qmp"],
    ["watch", "--metrics", "nowhere", "--count", "1", "unix:/nonexistent.qmp"],
    ["--metrics", "localhost", "unix:/nonexistent.qmp"],
    ["lab", "--sim", "--metrics", "[::1]"],
])
def test_cli_refuses_a_bad_metrics_address_in_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("migtui: --metrics") and "HOST:PORT" in err[0], err


def test_lab_without_its_console_points_to_the_exporter(capsys):
    assert main(["lab", "--sim", "--no-ui", "--metrics", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "migtui exporter" in err[0], err


def test_cli_says_in_one_line_when_the_port_is_taken(capsys):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["exporter", "--metrics", f"127.0.0.1:{port}", "unix:/nonexistent.qmp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"migtui: --metrics 127.0.0.1:{port}: cannot listen there: Address already in use"]


def test_a_non_loopback_address_is_warned_about():
    warnings: list[str] = []
    server = start_metrics("0.0.0.0:0", lambda: [], None, warnings.append)
    try:
        assert len(warnings) == 1 and "no authentication" in warnings[0]
    finally:
        server.close()
    quiet: list[str] = []
    start_metrics("127.0.0.1:0", lambda: [], None, quiet.append).close()
    assert quiet == []


async def test_a_scrape_over_http_reads_the_fleet_on_its_loop():
    """The HTTP server runs in its own thread; the VMs are read on the loop that owns them."""
    fleet = static_fleet()
    loop = asyncio.get_running_loop()
    readers: list[object] = []
    original = fleet.__class__.__iter__

    def sessions():
        readers.append(asyncio.get_running_loop())  # raises RuntimeError off the loop
        return original(fleet)

    server = start_metrics("127.0.0.1:0", sessions, loop, pytest.fail)
    try:
        def fetch() -> tuple[str, str]:
            with urllib.request.urlopen(server.url, timeout=10) as reply:
                return reply.headers["Content-Type"], reply.read().decode()

        content_type, text = await asyncio.to_thread(fetch)
    finally:
        server.close()
    assert content_type.startswith("text/plain") and "version=" in content_type
    assert readers == [loop]
    assert one(parse(text)["migtui_migration_passes"], "web-03") == 4


async def test_the_console_serves_its_fleet_while_it_runs(monkeypatch):
    """`migtui --metrics HOST:PORT TARGET...`: the exposition names every VM of the console's fleet,
    the header says where it is, and it is gone when the console quits."""
    import argparse

    from migtui.cli.console import run_console
    from migtui.model.endpoint import parse_endpoint
    from migtui.ui.app import MigtuiApp

    seen: dict[str, object] = {}

    async def run_async(app: MigtuiApp) -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            seen["header"] = app.sub_title

            def fetch() -> str:
                with urllib.request.urlopen(app.metrics_url, timeout=10) as reply:
                    return reply.read().decode()

            seen["text"] = await asyncio.to_thread(fetch)
        seen["url"] = app.metrics_url

    monkeypatch.setattr(MigtuiApp, "run_async", run_async)
    args = argparse.Namespace(metrics="127.0.0.1:0", theme=None, read_only=True, record=None, no_record=True,
                              config=None)
    endpoints = [parse_endpoint(t) for t in ("a=unix:/nonexistent/a.qmp", "b=unix:/nonexistent/b.qmp")]
    assert await run_console(endpoints, args) == 0
    assert f"metrics {seen['url']}" in seen["header"] and "read-only" in seen["header"]
    names = {dict(l)["name"] for l in parse(seen["text"])["migtui_vm_connected"]}
    assert names == {"a", "b"}
    with pytest.raises(OSError):
        urllib.request.urlopen(seen["url"], timeout=2)


DASHBOARD = Path(__file__).resolve().parent.parent / "migtui" / "grafana" / "migtui-dashboard.json"


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the Grafana dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]


def test_the_grafana_dashboard_asks_only_for_series_migtui_exposes():
    board = json.loads(DASHBOARD.read_text())
    exposed = set(scrape(static_fleet()))
    asked = {m for _, expr in dashboard_targets() for m in re.findall(r"\b(?:kubevirt|migtui)_[a-z_]+\b", expr)}
    assert asked and asked <= exposed, sorted(asked - exposed)
    assert set(KUBEVIRT) - {"kubevirt_vmi_migration_data_processed_bytes"} <= asked  # each has a panel
    variables = {v["name"] for v in board["templating"]["list"]}
    used = {v for _, expr in dashboard_targets() for v in re.findall(r"\$(\w+)", expr)}
    assert used <= variables, used - variables
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


async def test_watch_serves_the_vms_it_samples(tmp_path, capsys):
    """`migtui watch --metrics`: the simulator's VMs, sampled by watch, as scraped over HTTP."""
    from migtui.cli.parser import build_parser
    from migtui.cli.watch import cmd_watch
    from migtui.sim import serve

    sim = await serve(4, "7.2", tmp_path, speedup=10)  # web01 -> api01 in flight, cache01 and db01 idle
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args = build_parser().parse_args(
            ["watch", "--metrics", f"127.0.0.1:{port}", "--interval", "0.1", "--count", "100",
             *(vm.endpoint for vm in sim.vms.values())])
        args.config = None
        watch = asyncio.create_task(cmd_watch(args))
        url = f"http://127.0.0.1:{port}/metrics"

        def fetch() -> str:
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    return reply.read().decode()
            except OSError:
                return ""  # not listening yet

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            got = parse(await asyncio.to_thread(fetch) or "")
            connected = got.get("migtui_vm_connected", {})
            if len(connected) == 4 and all(connected.values()) and got.get("migtui_migration_passes"):
                break
            assert loop.time() < deadline and not watch.done(), got
            await asyncio.sleep(0.1)  # pacing between scrapes
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    finally:
        await sim.stop()
    assert {dict(l)["name"] for l in connected} == {"web01", "db01", "cache01", "api01"}
    assert one(got["kubevirt_vmi_migration_data_remaining_bytes"], "web01") > 0
    assert one(got["kubevirt_vmi_migration_data_total_bytes"], "web01") == sim.vms["web01"].guest.ram
    assert f"metrics on http://127.0.0.1:{port}/metrics" in capsys.readouterr().err
    assert await asyncio.to_thread(fetch) == ""  # closed with watch
