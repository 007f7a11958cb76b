"""Figure 8: the libvirt backend against two real libvirt hosts (migtui.lab.libvirt_hosts).

    .venv/bin/python benchmarks/fig_libvirt.py [--quick] [--only sampling,event,fleet] [--json FILE]

Needs root, libvirtd and libvirt-python (what `migtui lab --libvirt` needs); prints one line
saying what is missing otherwise. Prints a table of figures (and, with --json, every value).
Goals are reported, never asserted. The lab's domains run the lab's RAM-dirtying guest under
`-icount shift=10,align=on` (5 % of a core each here instead of 75 % for the free-running
guest), so that ten of them leave the two cores to what is measured.

1. sampling. One domain migrating from host1 to host2 at 30 MiB/s (`virsh migrate`, its own
   process): it never converges, so every sample is of an active job. CPU is
   `time.process_time()` of this process (every thread: the loop, the host's worker, libvirt's
   event thread), in interleaved rounds, the order rotated.
   Paced, the headline: for 6 s each, at 20 Hz,
     migtui     the backend's own sampling at active_interval 0.05 s: the host's worker thread
                times its batches, calls virDomainGetJobStats and hands the batches to the loop
                in one call every HAND_OVER_S (1 s: twenty samples at 20 Hz, two at the default
                2 Hz; a job's first sample and its end go at once); there the conversion to
                the model's sample (query-migrate's names and units, checked as
                parse_query_migrate checks), VMState.observe (tracker, history), the VMUpdated
                post to a subscriber, and the verdict once a hand-over (again for a new pass,
                status or settings, else at most once a second of samples): the whole path
     bare       `dom.jobStats()` then `time.sleep(0.05)` in a loop on a worker thread, on a
                connection of its own
   each less the same process's CPU over a round with nobody sampling (the baseline), per
   sample; also each thread's share, and the model step's (wrapping _add_sample and the
   assessment, thread time on the loop).
   Unpaced, to take the path apart: N samples back to back of
     migtui     `await backend._poll_host(host, [domain])`: the same model step, with a trip
                to the worker thread and back on the loop (the worker times no batch here);
                back to back, hot caches: not a goal figure
     batch      `await host.call(_sample_batch, ...)`: migtui's jobStats() call (state() only
                once a job ended) and the trip to the worker thread and back, no model
     bare       `dom.jobStats()` in a loop on a worker thread; bare+state: with `dom.state()` too
   and `virsh -c URI domjobinfo NAME`, one process per query: wall time, and CPU of the
   child (getrusage(RUSAGE_CHILDREN) before and after each).
2. event. The console (MigtuiApp.run_test, 160x45, fleet screen, LibvirtBackend defaults)
   watching one domain migrated 5 times back and forth by migtui at 1 GiB/s (downtime 2 s). For
   each migration: from libvirt's JOB_COMPLETED event reaching migtui (the `when` its event
   thread stamps, read by wrapping `_on_job_completed`) to the first frame whose fleet row, as
   drawn (FleetTable.drawn_cells), reads "completed" in its status cell. A poll that showed it
   before the event came counts as 0 (reported apart).
3. fleet. Two hosts, 100 domains in all: 10 lab guests (128 MiB), 5 per host, each migrating to
   the other host at 8 MiB/s (never converging), and 90 idle domains (32 MiB, no kernel, created
   paused: a running idle domain's SeaBIOS costs 1 % of a core, 90 of them would take half the
   machine; migtui polls no idle domain either way). LibvirtBackend at active_interval 1 s, the
   console headless with every frame encoded (screen_probe.FrameProbe). CPU share of one core:
   this process's process time over a 20 s untouched window once every domain is listed and the
   10 jobs are in flight. Keys: 40 presses of down/up in the fleet table, 0.15-0.45 s apart, each
   from before pilot.press() to the first frame with the cursor moved.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import (child_cpu, goal, machine, median, percentile, proc_rss_mb, reap_all, rnd, spawn,  # noqa: E402
                    stop, summary)
from screen_probe import FrameProbe  # noqa: E402

MiB = 2**20
ICOUNT_SHIFT = 10  # the lab guest at ~5 % of a core (free-running: ~75 %)
GUEST_MIB = 128  # the lab guest's smallest RAM
IDLE_MIB = 32


def missing() -> str | None:
    """None when this machine can run the figure, else one line saying why not."""
    from migtui.lab.libvirt_hosts import missing_for_lab

    why = missing_for_lab()
    if why is None:
        try:
            import libvirt  # noqa: F401
        except ImportError:
            why = "libvirt-python not installed: .venv/bin/pip install -e '.[libvirt]'"
    return why


def _log(text: str) -> None:
    print(f"[libvirt {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def make_backend(hosts: Any, **options: Any) -> tuple[Any, list[int]]:
    """A LibvirtBackend on every lab host, migrating over the lab's unix sockets; and a sample counter."""
    from migtui.backend.libvirt.backend import LibvirtBackend, LibvirtOptions
    from migtui.backend.libvirt.target import parse_libvirt_target
    from migtui.backend.messages import VMUpdated

    samples = [0]

    def listener(message: Any) -> None:
        if isinstance(message, VMUpdated) and message.what == "sample":
            samples[0] += 1

    def stream(uri: str) -> str:
        return hosts.migration_uri(next(h for h in hosts if h.uri == uri))

    backend = LibvirtBackend([parse_libvirt_target(h.uri) for h in hosts], listener=listener,
                             options=LibvirtOptions(migration_uri=stream, **options))
    return backend, samples


