"""`migtui serve`: the console in a browser, its arguments checked once, before any visit."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from migtui.cli.console import _check_targets, _check_theme
from migtui.cli.demo import _demo_speed
from migtui.cli.lab import _check_lab_args
from migtui.cli.parser import SERVABLE, SUBCOMMANDS, UsageError, build_console_parser, build_parser, build_serve_parser


def parse_serve_args(argv: Sequence[str]) -> argparse.Namespace:
    """`migtui serve [serve options] [--] CONSOLE-ARGUMENTS`: serve's own options, then migtui's for each visit.

    The console arguments are checked here, once, so a mistake is one line now rather than a
    broken page for every visitor.
    """
    from migtui.browser import ServeOptions, is_loopback_host, parse_bind
    from migtui.model.units import parse_count

    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        args = build_serve_parser().parse_args(argv[:cut])
        console = argv[cut + 1:]
    else:
        args, console = build_serve_parser().parse_known_args(argv)
    if args.sim or args.lab:
        if args.sim and args.lab:
            raise UsageError("give --sim or --lab, not both")
        rest = console[1:] if console[:1] == ["lab"] else console
        console = ["lab", *(["--sim"] if args.sim else []), *rest]
    if not console:
        raise UsageError("give what each visit opens: TARGET..., --sim, --lab or demo (see: migtui serve --help)")
    try:
        host, port = parse_bind(args.bind)
    except ValueError as err:
        raise UsageError(str(err)) from None
    loopback = is_loopback_host(host)
    if not loopback and not args.public:
        raise UsageError(f"--bind {args.bind} is not loopback and migtui serve has no authentication: anyone who "
                         "reaches it gets the console; add --public if that is meant")
    read_only = not loopback and not args.allow_controls
    head = console[0]
    if head in SUBCOMMANDS:
        if head not in SERVABLE:
            raise UsageError(f"{head} has no console to serve; serve opens TARGET..., lab, demo or replay FILE")
        visit = build_parser().parse_args(console)
        if head == "lab" and visit.no_ui:
            raise UsageError("lab --no-ui has no console to serve")
        if head == "replay" and visit.file is None:
            raise UsageError("replay: give the FILE each visit replays")
        if head == "lab":
            _check_lab_args(visit)
        if head == "demo":
            _demo_speed(visit)
        if read_only and head != "replay" and not visit.read_only:  # a replay is read-only anyway
            console = [head, "--read-only", *console[1:]]
    else:
        visit = build_console_parser().parse_args(console)
        _check_targets(visit.targets)
        if read_only and not visit.read_only:
            console = ["--read-only", *console]
    _check_theme(getattr(visit, "theme", None))
    if getattr(visit, "metrics", None) is not None:
        # Each visit is a process of its own: they would all bind the one port.
        raise UsageError("--metrics under serve would bind once per visit; run migtui exporter beside it")
    args.serve = ServeOptions(host=host, port=port, console=console, public=not loopback, read_only=read_only,
                              max_sessions=parse_count(args.max_sessions, "--max-sessions", 1, 1000))
    args.command = "serve"
    return args


async def cmd_serve(args: argparse.Namespace) -> int:
    from migtui.browser import ListenError, run_server

    options = args.serve
    options.audit = args.config.audit_log()  # visits open and close here; their actions, in their process
    if options.public:
        controls = ("and its controls: they can start, cancel and change migrations"
                    if not options.read_only else "read-only (--allow-controls gives them the controls too)")
        print(f"migtui serve: warning: {options.url} is not loopback and has no authentication: anyone who "
              f"reaches it gets the console, {controls}; put it behind an authenticating proxy or an SSH tunnel",
              file=sys.stderr, flush=True)
    try:
        return await run_server(options)
    except ListenError as err:
        raise UsageError(str(err)) from None
