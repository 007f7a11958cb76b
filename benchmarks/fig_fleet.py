"""Figure 2: fleet scale, with the simulated fleet.

Two processes: the simulator (`python -m migtui lab --sim --no-ui --vms N
--speedup 10`, the default "mixed" dialects, a quarter of the VMs migrating to
another quarter) and the console (benchmarks/console_driver.py: MigtuiApp
headless in run_test at 160x45 on the fleet screen, polling every VM with the
default session options). See console_driver.py for what is measured and how.

Full mode runs 100 VMs and 1000 VMs with an hour of history, and 1000 VMs
"fresh" (no synthetic history: what a console that just started costs).
RSS "after one hour of history" is approximated: before the console starts,
every VM's MigrationTracker is fed 7200 synthetic in-flight samples through
parse_query_migrate (one hour at 2 samples/s; --quick feeds 720, six minutes,
to stay within its time budget). That is the worst case of every VM having
migrated for the whole hour.

The simulator starts only once the driver has built that history (it waits
for PREFILLED), so the simulated fleet is equally old when measured in every
run: its migrations run at 10x, and what the table shows depends on their age.

With --profile DIR, py-spy records the console during the CPU window and
during the key presses (fleet-N-hH.folded, fleet-N-hH-keys.folded in DIR, H
the history samples per VM; this perturbs the CPU figure a little).
Summarise with profile_summary.py.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import PYTHON, VENV_BIN, SimProcess, bench_env, goal, proc_cpu, proc_rss_mb, rnd, spawn, stop

DRIVER = Path(__file__).with_name("console_driver.py")


def _readline(proc: subprocess.Popen, deadline: float) -> str:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            return ""
    return ""


def one_size(n_vms: int, quick: bool, tmp: Path, profile: Path | None, history: int | None = None) -> dict[str, Any]:
    env = bench_env(tmp)
    if history is None:
        history = 720 if quick else 7200
    window = 8.0 if quick else 20.0
    rounds = 1 if quick else 3
    timeout = 240 + n_vms * (0.4 if quick else 0.6)  # prefill is ~30 us per sample and VM
    tag = f"{n_vms}-h{history}"
    log = tmp / f"driver-{tag}.log"
    out = tmp / f"driver-{tag}.json"
    ep_file = tmp / f"endpoints-{tag}.txt"
    argv = [PYTHON, str(DRIVER), "--vms", str(n_vms), "--endpoints", str(ep_file), "--out", str(out),
            "--history", str(history), "--window", str(window), "--rounds", str(rounds),
            "--backend-window", str(window / 2)]
    with open(log, "w") as err:
        driver = spawn(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    deadline = time.monotonic() + timeout
    try:
        with SimProcess(n_vms, 10, env, tmp / f"sim-{tag}.log") as sim:
            # The simulator starts once the driver has built its history, so every run measures an
            # equally old simulated fleet (its migrations run at 10x: their state depends on its age).
            while (line := _readline(driver, deadline)) and line.strip() != "PREFILLED":
                pass
            if not line:
                stop(driver)
                raise RuntimeError(f"console driver: no PREFILLED; log: {log.read_text()[-1500:]}")
            began = time.monotonic()
            endpoints = sim.start(timeout=120 + n_vms * 0.1)
            sim_start_s = time.monotonic() - began
            partial = ep_file.with_suffix(".partial")
            partial.write_text("\n".join(endpoints) + "\n")
            partial.rename(ep_file)
            spy = None
            sim_window: dict[str, Any] = {}
            try:
                while (line := _readline(driver, deadline)) and line.strip() != "WINDOW-START":
                    pass
                if not line:
                    raise RuntimeError(f"console driver: no measuring window; log: {log.read_text()[-1500:]}")
                sim_cpu0, wall0 = proc_cpu(sim.pid), time.monotonic()
                if profile is not None:
                    profile.mkdir(parents=True, exist_ok=True)
                    spy = spawn([str(VENV_BIN / "py-spy"), "record", "-p", str(driver.pid), "-d", str(int(window)),
                                 "-r", "50", "-f", "raw", "--nonblocking", "-o",
                                 str(profile / f"fleet-{tag}.folded")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                line = _readline(driver, deadline)
                sim_cpu1, wall1 = proc_cpu(sim.pid), time.monotonic()
                sim_window = {"cpu_share": rnd((sim_cpu1 - sim_cpu0) / (wall1 - wall0), 4) if sim_cpu0 is not None
                              and sim_cpu1 is not None else None, "rss_mb": proc_rss_mb(sim.pid)}
                while (line := _readline(driver, deadline)) and line.strip() != "KEYS-START":
                    pass
                if profile is not None and line:
                    if spy is not None:
                        spy.wait(30)
                        stop(spy)
                    # Until KEYS-END: py-spy writes its profile when interrupted.
                    spy = spawn([str(VENV_BIN / "py-spy"), "record", "-p", str(driver.pid), "-r", "50", "-f", "raw",
                                 "--nonblocking", "-o", str(profile / f"fleet-{tag}-keys.folded")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                while (line := _readline(driver, deadline)) and line.strip() != "KEYS-END":
                    pass
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                driver.wait(max(1.0, deadline - time.monotonic()))
            finally:
                if spy is not None:
                    try:
                        spy.wait(30)
                    except subprocess.TimeoutExpired:
                        pass
                    stop(spy)
                stop(driver)
            if not out.exists():
                raise RuntimeError(f"console driver wrote no result; log: {log.read_text()[-1500:]}")
            result = json.loads(out.read_text())
        gen2 = ((result.get("gc_window") or {}).get("gen2") or {}).get("total_ms") or 0.0
        if result.get("cpu_s") is not None and result.get("window_s"):
            # A full collection walks every history point: how much of the share was that.
            result["cpu_share_without_gen2_gc"] = rnd((result["cpu_s"] - gen2 / 1000) / result["window_s"], 4)
        backend = result.get("backend_only") or {}
        if backend.get("samples_per_s"):
            backend["cpu_us_per_sample"] = rnd(backend["cpu_share"] / backend["samples_per_s"] * 1e6, 1)
    finally:
        stop(driver)  # also when the simulator failed to start
    result["sim"] = sim_window
    result["sim_start_s"] = rnd(sim_start_s, 1)
    result["history_samples_per_vm"] = history
    return result


def run(quick: bool, tmp: Path, profile: Path | None = None) -> dict[str, Any]:
    # (VMs, history samples per VM or None for the mode's default); "fresh" = no synthetic history.
    runs: list[tuple[int, int | None]] = [(100, None)] if quick else [(100, None), (1000, 0), (1000, None)]
    values: dict[str, Any] = {}
    goals = []
    for n, history in runs:
        r = one_size(n, quick, tmp, profile, history)
        fresh = r["history_samples_per_vm"] == 0
        label = f"{n} VMs fresh" if fresh else f"{n} VMs"
        values[f"vms_{n}_fresh" if fresh else f"vms_{n}"] = r
        rss = (r.get("rss_mb") or {}).get("VmRSS")
        goals += [
            goal(f"{label}: console CPU share of one core", r.get("cpu_share"), 0.5, "<=", "cores",
                 "goal stated for 1000 VMs; the backend alone is in values (backend_only)"),
            goal(f"{label}: key press to frame, p95", r.get("key_frame_p95_ms"), 100.0, "<=", "ms",
                 "goal stated for 1000 VMs; pilot.pause() figure in values"),
        ]
        if not fresh:
            goals.append(goal(f"{label}: RSS with {r['history_samples_per_vm']} samples of history per VM", rss,
                              300.0, "<=", "MB", "goal stated for 1000 VMs with 7200 samples each"))
    sizes = [n for n, _ in runs]
    params = {"sizes": sizes, "runs": [[n, h] for n, h in runs], "speedup": 10, "size": [160, 45],
              "history_samples_per_vm": 720 if quick else 7200,
              "window_s": 8.0 if quick else 20.0, "key_rounds": 1 if quick else 3}
    return {"params": params, "values": values, "goals": goals}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run("--quick" in sys.argv, Path(d)), indent=1))
