"""Figure 11: verdict, ETA, advice and pre-flight on a real Linux guest, against real QEMU 7.2 (issue 17).

The lab's Debian guest (``migtui lab --guest linux``: PostgreSQL under pgbench -c 2 and -c 16,
or a ``make -j2`` loop) is booted under TCG and migrated at three settings per workload, picked
from a short probe of its dirty rate (calc-dirty-rate, 2 s, x the pre-flight's own 1.5 margin,
as ``d``): one bandwidth ``B`` = max(32 MiB/s, 4d), and a downtime limit that converges easily
(2 s: B x 2 s is tens of MiB), barely (what the guest dirties in half a second, d x 0.5 s, fits
in B x limit), or cannot: half the bandwidth and 1 ms, B/2 x 1 ms is 16 KiB or so, under what a
running kernel dirties between two dirty-log syncs (at B and 1 ms the build guest still found a
quiet moment between two make runs and completed). The settings say what was intended; the truth is what QEMU did.

Each migration is watched as the console watches it (a VMSession, samples every 0.25 s), and
fed to two more trackers, so one migration gives the three columns of the simulator's table:
nothing known (a fresh tracker); with the pre-flight, which every start now runs first (a fresh
tracker holding the pre-flight's calc-dirty-rate and page sample, and what the console knows of
the host: how fast its latest stop-and-copy went, here the warm-up's); and the guest's next migration (the session's own tracker, which watched
this guest's earlier migrations: a warm-up at 1 GiB/s first, then each setting in turn).
Recorded per migration: the verdict over time (first converging/not-converging, pass and
seconds, any flip), the ETA at 25/50/75 % progress against the real finish on QEMU's clock
(total-time), at the first sample past the mark with something left (else the one before it),
and the pre-flight's prediction (``preflight``: calc-dirty-rate 1 s, a sample of the guest's
pages for the ETA, and ``migrate --check``'s model). A migration that has not completed once migtui says
not-converging and three more passes went by (or at the deadline) is stuck: the first advice
that can be applied now is sent as the dashboard sends it, and it is recorded whether it
completed within 60 s and how fast.

    .venv/bin/python benchmarks/fig_real_guest.py [--quick] [--json] [--workloads pgbench,build] [--trace]

--quick: pgbench only, easy and cannot, one boot (about a minute); the full run boots each guest
twice (--rounds), 18 migrations and 6 warm-ups, ~5 minutes here. --trace keeps every sample in
the JSON, to replay the model on the same migrations.
Needs root once to build the images (``python3 -m migtui.lab.linux_guest pgbench build``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import goal, machine, rnd, until  # noqa: E402
from migtui.backend.messages import VMUpdated  # noqa: E402
from migtui.backend.qmp.controls import cancel_migration, measure_dirty_rate, preflight, start_migration  # noqa: E402
from migtui.backend.qmp.session import SessionOptions, VMSession  # noqa: E402
from migtui.lab.lab import Lab  # noqa: E402
from migtui.lab.linux_guest import GUEST_MEM, WORKLOADS, cached_guest  # noqa: E402
from migtui.model import MigrationTracker  # noqa: E402
from migtui.model.derived import HostLessons  # noqa: E402
from migtui.model.endpoint import parse_endpoint  # noqa: E402
from migtui.model.guidance import assess  # noqa: E402
from migtui.model.preflight import SAMPLING_MARGIN  # noqa: E402
from migtui.model.requests import MigrationOptions  # noqa: E402

MiB = 2**20
MARKS = (0.25, 0.5, 0.75)
KINDS = ("nothing", "preflight", "next")  # what the ETA knew: the table's three columns
ADVICE_WITHIN = 60.0  # s after the first advice in which it is to complete (as fig_advice)
DEADLINE = 150.0  # s a migration may run before advice, stuck or not
MORE_PASSES = 3  # passes watched after the first not-converging, to see it stays
GOAL_PASSES = 5
TRACE = False  # --trace: keep every sample (time, query-migrate's reply), to replay the model on them
FINISHED = ("completed", "failed", "cancelled")


def settings(dirty: float) -> dict[str, MigrationOptions]:
    """Easy, barely and cannot for a guest that dirties ``dirty`` bytes/s (with the margin)."""
    bandwidth = max(32 * MiB, -(-4 * dirty // MiB) * MiB)
    barely_ms = max(20, min(2000, round(500 * dirty / bandwidth)))
    return {"easy": MigrationOptions(bandwidth=int(bandwidth), downtime_ms=2000),
            "barely": MigrationOptions(bandwidth=int(bandwidth), downtime_ms=barely_ms),
            "cannot": MigrationOptions(bandwidth=int(bandwidth // 2), downtime_ms=1)}


def _ram(s) -> dict:
    """The RAM counters behind an ETA: what was left, and how much of it later went as zero pages."""
    return {k: s.get("ram", k) for k in ("total", "remaining", "transferred", "duplicate", "normal", "page-size")}


def _err(eta: float | None, real: float | None) -> float | None:
    return None if eta is None or not real else rnd((eta - real) / real, 3)


async def migrate(lab: Lab, src: VMSession, n: int, options: MigrationOptions, *, check: bool = True) -> dict:
    """One migration of the source to a fresh destination, watched, advised if stuck."""
    out: dict[str, Any] = {"bandwidth-bytes-per-s": options.bandwidth, "downtime-limit-ms": options.downtime_ms}
    vm = src.vm
    if vm.migration_status == "completed":
        await src.execute("cont", audit=False)  # the source runs on after a completed migration
    fresh, pre = MigrationTracker(), MigrationTracker()
    # The pre-flight's tracker knows what the console knows before a guest's first migration
    # from a host where a VM has migrated before: the host's stop-and-copy speed, no more.
    pre.host_lessons = vm.tracker.host_lessons
    paused = vm.tracker.host_lessons.paused_rate if vm.tracker.host_lessons is not None else None
    out["host-stop-and-copy-bytes-per-s"] = None if paused is None else round(paused)
    for t in (fresh, pre):
        t.parameters.update({"max-bandwidth": options.bandwidth, "downtime-limit": options.downtime_ms})
    if check:
        t0 = time.monotonic()
        p = await preflight(src, options)
        out["preflight"] = {"converges": p.converges, "eta-s": rnd(p.eta_s, 1), "sentence": p.sentence,
                            "dirty-bytes-per-s": vm.tracker.dirty_rate_prior[0][1],
                            "took-s": rnd(time.monotonic() - t0, 2)}
        pre.dirty_rate_prior = vm.tracker.dirty_rate_prior
        pre.zero_pages_prior = vm.tracker.zero_pages_prior
        out["zero-pages-prior"] = None if pre.zero_pages_prior is None else "".join(
            "-" if z is None else "0" if z else "1" for z in pre.zero_pages_prior)  # 0: zero, in address order
        out["dirty-rate-prior"] = vm.tracker.dirty_rate_prior
    # The session's tracker: what it watched before, only.
    vm.tracker.dirty_rate_prior = vm.tracker.zero_pages_prior = None
    dst_vm = await lab.add_vm(f"to{n}", incoming=True)
    dst = VMSession(parse_endpoint(dst_vm.endpoint))
    dst.start()
    verdicts: list[tuple[int, float, str]] = []  # (pass, s on QEMU's clock, verdict) of the console's tracker
    fresh_verdicts: list[str] = []
    marks: dict[str, dict] = {}
    latest: list[dict | None] = [None]  # the latest sample with something left, as a mark

    trace: list[list] = out.setdefault("samples", []) if TRACE else []

    def seen(message) -> None:
        if not (isinstance(message, VMUpdated) and message.what == "sample"):
            return
        if TRACE:
            trace.append([vm.sample.time, vm.sample.info])
        a = vm.assessment()  # every sample, as the fleet table does: it also learns the guest
        s = vm.sample
        if not s.in_flight:
            return
        fresh.add(s)
        pre.add(s)
        b, c = assess(fresh), assess(pre)
        t = (s.get(None, "total-time") or 0) / 1000
        verdicts.append((vm.derived.passes or 0, t, a.verdict))
        fresh_verdicts.append(b.verdict)
        progress = vm.derived.progress
        # Only while QEMU still sends (at the switch-over progress leaps to 100%, and nothing is left to
        # judge: QEMU 7.2 says `active` with 0 left while the paused guest's last pages go).
        if progress is None or s.status != "active" or not s.get("ram", "remaining") or out.get("advice"):
            return
        rec = {"t": t, "progress": rnd(progress, 3), "pass": vm.derived.passes,
               "nothing": b.eta_s, "preflight": c.eta_s, "next": a.eta_s,
               "band-nothing": [b.eta_low_s, b.eta_high_s], "why-nothing": b.why,
               "why-next": a.why, "ram": _ram(s)}
        for m in MARKS:
            if str(m) not in marks and progress >= m:
                marks[str(m)] = rec
        latest[0] = rec

    try:
        assert await dst.wait_connected(10)
        src.listener = seen
        started = time.monotonic()
        await start_migration(src, options, destination=dst)

        def first_stuck() -> tuple[int, float] | None:
            return next(((p, t) for p, t, v in verdicts if v == "not-converging"), None)

        def settled() -> bool:
            stuck = first_stuck()
            return vm.migration_status in FINISHED or (
                stuck is not None and (vm.derived.passes or 0) >= stuck[0] + MORE_PASSES)

        await until(settled, DEADLINE)
        stuck = first_stuck()
        out["verdicts"] = sorted({(p, v) for p, _, v in verdicts})
        out["not-converging-from"] = {"pass": stuck[0], "s": rnd(stuck[1], 1)} if stuck else None
        converging = [(p, t) for p, t, v in verdicts if v == "converging"]
        out["converging-from"] = {"pass": converging[0][0], "s": rnd(converging[0][1], 1)} if converging else None
        after = [v for p, t, v in verdicts if stuck and t > stuck[1] and v not in FINISHED]
        out["flipped"] = bool(stuck and any(v != "not-converging" for v in after)) or (
            stuck is not None and vm.migration_status == "completed")
        out["fresh-said-not-converging"] = "not-converging" in fresh_verdicts
        out["completed-alone"] = vm.migration_status == "completed"
        if out["completed-alone"]:
            # QEMU 7.2's first reply after the end can have every time 0: the next has them.
            for _ in range(20):
                if (vm.sample.get(None, "total-time") or 0) > 0:
                    break
                await src.sample()
                await asyncio.sleep(0.1)  # ask again shortly
            total = vm.sample.get(None, "total-time") / 1000
            out["total-s"] = rnd(total, 2)
            out["passes"] = vm.derived.passes
            out["downtime-ms"] = vm.sample.get(None, "downtime")
            out["ram"] = _ram(vm.sample)
            for m in MARKS:
                # Progress leapt past the mark to the switch-over between two samples: the last
                # sample before it is the nearest there is.
                if str(m) not in marks and latest[0] is not None:
                    marks[str(m)] = dict(latest[0], before=True)
            for m, rec in marks.items():
                rec = marks[m] = dict(rec)  # marks may share a sample
                real = total - rec["t"]
                rec["real"] = rnd(real, 2)
                # Of the RAM left then, the share that went as zero pages (pages, as QEMU counts them).
                left_pages = (rec["ram"]["remaining"] or 0) / (rec["ram"]["page-size"] or 4096)
                zero_after = (out["ram"]["duplicate"] or 0) - (rec["ram"]["duplicate"] or 0)
                rec["zero-share-of-left"] = rnd(min(1.0, zero_after / left_pages), 3) if left_pages else None
                for k in KINDS:
                    rec[f"err-{k}"] = _err(rec[k], real)
                    rec[k] = rnd(rec[k], 2)
            out["eta"] = marks
        else:
            out["status-before-advice"] = vm.migration_status
            out["passes-before-advice"] = vm.derived.passes
            out["s-before-advice"] = rnd(time.monotonic() - started, 1)
            advice = [a for a in vm.advice() if a.change is not None]
            out["advice"] = advice[0].text if advice else None
            out["advice-list"] = [a.text for a in vm.advice()]
            if advice and vm.in_flight:
                if TRACE:
                    trace.append([vm.sample.time, "advice"])
                await src.set_parameters(advice[0].change)  # the console's path (and its follow-up)
                t0 = time.monotonic()
                await until(lambda: vm.migration_status in FINISHED, ADVICE_WITHIN)
                fu = vm.follow_up()
                out["follow-up"] = fu.state if fu is not None else None
                out["advice-completed"] = vm.migration_status == "completed"
                out["advice-s"] = rnd(time.monotonic() - t0, 1) if out["advice-completed"] else None
            if vm.in_flight:
                await cancel_migration(src)
                await until(lambda: not vm.in_flight, 30)
            out["final-status"] = vm.migration_status
        return out
    finally:
        src.listener = lambda message: vm.assessment() if isinstance(message, VMUpdated) else None
        await dst.close()
        await dst_vm.kill()  # a completed destination runs the guest: it would take a core


async def one_workload(name: str, which: list[str], log) -> dict:
    guest = cached_guest(name)
    if guest is None:
        return {"workload": name, "error": f"never built: python3 -m migtui.lab.linux_guest {name} (as root)"}
    lab = Lab(pairs=1, mem=GUEST_MEM, linux=guest, accel="tcg")
    t0 = time.monotonic()
    await lab.start()
    out: dict[str, Any] = {"workload": name, "what": WORKLOADS[name].what, "accel": lab.accel,
                           "boot-s": rnd(time.monotonic() - t0, 1), "runs": {}}
    src = VMSession(parse_endpoint(lab.sources[0].endpoint), options=SessionOptions(active_interval=0.25))
    src.vm.tracker.host_lessons = HostLessons()  # as QMPBackend gives every VM of this host
    try:
        src.start()
        assert await src.wait_connected(10)
        src.listener = lambda message: src.vm.assessment() if isinstance(message, VMUpdated) else None
        probe = await measure_dirty_rate(src, seconds=2)
        out["probe-dirty-bytes-per-s"] = probe
        chosen = settings(probe * SAMPLING_MARGIN)
        log(f"{name}: booted in {out['boot-s']} s; calc-dirty-rate {probe / MiB:.1f} MiB/s")
        await lab.destinations[0].kill()  # the warm-up goes to a fresh one, like the others
        out["warm-up"] = await migrate(lab, src, 0, MigrationOptions(bandwidth=2**30, downtime_ms=2000),
                                       check=False)
        for n, setting in enumerate(which, 1):
            r = await migrate(lab, src, n, chosen[setting])
            out["runs"][setting] = r
            log(f"{name}/{setting}: " + json.dumps({k: r.get(k) for k in (
                "completed-alone", "total-s", "not-converging-from", "advice", "advice-completed", "advice-s")}))
    finally:
        await src.close()
        await lab.stop()
    return out


def _rows(workloads: list[dict]) -> list[dict]:
    rows = []
    for w in workloads:
        for setting, r in w.get("runs", {}).items():
            rows.append({"workload": w["workload"], "setting": setting, **r})
    return rows


def table(workloads: list[dict]) -> str:
    def pct(x):
        return "-" if x is None else f"{x:+.0%}"

    lines = ["| workload | setting | truth | verdict (from) | flip | ETA error at 25/50/75%: nothing known "
             "| with the pre-flight (the default) | on its next migration | pre-flight said | first advice | then |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in _rows(workloads):
        bw = r["bandwidth-bytes-per-s"] // MiB
        setup = f"{r['setting']}: {bw} MiB/s, {r['downtime-limit-ms']} ms"
        if r["completed-alone"]:
            truth = f"converges ({r['total-s']}s, {r['passes']} passes)"
            v = r.get("converging-from")
            verdict = "converging" + (f" (pass {v['pass']}, {v['s']}s)" if v else " (never said)")
            if r.get("not-converging-from"):
                verdict += f"; said not-converging at pass {r['not-converging-from']['pass']}"
        else:
            truth = f"does not converge ({r['s-before-advice']}s, {r['passes-before-advice']} passes)"
            v = r.get("not-converging-from")
            verdict = f"not-converging (pass {v['pass']}, {v['s']}s)" if v else "never said not-converging"
        eta = r.get("eta", {})
        cols = [" / ".join(pct(eta.get(str(m), {}).get(f"err-{k}")) for m in MARKS) if eta else "-"
                for k in KINDS]
        p = r.get("preflight")
        said = "-" if p is None else ("converges" if p["converges"] else "will not converge")
        if p is not None:
            said += " (right)" if p["converges"] == r["completed-alone"] else " (wrong)"
        adv = (r.get("advice") or "-").split(":", 1)[0]
        then = "-" if r["completed-alone"] else (
            f"completed {r['advice-s']}s after it" if r.get("advice-completed") else
            f"not within {ADVICE_WITHIN:.0f}s ({r.get('follow-up')})" if r.get("advice") else "no advice to apply")
        lines.append(f"| {r['workload']} | {setup} | {truth} | {verdict} | {'yes' if r.get('flipped') else 'no'} | "
                     f"{cols[0]} | {cols[1]} | {cols[2]} | {said} | {adv} | {then} |")
    return "\n".join(lines)


def summarise(workloads: list[dict]) -> tuple[dict, list[dict]]:
    rows = _rows(workloads)
    conv = [r for r in rows if r["completed-alone"]]
    stuck = [r for r in rows if not r["completed-alone"]]
    right = [r for r in rows if (r["completed-alone"] and not r.get("not-converging-from"))
             or (not r["completed-alone"] and r.get("not-converging-from") and not r.get("flipped"))]
    within = [r for r in stuck if r.get("not-converging-from") and r["not-converging-from"]["pass"] <= GOAL_PASSES]
    at50 = {k: [r["eta"]["0.5"][f"err-{k}"] for r in conv if "0.5" in r.get("eta", {})]
            for k in KINDS}
    ok50 = {k: sum(1 for e in v if e is not None and abs(e) <= 0.3) for k, v in at50.items()}
    worked = [r for r in stuck if r.get("advice-completed")]
    pre = [r for r in rows if r.get("preflight")]
    pre_right = [r for r in pre if r["preflight"]["converges"] == r["completed-alone"]]
    values = {"migrations": len(rows), "converged": len(conv), "stuck": len(stuck),
              "verdicts-right": len(right), "stuck-decided-within-5-passes": len(within),
              "eta50-errors": at50, "eta50-within-30pct": ok50, "eta50-judged": len(conv),
              "first-advice-worked": len(worked), "preflight-right": len(pre_right), "preflight-runs": len(pre)}
    frac = (lambda a, b: a / b if b else None)
    goals = [
        goal("verdicts right", frac(len(right), len(rows)), 1.0, ">="),
        goal("stuck decided within 5 passes", frac(len(within), len(stuck)), 1.0, ">="),
        goal("ETA at 50% within 30%, nothing known", frac(ok50["nothing"], len(conv)), 0.8, ">="),
        goal("ETA at 50% within 30%, with the pre-flight (the default)", frac(ok50["preflight"], len(conv)), 0.8, ">="),
        goal("first advice completes within 60 s", frac(len(worked), len(stuck)), 0.8, ">="),
    ]
    return values, goals


async def run(quick: bool, tmp: Path | None = None, workloads: list[str] | None = None, log=None,
              rounds: int | None = None) -> dict:
    log = log or (lambda text: print(f"[fig_real_guest {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr,
                                     flush=True))
    names = workloads or (["pgbench"] if quick else ["pgbench", "pgbench-heavy", "build"])
    which = ["easy", "cannot"] if quick else ["easy", "barely", "cannot"]
    rounds = rounds or (1 if quick else 2)
    results = []
    for _ in range(rounds):  # each round boots each guest afresh
        for name in names:
            results.append(await one_workload(name, which, log))
    values, goals = summarise(results)
    values["workloads"] = results
    params = {"qemu": "qemu-system-x86_64 (7.2 here)", "accel": "tcg", "mem": GUEST_MEM, "interval-s": 0.25,
              "settings": which, "rounds": rounds, "deadline-s": DEADLINE, "advice-within-s": ADVICE_WITHIN, "machine": machine()}
    return {"params": params, "values": values, "goals": goals, "table": table(results)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="pgbench only, easy and cannot")
    p.add_argument("--json", action="store_true", help="the whole result as one JSON object")
    p.add_argument("--workloads", help=f"comma-separated, of {', '.join(WORKLOADS)}")
    p.add_argument("--rounds", type=int, help="boots of each guest (default 2, --quick 1)")
    p.add_argument("--trace", action="store_true", help="keep every sample in the JSON (to replay the model)")
    args = p.parse_args()
    global TRACE
    TRACE = args.trace
    names = args.workloads.split(",") if args.workloads else None
    for name in names or []:
        if name not in WORKLOADS:
            p.error(f"--workloads takes {', '.join(WORKLOADS)}, not {name!r}")
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds takes a whole number, 1 or more")
    out = asyncio.run(run(args.quick, workloads=names, rounds=args.rounds))
    if args.json:
        print(json.dumps(out, indent=1, default=str))
    else:
        print(out["table"])
        print(json.dumps({"values": {k: v for k, v in out["values"].items() if k != "workloads"},
                          "goals": out["goals"]}, indent=1))


if __name__ == "__main__":
    main()
