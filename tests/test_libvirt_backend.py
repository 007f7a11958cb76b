"""The libvirt backend against two real libvirt hosts (migtui.lab.libvirt_hosts): listing, migrations
started by migtui and by virsh, tuning one to converge, abort, post-copy, a libvirtd killed
mid-migration, a domain destroyed mid-migration, and bad targets. Each test makes its own domain
and backend; the hosts are the module's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid as uuidlib

import pytest

from lab_fixtures import wait_until
from migtui.backend.audit import AuditLog
from migtui.backend.errors import BackendError
from migtui.model.requests import MigrationOptions, ParamChange

pytestmark = pytest.mark.usefixtures("libvirt_required")

MiB = 2**20


def _backend(hosts, **options):
    from migtui.backend.libvirt.backend import LibvirtBackend, LibvirtOptions
    from migtui.backend.libvirt.target import parse_libvirt_target

    def stream(uri: str) -> str:
        return hosts.migration_uri(next(h for h in hosts if h.uri == uri))

    messages: list = []
    backend = LibvirtBackend([parse_libvirt_target(h.uri) for h in hosts], listener=messages.append,
                             options=LibvirtOptions(migration_uri=stream, **options))
    return backend, messages


@contextlib.asynccontextmanager
async def _watching(hosts, name: str | None = None, **options):
    """A fresh domain on host1 (unless name is None) and a started backend on both hosts."""
    domain = None
    if name is not None:
        domain = f"{name}-{uuidlib.uuid4().hex[:6]}"
        await asyncio.to_thread(hosts.define_guest, hosts[0], domain)
    backend, messages = _backend(hosts, **options)
    backend.start()
    try:
        await wait_until(lambda: all(h.connected for h in backend.hosts()), 15)
        if domain is not None:
            await wait_until(lambda: backend.get(domain) is not None, 10)
        yield backend, (backend.get(domain) if domain else None), messages
    finally:
        await backend.close()
        if domain is not None:
            await asyncio.to_thread(hosts.destroy_guest, domain)


async def test_both_hosts_and_their_domains_are_listed(libvirt_hosts):
    async with _watching(libvirt_hosts, "list") as (backend, domain, _):
        views = {h.name: h for h in backend.hosts()}
        assert set(views) == {"host1", "host2"}  # libvirt's hostnames, one per host
        assert views["host1"].vms >= 1 and all(v.connected for v in views.values())
        assert domain.vm.run_state == "running" and domain.host.label == "host1"
        assert domain.vm.endpoint.kind == "libvirt" and domain.vm.endpoint.host == "host1"
        assert domain.vm.qemu_version and domain.vm.qemu_version[0].isdigit()
        # libvirt's tuning, in QMP's names and units: downtime in ms, the XBZRLE cache in bytes.
        assert domain.vm.parameters["downtime-limit"] == 300
        assert domain.vm.parameters["xbzrle-cache-size"] % MiB == 0
        assert [d.target.label for d in backend.destinations(domain)] == ["host2"]
        assert domain.features.migrate and domain.features.postcopy


async def test_a_migration_started_by_migtui_completes_and_the_row_follows_the_domain(libvirt_hosts, tmp_path):
    audit = tmp_path / "audit.ndjson"
    async with _watching(libvirt_hosts, "move", audit=AuditLog(audit)) as (backend, domain, messages):
        key = domain.key
        destination = backend.destinations(domain)[0]
        await domain.migrate(MigrationOptions(bandwidth=1024 * MiB, downtime_ms=2000), destination)
        await wait_until(lambda: domain.vm.migration_status == "completed", 60)
        await wait_until(lambda: domain.host.label == "host2" and domain.vm.run_state == "running", 15)
        assert backend.get(key) is domain and len([d for d in backend if d.vm.name == domain.vm.name]) == 1
        final = domain.vm.sample
        assert final.get(None, "downtime") is not None and final.get("ram", "transferred") > 0
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
        started = [line for line in lines if line["command"] == "virDomainMigrateToURI3"]
        assert started and started[0]["ok"] and "VIR_MIGRATE_PEER2PEER" in started[0]["arguments"]["flags"]
        assert any(getattr(m, "event", None) == "JOB_COMPLETED" for m in messages)
        # It runs on host2 now, as libvirt says, and is not tainted by a monitor migtui opened.
        running = libvirt_hosts.virsh(libvirt_hosts[1], "list", "--name").stdout.split()
        assert domain.vm.name in running
        log = (libvirt_hosts[1].dir / "log" / "qemu" / f"{domain.vm.name}.log")
        if log.exists():
            assert "custom-monitor" not in log.read_text()


async def test_a_migration_started_by_virsh_is_shown_live_with_its_passes(libvirt_hosts):
    async with _watching(libvirt_hosts, "virsh") as (backend, domain, _):
        hosts = libvirt_hosts
        rates: list[float] = []  # the throughput shown at each sample in flight

        def seen(message) -> None:
            if getattr(message, "what", None) == "sample" and domain.vm.in_flight and domain.vm.derived.throughput_bps:
                rates.append(domain.vm.derived.throughput_bps)

        backend.subscribe(seen)
        virsh = hosts.virsh_migrate(hosts[0], hosts[1], domain.vm.name, 30)
        try:
            await wait_until(lambda: domain.vm.in_flight, 20)
            await wait_until(lambda: (domain.vm.derived.passes or 0) >= 2, 40)
            # virsh's 30 MiB/s, in migtui's bytes/s: the median of what was shown (one sample can
            # span a burst: libvirt may hand back the stats it last fetched with a fresh elapsed time).
            rates.sort()
            assert rates and 20 * MiB < rates[len(rates) // 2] < 45 * MiB, rates
            assert any(r.name == "MIGRATION_ITERATION" for r in domain.vm.log)
            assert domain.vm.tracker.history.passes  # passes on the graphs' time axis
            await domain.cancel()
            await wait_until(lambda: domain.vm.sample.finished, 20)
            assert domain.vm.migration_status == "cancelled"
        finally:
            with contextlib.suppress(BackendError):
                await domain.cancel()
            await asyncio.to_thread(virsh.wait, 30)


async def test_fast_sampling_reaches_the_loop_in_batches_every_sample_in_order(libvirt_hosts):
    """At 20 Hz the worker hands samples over a few at a time (each hand-over wakes the loop):
    none is lost or reordered, and the job's end goes over at once."""
    from migtui.backend.libvirt.backend import HAND_OVER_S
    from migtui.backend.messages import VMUpdated

    async with _watching(libvirt_hosts, "fast", active_interval=0.05) as (backend, domain, messages):
        hand_overs: list[int] = []
        inner = backend._on_batches

        def counted(host, batches):
            hand_overs.append(len(batches))
            inner(host, batches)

        backend._on_batches = counted
        hosts = libvirt_hosts
        virsh = hosts.virsh_migrate(hosts[0], hosts[1], domain.vm.name, 30)
        try:
            await wait_until(lambda: domain.vm.in_flight, 20)
            first = len(messages)
            began = time.monotonic()
            await wait_until(lambda: time.monotonic() - began > 2.0, 5)  # two seconds of sampling
            times = [m.sample.time for m in messages[first:]
                     if isinstance(m, VMUpdated) and m.what == "sample" and m.vm == domain.key]
            assert len(times) >= 20, f"{len(times)} samples in 2 s at 20 Hz"
            assert times == sorted(times) and len(set(times)) == len(times)
            assert max(hand_overs) > 1 and len(hand_overs) < len(times) / 2  # batches, not one wake a sample
            assert max(b - a for a, b in zip(times, times[1:])) < HAND_OVER_S + 0.5
            await domain.cancel()
            ended = time.monotonic()
            await wait_until(lambda: domain.vm.sample.finished, 20)
            assert domain.vm.migration_status == "cancelled" and time.monotonic() - ended < 10
        finally:
            with contextlib.suppress(BackendError):
                await domain.cancel()
            await asyncio.to_thread(virsh.wait, 30)


