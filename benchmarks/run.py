"""migtui's benchmark suite: prints ONE JSON object with every figure, its goal and the goal ratio.

    python benchmarks/run.py [--quick] [--only NAME[,NAME]] [--profile DIR] [--output FILE]

Figures (see BENCHMARKS.md and each fig_*.py for exactly what is measured):
  sampling   1. CPU per query-migrate sample against real QEMU, against floors and one-shot tools
  fleet      2. the console on a simulated fleet of 100 (and 1000) VMs: CPU share, RSS, key latency
  observer   3. total time and downtime of a real migration, watched by migtui or not
  event      4. QMP event timestamp to the frame showing it
  render     5. dashboard graphs redraw cost (graphs.redraw_cost)
  startup    6. `migtui --version`, and the console's first frame with 10 VMs
  metrics    7. a Prometheus scrape of 100 simulated VMs: wall time, loop time, CPU
  demo       9. `migtui demo` start-up to its first caption at 80x24, and its import part

--quick runs every figure at a small size (about two minutes in all); without it,
the full sizes (1000 VMs, 7 pairs of migrations, more rounds everywhere).
Each figure runs in its own process (its own process group, a timeout, every
QEMU and simulator it starts is ended by pid), so one failing figure reports
an "error" and the others still run. Goals are reported, never asserted:
ratio = value / goal, and "op" says which side of the goal is good.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import PYTHON, REPO, machine, reap_all  # noqa: E402

FIGURES = {
    "sampling": "fig_sampling",
    "fleet": "fig_fleet",
    "observer": "fig_observer",
    "event": "fig_event",
    "render": "fig_render",
    "startup": "fig_startup",
    "metrics": "fig_metrics",
    "demo": "fig_demo",
}
ORDER = ["render", "startup", "demo", "metrics", "sampling", "event", "observer", "fleet"]
TIMEOUT_QUICK = {"fleet": 180, "observer": 120, "sampling": 120}
TIMEOUT_FULL = {"fleet": 1500, "observer": 600, "sampling": 400}


def _log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ---- one figure, in this process ------------------------------------------------


def _child(name: str, quick: bool, result_path: Path, profile: Path | None) -> int:
    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    os.chdir(REPO)
    module = importlib.import_module(FIGURES[name])
    began = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix=f"migtui-bench-{name}-") as tmp:
            kwargs: dict[str, Any] = {}
            if profile is not None and "profile" in inspect.signature(module.run).parameters:
                kwargs["profile"] = profile
            out = module.run(quick, Path(tmp), **kwargs)
            if inspect.isawaitable(out):
                out = asyncio.run(out)
    finally:
        reap_all()
    out["seconds"] = round(time.perf_counter() - began, 1)
    result_path.write_text(json.dumps(out))
    return 0


# ---- the suite ------------------------------------------------------------------


def _run_figure(name: str, quick: bool, profile: Path | None, logs: Path) -> dict[str, Any]:
    result = logs / f"{name}.json"
    log = logs / f"{name}.log"
    argv = [PYTHON, str(Path(__file__).resolve()), "--child", name, "--result", str(result)]
    if quick:
        argv.append("--quick")
    if profile is not None:
        argv += ["--profile", str(profile)]
    timeout = (TIMEOUT_QUICK if quick else TIMEOUT_FULL).get(name, 120 if quick else 300)
    began = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(argv, stdout=err, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO))
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _log(f"{name}: over {timeout} s, stopping it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the figure's own process group: it cleans up
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        raise
    elapsed = round(time.perf_counter() - began, 1)
    if proc.returncode == 0 and result.exists():
        return json.loads(result.read_text())
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    return {"error": f"exit status {proc.returncode} after {elapsed} s", "log_tail": tail, "seconds": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about two minutes in all")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only these figures (repeat or comma-separate): {', '.join(ORDER)}")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="fleet: record py-spy profiles of the console into DIR (perturbs its CPU figure)")
    parser.add_argument("--output", type=Path, metavar="FILE", help="also write the JSON object to FILE")
    parser.add_argument("--child", choices=list(FIGURES), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    profile = args.profile.resolve() if args.profile else None

    if args.child:
        return _child(args.child, args.quick, args.result, profile)

    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or ORDER
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; figures: {', '.join(ORDER)}")
    names = [n for n in ORDER if n in names]

    report: dict[str, Any] = {
        "suite": "migtui benchmarks",
        "mode": "quick" if args.quick else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "figures": {},
    }
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="migtui-bench-") as logs:
        for name in names:
            _log(f"{name}: running")
            report["figures"][name] = fig = _run_figure(name, args.quick, profile, Path(logs))
            state = fig.get("error") or ", ".join(
                f"{g['name']}: {g['value']} ({'met' if g['met'] else 'MISSED' if g['met'] is False else '?'})"
                for g in fig.get("goals", []))
            _log(f"{name}: {fig.get('seconds')} s; {state}")
    report["seconds"] = round(time.perf_counter() - began, 1)
    with contextlib.suppress(OSError):
        report["loadavg_at_end"] = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    goals = [{"figure": name, **g} for name, fig in report["figures"].items() for g in fig.get("goals", [])]
    report["goals"] = goals
    report["missed"] = [f"{g['figure']}: {g['name']}" for g in goals if g["met"] is False]
    report["errors"] = [name for name, fig in report["figures"].items() if "error" in fig]
    text = json.dumps(report, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
