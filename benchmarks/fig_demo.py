"""Figure 9: `migtui demo` start-up, to the story's first caption at 80x24.

- first caption: each run starts `migtui demo` (the seeded simulator, in its own
  process) in a fresh session of a private tmux server at 80x24, a projector's
  console, and polls `tmux capture-pane` every 20 ms from just before `tmux
  new-session` to the first capture whose top line is the caption of step 1
  (" 1/5 A fleet: ..."), and to the first with the stuck VM's row (db01) too.
  Median of several runs after one warm-up run; includes tmux's start of the pane.
- its import part: one more run under `python -X importtime`, stopped at the first
  caption: the sum of every module's own import time (importtime's overhead
  included), the heaviest, and which of the heavy optional modules the demo
  loaded before its first caption (none is needed there). Beside it, a fresh
  interpreter's start (`python -c pass`) and the wall time of importing the
  demo's modules in one (no -X importtime).
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import MIGTUI, PYTHON, Tmux, bench_env, goal, median, rnd, summary

# Not needed to tell the story's first step; each costs start-up if imported on the way.
HEAVY = ("plotext", "libvirt", "prometheus_client", "textual_serve", "aiohttp", "playwright")
# What `migtui demo` imports before its first frame (cli/demo.py, ui/demo.py, SimWorld.start).
DEMO_MODULES = "migtui.cli, migtui.ui.demo, migtui.sim"
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)([\w.]+)")


def _first_caption(screen: str) -> bool:
    top = screen.split("\n", 1)[0]
    return top.startswith(" 1/5 ")


def _demo_command(env: dict[str, str], python_flags: tuple[str, ...] = ()) -> list[str]:
    """The command for tmux, whose server has its own environment: this checkout's migtui (PYTHONPATH)."""
    argv = [MIGTUI] if MIGTUI and not python_flags else [PYTHON, *python_flags, "-m", "migtui"]
    return ["env", f"MIGTUI_CONFIG={env['MIGTUI_CONFIG']}", f"TERM={env.get('TERM', 'xterm-256color')}",
            f"XDG_RUNTIME_DIR={env['XDG_RUNTIME_DIR']}", f"PYTHONPATH={env['PYTHONPATH']}", *argv, "demo"]


def _one_run(tmux: Tmux, session: str, command: list[str]) -> dict[str, float | None]:
    began = tmux.open(session, command, 80, 24)
    try:
        return tmux.watch(session, began, {
            "caption": _first_caption,
            "fleet": lambda s: _first_caption(s) and re.search(r"^ *db01 ", s, re.M) is not None,
        })
    finally:
        tmux("kill-session", "-t", session, check=False)


def _imports(tmux: Tmux, env: dict[str, str], tmp: Path, timeout: float = 20.0) -> dict[str, Any]:
    """One run under -X importtime. Its stderr goes to a file, and the console draws on
    stderr too, so the file is where the first caption is looked for."""
    log = tmp / "importtime.txt"
    command = ["sh", "-c", 'exec "$@" 2>' + str(log), "sh", *_demo_command(env, ("-X", "importtime"))]
    began = tmux.open("importtime", command, 80, 24)
    drawn = None
    try:
        while drawn is None and time.perf_counter() - began < timeout:
            if log.exists() and "1/5 " in log.read_text(errors="replace"):
                drawn = time.perf_counter() - began
            time.sleep(0.02)  # polling the file, with a deadline
    finally:
        tmux("kill-session", "-t", "importtime", check=False)
    own: collections.Counter[str] = collections.Counter()
    for match in IMPORT_LINE.finditer(log.read_text(errors="replace")):
        own[match.group(4)] += int(match.group(1))
    top = collections.Counter()
    for name, us in own.items():
        top[name.split(".")[0] if not name.startswith("migtui.") else ".".join(name.split(".")[:3])] += us
    return {
        "caption_s_under_importtime": rnd(drawn),
        "modules": len(own),
        "own_import_time_s": rnd(sum(own.values()) / 1e6),
        "heaviest_ms": {name: round(us / 1000, 1) for name, us in top.most_common(8)},
        "heavy_loaded": [m for m in HEAVY if m in own],
    }


def _wall(code: str, env: dict[str, str], n: int) -> list[float]:
    times = []
    for _ in range(n):
        began = time.perf_counter()
        subprocess.run([PYTHON, "-c", code], check=True, env=env, timeout=60)
        times.append(time.perf_counter() - began)
    return times


def run(quick: bool, tmp: Path) -> dict[str, Any]:
    env = bench_env(tmp)
    env["XDG_RUNTIME_DIR"] = str(tmp)  # the demo's simulated VMs' sockets, gone with the figure
    n = 3 if quick else 9
    tmux = Tmux()
    caption: list[float] = []
    fleet: list[float] = []
    failures = 0
    try:
        tmux.start_server()
        _one_run(tmux, "warmup", _demo_command(env))  # warms the page cache
        for i in range(n):
            seen = _one_run(tmux, f"run{i}", _demo_command(env))
            failures += seen["caption"] is None
            caption += [seen["caption"]] if seen["caption"] is not None else []
            fleet += [seen["fleet"]] if seen["fleet"] is not None else []
            time.sleep(0.3)
        imports = _imports(tmux, env, tmp)
    finally:
        tmux.kill_server()
    interpreter = _wall("pass", env, n)
    modules = _wall(f"import {DEMO_MODULES}", env, n)
    imports["interpreter_s"] = summary(interpreter)
    imports["demo_modules_wall_s"] = summary(modules)  # interpreter start included
    import_part = median(modules) - median(interpreter)
    return {
        "params": {"runs": n, "terminal": "tmux 80x24", "demo_modules": DEMO_MODULES},
        "values": {
            "first_caption_s": summary(caption),
            "first_caption_and_fleet_s": summary(fleet),
            "runs_that_timed_out": failures,
            "import_part_s": rnd(import_part),
            "imports": imports,
        },
        "goals": [
            goal("`migtui demo`: start to its first caption at 80x24 (median)", median(caption), 2.0, "<=", "s",
                 "the issue: the story starts in under 2 s"),
        ],
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run("--quick" in sys.argv, Path(d)), indent=1))