async def test_at_2_hz_samples_go_over_two_at_a_time_a_new_pass_at_once_and_one_verdict_each(libvirt_hosts,
                                                                                             monkeypatch):
    """At the default 2 Hz the worker hands over every second sample (each hand-over wakes the loop);
    the sample the loop asks for as a pass begins is taken at once and shown within the second; each
    hand-over computes the verdict at most once, from its last sample, and a pass about once or twice
    (its first look, then as it runs out), not at each of its first two samples."""
    import migtui.model.guidance as guidance
    from migtui.backend.messages import VMEvent

    async with _watching(libvirt_hosts, "twohz") as (backend, domain, messages):
        assert backend.options.active_interval == 0.5
        fresh = guidance.assess
        verdicts: list = []  # the samples this VM's verdicts were computed from

        def counted_assess(tracker):
            if tracker is domain.vm.tracker:
                verdicts.append(tracker.last)
            return fresh(tracker)

        monkeypatch.setattr(guidance, "assess", counted_assess)
        # (when handed, its samples' times, verdicts computed in it, all from its last sample)
        hand_overs: list[tuple[float, list[float], int, bool]] = []
        inner = backend._on_batches

        def counted(host, batches):
            before = len(verdicts)
            inner(host, batches)
            mine = verdicts[before:]
            hand_overs.append((time.time(), [when for _, _, when in batches], len(mine),
                               all(s is domain.vm.sample for s in mine)))

        backend._on_batches = counted
        hosts = libvirt_hosts
        virsh = hosts.virsh_migrate(hosts[0], hosts[1], domain.vm.name, 30)
        try:
            await wait_until(lambda: domain.vm.in_flight, 20)
            await wait_until(lambda: (domain.vm.derived.passes or 0) >= 4 and len(hand_overs) >= 8, 60)
            # Two a hand-over; three where a pass's sample came between two ticks.
            assert all(len(times) <= 3 for _, times, _, _ in hand_overs), hand_overs
            assert sum(len(times) >= 2 for _, times, _, _ in hand_overs) >= len(hand_overs) // 2, hand_overs
            assert all(n <= 1 and from_last for _, _, n, from_last in hand_overs), hand_overs
            # Each pass's MIGRATION_ITERATION asks for a sample: taken within a moment, shown within
            # the second.
            begun = [m.time for m in messages if isinstance(m, VMEvent) and m.event == "MIGRATION_ITERATION"]
            assert len(begun) >= 2
            for when in begun[1:]:
                taken = [t for _, times, _, _ in hand_overs for t in times if t >= when]
                handed = [h for h, times, _, _ in hand_overs if times and times[-1] >= when]
                assert taken and taken[0] - when < 0.3 and handed[0] - when < 1.3, (when, hand_overs)
            # The verdict: at least once a pass, and no more than at a pass's first two looks and as
            # it runs out (VERDICT_REFRESH_MAX_S): far fewer than once a sample.
            computed = sum(n for _, _, n, _ in hand_overs)
            samples = sum(len(times) for _, times, _, _ in hand_overs)
            seconds = hand_overs[-1][0] - hand_overs[0][0]
            assert len(begun) - 1 <= computed <= 2 * len(begun) + seconds / 1.5 + 1 < samples, \
                (computed, samples, len(begun), seconds)
        finally:
            with contextlib.suppress(BackendError):
                await domain.cancel()
            await asyncio.to_thread(virsh.wait, 30)


