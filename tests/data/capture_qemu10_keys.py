#!/usr/bin/env python3
"""Capture the QMP migration key sets of a real QEMU 10.0 into qemu10_keys.json.

As capture_qemu72_keys.py does for 7.2, with what changed by 10.0: no block migration (blk
went in 9.1), multifd refused with xbzrle (8.2), and a `device` state in every switch-over.
QEMU's refusals are recorded with their sentences. Stdlib only:

    python tests/data/capture_qemu10_keys.py --qemu "$MIGTUI_QEMU10" [--out PATH]

`device` lasts milliseconds and QEMU answers no query while it sends the last pages (the
big lock is held), so it is caught by asking as fast as possible right after
migrate-continue, on fresh pairs until one answer says `device`.
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from capture_qemu72_keys import SINK, Monitor, key_paths, set_caps, wait_status  # noqa: E402

DEVICE_ATTEMPTS = 20


def _start(qemu: str, qmp: str, incoming: bool = False) -> subprocess.Popen[bytes]:
    argv = [qemu, "-nodefaults", "-display", "none", "-m", "128M", "-qmp", f"unix:{qmp},server=on,wait=off"]
    return subprocess.Popen(argv + (["-incoming", "defer"] if incoming else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _refusal(mon: Monitor, name: str, **args: Any) -> str:
    try:
        mon.cmd(name, **args)
    except RuntimeError as err:  # "name: {'class': ..., 'desc': ...}"
        desc: str = ast.literal_eval(err.args[0].split(": ", 1)[1])["desc"]
        return desc
    raise AssertionError(f"QEMU took {name} {args}")


def _device(qemu: str, tmp: str) -> tuple[list[str], list[str]]:
    """(key paths of a query-migrate answered in `device`, the source's events), from a
    migration to a real destination paused before switch-over and then continued."""
    for attempt in range(DEVICE_ATTEMPTS):
        src_qmp, dst_qmp, sock = f"{tmp}/dev-src{attempt}", f"{tmp}/dev-dst{attempt}", f"{tmp}/dev{attempt}.sock"
        procs = [_start(qemu, src_qmp), _start(qemu, dst_qmp, incoming=True)]
        try:
            src, dst = Monitor(src_qmp), Monitor(dst_qmp)
            set_caps(src, events=True, pause_before_switchover=True)
            dst.cmd("migrate-incoming", uri=f"unix:{sock}")
            src.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40, "downtime-limit": 20000})
            src.cmd("migrate", uri=f"unix:{sock}")
            wait_status(src, {"pre-switchover"})
            src.cmd("migrate-continue", state="pre-switchover")
            while True:
                info: dict[str, Any] = src.cmd("query-migrate")
                if info.get("status") == "device":
                    wait_status(src, {"completed"})
                    return key_paths(info), _events(src)
                if info.get("status") != "pre-switchover":
                    break  # past it: try a fresh pair
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    raise TimeoutError(f"no query-migrate answered in `device` in {DEVICE_ATTEMPTS} migrations")


def _events(mon: Monitor) -> list[str]:
    return [" ".join([e["event"], *map(str, e.get("data", {}).values())])
            for e in mon.events if e["event"] != "MIGRATION_PASS"]


def _postcopy(qemu: str, tmp: str) -> tuple[list[str], list[str]]:
    """(key paths in postcopy-active, the source's events) of a switch to post-copy."""
    src_qmp, dst_qmp, sock = f"{tmp}/pc-src", f"{tmp}/pc-dst", f"{tmp}/pc.sock"
    procs = [_start(qemu, src_qmp), _start(qemu, dst_qmp, incoming=True)]
    try:
        src, dst = Monitor(src_qmp), Monitor(dst_qmp)
        for mon in (src, dst):
            set_caps(mon, events=True, postcopy_ram=True)
        dst.cmd("migrate-incoming", uri=f"unix:{sock}")
        src.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 20, "downtime-limit": 1})
        src.cmd("migrate", uri=f"unix:{sock}")
        wait_status(src, {"active"})
        src.cmd("migrate-start-postcopy")
        keys = key_paths(wait_status(src, {"postcopy-active"}))
        src.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        wait_status(src, {"completed"})
        return keys, _events(src)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def capture(qemu: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="migtui-capture-") as tmp:
        src_qmp, dst_qmp = f"{tmp}/src.qmp", f"{tmp}/dst.qmp"
        procs = [_start(qemu, src_qmp), _start(qemu, dst_qmp, incoming=True)]
        try:
            src, dst = Monitor(src_qmp), Monitor(dst_qmp)
            version = src.cmd("query-version")["qemu"]
            out: dict[str, Any] = {
                "qemu-version": f"{version['major']}.{version['minor']}.{version['micro']}",
                "greeting-capabilities": src.greeting["QMP"]["capabilities"],
                "migrate-capabilities": [c["capability"] for c in src.cmd("query-migrate-capabilities")],
                "migrate-parameters": sorted(src.cmd("query-migrate-parameters")),
            }
            states: dict[str, list[str]] = {"none": key_paths(src.cmd("query-migrate"))}
            set_caps(src, events=True)
            out["refusals"] = {
                "migrate blk": _refusal(src, "migrate", uri=SINK, blk=True),
                "multifd with xbzrle": _refusal(src, "migrate-set-capabilities", capabilities=[
                    {"capability": "multifd", "state": True}, {"capability": "xbzrle", "state": True}]),
                "compress capability": _refusal(src, "migrate-set-capabilities", capabilities=[
                    {"capability": "compress", "state": True}]),
            }

            # Plain pre-copy held back by a low bandwidth, then cancelled.
            src.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 20})
            src.cmd("migrate", uri=SINK)
            states["active"] = key_paths(wait_status(src, {"active"}))
            src.cmd("migrate_cancel")
            states["cancelled"] = key_paths(wait_status(src, {"cancelled"}))

            # A refused connection fails asynchronously with error-desc.
            src.cmd("migrate", uri=f"unix:{tmp}/nobody-listens")
            states["failed"] = key_paths(wait_status(src, {"failed"}))

            # XBZRLE, released to complete.
            set_caps(src, xbzrle=True)
            src.cmd("migrate", uri=SINK)
            states["active-xbzrle"] = key_paths(wait_status(src, {"active"}))
            src.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            states["completed-xbzrle"] = key_paths(wait_status(src, {"completed"}))

            # Plain migration to a real destination (a postmigrate source must be resumed first).
            src.cmd("cont")
            set_caps(src, xbzrle=False)
            set_caps(dst, events=True)
            dst.cmd("migrate-incoming", uri=f"unix:{tmp}/mig.sock")
            states["incoming-setup"] = key_paths(dst.cmd("query-migrate"))
            src.cmd("migrate", uri=f"unix:{tmp}/mig.sock")
            states["completed"] = key_paths(wait_status(src, {"completed"}))
            states["incoming-completed"] = key_paths(wait_status(dst, {"completed"}))
            out["source-events"] = _events(src)
            src.close()
            dst.close()
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        states["device"], out["device-events"] = _device(qemu, tmp)
        states["postcopy-active"], out["postcopy-events"] = _postcopy(qemu, tmp)
        out["query-migrate"] = states
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qemu", required=True, help="a QEMU 10.0 (e.g. what .ci/qemu10 prints)")
    parser.add_argument("--out", type=Path, default=HERE / "qemu10_keys.json")
    args = parser.parse_args()
    data = capture(args.qemu)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out} (QEMU {data['qemu-version']})")


if __name__ == "__main__":
    main()
