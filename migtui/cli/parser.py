"""The arguments of every subcommand, of the console and of `migtui serve`, as argparse parsers."""

from __future__ import annotations

import argparse
from typing import NoReturn

from migtui import __version__


SUBCOMMANDS = ("status", "watch", "migrate", "cancel", "set", "caps", "postcopy", "drain", "lab", "replay", "export",
               "exporter", "serve", "demo")
EXPORTER_LISTEN = "127.0.0.1:9720"  # `migtui exporter`'s default: loopback
SERVABLE = ("lab", "demo", "replay")  # the subcommands that open a console, which `serve` can serve


class UsageError(Exception):
    """Bad arguments: exit 2 with this one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, naming where to look, instead of argparse's usage block.
        raise UsageError(f"{message} (see: {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="migtui",
        description="A terminal console for QEMU live migration.",
        epilog="Without a subcommand, migtui opens the console on the TARGETs given.",
    )
    parser.add_argument("--version", action="version", version=f"migtui {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    def targets(p: argparse.ArgumentParser, nargs: str = "+") -> None:
        p.add_argument("targets", nargs=nargs, metavar="TARGET", help="[NAME=]unix:PATH, PATH or tcp:HOST:PORT (QMP), or a libvirt host: "
                       "qemu+ssh://[USER@]HOST/system, qemu+tcp://, qemu+tls://, qemu:///system, "
                       "optionally #DOMAIN[,PATTERN...]")

    p = sub.add_parser("status", help="one sample per target, then exit")
    p.add_argument("--json", action="store_true", help="one JSON object per target")
    p.add_argument("--window", metavar="TIME",
                   help="sample for this long (e.g. 5s) and judge the trend, not one reply")
    targets(p)

    p = sub.add_parser("watch", help="sample every interval")
    p.add_argument("--json", action="store_true", help="one NDJSON line per target per round")
    p.add_argument("--interval", default="1", metavar="S", help="seconds between rounds (default 1)")
    p.add_argument("--count", default=None, metavar="N", help="stop after N rounds")
    add_metrics_option(p)
    targets(p)

    p = sub.add_parser("migrate", help="start a migration")
    p.add_argument("source", metavar="SOURCE")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="TARGET", help="a destination VM waiting with -incoming defer, or for a libvirt domain the destination host's URI")
    where.add_argument("--uri", metavar="URI", help="tcp:HOST:PORT, unix:PATH, exec:CMD or fd:NAME")
    p.add_argument("--migrate-uri", metavar="URI", help="libvirt only: the migration stream's URI "
                   "(VIR_MIGRATE_PARAM_URI, as virsh's --migrateuri); default: libvirt picks one")
    p.add_argument("--bandwidth", metavar="SIZE", help="max bandwidth, e.g. 1G or 100M/s (bytes/s)")
    p.add_argument("--downtime", metavar="TIME", help="downtime limit, e.g. 300ms or 2s")
    p.add_argument("--xbzrle", action="store_true", help="turn on XBZRLE")
    p.add_argument("--xbzrle-cache", metavar="SIZE", help="XBZRLE cache size, a power of two, e.g. 256M")
    p.add_argument("--auto-converge", action="store_true", help="throttle the guest CPUs when it does not converge")
    p.add_argument("--postcopy", action="store_true", help="allow a switch to post-copy (postcopy-ram on both sides)")
    p.add_argument("--multifd", metavar="N", help="multifd with N channels (both sides)")
    p.add_argument("--block", action="store_true", help="block migration: copy the disks too (blk)")
    p.add_argument("--dirty-limit", metavar="RATE", help="cap each vCPU's dirtying at RATE MB/s (QEMU's "
                   "dirty-limit with vcpu-dirty-limit, 8.1+, on KVM with -accel kvm,dirty-ring-size=N), e.g. 50")
    p.add_argument("--wait", action="store_true", help="follow it; exit 0 on completed, 1 on failed or cancelled")
    p.add_argument("--autopilot", metavar="POLICY", help="finish it under this policy if it gets stuck (cautious, "
                   "finish, or an [autopilot.NAME] of the config); implies --wait: the steering runs here")
    add_record_options(p, "with --wait: record the migration into this NDJSON file (default: a new file in "
                       "$XDG_STATE_HOME/migtui/recordings)")
    p.add_argument("--check", action="store_true", help="pre-flight only: measure the guest's dirty rate and "
                   "predict whether these settings converge (exit 0 yes, 1 no); nothing is migrated")
    p.add_argument("--no-preflight", action="store_true", help="start at once, without the second of "
                   "pre-flight measuring that times pass 1's ETA (the pre-flight runs before every start by default; "
                   "its prediction goes to stderr and never stops the start)")

    p = sub.add_parser("cancel", help="cancel the migration of SOURCE")
    p.add_argument("source", metavar="SOURCE")

    p = sub.add_parser("set", help="change migration parameters, also during a migration")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument(
        "assignments", nargs="+", metavar="NAME=VALUE",
        help="bandwidth=1G, downtime=500ms, xbzrle-cache=256M, or any migrate-set-parameters name",
    )

    p = sub.add_parser("caps", help="show or set migration capabilities")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("assignments", nargs="*", metavar="NAME=on|off")

    p = sub.add_parser("postcopy", help="switch a running migration to post-copy")
    p.add_argument("source", metavar="SOURCE")

    p = sub.add_parser("drain", help="move every VM off a host (libvirt) or off the given QMP VMs")
    p.add_argument("source", metavar="SOURCE", help="a libvirt host's URI, or QMP VMs: A,B,...")
    p.add_argument("--to", required=True, metavar="DEST[,DEST...]", help="libvirt hosts' URIs, or the QMP VMs waiting")
    p.add_argument("--parallel", default="2", metavar="N", help="migrations at once per source host (default 2)")
    p.add_argument("--max-total", default="5", metavar="N", help="migrations at once in all (default 5)")
    p.add_argument("--policy", metavar="NAME", help="each migration on autopilot under this policy")
    p.add_argument("--bandwidth", metavar="SIZE", help="each migration's max bandwidth, e.g. 1G")
    p.add_argument("--downtime", metavar="TIME", help="each migration's downtime limit, e.g. 300ms")
    p.add_argument("--postcopy", action="store_true", help="allow post-copy (the autopilot's last step)")
    p.add_argument("--auto-converge", action="store_true", help="throttle guests that do not converge")
    p.add_argument("--migrate-uri", metavar="TEMPLATE",
                   help="libvirt: the stream's URI per destination, {host} and {n} filled in (default: libvirt's)")
    p.add_argument("--wait", action="store_true", help="accepted: drain always follows the queue to its end")
    p.add_argument("--json", action="store_true", help="one JSON line per state change, then the summary")

    p = sub.add_parser("lab", help="start a local lab of real QEMU VMs and open the console")
    p.add_argument("--pairs", default="1", metavar="N", help="source/destination pairs (default 1)")
    p.add_argument("--mem", metavar="SIZE", help="guest RAM (default 128M, at least 128M; with --guest linux 1G)")
    p.add_argument("--disk", action="store_true", help="give both sides qcow2 disks for block migration")
    p.add_argument("--no-ui", action="store_true", help="print the endpoints and wait for Ctrl-C")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto", help="default: kvm when usable")
    p.add_argument("--dirty-ring", metavar="N", help="KVM's dirty ring of N entries per vCPU (-accel "
                   "kvm,dirty-ring-size=N, a power of two from 1024 to 65536): what QEMU 8.1+'s dirty limit needs")
    p.add_argument("--qemu", metavar="PATH", help="the QEMU binary (or a script running one) every VM runs "
                   "(default: $MIGTUI_QEMU, else qemu-system-x86_64 on PATH)")
    p.add_argument("--guest", choices=("tiny", "linux"), default="tiny",
                   help="tiny: a 200-byte guest dirtying 98 MiB (default); linux: Debian with a real workload, "
                        "built once (as root) and cached")
    p.add_argument("--workload", choices=("pgbench", "pgbench-heavy", "build"),
                   help="with --guest linux: pgbench (2 clients, default), pgbench-heavy (16) or build (gcc, make -j2)")
    p.add_argument("--sim", action="store_true", help="a simulated fleet instead (also when QEMU is missing)")
    p.add_argument("--libvirt", action="store_true",
                   help="private libvirt hosts on this machine (root; libvirt), a RAM-dirtying domain on the first")
    p.add_argument("--hosts", default="2", metavar="N", help="with --libvirt: how many hosts (default 2)")
    p.add_argument("--vms", default="12", metavar="N", help="with --sim: how many VMs (default 12)")
    p.add_argument("--dialect", choices=("1.4", "7.2", "10.0", "mixed"), default="mixed",
                   help="with --sim (default mixed: 7.2 and 1.4)")
    p.add_argument("--speedup", default="1", metavar="K", help="with --sim: simulated time runs K times faster")
    add_console_options(p)
    add_metrics_option(p)

    p = sub.add_parser("replay", help="replay a recorded migration in the dashboard")
    p.add_argument("file", nargs="?", metavar="FILE", help="a recording (without it: list the newest recordings)")
    p.add_argument("--vm", metavar="NAME", help="which VM's migration, in a file that holds several (default: the last)")
    p.add_argument("--speed", default="1", metavar="X", help="playback speed, 0.25 to 16 (default 1)")
    p.add_argument("--paused", action="store_true", help="open paused at the start")
    p.add_argument("--end", action="store_true", help="open paused at the end: the whole migration at once")
    p.add_argument("--theme", metavar="NAME", help="as for the console")

    p = sub.add_parser("export", help="a recorded migration as CSV (the time series) and/or SVG (the dashboard)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--vm", metavar="NAME", help="which VM's migration, in a file that holds several")
    p.add_argument("--csv", metavar="OUT", help="write the time series here, one row per sample ('-': stdout)")
    p.add_argument("--svg", metavar="OUT", help="write the dashboard at the end of the recording here")

    p = sub.add_parser("exporter", help="no console: a Prometheus exposition of these VMs' migrations")
    add_metrics_option(p, default=EXPORTER_LISTEN)
    targets(p)

    # Parsed by build_serve_parser (its console arguments are migtui's own); listed here for --help.
    sub.add_parser("serve", help="the console in a browser, one per visit (see: migtui serve --help)", add_help=False)

    p = sub.add_parser("demo", help="the story of a stuck migration, for presenters (simulated unless --real)")
    p.add_argument("--auto", action="store_true", help="play it without a key pressed, at a projector's pace")
    p.add_argument("--real", action="store_true", help="on a lab of real QEMU VMs instead of the simulator")
    p.add_argument("--theme", metavar="NAME", help="as for the console (default migtui-high-contrast)")
    p.add_argument("--read-only", action="store_true",
                   help="the audience's keys change nothing; the story still steers its own VMs")
    p.add_argument("--speed", default="1", help=argparse.SUPPRESS)  # tests: the story's clock, K times faster
    return parser


def build_serve_parser() -> argparse.ArgumentParser:
    from migtui.browser import DEFAULT_BIND

    parser = _Parser(
        prog="migtui serve", allow_abbrev=False,
        usage="migtui serve [--bind HOST:PORT] [--public [--allow-controls]] [--max-sessions N] [--sim | --lab] "
              "[--] CONSOLE-ARGUMENTS...",
        description="Serve the console in a browser: every visit runs `migtui CONSOLE-ARGUMENTS` of its own.",
        epilog="CONSOLE-ARGUMENTS: TARGET..., lab [...], demo [...] or replay FILE, with the console's "
               "options (--theme, --read-only, ...); put -- before them when they could be taken for serve's.",
    )
    parser.add_argument("--bind", default=DEFAULT_BIND, metavar="HOST:PORT", help=f"default {DEFAULT_BIND}")
    parser.add_argument("--public", action="store_true",
                        help="allow a non-loopback bind (there is no authentication: anyone who reaches it)")
    parser.add_argument("--allow-controls", action="store_true",
                        help="with --public: keep the controls on (else every visit is read-only)")
    parser.add_argument("--max-sessions", default="8", metavar="N", help="visits at once (default 8)")
    parser.add_argument("--sim", action="store_true", help="each visit: a simulated fleet of its own (lab --sim)")
    parser.add_argument("--lab", action="store_true", help="each visit: a lab of real QEMU VMs of its own (lab)")
    return parser


def add_metrics_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    where = f"(default {default})" if default else "(e.g. 127.0.0.1:9720)"
    parser.add_argument("--metrics", default=default, metavar="HOST:PORT",
                        help=f"serve a Prometheus exposition of every VM watched here {where}")


def build_console_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="migtui", description="Open the console on these VMs' QMP monitors.")
    add_console_options(parser)
    add_metrics_option(parser)
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="[NAME=]unix:PATH, PATH or tcp:HOST:PORT (QMP), or a libvirt host: "
                       "qemu+ssh://[USER@]HOST/system, qemu+tcp://, qemu+tls://, qemu:///system, "
                       "optionally #DOMAIN[,PATTERN...]")
    return parser


def add_console_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--theme", metavar="NAME", help="migtui-dark (default), migtui-light, "
                        "migtui-high-contrast or migtui-colorblind")
    parser.add_argument("--read-only", action="store_true", help="watch only: every control is off")
    add_record_options(parser, "record every migration into this one NDJSON file "
                       "(default: one file per migration in $XDG_STATE_HOME/migtui/recordings)")


def add_record_options(parser: argparse.ArgumentParser, help_record: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--record", metavar="FILE", help=help_record)
    group.add_argument("--no-record", action="store_true", help="record nothing (as record = false in the config)")