async def test_at_30_MiB_s_and_1_ms_it_does_not_converge_and_raising_the_bandwidth_completes_it(libvirt_hosts,
                                                                                              tmp_path):
    from migtui.record import Recorder
    from migtui.record.replay import load_recording

    async with _watching(libvirt_hosts, "tune") as (backend, domain, _):
        recorder = Recorder(tmp_path / "recordings")
        backend.subscribe(lambda m: recorder.observe(backend.get(m.vm), m) if backend.get(m.vm) else None)
        await domain.migrate(MigrationOptions(bandwidth=30 * MiB, downtime_ms=1), backend.destinations(domain)[0])
        assert domain.vm.in_flight
        await wait_until(lambda: domain.vm.parameters.get("max-bandwidth") == 30 * MiB, 10)
        assert domain.vm.parameters.get("downtime-limit") == 1
        verdicts = []

        def judged() -> bool:
            verdicts.append(domain.vm.assessment().verdict)
            return verdicts[-1] == "not-converging" or (domain.vm.derived.passes or 0) > 5

        await wait_until(judged, 60)
        assert verdicts[-1] == "not-converging", (verdicts[-1], domain.vm.derived.passes)
        assert (domain.vm.derived.passes or 0) <= 5
        # Guidance's advice goes through libvirt's calls: every change it proposes is one libvirt can make.
        advice = [a for a in domain.vm.advice() if a.change is not None]
        assert advice
        for item in advice:
            assert domain.check_parameters(item.change), item
        change = ParamChange.of(max_bandwidth=4096 * MiB, downtime_limit=2000)
        assert domain.check_parameters(change) == [
            f"virDomainMigrateSetMaxSpeed({domain.vm.name}, 4096 MiB/s) on host1",
            f"virDomainMigrateSetMaxDowntime({domain.vm.name}, 2000 ms) on host1"]
        await domain.set_parameters(change)
        assert domain.vm.parameters["max-bandwidth"] == 4096 * MiB
        await wait_until(lambda: domain.vm.migration_status == "completed", 60)
        await wait_until(lambda: domain.host.label == "host2", 15)
        await wait_until(lambda: recorder.finished, 10)
        recorder.close()
        recording = load_recording(recorder.finished[-1].path)
        assert recording.header["backend"] == "libvirt" and recording.header["host"] == "host1"
        assert recording.summary is not None and recording.summary.get("status") == "completed"


