"""Figure 1: CPU time per `query-migrate` sample against real QEMU.

One lab VM (TCG) runs a migration that never ends (to `exec:cat > /dev/null` at
32 MiB/s, slower than the guest dirties), started on the tools monitor, so every
reply carries every field. Each client then takes the main monitor in turn
(QEMU serves one client per socket), in interleaved rounds:

  raw         a minimal asyncio JSON-lines client (greeting, qmp_capabilities,
              then write/readline/json.loads): the floor
  qemu.qmp    a bare loop of QMPClient.execute('query-migrate'): the library floor
  qemu.qmp+   the same with migtui's _Client (qemu.qmp without its debug-format hooks)
  direct      a bare loop of _Client.request('query-migrate'): migtui's sampling path
              through its client (one write, one future; qemu.qmp's reader task), no model
  migtui      `await session.sample()` on a connected VMSession: round trip,
              parse, derived values, history
  socat       one process per query: socat piping qmp_capabilities + query-migrate
  qmp_shell   one process per query: `python -m qemu.qmp.qmp_shell` reading one command
  watch       `migtui watch --json --interval 0.05 --count N`, CPU of the child / N;
              "marginal" is (cpu(2N) - cpu(N)) / N, start-up excluded (median of runs)
  NAME@20Hz   raw, qemu.qmp and migtui again, with a 50 ms asyncio.sleep after each
              sample (the pacing of `watch --interval 0.05`); the CPU includes each
              wake-up, and caches are cold as in real use. The goals use the
              back-to-back figures, as specified; the paced ratios are in values.ratios.

CPU is process time (user + system), not wall; in-process clients are measured
with time.process_time() around the timed loop only (connection set-up excluded),
children with getrusage(RUSAGE_CHILDREN).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from common import MIGTUI, PYTHON, bench_env, child_cpu, goal, median, rnd, summary

WARMUP = 5


async def _raw(path: str, n: int) -> tuple[float, float, Any]:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        await reader.readline()  # greeting
        writer.write(b'{"execute":"qmp_capabilities"}\n')
        await reader.readline()

        async def one() -> Any:
            writer.write(b'{"execute":"query-migrate"}\n')
            while True:
                msg = json.loads(await reader.readline())
                if "return" in msg:
                    return msg["return"]
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                # an event: keep reading

        return await _timed(one, n)
    finally:
        writer.close()
        await writer.wait_closed()


async def _qmp_lib(
    path: str, n: int, client_cls: type | None = None, call: str = "execute"
) -> tuple[float, float, Any]:
    from qemu.qmp import QMPClient

    client = (client_cls or QMPClient)("bench")
    await client.connect(path)
    request = getattr(client, call)
    try:
        return await _timed(lambda: request("query-migrate"), n)
    finally:
        await client.disconnect()


async def _qmp_lib_migtui_client(path: str, n: int) -> tuple[float, float, Any]:
    from migtui.backend.qmp.client import Client as _Client  # private: qemu.qmp minus its debug-format hooks

    return await _qmp_lib(path, n, _Client)


async def _migtui_client_direct(path: str, n: int) -> tuple[float, float, Any]:
    from migtui.backend.qmp.client import Client as _Client

    return await _qmp_lib(path, n, _Client, "request")  # the session's request path, no model


async def _migtui(path: str, n: int) -> tuple[float, float, Any]:
    from migtui.model.endpoint import parse_endpoint
    from migtui.backend.qmp.session import VMSession

    session = VMSession(parse_endpoint(f"bench=unix:{path}"))
    await session.connect()
    try:

        async def one() -> Any:
            sample = await session.sample()
            return dict(sample.info)

        return await _timed(one, n)
    finally:
        await session.close()


# Set by run(): 0 for back-to-back samples, else seconds of asyncio.sleep after each one.
PAUSE = 0.0


async def _timed(one: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float, Any]:
    reply = None
    for _ in range(WARMUP):
        reply = await one()
    pause = PAUSE
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        reply = await one()
        if pause:
            await asyncio.sleep(pause)
    return time.process_time() - cpu, time.perf_counter() - wall, reply


def _oneshot(argv: list[str], data: bytes, n: int) -> tuple[float, float, bytes]:
    out = b""
    cpu, wall = child_cpu(), time.perf_counter()
    for _ in range(n):
        out = subprocess.run(argv, input=data, capture_output=True, timeout=30).stdout
    return child_cpu() - cpu, time.perf_counter() - wall, out


def _watch(path: str, n: int, env: dict[str, str]) -> tuple[float, float, int, float]:
    import resource

    argv = [MIGTUI or PYTHON, *([] if MIGTUI else ["-m", "migtui"]),
            "watch", "--json", "--interval", "0.05", "--count", str(n), f"unix:{path}"]
    sys_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    cpu, wall = child_cpu(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60 + n, env=env)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    ok = sum(1 for line in lines if line.get("error") is None and (line.get("migration") or {}).get("ram"))
    system = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime - sys_before
    return child_cpu() - cpu, time.perf_counter() - wall, ok, system


def _complete(reply: Any) -> bool:
    return isinstance(reply, dict) and reply.get("status") == "active" and "ram" in reply


async def run(quick: bool, tmp: Path) -> dict[str, Any]:
    from qemu.qmp import QMPClient

    from migtui.lab import Lab

    global PAUSE
    rounds = 3 if quick else 5
    n = 200 if quick else 1000
    n_paced = 30 if quick else 80
    n_socat = 10 if quick else 40
    n_shell = 4 if quick else 12
    n_watch = 60 if quick else 100
    watch_rounds = 1 if quick else 3
    env = bench_env(tmp)

    clients: dict[str, Callable[[str, int], Awaitable[tuple[float, float, Any]]]] = {
        "raw": _raw,
        "qemu.qmp": _qmp_lib,
        "qemu.qmp+migtui_client": _qmp_lib_migtui_client,
        "migtui_client_direct": _migtui_client_direct,
        "migtui": _migtui,
    }
    paced_clients = ["raw", "qemu.qmp", "migtui"]
    cpu: dict[str, list[float]] = {name: [] for name in [*clients, "socat", "qmp_shell",
                                                         *(f"{c}@20Hz" for c in paced_clients)]}
    wall: dict[str, list[float]] = {name: [] for name in cpu}
    problems: list[str] = []
    watch: dict[int, list[tuple[float, float, float]]] = {}

    async with Lab(pairs=1, accel="tcg") as lab:
        src = lab.sources[0]
        path = str(src.qmp_path)
        tools = QMPClient("bench-tools")
        await tools.connect(str(src.tools_qmp_path))
        try:
            await tools.execute("migrate-set-parameters", {"max-bandwidth": 32 * 2**20})
            await tools.execute("migrate", {"uri": "exec:cat > /dev/null"})
            await asyncio.sleep(0.3)
            status = (await tools.execute("query-migrate")).get("status")
            if status != "active":
                raise RuntimeError(f"the background migration is {status}, not active")

            socat = ["socat", "-", f"UNIX-CONNECT:{path}"]
            socat_in = b'{"execute":"qmp_capabilities"}\n{"execute":"query-migrate"}\n'
            shell = [PYTHON, "-m", "qemu.qmp.qmp_shell", path]
            for r in range(rounds):
                order = list(clients)
                order = order[r % len(order):] + order[: r % len(order)]  # rotate: no client always first
                for name in order:
                    c, w, reply = await clients[name](path, n)
                    if not _complete(reply):
                        problems.append(f"{name}: incomplete reply {str(reply)[:120]}")
                    cpu[name].append(c / n)
                    wall[name].append(w / n)
                # Paced like a console or `watch --interval 0.05`: caches go cold and every
                # sample pays an event-loop wake-up, which back-to-back loops never see.
                PAUSE = 0.05
                try:
                    for name in paced_clients:
                        c, w, reply = await clients[name](path, n_paced)
                        cpu[f"{name}@20Hz"].append(c / n_paced)
                        wall[f"{name}@20Hz"].append(w / n_paced)
                finally:
                    PAUSE = 0.0
                c, w, out = await asyncio.to_thread(_oneshot, socat, socat_in, n_socat)
                if b'"ram"' not in out:
                    problems.append(f"socat: no query-migrate reply: {out[-200:]!r}")
                cpu["socat"].append(c / n_socat)
                wall["socat"].append(w / n_socat)
                c, w, out = await asyncio.to_thread(_oneshot, shell, b"query-migrate\n", n_shell)
                if b'"ram"' not in out and b"'ram'" not in out:
                    problems.append(f"qmp_shell: no query-migrate reply: {out[-200:]!r}")
                cpu["qmp_shell"].append(c / n_shell)
                wall["qmp_shell"].append(w / n_shell)

            for _ in range(watch_rounds):
                for count in (n_watch, 2 * n_watch):
                    c, w, ok, system = await asyncio.to_thread(_watch, path, count, env)
                    if ok != count:
                        problems.append(f"watch --count {count}: {ok} complete lines")
                    watch.setdefault(count, []).append((c, w, system))
            status = (await tools.execute("query-migrate")).get("status")
            if status != "active":
                problems.append(f"the background migration ended ({status}) during the run")
            await tools.execute("migrate_cancel")
        finally:
            await tools.disconnect()

    us = {name: median(values) * 1e6 for name, values in cpu.items()}
    runs = list(zip(watch[n_watch], watch[2 * n_watch]))
    watch_total_us = median([b[0] / (2 * n_watch) * 1e6 for _, b in runs])
    watch_marginal_us = median([(b[0] - a[0]) / n_watch * 1e6 for a, b in runs])
    watch_startup_s = median([a[0] - (b[0] - a[0]) for a, b in runs])
    watch_sys_share = median([b[2] / b[0] for _, b in runs])
    m = us["migtui"]
    values = {
        "cpu_us_per_sample": {k: rnd(v, 1) for k, v in us.items()},
        "cpu_us_per_sample_by_round": {k: [rnd(x * 1e6, 1) for x in v] for k, v in cpu.items()},
        "wall_ms_per_sample": {k: rnd(median(v) * 1e3, 3) for k, v in wall.items()},
        "watch": {
            "counts": [n_watch, 2 * n_watch],
            "runs": watch_rounds,
            "cpu_us_per_sample_including_startup": rnd(watch_total_us, 1),
            "cpu_s_startup_estimate": rnd(watch_startup_s, 3),
            "cpu_us_per_sample_marginal": rnd(watch_marginal_us, 1),
            "marginal_by_run": [rnd((b[0] - a[0]) / n_watch * 1e6, 1) for a, b in runs],
            "system_share_of_cpu": rnd(watch_sys_share, 3),
        },
        "ratios": {
            "migtui_over_qemu.qmp": rnd(m / us["qemu.qmp"], 3),
            "migtui_over_qemu.qmp+migtui_client": rnd(m / us["qemu.qmp+migtui_client"], 3),
            "migtui_over_migtui_client_direct": rnd(m / us["migtui_client_direct"], 3),
            "migtui_client_direct_over_raw": rnd(us["migtui_client_direct"] / us["raw"], 3),
            "migtui_over_raw": rnd(m / us["raw"], 3),
            "socat_over_migtui": rnd(us["socat"] / m, 1),
            "qmp_shell_over_migtui": rnd(us["qmp_shell"] / m, 1),
            "watch_marginal_over_qemu.qmp": rnd(watch_marginal_us / us["qemu.qmp"], 3),
            "paced_20Hz_migtui_over_qemu.qmp": rnd(us["migtui@20Hz"] / us["qemu.qmp@20Hz"], 3),
            "paced_20Hz_migtui_over_raw": rnd(us["migtui@20Hz"] / us["raw@20Hz"], 3),
            "watch_marginal_over_paced_qemu.qmp": rnd(watch_marginal_us / us["qemu.qmp@20Hz"], 3),
        },
        "problems": problems,
    }
    params = {"rounds": rounds, "samples_per_round": n, "paced_samples_per_round": n_paced, "socat_per_round": n_socat, "qmp_shell_per_round": n_shell,
              "watch_counts": [n_watch, 2 * n_watch], "watch_runs": watch_rounds, "lab": "1 pair, TCG, 128M; migrating to exec:cat at 32 MiB/s"}
    goals = [
        goal("migtui / qemu.qmp CPU per sample", m / us["qemu.qmp"], 1.25, "<=", "x"),
        goal("migtui / raw asyncio CPU per sample", m / us["raw"], 2.5, "<=", "x"),
        goal("socat one-shot / migtui CPU per sample", us["socat"] / m, 20, ">=", "x",
             "the cheapest one-process-per-query tool; qmp_shell one-shot is in values.ratios"),
    ]
    return {"params": params, "values": values, "goals": goals, "spread": {k: summary([x * 1e6 for x in v], 1)
                                                                           for k, v in cpu.items()}}


if __name__ == "__main__":  # python benchmarks/fig_sampling.py [--quick]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(asyncio.run(run("--quick" in sys.argv, Path(d))), indent=1))
