"""Helpers shared by the figures: statistics, goals, child processes, /proc readings.

Every process a figure starts goes through `spawn()`: it gets SIGKILLed when the
figure's process dies (PR_SET_PDEATHSIG), and `reap_all()` ends it by pid on the
way out, so a benchmark never leaves a simulator or QEMU behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
VENV_BIN = Path(sys.executable).parent
MIGTUI = str(VENV_BIN / "migtui") if (VENV_BIN / "migtui").exists() else None
CLK_TCK = os.sysconf("SC_CLK_TCK")

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


# ---- waiting -----------------------------------------------------------------


async def until(cond: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    """Whether ``cond()`` became true within ``timeout`` s (polled every ``step``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(step)  # polling a condition with a deadline
    return cond()


# ---- statistics --------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): an actual observed value, no interpolation."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]


def summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": rnd(median(values), digits),
        "p95": rnd(percentile(values, 95), digits),
        "min": rnd(min(values), digits),
        "max": rnd(max(values), digits),
    }


def rnd(value: float | None, digits: int = 3) -> float | None:
    if value is None:
        return None
    return round(value, digits)


def goal(name: str, value: float | None, target: float, op: str, unit: str = "", note: str = "") -> dict[str, Any]:
    """One goal: op "<=" (value must stay at or under target) or ">=" (at or over).

    ratio = value / target, so later runs compare directly; met says which side it is on.
    """
    entry: dict[str, Any] = {"name": name, "value": rnd(value, 4), "goal": target, "op": op, "unit": unit}
    if value is None:
        entry.update(ratio=None, met=None)
    else:
        entry["ratio"] = rnd(value / target, 3)
        entry["met"] = value <= target if op == "<=" else value >= target
    if note:
        entry["note"] = note
    return entry


# ---- child processes ---------------------------------------------------------

_children: list[subprocess.Popen] = []


def _die_with_parent(parent: int) -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """Popen that dies with us and is remembered for reap_all()."""
    parent = os.getpid()
    kwargs.setdefault("start_new_session", True)
    proc = subprocess.Popen(list(argv), preexec_fn=lambda: _die_with_parent(parent), **kwargs)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL after `grace`; by pid, only a process we started."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    if proc in _children:
        _children.remove(proc)
    return proc.returncode


def reap_all() -> None:
    for proc in list(_children):
        stop(proc, grace=3.0)


def child_cpu() -> float:
    """CPU seconds (user + system) of every waited-for child so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ---- /proc -------------------------------------------------------------------


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (utime + stime) of a running process, from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int | str = "self") -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    qemu = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.splitlines()[0]
    load = None
    with contextlib.suppress(OSError):
        load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    commit = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "qemu": qemu,
        "python": sys.version.split()[0],
        "loadavg_at_start": load,
        "git": commit,
    }


def bench_env(tmp: Path) -> dict[str, str]:
    """Environment for migtui children: no user config, no colour surprises."""
    env = dict(os.environ)
    env["MIGTUI_CONFIG"] = str(tmp / "no-config.toml")
    env.setdefault("TERM", "xterm-256color")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Timer:
    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class Tmux:
    """A tmux server of our own (its -L socket), for figures that read what a terminal shows."""

    def __init__(self) -> None:
        self.socket = f"migtui-bench-{os.getpid()}-{id(self)}"

    def __call__(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=check,
                              timeout=30).stdout

    def start_server(self) -> None:
        """A keeper session holds our private server up between runs (it would exit when empty)."""
        self("new-session", "-d", "-s", "keeper", "-x", "80", "-y", "24", "--", "cat")

    def open(self, session: str, command: Sequence[str], width: int, height: int) -> float:
        """Starts `command` in a new session of that size; returns perf_counter() from just before
        tmux was asked (a busy server can refuse a new session: retried, the clock restarted)."""
        for attempt in range(3):
            began = time.perf_counter()
            try:
                self("new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), "--", *command)
                return began
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def watch(self, session: str, began: float, marks: dict[str, Callable[[str], bool]],
              timeout: float = 20.0) -> dict[str, float | None]:
        """Polls `capture-pane` every 20 ms until each mark (name -> test of the screen's text) has
        held once, or `timeout`: for each, seconds from `began` to the first capture where it held."""
        seen: dict[str, float | None] = dict.fromkeys(marks)
        while time.perf_counter() - began < timeout and None in seen.values():
            screen = self("capture-pane", "-p", "-t", session, check=False)
            now = time.perf_counter() - began
            for name, test in marks.items():
                if seen[name] is None and test(screen):
                    seen[name] = now
            time.sleep(0.02)  # polling the screen, with a deadline
        return seen

    def kill_server(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)
        # tmux leaves the socket file of a killed server behind: remove ours.
        base = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
        (base / self.socket).unlink(missing_ok=True)


# ---- the simulator, in its own process ---------------------------------------


class SimProcess:
    """`python -m migtui lab --sim --no-ui --vms N`: its endpoints, its pid, stopped by pid."""

    def __init__(self, n_vms: int, speedup: float, env: dict[str, str], log: Path, dialect: str = "mixed") -> None:
        self.n_vms = n_vms
        self.log = log
        self.argv = [PYTHON, "-m", "migtui", "lab", "--sim", "--no-ui", "--vms", str(n_vms),
                     "--speedup", f"{speedup:g}", "--dialect", dialect]
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.endpoints: list[str] = []

    def start(self, timeout: float = 180.0) -> list[str]:
        with open(self.log, "w") as log:
            self.proc = spawn(self.argv, stdout=subprocess.PIPE, stderr=log, text=True, env=self.env,
                              cwd=str(REPO))
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        header = self.proc.stdout.readline()
        if not header.startswith("migtui lab --sim"):
            err = self.log.read_text(errors="replace")
            raise RuntimeError(f"simulator did not start: {header!r} {err[-500:]}")
        while len(self.endpoints) < self.n_vms:
            if time.monotonic() > deadline:
                raise RuntimeError("simulator: endpoints not printed in time")
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("simulator exited early")
            self.endpoints.append(line.strip())
        return self.endpoints

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, grace=10.0)

    def __enter__(self) -> "SimProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