async def test_post_copy_switch_completes_a_migration_that_cannot_converge(libvirt_hosts):
    async with _watching(libvirt_hosts, "postcopy") as (backend, domain, _):
        await domain.migrate(MigrationOptions(bandwidth=30 * MiB, downtime_ms=1, postcopy=True),
                             backend.destinations(domain)[0])
        await wait_until(lambda: (domain.vm.derived.passes or 0) >= 2, 40)
        await domain.start_postcopy()
        await wait_until(lambda: domain.vm.migration_status in ("postcopy-active", "completed"), 20)
        await wait_until(lambda: domain.vm.migration_status == "completed", 90)
        await wait_until(lambda: domain.host.label == "host2" and domain.vm.run_state == "running", 15)
        assert any(r.name == "virDomainMigrateStartPostCopy" and r.kind == "action" for r in domain.vm.log)


async def test_a_broken_post_copy_is_recovered_through_libvirt_and_completes(libvirt_hosts):
    """virsh starts it with a slow post-copy phase, migtui switches, the stream breaks
    (domjobabort --postcopy: QEMU's migrate-pause), migtui resumes it (VIR_MIGRATE_POSTCOPY_RESUME)."""
    hosts = libvirt_hosts
    async with _watching(hosts, "recover") as (backend, domain, _):
        name = domain.vm.name
        with pytest.raises(BackendError, match="not paused in post-copy"):
            domain.check_recovery()  # nothing to recover: one line, nothing sent
        virsh = hosts.virsh_migrate(hosts[0], hosts[1], name, 30, "--postcopy", "--postcopy-bandwidth", "2")
        try:
            await wait_until(lambda: domain.vm.in_flight, 20)
            await domain.start_postcopy()
            await wait_until(lambda: domain.vm.migration_status == "postcopy-active", 20)
            # Broken once the guest runs at the destination (before that, libvirt rolls it back itself).
            running = backend.libvirt.VIR_DOMAIN_RUNNING
            await wait_until(lambda: any(p.host.label == "host2" and p.state == running
                                         for p in domain.placements.values()), 20)
            hosts.virsh(hosts[0], "domjobabort", "--postcopy", name)
            await wait_until(lambda: domain.vm.migration_status == "postcopy-paused", 20)
            assert domain.features.recover_postcopy and domain.features.recovers_alone
            [line] = domain.check_recovery()
            assert "VIR_MIGRATE_POSTCOPY_RESUME" in line and hosts[1].uri in line and "on host1" in line
            hosts.virsh(hosts[0], "migrate-setspeed", "--postcopy", name, "1000")  # the rest at full speed
            await wait_until(lambda: virsh.poll() is not None, 30)  # its call returns once libvirt let go of the job
            await domain.recover_postcopy()
            await wait_until(lambda: domain.vm.migration_status == "completed", 60)
            await wait_until(lambda: domain.host.label == "host2" and domain.vm.run_state == "running", 15)
            assert any(r.name == "virDomainMigrateToURI3" and "resumed" in r.detail for r in domain.vm.log)
        finally:
            await asyncio.to_thread(virsh.wait, 30)


