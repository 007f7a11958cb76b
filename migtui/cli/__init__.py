"""The command line: `migtui status|watch|migrate|cancel|set|caps|postcopy|drain|lab|replay|export|exporter|serve|demo`.

Scripts rely on these names and on the exit codes: 0 done, 1 a migration
failed or was cancelled (`--wait`), 2 bad arguments or an unreachable target,
always with one line on stderr and never a traceback.

Each command is a module of its own here; their heavy imports (Textual, the lab)
wait inside the command, so `migtui status` starts quickly.
"""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Sequence

from migtui.cli.console import cmd_console
from migtui.cli.control import cmd_cancel, cmd_caps, cmd_migrate, cmd_postcopy, cmd_set
from migtui.cli.demo import cmd_demo
from migtui.cli.drain import cmd_drain
from migtui.cli.exporter import cmd_exporter
from migtui.cli.lab import cmd_lab
from migtui.cli.parser import SUBCOMMANDS, UsageError, build_console_parser, build_parser
from migtui.cli.replay import cmd_export, cmd_replay
from migtui.cli.serve import cmd_serve, parse_serve_args
from migtui.cli.status import cmd_status
from migtui.cli.watch import cmd_watch

COMMANDS = {
    "status": cmd_status,
    "watch": cmd_watch,
    "migrate": cmd_migrate,
    "cancel": cmd_cancel,
    "set": cmd_set,
    "caps": cmd_caps,
    "postcopy": cmd_postcopy,
    "drain": cmd_drain,
    "lab": cmd_lab,
    "replay": cmd_replay,
    "export": cmd_export,
    "exporter": cmd_exporter,
    "serve": cmd_serve,
    "demo": cmd_demo,
}


async def _quietly(work):
    from migtui.backend.qmp.client import quiet_loop_errors

    quiet_loop_errors(asyncio.get_running_loop())  # no asyncio noise in front of an operator
    return await work


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--bandwidth -5M` -> `--bandwidth=-5M`, so the value is refused as negative, not as a missing one."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.match(r"^-\.?\d", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from migtui.model.units import InputError
    from migtui.backend.errors import BackendError

    argv = _join_negative_values(list(sys.argv[1:] if argv is None else argv))
    try:
        from migtui.config import load_config

        if argv and argv[0] == "serve":
            args = parse_serve_args(argv[1:])
        elif argv and (argv[0] in SUBCOMMANDS or argv[0] in ("--version", "-h", "--help")):
            args = build_parser().parse_args(argv)
        else:
            args = build_console_parser().parse_args(argv)
            args.command = None
        args.config = load_config()  # a broken or unsafe config is refused before anything runs
        command = cmd_console if args.command is None else COMMANDS[args.command]
        return asyncio.run(_quietly(command(args)))
    except (UsageError, InputError, BackendError) as err:
        from migtui.model.hints import hint_for
        from migtui.backend.errors import QMPRefused

        hint = hint_for(err.desc) if isinstance(err, QMPRefused) else None
        print(f"migtui: {err}" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return 2
    except (OSError, EOFError) as err:
        print(f"migtui: connection lost: {err or type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0  # `migtui watch | head` closed the pipe
    except Exception as err:  # noqa: BLE001 - the last guard: an operator never gets a traceback
        from qemu.qmp import QMPError

        if isinstance(err, QMPError):
            print(f"migtui: QMP: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
            return 2
        from migtui.ui.guard import log_error  # standard library only

        print(f"migtui: internal error: {err!r:.200}; {log_error('migtui ' + ' '.join(argv[:1]), err)}",
              file=sys.stderr)
        return 3
