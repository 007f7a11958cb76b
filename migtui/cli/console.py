"""The console (Textual, imported only when it opens) on TARGETs given on the command line."""

from __future__ import annotations

import argparse
from typing import Sequence

from migtui.cli.common import (_check_metrics, _options, _start_metrics, _stop_metrics, _warn_remote,
                               libvirt_backend, make_recorder, split_targets)
from migtui.cli.parser import SUBCOMMANDS, UsageError


def _check_theme(name: str | None) -> None:
    """A theme the console knows, or one line naming them (the console would refuse it at each visit)."""
    if name is None:
        return
    from textual.theme import BUILTIN_THEMES

    from migtui.ui.themes import load_themes

    known = list(load_themes())
    if name not in known and name not in BUILTIN_THEMES:
        raise UsageError(f"--theme: unknown theme {name!r}; themes: {', '.join(known)}")


async def run_console(endpoints, args: argparse.Namespace, libvirt_targets=(), libvirt_options=None) -> int:
    """The Textual console on these QMP endpoints and libvirt hosts, on this event loop."""
    from migtui.config import load_config
    from migtui.backend.combined import combine
    from migtui.backend.qmp.backend import QMPBackend
    from migtui.ui.app import MigtuiApp

    config = getattr(args, "config", None) or load_config()
    _warn_remote(endpoints, args)
    backends = []
    if endpoints or not libvirt_targets:
        backends.append(QMPBackend(endpoints, options=_options(args)))
    if libvirt_targets:
        backends.append(libvirt_backend(libvirt_targets, args, libvirt_options))
    fleet = combine(backends)
    metrics = _start_metrics(args, lambda: fleet)
    try:
        recorder = make_recorder(args)
        app = MigtuiApp(fleet, config=config, theme=args.theme, read_only=args.read_only or config.controls_off,
                        recorder=recorder, metrics_url=None if metrics is None else metrics.url)
        await app.run_async()
    finally:
        await _stop_metrics(metrics)
    return app.return_code or 0


def _check_targets(targets: Sequence[str]) -> None:
    import os

    if not targets:
        raise UsageError("give at least one TARGET ([NAME=]unix:PATH, tcp:HOST:PORT or a libvirt URI such as "
                         "qemu+ssh://HOST/system), or run: migtui lab")
    for target in targets:
        # A bare word is far more often a mistyped subcommand than a socket in this directory.
        if not any(c in target for c in "/:=") and not os.path.exists(target):
            raise UsageError(f"unknown command or socket {target!r}; commands: {', '.join(SUBCOMMANDS)}")
    split_targets(targets)  # InputError (one line) for a malformed one


async def cmd_console(args: argparse.Namespace) -> int:
    _check_targets(args.targets)
    _check_metrics(args)
    endpoints, hosts = split_targets(args.targets)
    return await run_console(endpoints, args, hosts)