async def test_a_killed_libvirtd_shows_its_host_disconnected_and_everything_reconnects(libvirt_hosts):
    hosts = libvirt_hosts
    async with _watching(hosts, "kill") as (backend, domain, _):
        await domain.migrate(MigrationOptions(bandwidth=30 * MiB), backend.destinations(domain)[0])
        await wait_until(lambda: (domain.vm.derived.passes or 0) >= 1 and domain.vm.sample.get("ram", "transferred"), 30)
        await asyncio.to_thread(hosts.kill, hosts[0])
        await wait_until(lambda: not domain.connected, 20)
        host1, host2 = (next(h for h in backend.hosts() if h.name == n) for n in ("host1", "host2"))
        assert not host1.connected and "libvirtd" in (host1.reason or "") and host2.connected
        assert "host1" in domain.vm.reason and "\n" not in domain.vm.reason
        assert domain.vm.sample is not None  # the last sample stays
        assert domain.vm.assessment().verdict == "unreachable"
        # host1 stays down: reconnection attempts say why in one line.
        await wait_until(lambda: "unreachable" in (next(h for h in backend.hosts() if h.name == "host1").reason or ""), 20)
        await asyncio.to_thread(hosts.restart, hosts[0])
        await wait_until(lambda: domain.connected, 30)
        # libvirtd, restarted, cancels the migration it was driving; the row says how it ended.
        await wait_until(lambda: domain.vm.sample.finished, 30)
        assert domain.vm.run_state == "running" and domain.host.label == "host1"


async def test_a_domain_destroyed_mid_migration_is_reported_as_libvirt_last_saw_it(libvirt_hosts):
    async with _watching(libvirt_hosts, "destroy") as (backend, domain, _):
        await domain.migrate(MigrationOptions(bandwidth=30 * MiB), backend.destinations(domain)[0])
        await wait_until(lambda: domain.vm.sample.get("ram", "transferred"), 20)
        transferred = domain.vm.sample.get("ram", "transferred")
        libvirt_hosts.virsh(libvirt_hosts[0], "destroy", domain.vm.name)
        await wait_until(lambda: domain.gone is not None, 20)
        assert backend.get(domain.key) is domain  # the row stays, with what was last seen
        assert "destroyed" in domain.vm.reason and "host1" in domain.vm.reason
        assert domain.vm.sample.get("ram", "transferred") >= transferred  # the figures last seen stay
        assert domain.vm.migration_status == "failed" and "destroyed" in domain.vm.sample.info["error-desc"]
        assert not domain.features.migrate