def virsh_migrate(hosts: Any, src: Any, dst: Any, name: str, bandwidth_mib: int) -> subprocess.Popen:
    """`virsh migrate --live --p2p` in its own process, as another operator would start it."""
    return spawn(["virsh", "-c", src.uri, "migrate", "--live", "--p2p", name, dst.uri,
                  "--migrateuri", hosts.migration_uri(dst), "--bandwidth", str(bandwidth_mib)],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def end_migrations(hosts: Any, running: list[tuple[Any, str, subprocess.Popen]]) -> None:
    for host, name, _ in running:
        hosts.virsh(host, "domjobabort", name, check=False)
    for _, _, proc in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        stop(proc)


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live Python thread, by name (libvirt's event thread, the hosts' workers, ...)."""
    import threading

    out: dict[str, float] = {}
    for thread in threading.enumerate():
        with contextlib.suppress(OSError, TypeError, ValueError):
            name = ("main" if thread is threading.main_thread() else "executor" if thread.name.startswith("asyncio")
                    else thread.name)
            out[name] = out.get(name, 0.0) + time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return out


def unique(prefix: str) -> str:
    return f"{prefix}-{uuidlib.uuid4().hex[:6]}"


# ---- 1. CPU per sample -----------------------------------------------------------------------


async def sampling(hosts: Any, samples: int, rounds: int, virsh_queries: int, paced_seconds: float,
                   interval: float = 0.05, profile: str = "") -> dict[str, Any]:
    import libvirt

    from migtui.backend.libvirt.backend import _sample_batch

    name = unique("sampling")
    await asyncio.to_thread(hosts.define_guest, hosts[0], name, GUEST_MIB, icount_shift=ICOUNT_SHIFT)
    backend, posted = make_backend(hosts, active_interval=3600.0)  # its own loop stays out of the way
    backend.start()
    migration: list[tuple[Any, str, subprocess.Popen]] = []
    bare: dict[str, Any] = {}
    try:
        await wait_until(lambda: all(h.connected for h in backend.hosts()) and backend.get(name) is not None, 20,
                         "both hosts and the domain")
        domain = backend.get(name)
        migration.append((hosts[0], name, virsh_migrate(hosts, hosts[0], hosts[1], name, 30)))
        await wait_until(lambda: domain.vm.in_flight and (domain.vm.sample.get("ram", "transferred") or 0) > 0, 30,
                         "the migration's first sample")
        host = domain.job_placement().host
        placement = domain.job_placement()
        # The model step's share, on the loop's thread: _add_sample (conversion to a checked sample,
        # observe, post) and the assessment (within it, or once a hand-over after its samples);
        # accumulated while `account` is on. "model" is their sum, the assessment counted once.
        account = {"on": False, "add_sample": 0.0, "assess": 0.0, "model": 0.0, "n": 0, "computed": 0,
                   "passes": set(), "inside": False}
        add_sample, refresh_assessment = backend._add_sample, domain.vm.refresh_assessment

        def timed_add_sample(*a: Any, **kw: Any) -> None:
            t0 = time.thread_time()
            account["inside"] = True
            try:
                add_sample(*a, **kw)
            finally:
                account["inside"] = False
            if account["on"]:
                spent = time.thread_time() - t0
                account["add_sample"] += spent
                account["model"] += spent
                account["n"] += 1

        def timed_assessment(*a: Any) -> None:
            held = domain.vm._assessed
            t0 = time.thread_time()
            refresh_assessment(*a)
            if account["on"]:
                spent = time.thread_time() - t0
                account["assess"] += spent
                if not account["inside"]:
                    account["model"] += spent
                account["computed"] += domain.vm._assessed is not held
                account["passes"].add(domain.vm.derived.passes)

        backend._add_sample, domain.vm.refresh_assessment = timed_add_sample, timed_assessment

        def bare_connect() -> Any:
            """A fresh connection of the bare client's own for each round (outside the timing): an idle one
            may have been closed by libvirtd's keepalive while the other clients ran."""
            if bare.get("conn") is not None:
                with contextlib.suppress(Exception):
                    bare["conn"].close()
            bare["conn"] = libvirt.open(hosts[0].uri)
            bare["dom"] = bare["conn"].lookupByName(name)
            return bare["dom"]

        async def migtui_round(n: int) -> tuple[float, float, float]:
            before = posted[0]
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                await backend._poll_host(host, [domain])
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            if posted[0] - before < n:
                raise RuntimeError(f"migtui recorded {posted[0] - before} samples of {n}")
            return cpu / n, wall / n, 0.0

        async def batch_round(n: int) -> tuple[float, float, float]:
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                await host.call(_sample_batch, libvirt, host.conn, [placement.dom])
            return (time.process_time() - c0) / n, (time.perf_counter() - w0) / n, 0.0

        def bare_loop(n: int, state: bool) -> float:
            bare_dom = bare["dom"]
            t0 = time.thread_time()
            for _ in range(n):
                bare_dom.jobStats()
                if state:
                    bare_dom.state()
            return time.thread_time() - t0

        async def bare_round(n: int, state: bool = False) -> tuple[float, float, float]:
            await asyncio.to_thread(bare_connect)
            c0, w0 = time.process_time(), time.perf_counter()
            thread_cpu = await asyncio.to_thread(bare_loop, n, state)
            return (time.process_time() - c0) / n, (time.perf_counter() - w0) / n, thread_cpu / n

        def bare_paced_loop(seconds: float, hop: asyncio.AbstractEventLoop | None = None) -> int:
            bare_dom = bare["dom"]
            n, end = 0, time.perf_counter() + seconds
            while time.perf_counter() < end:
                stats = bare_dom.jobStats()
                if hop is not None:  # the floor of any design that reads on a thread and shows on a loop
                    hop.call_soon_threadsafe(len, stats)
                n += 1
                time.sleep(interval)
            return n

        async def paced(which: str, seconds: float) -> tuple[float, int, float]:
            """(CPU seconds, samples, wall seconds) over `seconds` of wall time: the backend's own poll loop at
            `interval`, a paced bare loop on a thread, or nobody sampling (the baseline)."""
            before = posted[0]
            if which.startswith("bare"):
                await asyncio.to_thread(bare_connect)
            threads0 = thread_cpu()
            c0, w0 = time.process_time(), time.perf_counter()
            n = 0
            if which == "migtui":
                account["on"] = True
                backend.options.active_interval = interval
                backend.poll_soon()
                await asyncio.sleep(seconds)
                backend.options.active_interval = 3600.0
                backend.poll_soon()  # one last poll, counted
                await asyncio.sleep(interval)
                account["on"] = False
                n = posted[0] - before
            elif which == "bare":
                n = await asyncio.to_thread(bare_paced_loop, seconds)
            elif which == "bare+hop":
                n = await asyncio.to_thread(bare_paced_loop, seconds, asyncio.get_running_loop())
            else:
                await asyncio.sleep(seconds)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            threads = thread_cpu()
            by_thread[which].append({k: v - threads0.get(k, 0.0) for k, v in threads.items()})
            return cpu, n, wall

        clients: dict[str, Callable[[int], Any]] = {
            "migtui": migtui_round, "batch": batch_round, "bare": bare_round,
            "bare+state": lambda n: bare_round(n, True)}
        for run in clients.values():  # warm-up: imports, caches, the executor's thread
            await run(20)
        per: dict[str, list[tuple[float, float, float]]] = {k: [] for k in clients}
        names = list(clients)
        paced_names = ["idle", "migtui", "bare", "bare+hop"]
        paced_raw: dict[str, list[tuple[float, int, float]]] = {k: [] for k in paced_names}
        by_thread: dict[str, list[dict[str, float]]] = {k: [] for k in paced_names}
        for r in range(rounds):
            for k in names[r % len(names):] + names[:r % len(names)]:  # order rotated
                per[k].append(await clients[k](samples))
            for k in paced_names[r % len(paced_names):] + paced_names[:r % len(paced_names)]:
                paced_raw[k].append(await paced(k, paced_seconds))
        if profile:  # one more paced migtui round under cProfile (the loop's thread: where the model runs)
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            await paced("migtui", paced_seconds)
            profiler.disable()
            profiler.dump_stats(profile)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        still_active = bool(domain.vm.in_flight) and bare_connect().jobStats().get("type") == libvirt.VIR_DOMAIN_JOB_UNBOUNDED

        virsh_wall, virsh_cpu = [], []
        for _ in range(virsh_queries):
            c0, w0 = child_cpu(), time.perf_counter()
            done = await asyncio.to_thread(subprocess.run, ["virsh", "-c", hosts[0].uri, "domjobinfo", name],
                                           capture_output=True, text=True)
            virsh_wall.append(time.perf_counter() - w0)
            virsh_cpu.append(child_cpu() - c0)
            if done.returncode != 0 or "Unbounded" not in done.stdout:
                raise RuntimeError(f"virsh domjobinfo: {done.stdout.strip() or done.stderr.strip()}")
    finally:
        await backend.close()
        if bare.get("conn") is not None:
            with contextlib.suppress(Exception):
                bare["conn"].close()
        await asyncio.to_thread(end_migrations, hosts, migration)
        await asyncio.to_thread(hosts.destroy_guest, name)

    us = {f"unpaced {k}": [c * 1e6 for c, _, _ in v] for k, v in per.items()}
    wall_us = {f"unpaced {k}": [w * 1e6 for _, w, _ in v] for k, v in per.items()}
    # Paced: CPU per sample above the baseline (the same process, nobody sampling) of the same round.
    for k in ("migtui", "bare", "bare+hop"):
        us[f"paced {k}"] = [(cpu - idle_cpu / idle_wall * wall) / n * 1e6
                            for (cpu, n, wall), (idle_cpu, _, idle_wall) in zip(paced_raw[k], paced_raw["idle"]) if n]
    values: dict[str, Any] = {
        "cpu_us_per_sample": {k: summary(v, 1) for k, v in us.items()},
        "wall_us_per_sample": {k: summary(v, 1) for k, v in wall_us.items()},
        "paced_samples": {k: [n for _, n, _ in v] for k, v in paced_raw.items()},
        # In the paced migtui rounds, on the loop's thread: _add_sample (conversion to a checked sample
        # + VMState.observe + post), the assessment, and both ("model"), µs per sample.
        "paced_model_us": {"model": rnd(account["model"] / max(1, account["n"]) * 1e6, 1),
                           "add_sample": rnd(account["add_sample"] / max(1, account["n"]) * 1e6, 1),
                           "assessment": rnd(account["assess"] / max(1, account["n"]) * 1e6, 1),
                           "samples": account["n"],
                           # how many of those samples had the verdict computed again, over how many passes
                           "verdicts_computed": account["computed"], "passes_seen": len(account["passes"])},
        # Each thread's CPU µs per sample in the paced rounds (idle: µs per second), median of rounds.
        "paced_thread_cpu_us": {
            k: {t: rnd(median([r.get(t, 0.0) / (n or wall) * 1e6 for r, (_, n, wall) in zip(rs, paced_raw[k])]), 1)
                for t in sorted({t for r in rs for t in r})} for k, rs in by_thread.items()},
        "idle_cpu_share": summary([c / w for c, _, w in paced_raw["idle"]], 4),
        "bare_thread_cpu_us": summary([t * 1e6 for _, _, t in per["bare"]], 1),
        "bare_state_thread_cpu_us": summary([t * 1e6 for _, _, t in per["bare+state"]], 1),
        "virsh_wall_ms": summary([w * 1000 for w in virsh_wall], 1),
        "virsh_cpu_ms": summary([c * 1000 for c in virsh_cpu], 2),
        "still_active_after_rounds": still_active,
    }
    m = {k: median(v) for k, v in us.items()}
    ratios = {
        "paced migtui / paced bare": m["paced migtui"] / m["paced bare"],
        "paced bare+hop / paced bare": m["paced bare+hop"] / m["paced bare"],
        "unpaced batch / unpaced bare": m["unpaced batch"] / m["unpaced bare"],
        "unpaced migtui / unpaced bare": m["unpaced migtui"] / m["unpaced bare"],
        "virsh CPU / paced migtui CPU": median(virsh_cpu) * 1e6 / m["paced migtui"],
        # What any client reading libvirt at this rate could reach against virsh: the bare loop's own ratio.
        "virsh CPU / paced bare CPU": median(virsh_cpu) * 1e6 / m["paced bare"],
        "virsh CPU / unpaced migtui CPU": median(virsh_cpu) * 1e6 / m["unpaced migtui"],
        "virsh wall / unpaced migtui wall": median(virsh_wall) * 1e6 / median(wall_us["unpaced migtui"]),
    }
    values["ratios"] = {k: rnd(v, 2) for k, v in ratios.items()}
    return {
        "params": {"samples_per_round": samples, "rounds": rounds, "virsh_queries": virsh_queries,
                   "paced_seconds": paced_seconds, "paced_interval_s": interval,
                   "bandwidth_mib_s": 30, "guest_mib": GUEST_MIB},
        "values": values,
        "goals": [goal(f"migtui / bare jobStats() loop, CPU per sample, both at {1 / interval:g} Hz",
                       ratios["paced migtui / paced bare"], 1.5, "<=", "x"),
                  goal(f"virsh domjobinfo CPU per query / migtui CPU per sample ({1 / interval:g} Hz)",
                       ratios["virsh CPU / paced migtui CPU"], 20.0, ">=", "x")],
    }


# ---- 2. JOB_COMPLETED to screen ----------------------------------------------------------------


def _status_index(table: Any) -> int:
    return next(i for i, (key, _, _) in enumerate(table.columns) if key == "status")


async def event_to_screen(hosts: Any, migrations: int) -> dict[str, Any]:
    from textual._context import active_app

    from migtui.model.requests import MigrationOptions
    from migtui.ui.app import MigtuiApp
    from migtui.ui.widgets.fleet_table import FleetTable

    name = unique("event")
    await asyncio.to_thread(hosts.define_guest, hosts[0], name, GUEST_MIB, icount_shift=ICOUNT_SHIFT)
    backend, _ = make_backend(hosts)
    events: list[tuple[str, float, float]] = []  # (host label, event thread's time.time(), loop's time.time())
    inner = backend._on_job_completed

    def on_job_completed(host: Any, dom: Any, uuid: str, dom_name: str, params: dict, when: float) -> None:
        if dom_name == name:
            events.append((host.label, when, time.time()))
        inner(host, dom, uuid, dom_name, params, when)

    backend._on_job_completed = on_job_completed
    app = MigtuiApp(backend)  # it starts the backend as it mounts, as the console does
    probe = FrameProbe(app)
    frames: list[tuple[float, str]] = []  # (time.time(), status as drawn), on change
    starts: list[tuple[float, str]] = []  # (time.time() before migrate, source host label)
    cache: dict[str, Any] = {}

    def on_frame(_: float) -> None:
        screen = app.screen
        if cache.get("screen") is not screen:
            tables = screen.query("#fleet")
            if not tables:
                return
            cache["screen"], cache["table"] = screen, tables.first(FleetTable)
            cache["index"] = _status_index(cache["table"])
        drawn = cache["table"].drawn_cells(name)
        if drawn is None:
            return
        status = drawn[cache["index"]]
        if not frames or frames[-1][1] != status:
            frames.append((time.time(), status))

    probe.on_frame.append(on_frame)
    try:
        async with app.run_test(size=(160, 45)):
            active_app.set(app)  # migrate as the app's own code would: its repaint timer needs the app
            await wait_until(lambda: all(h.connected for h in backend.hosts()) and backend.get(name) is not None, 20,
                             "both hosts and the domain")
            domain = backend.get(name)
            await wait_until(lambda: bool(app.screen.query("#fleet")) and name in app.screen.query_one(
                "#fleet", FleetTable).row_keys, 10, "the domain's row")
            table = app.screen.query_one("#fleet", FleetTable)
            for i in range(migrations):
                await asyncio.sleep(1.0)
                source = domain.home
                destination = backend.destinations(domain)[0]
                starts.append((time.time(), source.label))
                await domain.migrate(MigrationOptions(bandwidth=1024 * MiB, downtime_ms=2000), destination)
                await wait_until(lambda: any(e[0] == source.label and e[1] > starts[-1][0] for e in events), 60,
                                 f"JOB_COMPLETED of migration {i + 1}")
                await wait_until(lambda: table.get_cell(name, "status") == "completed"
                                 and domain.home is destination.target and domain.vm.run_state == "running", 30,
                                 f"migration {i + 1} shown completed on {destination.target.label}")
            await asyncio.sleep(0.5)
    finally:
        await backend.close()
        await asyncio.to_thread(hosts.destroy_guest, name)

    latencies, before_event, loop_hop = [], 0, []
    for k, (began, source) in enumerate(starts):
        until = starts[k + 1][0] if k + 1 < len(starts) else float("inf")
        event = next((e for e in events if e[0] == source and began < e[1] < until), None)
        if event is None:
            continue
        when = event[1]
        loop_hop.append((event[2] - when) * 1000)
        shown_before = [f for f in frames if began < f[0] < when]
        if shown_before and shown_before[-1][1] == "completed":
            before_event += 1  # a poll showed it before the event came
            latencies.append(0.0)
            continue
        hit = next((t for t, status in frames if t >= when and status == "completed"), None)
        if hit is not None:
            latencies.append((hit - when) * 1000)
    values = {
        "job_completed_to_frame_ms": summary(latencies, 1),
        "job_completed_to_frame_ms_all": [rnd(x, 1) for x in latencies],
        "shown_by_a_poll_before_the_event": before_event,
        "event_thread_to_loop_ms": summary(loop_hop, 2),
        "events_seen": len(events),
        "frames_total": probe.frames,
    }
    return {
        "params": {"migrations": migrations, "bandwidth_mib_s": 1024, "downtime_ms": 2000, "size": [160, 45],
                   "clock": "time.time() on libvirt's event thread vs time.time() at the frame"},
        "values": values,
        "goals": [goal("JOB_COMPLETED to frame, p95", percentile(latencies, 95), 100.0, "<=", "ms")],
    }


# ---- 3. a fleet of two hosts ---------------------------------------------------------------


def _idle_xml(name: str) -> str:
    from xml.sax.saxutils import escape

    from migtui.lab.qemu import find_qemu

    return (f"<domain type='qemu'><name>{escape(name)}</name><memory unit='MiB'>{IDLE_MIB}</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
            f"<devices><emulator>{escape(find_qemu() or 'qemu-system-x86_64')}</emulator>"
            "<memballoon model='none'/></devices></domain>")


def create_fleet(hosts: Any, n_domains: int, n_migrating: int, idle_running: bool) -> tuple[list[tuple[Any, str]],
                                                                                              list[tuple[Any, str]]]:
    """(migrating guests, idle domains) as (lab host, name), spread over the hosts in turn."""
    guests = [(hosts[i % len(hosts)], f"guest{i + 1:02d}") for i in range(n_migrating)]
    idle = [(hosts[i % len(hosts)], f"idle{i + 1:03d}") for i in range(n_domains - n_migrating)]
    first_host, first = guests[0]
    hosts.define_guest(first_host, first, GUEST_MIB, icount_shift=ICOUNT_SHIFT, wait=False)  # builds the kernel
    folder = hosts.dir / "bench-idle"
    folder.mkdir(exist_ok=True)

    def make_idle(item: tuple[Any, str]) -> None:
        host, name = item
        path = folder / f"{name}.xml"
        path.write_text(_idle_xml(name))
        hosts.virsh(host, "create", str(path), *(() if idle_running else ("--paused",)))

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda g: hosts.define_guest(g[0], g[1], GUEST_MIB, icount_shift=ICOUNT_SHIFT, wait=False),
                      guests[1:]))
        list(pool.map(make_idle, idle))
    for guest in list(hosts.guests):
        if any(guest.name == name for _, name in guests):
            hosts.wait_guest_ready(guest)
    return guests, idle


