#!/usr/bin/env python3
"""Capture the QMP migration key sets of a real QEMU (7.2) into qemu72_keys.json.

The simulator's 7.2 dialect is checked field-for-field against this file.
Stdlib only so it runs without the project installed:

    python tests/data/capture_qemu72_keys.py [--qemu qemu-system-x86_64] [--out PATH]

It starts two small guests (a source with a tiny raw drive for block migration,
and a destination with ``-incoming defer``), drives a few migrations to sinks and
to the destination, and records the key paths seen in every state.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SINK = "exec:cat > /dev/null"


class Monitor:
    """A minimal synchronous QMP client (events are collected, not awaited)."""

    def __init__(self, path: str, deadline: float = 10.0) -> None:
        end = time.monotonic() + deadline
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self.greeting = json.loads(self.file.readline())
        self.events: list[dict[str, Any]] = []
        self.cmd("qmp_capabilities")

    def cmd(self, name: str, **args: Any) -> Any:
        msg: dict[str, Any] = {"execute": name}
        if args:
            msg["arguments"] = args
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")
            return reply["return"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def key_paths(obj: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every key, recursing into nested objects (not lists)."""
    out: list[str] = []
    for key, value in obj.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out.extend(key_paths(value, prefix + key + "."))
    return sorted(out)


def wait_status(mon: Monitor, wanted: set[str], timeout: float = 30.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info: dict[str, Any] = mon.cmd("query-migrate")
        if info.get("status") in wanted:
            return info
        time.sleep(0.01)
    raise TimeoutError(f"migration never reached {wanted}")


def set_caps(mon: Monitor, **caps: bool) -> None:
    mon.cmd("migrate-set-capabilities",
            capabilities=[{"capability": k.replace("_", "-"), "state": v} for k, v in caps.items()])


def capture(qemu: str = "qemu-system-x86_64") -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="migtui-capture-") as tmp:
        src_qmp, dst_qmp = f"{tmp}/src.qmp", f"{tmp}/dst.qmp"
        disks = [Path(tmp, "src.raw"), Path(tmp, "dst.raw")]
        for disk in disks:  # same device model on both sides, or the load fails
            disk.write_bytes(b"")
            os.truncate(disk, 4 << 20)  # >= 1 MiB: smaller raw drives break block migration
        base = [qemu, "-nodefaults", "-display", "none", "-m", "128M"]
        procs = [
            subprocess.Popen(base + ["-qmp", f"unix:{src_qmp},server=on,wait=off",
                                     "-drive", f"file={disks[0]},format=raw,if=virtio"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen(base + ["-qmp", f"unix:{dst_qmp},server=on,wait=off",
                                     "-drive", f"file={disks[1]},format=raw,if=virtio",
                                     "-incoming", "defer"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
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

            # Plain pre-copy held back by a low bandwidth, then cancelled.
            src.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 20})
            src.cmd("migrate", uri=SINK)
            states["active"] = key_paths(wait_status(src, {"active"}))
            src.cmd("migrate_cancel")
            states["cancelled"] = key_paths(wait_status(src, {"cancelled"}))

            # A refused connection fails asynchronously with error-desc.
            src.cmd("migrate", uri=f"unix:{tmp}/nobody-listens")
            states["failed"] = key_paths(wait_status(src, {"failed"}))

            # XBZRLE + block migration, released to complete.
            set_caps(src, xbzrle=True)
            src.cmd("migrate", uri=SINK, blk=True)
            states["active-xbzrle-blk"] = key_paths(wait_status(src, {"active"}))
            src.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            states["completed-xbzrle-blk"] = key_paths(wait_status(src, {"completed"}))

            # Plain migration to a real destination (a postmigrate source must be resumed first).
            src.cmd("cont")
            set_caps(src, xbzrle=False)
            set_caps(dst, events=True)
            dst.cmd("migrate-incoming", uri=f"unix:{tmp}/mig.sock")
            states["incoming-setup"] = key_paths(dst.cmd("query-migrate"))
            src.cmd("migrate", uri=f"unix:{tmp}/mig.sock")
            states["completed"] = key_paths(wait_status(src, {"completed"}))
            states["incoming-completed"] = key_paths(wait_status(dst, {"completed"}))
            out["query-migrate"] = states
            out["source-events"] = [" ".join([e["event"], *map(str, e.get("data", {}).values())])
                                    for e in src.events if e["event"] != "MIGRATION_PASS"]
            src.close()
            dst.close()
            return out
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qemu", default="qemu-system-x86_64")
    parser.add_argument("--out", type=Path, default=HERE / "qemu72_keys.json")
    args = parser.parse_args()
    data = capture(args.qemu)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out} (QEMU {data['qemu-version']})")


if __name__ == "__main__":
    main()