async def test_read_only_opens_libvirt_read_only_and_refuses_every_control(libvirt_hosts):
    async with _watching(libvirt_hosts, "ro", read_only=True) as (backend, domain, _):
        assert not domain.features.migrate and "virConnectOpenReadOnly" in domain.features.why_not
        with pytest.raises(BackendError, match="read-only"):
            await domain.set_parameters(ParamChange.of(max_bandwidth=100 * MiB))
        with pytest.raises(BackendError, match="read-only"):
            await domain.migrate(MigrationOptions(), backend.destinations(domain)[0] if backend.destinations(domain)
                                 else None)
        # Not only migtui's check: the connection itself is read-only, so libvirt refuses too.
        placement = domain.placements["host1"]
        import libvirt

        with pytest.raises(libvirt.libvirtError):
            await placement.host.call(placement.dom.migrateSetMaxSpeed, 100, 0)


async def test_an_unreachable_host_gets_one_line_and_the_others_carry_on(libvirt_hosts):
    from migtui.backend.libvirt.backend import LibvirtBackend
    from migtui.backend.libvirt.target import parse_libvirt_target
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = LibvirtBackend([parse_libvirt_target(libvirt_hosts[1].uri),
                              parse_libvirt_target(f"dead=qemu+tcp://127.0.0.1:{port}/system")])
    backend.start()
    try:
        await wait_until(lambda: all(h.reason or h.connected for h in backend.hosts()), 15)
        views = {h.name: h for h in backend.hosts()}
        assert views["host2"].connected
        dead = views["dead"]
        assert not dead.connected and dead.reason.startswith("libvirtd unreachable") and "\n" not in dead.reason
    finally:
        await backend.close()


async def test_sampling_costs_nothing_for_idle_domains(libvirt_hosts, monkeypatch):
    """Idle domains are not polled: a backend watching them makes no job-statistics calls."""
    from migtui.backend.libvirt import backend as backend_module

    calls = []
    original = backend_module._sample_batch

    def counted(lv, conn, doms):  # every batch, the worker's own and the loop's, goes through it
        calls.append(len(doms))
        return original(lv, conn, doms)

    monkeypatch.setattr(backend_module, "_sample_batch", counted)
    async with _watching(libvirt_hosts, "idle") as (backend, domain, messages):
        started = time.monotonic()
        await wait_until(lambda: time.monotonic() - started > 1.5, 5)  # three poll intervals pass
        assert calls == [] and domain.job_placement() is None and all(not h.sampled for h in backend.libvirt_hosts)


async def test_the_console_on_two_hosts_m_migrates_b_makes_it_converge(libvirt_hosts):
    """As a new user would: the fleet lists the domain with its host; m, Enter migrates it to the
    other host; it does not converge at 30 MiB/s; b 4G makes it complete; the row follows it."""
    from migtui.ui.app import MigtuiApp
    from migtui.ui.dialogs import StartMigrationDialog, ValueDialog
    from migtui.ui.widgets.fleet_table import FleetTable

    async with _watching(libvirt_hosts, "console") as (backend, domain, _):
        app = MigtuiApp(backend, start_fleet=False)  # _watching started it

        def cell(column: str) -> str:
            return app.screen.query_one("#fleet", FleetTable).get_cell(domain.key, column)

        async with app.run_test(size=(120, 36)) as pilot:
            await wait_until(lambda: domain.key in app.screen.query_one("#fleet", FleetTable).row_keys, 10)
            assert cell("host") == "host1" and cell("run-state") == "running"
            header = str(app.screen.query_one("#fleet-header").render())
            assert "2 hosts: host1 (1), host2 (0)" in header
            await pilot.press("m")
            assert isinstance(app.screen, StartMigrationDialog)
            shown = str(app.screen.query_one("#destination").query_one("SelectCurrent").query_one("#label").render())
            assert shown.startswith("host2  (libvirt ")
            assert not app.screen.query("#uri")  # libvirt migrates host to host, not to a typed URI
            app.screen.query_one("#bandwidth").value = "30M"
            await pilot.pause()
            await pilot.press("enter")
            await wait_until(lambda: cell("status") == "active", 20)
            await wait_until(lambda: cell("verdict") == "not-converging", 60)
            await pilot.press("b")
            assert isinstance(app.screen, ValueDialog)
            app.screen.query_one("#value").value = "4G"
            await pilot.pause()
            await pilot.press("enter")
            await wait_until(lambda: any(r.name == "virDomainMigrateSetMaxSpeed" for r in domain.vm.log), 10)
            assert [r.kind for r in domain.vm.log if r.name == "virDomainMigrateSetMaxSpeed"] == ["action"]
            await wait_until(lambda: cell("status") == "completed", 60)
            await wait_until(lambda: cell("host") == "host2" and cell("run-state") == "running", 15)


