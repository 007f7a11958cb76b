"""`migtui replay` and `migtui export`: a recorded migration, in the dashboard or as CSV and SVG."""

from __future__ import annotations

import argparse
import sys

from migtui.cli.parser import UsageError


async def cmd_replay(args: argparse.Namespace) -> int:
    if args.file is None:
        from migtui.record import default_recordings_dir, list_recordings

        listed = list_recordings()
        if not listed:
            raise UsageError(f"no recordings in {default_recordings_dir()}; give a FILE")
        for path, line in listed:
            print(f"{path}\n    {line}")
        return 0
    from migtui.ui.replay import run_replay

    return await run_replay(args.file, vm=args.vm, speed=args.speed, paused=args.paused, at_end=args.end,
                            theme=args.theme or args.config.theme)


async def cmd_export(args: argparse.Namespace) -> int:
    from migtui.ui.export import run_export

    for line in await run_export(args.file, vm=args.vm, csv_out=args.csv, svg_out=args.svg, theme=args.config.theme):
        print(f"migtui: wrote {line}", file=sys.stderr)
    return 0