async def fleet(hosts: Any, n_domains: int, n_migrating: int, bandwidth_mib: int, window: float, presses: int,
                idle_running: bool) -> dict[str, Any]:
    from migtui.ui.app import MigtuiApp
    from migtui.ui.widgets.fleet_table import FleetTable

    began = time.perf_counter()
    guests, idle = await asyncio.to_thread(create_fleet, hosts, n_domains, n_migrating, idle_running)
    created_s = time.perf_counter() - began
    _log(f"{len(guests) + len(idle)} domains created in {created_s:.0f} s")
    backend, posted = make_backend(hosts, active_interval=1.0)
    app = MigtuiApp(backend)  # it starts the backend as it mounts, as the console does
    probe = FrameProbe(app)
    migrations: list[tuple[Any, str, subprocess.Popen]] = []
    result: dict[str, Any] = {"domains_created_s": rnd(created_s, 1)}
    rng = random.Random(1)
    try:
        async with app.run_test(size=(160, 45)) as pilot:
            await wait_until(lambda: all(h.connected for h in backend.hosts()) and len(backend.domains) >= n_domains,
                             60, f"{n_domains} domains listed")
            for host, name in guests:
                other = hosts[(list(hosts).index(host) + 1) % len(hosts)]
                migrations.append((host, name, virsh_migrate(hosts, host, other, name, bandwidth_mib)))
            in_flight = lambda: sum(1 for d in backend.domains.values() if d.vm.in_flight)  # noqa: E731
            await wait_until(lambda: in_flight() >= n_migrating, 60, f"{n_migrating} migrations in flight")
            await asyncio.sleep(3.0)  # settle: first passes, settings read
            table = app.screen.query_one("#fleet", FleetTable)
            result["rows"] = table.row_count

            cpu0, wall0, frames0, samples0 = time.process_time(), time.perf_counter(), probe.frames, posted[0]
            await asyncio.sleep(window)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            result.update(window_s=rnd(wall, 2), cpu_s=rnd(cpu, 3), cpu_share=rnd(cpu / wall, 4),
                          frames_per_s=rnd((probe.frames - frames0) / wall, 2),
                          samples_per_s=rnd((posted[0] - samples0) / wall, 1),
                          in_flight_after_window=in_flight(), rss_mb=proc_rss_mb())
            _log(f"cpu share {result['cpu_share']}, {result['samples_per_s']} samples/s")

            lat: list[float | None] = []
            await pilot.press("home")
            await pilot.pause()
            for i in range(presses):
                key = "down" if (i // 10) % 2 == 0 else "up"
                row = table.cursor_row
                fut = probe.wait_for(lambda row=row: table.cursor_row != row)
                t0 = time.perf_counter()
                await pilot.press(key)
                try:
                    lat.append((await asyncio.wait_for(asyncio.shield(fut), 10) - t0) * 1000)
                except asyncio.TimeoutError:
                    lat.append(None)
                await asyncio.sleep(rng.uniform(0.15, 0.45))
            result["key_frame_ms"] = summary([x for x in lat if x is not None], 1)
            result["key_frame_ms_all"] = [rnd(x, 1) for x in lat]
            result["key_timeouts"] = sum(1 for x in lat if x is None)
            result["in_flight_at_end"] = in_flight()
    finally:
        await backend.close()
        await asyncio.to_thread(end_migrations, hosts, migrations)
    key_ms = [x for x in lat if x is not None]
    return {
        "params": {"domains": n_domains, "migrating": n_migrating, "hosts": len(hosts),
                   "bandwidth_mib_s": bandwidth_mib,
                   "active_interval_s": 1.0, "window_s": window, "presses": presses,
                   "idle_domains": "running" if idle_running else "paused", "size": [160, 45]},
        "values": result,
        "goals": [goal(f"{n_domains} domains, {n_migrating} migrating: CPU share of one core", result["cpu_share"],
                       0.2, "<="),
                  goal(f"{n_domains} domains: key press to frame, p95", percentile(key_ms, 95), 100.0, "<=", "ms")],
    }


# ---- the table --------------------------------------------------------------------------------


def table(out: dict[str, Any]) -> str:
    lines = []
    s = out.get("sampling")
    if s and "values" in s:
        v = s["values"]
        lines.append("1 sampling: CPU µs per sample (median of rounds; max), wall µs")
        hz = f"{1 / s['params']['paced_interval_s']:g} Hz"
        for k, label in (("paced migtui", f"migtui: its poll loop at {hz}, the whole path"),
                         ("paced bare", f"bare: jobStats() loop on a thread, {hz}"),
                         ("paced bare+hop", f"bare, each sample handed to the loop, {hz}"),
                         ("unpaced migtui", "migtui: _poll_host back to back (see docs)"),
                         ("unpaced batch", "migtui: _sample_batch via the host's thread"),
                         ("unpaced bare", "bare: jobStats() back to back on a thread"),
                         ("unpaced bare+state", "bare: jobStats() + state() back to back")):
            c, w = v["cpu_us_per_sample"][k], v["wall_us_per_sample"].get(k)
            wall = f"   wall {w['median']:>8.1f}" if w else ""
            lines.append(f"  {label:<48} {c['median']:>8.1f} {c['max']:>8.1f}{wall}")
        virsh_cpu = v["virsh_cpu_ms"]
        lines.append(f"  {'virsh domjobinfo, one process per query: CPU':<48} {virsh_cpu['median'] * 1000:>8.0f}"
                     f" {virsh_cpu['max'] * 1000:>8.0f}   wall {v['virsh_wall_ms']['median'] * 1000:>8.0f}")
        for k, r in v["ratios"].items():
            lines.append(f"  ratio {k:<42} {r:>8.2f}x")
    e = out.get("event")
    if e and "values" in e:
        v = e["values"]["job_completed_to_frame_ms"]
        lines.append(f"2 event: JOB_COMPLETED to frame, ms: median {v.get('median')}, p95 {v.get('p95')}, "
                     f"max {v.get('max')} (n {v.get('n')}; {e['values']['shown_by_a_poll_before_the_event']} shown "
                     f"by a poll first)")
    f = out.get("fleet")
    if f and "values" in f:
        v = f["values"]
        k = v.get("key_frame_ms", {})
        lines.append(f"3 fleet: {f['params']['domains']} domains, {f['params']['migrating']} migrating: CPU share "
                     f"{v.get('cpu_share')} ({v.get('samples_per_s')} samples/s, {v.get('frames_per_s')} frames/s); "
                     f"key to frame ms median {k.get('median')}, p95 {k.get('p95')}, max {k.get('max')}")
    for name, fig in out.items():
        if isinstance(fig, dict):
            if "error" in fig:
                lines.append(f"{name}: ERROR {fig['error']}")
            for g in fig.get("goals", []):
                met = {True: "met", False: "MISSED", None: "?"}[g["met"]]
                lines.append(f"  goal {g['name']}: {g['value']} {g['op']} {g['goal']} {g['unit']} -> {met}")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from migtui.lab.libvirt_hosts import LibvirtHosts

    only = set(args.only.split(",")) if args.only else {"sampling", "event", "fleet"}
    out: dict[str, Any] = {"machine": machine()}
    began = time.perf_counter()
    async with LibvirtHosts(2) as hosts:
        for name, run in (
            ("sampling", lambda: sampling(hosts, args.samples, args.rounds, args.virsh, args.paced, args.interval,
                                       profile=args.profile)),
            ("event", lambda: event_to_screen(hosts, args.migrations)),
            ("fleet", lambda: fleet(hosts, args.domains, args.migrating, args.bandwidth, args.window, args.presses,
                                    args.idle_running)),
        ):
            if name not in only:
                continue
            _log(f"{name} ...")
            t0 = time.perf_counter()
            try:
                out[name] = await run()
            except Exception as err:  # noqa: BLE001 - one figure failing still reports the others
                import traceback

                traceback.print_exc()
                out[name] = {"error": f"{type(err).__name__}: {err}"}
            out[name]["seconds"] = rnd(time.perf_counter() - t0, 1)
            _log(f"{name} done in {out[name]['seconds']} s")
    out["seconds"] = rnd(time.perf_counter() - began, 1)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: for spotting regressions, not the goals")
    parser.add_argument("--only", default="", help="sampling,event,fleet")
    parser.add_argument("--json", default="", help="write every value here too")
    parser.add_argument("--samples", type=int, default=None, help="samples per client per round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--paced", type=float, default=None, help="seconds per paced round")
    parser.add_argument("--interval", type=float, default=0.05, help="the paced rounds' seconds between samples")
    parser.add_argument("--virsh", type=int, default=None, help="virsh domjobinfo queries")
    parser.add_argument("--migrations", type=int, default=None, help="figure 2's migrations")
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--migrating", type=int, default=10)
    parser.add_argument("--bandwidth", type=int, default=8, help="MiB/s of the fleet's migrations")
    parser.add_argument("--window", type=float, default=None)
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--profile", default="", help="figure 1: cProfile one more migtui round into this file")
    parser.add_argument("--idle-running", action="store_true", help="the idle domains running, not paused")
    args = parser.parse_args()
    quick = args.quick
    for attr, full, small in (("samples", 300, 100), ("rounds", 3, 2), ("paced", 6.0, 3.0), ("virsh", 30, 10),
                              ("migrations", 5, 2), ("window", 20.0, 8.0)):
        if getattr(args, attr) is None:
            setattr(args, attr, small if quick else full)
    if quick and args.domains == 100:
        args.domains, args.migrating = 20, 4
    why = missing()
    if why is not None:
        print(f"fig_libvirt: cannot run here: {why}")
        sys.exit(2)
    try:
        result = asyncio.run(main(args))
    finally:
        reap_all()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(table(result))
    where = result["machine"]
    print(f"({result['seconds']} s; git {where['git']}; load at start {where['loadavg_at_start']})")
