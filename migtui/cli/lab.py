"""`migtui lab`: real QEMU VMs (or the simulated fleet, --sim) on this machine, and the console on them."""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import sys
from pathlib import Path

from migtui.cli.common import _check_metrics, _endpoints
from migtui.cli.console import run_console
from migtui.cli.parser import UsageError


def _check_lab_args(args: argparse.Namespace) -> tuple[int, int]:
    """The lab's numbers, checked (one line for a bad one): (pairs, mem); --vms and --speedup too."""
    from migtui.model.units import parse_count, parse_number, parse_size

    pairs = parse_count(args.pairs, "--pairs", 1, 16)
    linux = args.guest == "linux"
    if args.workload and not linux:
        raise UsageError("--workload needs --guest linux")
    if linux and args.sim:
        raise UsageError("--guest linux boots real QEMU; --sim is the simulated fleet: give one of them")
    if linux:
        from migtui.lab.lab import LINUX_MIN_MEM
        from migtui.lab.linux_guest import GUEST_MEM

        mem = parse_size(args.mem or GUEST_MEM, "--mem")
        if mem < LINUX_MIN_MEM:
            raise UsageError(f"--mem: the Linux lab guest needs at least {LINUX_MIN_MEM >> 20}M")
    else:
        mem = parse_size(args.mem or "128M", "--mem")
        if mem < 128 * 2**20:
            raise UsageError("--mem: the lab guest dirties up to 100 MiB; give at least 128M")
    parse_count(args.vms, "--vms", 1, 5000)
    parse_number(args.speedup, "--speedup", 0.01, 1000, "a factor ")
    if args.dirty_ring is not None:
        from migtui.lab.qemu import DIRTY_RING_SIZES

        sizes = ", ".join(map(str, DIRTY_RING_SIZES))
        if args.sim or args.libvirt or args.accel == "tcg":
            raise UsageError("--dirty-ring is KVM's: it needs the QEMU lab on KVM (not --sim, --libvirt or --accel tcg)")
        if parse_count(args.dirty_ring, "--dirty-ring", 1, 2**20) not in DIRTY_RING_SIZES:
            raise UsageError(f"--dirty-ring: {args.dirty_ring} is not a ring size KVM takes; give one of {sizes}")
    return pairs, mem


async def cmd_lab(args: argparse.Namespace) -> int:
    import os

    from migtui.lab.qemu import QEMU_ENV, QEMU_MISSING_MESSAGE, QemuError, check_qemu, find_qemu, qemu_version

    pairs, mem = _check_lab_args(args)
    _check_metrics(args)
    if args.metrics is not None and args.no_ui:
        raise UsageError("--metrics serves the console's VMs; with --no-ui, run migtui exporter on the "
                         "endpoints it prints")
    linux = args.guest == "linux"
    if args.libvirt:
        if args.sim or linux or args.qemu or args.disk or args.pairs != "1":
            raise UsageError("--libvirt runs the lab guest on libvirt hosts: --sim, --guest, --qemu, --disk and "
                             "--pairs are for the QEMU lab")
        return await run_libvirt_lab(args)
    qemu, what = (args.qemu, "--qemu") if args.qemu else (os.environ.get(QEMU_ENV) or None, QEMU_ENV)
    if args.sim and args.qemu:
        raise UsageError("--qemu runs real QEMU VMs and --sim simulated ones: give one of them")
    if args.sim:
        qemu = None  # $MIGTUI_QEMU is for real labs
    if qemu is not None:
        # Asked for by name: a QEMU that is not there is an error, never the simulated lab.
        try:
            qemu = check_qemu(qemu, what)
            await qemu_version(qemu, what)
        except QemuError as err:
            raise UsageError(str(err)) from None
    elif linux and find_qemu() is None:
        print(f"migtui lab: {QEMU_MISSING_MESSAGE}", file=sys.stderr)
        return 1
    elif not args.sim and find_qemu() is None:
        print(f"migtui: {QEMU_MISSING_MESSAGE}; starting the simulated lab instead", file=sys.stderr)
        args.sim = True
    if args.sim:
        return await run_sim_lab(args)
    from migtui.lab.lab import run_lab_no_ui

    guest = None
    if linux:
        from migtui.lab.linux_guest import GuestBuildError, ensure_guest

        try:
            guest = ensure_guest(args.workload or "pgbench", out=sys.stderr)  # minutes, the first time
        except GuestBuildError as e:
            print(f"migtui lab: {e}", file=sys.stderr)
            return 1
    finished = []

    async def console(lab) -> int:
        _exit_on_hangup(lab.kill_now)
        code = await run_console(_endpoints([vm.endpoint for vm in lab.vms]), args)
        finished.append(code)
        return code

    main = None if args.no_ui else console
    code = await run_lab_no_ui(pairs, f"{mem // 2**20}M", args.disk, accel=args.accel, main=main,
                               out=sys.stderr if main else None, qemu=qemu, linux=guest,
                               dirty_ring=None if args.dirty_ring is None else int(args.dirty_ring))
    if main is not None and not finished:
        _exit_now(code)
    return code


