"""Figure 6: start-up.

- `migtui --version`: wall time of the whole process (the venv's entry point),
  median of several runs after one warm-up run.
- The console's first frame with 10 VMs: a 10-VM simulator runs in its own
  process; each run starts `migtui ENDPOINT...` in a fresh tmux session (a tmux
  server of our own, 160x45) and polls `tmux capture-pane` every 20 ms. Measured
  from just before `tmux new-session` to the first capture showing all 10 rows
  ("rows"), and to the first capture where no VM is still connecting
  ("connected"). Includes tmux's own start of the pane (a few ms).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import MIGTUI, PYTHON, SimProcess, Tmux, bench_env, goal, median, summary


def _version_runs(n: int, env: dict[str, str]) -> list[float]:
    argv = [MIGTUI] if MIGTUI else [PYTHON, "-m", "migtui"]
    times = []
    for i in range(n + 1):
        began = time.perf_counter()
        out = subprocess.run([*argv, "--version"], capture_output=True, text=True, env=env, timeout=30)
        elapsed = time.perf_counter() - began
        if "migtui" not in out.stdout:
            raise RuntimeError(f"--version printed {out.stdout!r} {out.stderr[-300:]!r}")
        if i:  # the first run warms the page cache
            times.append(elapsed)
    return times


def _first_frame(tmux: Tmux, session: str, endpoints: list[str], env: dict[str, str],
                 timeout: float = 20.0) -> tuple[float | None, float | None]:
    names = [e.split("=", 1)[0] for e in endpoints]
    argv = [MIGTUI] if MIGTUI else [PYTHON, "-m", "migtui"]
    command = ["env", f"MIGTUI_CONFIG={env['MIGTUI_CONFIG']}", f"TERM={env.get('TERM', 'xterm-256color')}",
               *argv, *endpoints]

    def rows(screen: str) -> bool:
        return all(name in screen for name in names)

    began = tmux.open(session, command, 160, 45)
    try:
        seen = tmux.watch(session, began, {
            "rows": rows,
            "connected": lambda s: rows(s) and f"{len(names)} VMs" in s and "connecting" not in s,
        }, timeout)
    finally:
        tmux("kill-session", "-t", session, check=False)
    return seen["rows"], seen["connected"]


def run(quick: bool, tmp: Path) -> dict[str, Any]:
    env = bench_env(tmp)
    version = _version_runs(5 if quick else 11, env)
    n_frames = 3 if quick else 7
    rows: list[float] = []
    connected: list[float] = []
    failures = 0
    tmux = Tmux()
    with SimProcess(10, 10, env, tmp / "sim10.log") as sim:
        endpoints = sim.start()
        try:
            tmux.start_server()
            _first_frame(tmux, "warmup", endpoints, env)  # starts the tmux server, warms the page cache
            for i in range(n_frames):
                r, c = _first_frame(tmux, f"run{i}", endpoints, env)
                if r is None or c is None:
                    failures += 1
                if r is not None:
                    rows.append(r)
                if c is not None:
                    connected.append(c)
                time.sleep(0.3)
        finally:
            tmux.kill_server()
    values = {
        "version_s": summary(version),
        "first_frame_10_rows_s": summary(rows),
        "first_frame_10_connected_s": summary(connected),
        "runs_that_timed_out": failures,
    }
    return {
        "params": {"version_runs": len(version), "first_frame_runs": n_frames, "vms": 10, "terminal": "tmux 160x45"},
        "values": values,
        "goals": [
            goal("migtui --version wall time (median)", median(version), 0.3, "<=", "s"),
            goal("first frame with 10 VM rows (median)", median(rows), 1.5, "<=", "s",
                 "rows appear before QMP connects; the connected figure is in values"),
        ],
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run("--quick" in sys.argv, Path(d)), indent=1))
