"""A fixed fleet for console tests and snapshots: no sockets, no clocks.

Sessions are never started; their VM state is filled from query-migrate
replies shaped like QEMU 7.2's (and one like 1.4's), so every screen can be
drawn the same way every time.
"""

from __future__ import annotations

from migtui.model.endpoint import parse_endpoint
from migtui.model.sample import parse_query_migrate
from migtui.model.vm import Connection, EventRecord
from migtui.backend.qmp.dialect import Dialect
from migtui.backend.qmp.backend import QMPBackend

MiB = 2**20
T0 = 1_700_000_000.0
CAPS_72 = ["xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events", "postcopy-ram",
           "x-colo", "release-ram", "block", "return-path", "pause-before-switchover", "multifd",
           "dirty-bitmaps", "postcopy-blocktime", "late-block-activate", "x-ignore-shared",
           "validate-uuid", "background-snapshot", "zero-copy-send", "postcopy-preempt"]
PARAMS_72 = {"max-bandwidth": 128 * MiB, "downtime-limit": 300, "xbzrle-cache-size": 64 * MiB,
             "multifd-channels": 2, "cpu-throttle-initial": 20, "cpu-throttle-increment": 10}
DIALECT_72 = Dialect((7, 2, 22), frozenset({"migrate", "migrate-set-parameters", "migrate-set-capabilities",
                                            "migrate-incoming", "migrate-start-postcopy", "migrate_cancel",
                                            "query-migrate-parameters"}),
                     frozenset({"uri", "blk", "inc", "detach", "resume"}), frozenset(CAPS_72))


def _identify(session, name, version="7.2.22", run_state="running", dialect=DIALECT_72):
    vm = session.vm
    vm.name = name
    vm.qemu_version = version
    vm.run_state = run_state
    vm.dialect = dialect.name
    vm.connection = Connection.CONNECTED
    vm.capabilities = {c: c == "events" for c in sorted(dialect.capabilities)}
    vm.parameters = dict(PARAMS_72) if dialect.modern else {"xbzrle-cache-size": 64 * MiB}
    session.dialect = dialect


def _not_converging(session, seconds=120):
    """A migration at 30 MiB/s against a guest that dirties ~95 MiB/s: passes climb forever."""
    vm = session.vm
    vm.capabilities["xbzrle"] = True
    for i in range(seconds * 2):
        t = i * 0.5
        passes = 1 + i // 6
        transferred = int(30 * MiB * t)
        remaining = max(40 * MiB, 512 * MiB - transferred) if passes == 1 else 90 * MiB + (i % 6) * MiB
        reply = {
            "status": "active", "total-time": int(t * 1000), "setup-time": 12, "expected-downtime": 3100,
            "ram": {"transferred": transferred, "remaining": remaining, "total": 512 * MiB,
                    "duplicate": 20000, "normal": transferred // 4096, "normal-bytes": transferred,
                    "dirty-pages-rate": 0 if passes == 1 else 24300, "mbps": 251.6, "dirty-sync-count": passes,
                    "page-size": 4096, "pages-per-second": 7680},
            "xbzrle-cache": {"cache-size": 64 * MiB, "bytes": i * 900_000, "pages": i * 300,
                             "cache-miss": i * 500, "cache-miss-rate": 0.62, "encoding-rate": 3.1,
                             "overflow": i * 3},
        }
        vm.tracker.add(parse_query_migrate(reply, T0 + t))
    for i, text in enumerate(["MIGRATION status=setup", "MIGRATION status=active", "MIGRATION_PASS pass=2"]):
        name, detail = text.split(" ", 1)
        vm.log_append(EventRecord(T0 + i, "event", name, detail))
    vm.log_append(EventRecord(T0 + 5, "action", "migrate-set-parameters", "max-bandwidth=31457280"))


def static_fleet() -> QMPBackend:
    fleet = QMPBackend(parse_endpoint(t) for t in [
        "src1=unix:/run/migtui-lab/src1.qmp",
        "dst1=unix:/run/migtui-lab/dst1.qmp",
        "web-03=tcp:127.0.0.1:4444",
        "db-01=unix:/run/qemu/db-01.qmp",
        "legacy=unix:/run/qemu/old-host.qmp",
    ])
    src, dst, done, gone, legacy = list(fleet)
    _identify(src, "src1")
    _not_converging(src)
    _identify(dst, "dst1", run_state="inmigrate")
    dst.vm.tracker.add(parse_query_migrate({"status": "active"}, T0))
    _identify(done, "web-03", run_state="postmigrate")
    done.vm.tracker.add(parse_query_migrate(
        {"status": "completed", "total-time": 8200, "downtime": 41, "setup-time": 9,
         "ram": {"transferred": 600 * MiB, "remaining": 0, "total": 512 * MiB, "dirty-sync-count": 4}}, T0))
    _identify(gone, "db-01")
    gone.vm.tracker.add(parse_query_migrate(
        {"status": "active", "total-time": 3000, "ram": {"transferred": 90 * MiB, "remaining": 400 * MiB,
                                                          "total": 512 * MiB, "dirty-sync-count": 1}}, T0))
    gone.vm.connection = Connection.DISCONNECTED
    gone.vm.reason = "QEMU closed the connection"
    legacy_dialect = Dialect((1, 4, 0), frozenset({"migrate", "migrate_set_speed", "migrate_set_downtime",
                                                   "migrate-set-cache-size", "query-migrate-cache-size"}),
                             None, frozenset({"xbzrle"}))
    _identify(legacy, "old-host", version="1.4.0", dialect=legacy_dialect)
    legacy.vm.tracker.add(parse_query_migrate({}, T0))
    return fleet


def big_fleet(n: int = 1000) -> QMPBackend:
    """n identified VMs, a quarter of them migrating at different rates: for scale tests."""
    fleet = QMPBackend(parse_endpoint(f"vm{i:04d}=unix:/run/qemu/vm{i:04d}.qmp") for i in range(n))
    for i, session in enumerate(fleet):
        _identify(session, f"vm{i:04d}")
        if i % 4 == 0:
            total, done = 1024 * MiB, (i * 7919 % 1000) * MiB
            for k, t in enumerate((1.0, 2.0)):
                session.vm.tracker.add(parse_query_migrate(
                    {"status": "active", "total-time": int(t * 1000),
                     "ram": {"transferred": done * (k + 1) // 2, "remaining": total - done * (k + 1) // 2,
                             "total": total, "dirty-sync-count": 1, "page-size": 4096}}, T0 + t))
        else:
            session.vm.tracker.add(parse_query_migrate({}, T0))
    return fleet