async def test_k_chooses_the_flags_of_the_next_migration(libvirt_hosts):
    """In libvirt, capabilities are flags given at the start: `k` says so, works during a migration, and
    the next migration migtui starts carries them."""
    from migtui.ui.app import MigtuiApp
    from migtui.ui.dialogs import CapabilitiesDialog

    async with _watching(libvirt_hosts, "caps") as (backend, domain, _):
        await domain.migrate(MigrationOptions(bandwidth=30 * MiB), backend.destinations(domain)[0])
        app = MigtuiApp(backend, start_fleet=False)
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_until(lambda: domain.key in app.screen.query_one("#fleet").row_keys, 10)
            await pilot.press("k")
            assert isinstance(app.screen, CapabilitiesDialog)
            assert "next migration" in str(app.screen.query_one("#at-start").render())
            box = app.screen.query_one("#cap-auto-converge")
            assert not box.disabled  # not locked by the migration running
            box.value = True
            await pilot.click("#apply")
            await wait_until(lambda: domain.vm.capabilities.get("auto-converge") is True, 5)
            await domain.cancel()
            await wait_until(lambda: domain.vm.sample.finished and not domain.migrating, 20)
            await domain.migrate(MigrationOptions(bandwidth=30 * MiB), backend.destinations(domain)[0])
            flags = [r.detail for r in domain.vm.log if r.name == "virDomainMigrateToURI3" and r.kind == "action"]
            assert "AUTO_CONVERGE" in flags[-1] and "AUTO_CONVERGE" not in flags[0], flags
            await domain.cancel()
        # The console closed the backend as it quit: a control now fails at once, it does not hang.
        with pytest.raises(BackendError):
            await domain.placements["host1"].host.call(lambda: None)


async def test_the_console_shows_a_host_that_goes_down_and_comes_back(libvirt_hosts):
    """libvirt's callbacks come from its own thread: the console must still redraw on them alone
    (an idle fleet has no poll to carry the change), with the host's line in the header."""
    from migtui.ui.app import MigtuiApp

    hosts = libvirt_hosts
    name = f"down-{uuidlib.uuid4().hex[:6]}"
    await asyncio.to_thread(hosts.define_guest, hosts[0], name)
    backend, _ = _backend(hosts)
    app = MigtuiApp(backend)  # which starts it, as the console does (and closes it as it quits)
    try:
        async with app.run_test(size=(100, 24)):
            header = lambda: str(app.screen.query_one("#fleet-header").render())  # noqa: E731
            await wait_until(lambda: "host1 (1)" in header() and not app._flush_scheduled, 10)
            await asyncio.to_thread(hosts.kill, hosts[0])
            await wait_until(lambda: "⚠ host1" in header(), 10)
            assert "1 disconnected" in header() and "libvirtd" in header()
            await asyncio.to_thread(hosts.restart, hosts[0])
            await wait_until(lambda: "⚠" not in header() and "host1 (1)" in header(), 30)
    finally:
        await asyncio.to_thread(hosts.destroy_guest, name)