def _exit_on_hangup(cleanup) -> None:
    """With the console up, SIGHUP and SIGTERM clean up at once, synchronously, and exit.

    When the terminal goes away, Textual's writer can block the event loop for
    good, so an asyncio signal handler might never run; a plain one does.
    """
    import os
    import signal

    def handler(signum: int, _frame: object) -> None:
        try:
            cleanup()
        finally:
            os._exit(128 + signum)

    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, handler)


SIM_STOP_TIMEOUT = 5.0  # s the simulated fleet may take to stop after the console closed


def _exit_now(code: int) -> None:
    """A signal ended the lab, which is cleaned up; the console may hang writing to a gone terminal."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


async def run_sim_lab(args: argparse.Namespace) -> int:
    """`migtui lab --sim`: a simulated fleet over real QMP sockets, some migrations already running."""
    import os
    import shutil
    import signal
    import tempfile

    from migtui.model.units import parse_count, parse_number
    from migtui.sim import serve

    n_vms = parse_count(args.vms, "--vms", 1, 5000)
    speedup = parse_number(args.speedup, "--speedup", 0.01, 1000, "a factor ")
    parent = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    runtime = tempfile.mkdtemp(prefix="migtui-sim-", dir=parent if os.path.isdir(parent) else None)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    fleet = None
    try:
        fleet = await serve(n_vms, args.dialect, Path(runtime), speedup=speedup)
        endpoints = [vm.endpoint for vm in fleet.vms.values()]
        if args.no_ui:
            print(f"migtui lab --sim: {n_vms} simulated VMs ({args.dialect}, x{speedup:g}) in {runtime}; "
                  "stop with Ctrl-C", flush=True)
            for endpoint in endpoints:
                print(endpoint, flush=True)
            await stop.wait()
            return 0
        _exit_on_hangup(lambda: shutil.rmtree(runtime, ignore_errors=True))
        console = asyncio.ensure_future(run_console(_endpoints(endpoints), args))
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([console, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        return console.result() if console.done() else 0
    finally:
        if fleet is not None:
            # Bounded: q must end the lab, whatever a simulated VM's socket is doing.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fleet.stop(), SIM_STOP_TIMEOUT)
        shutil.rmtree(runtime, ignore_errors=True)
        for sig in signals:
            loop.remove_signal_handler(sig)
        if stop.is_set() and not args.no_ui:
            _exit_now(0)


async def run_libvirt_lab(args: argparse.Namespace) -> int:
    """`migtui lab --libvirt`: N private libvirt hosts, a RAM-dirtying domain on the first, the console on
    them; every domain, daemon and directory goes at the end (q, Ctrl-C, SIGTERM, a closed terminal)."""
    from migtui.model.units import parse_count

    count = parse_count(args.hosts, "--hosts", 2, 8)
    from migtui.lab.libvirt_hosts import LibvirtHosts, LibvirtLabError, missing_for_lab

    missing = missing_for_lab()
    if missing is None:
        try:
            import libvirt  # noqa: F401
        except ImportError:
            missing = ("libvirt-python is missing: apt-get install libvirt-dev pkg-config gcc python3-dev, "
                       "then pip install 'migtui[libvirt]'")
    if missing is not None:
        print(f"migtui lab --libvirt: {missing}", file=sys.stderr)
        return 1
    from migtui.backend.libvirt.backend import LibvirtOptions
    from migtui.backend.libvirt.target import parse_libvirt_target
    from migtui.config import Config

    config = getattr(args, "config", None) or Config()
    try:
        hosts = LibvirtHosts(count)
        await asyncio.to_thread(hosts.start)
    except LibvirtLabError as err:
        print(f"migtui lab --libvirt: {err}", file=sys.stderr)
        return 1
    try:
        _exit_on_hangup(hosts.close)
        await asyncio.to_thread(hosts.define_guest, hosts[0], "web-01")
        print(f"migtui: {count} libvirt hosts, web-01 on {hosts[0].name}", file=sys.stderr)

        def stream(uri: str) -> str | None:
            # libvirt refuses loopback addresses for the migration stream: a unix socket per migration.
            host = next((h for h in hosts if h.uri == uri), None)
            return None if host is None else hosts.migration_uri(host)

        options = LibvirtOptions(read_only=bool(args.read_only or config.controls_off), audit=config.audit_log(),
                                 migration_uri=stream)
        return await run_console([], args, [parse_libvirt_target(h.uri) for h in hosts], options)
    except LibvirtLabError as err:
        print(f"migtui lab --libvirt: {err}", file=sys.stderr)
        return 1
    finally:
        await asyncio.to_thread(hosts.close)
