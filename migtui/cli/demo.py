"""`migtui demo`: the story of a stuck migration, for presenters."""

from __future__ import annotations

import argparse

from migtui.cli.common import _options
from migtui.cli.parser import UsageError


def _demo_speed(args: argparse.Namespace) -> float:
    from migtui.model.units import parse_number

    return parse_number(args.speed, "--speed", 0.1, 1000, "a factor ")


async def cmd_demo(args: argparse.Namespace) -> int:
    speed = _demo_speed(args)
    read_only = args.read_only or args.config.controls_off
    if args.real:
        from migtui.lab.qemu import QEMU_MISSING_MESSAGE, find_qemu

        if find_qemu() is None:
            raise UsageError(f"demo --real: {QEMU_MISSING_MESSAGE}; without --real the demo needs no QEMU")
    from migtui.ui.demo import run_demo

    return await run_demo(real=args.real, auto=args.auto, theme=args.theme, read_only=read_only, speed=speed,
                          config=args.config, options=_options(args))
