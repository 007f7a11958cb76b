"""The fleet table's columns and one VM's row of plain strings."""

from __future__ import annotations

from migtui.model.units import format_bytes, format_rate
from migtui.model.vm import VMState, status_category
from migtui.present.figures import downtime_text, eta_text, note_text, progress_bar, status_text


def fleet_cells(vm: VMState) -> tuple[str, ...]:
    """The fleet table's row for one VM, as plain strings (styled by row)."""
    d = vm.derived
    live = vm.in_flight
    category = status_category(vm)
    if vm.sample is None or category == "disconnected":
        verdict = "-"
    elif category == "incoming":
        verdict = "receiving"  # the destination cannot judge convergence: its source's row does
    else:
        verdict = vm.assessment().verdict
    cells = {
        "vm": vm.name,
        "status": status_text(vm),
        "verdict": verdict,
        "progress": progress_bar(d.progress) if vm.sample and vm.sample.status != "none" else "",
        "eta": eta_text(vm),
        "throughput": format_rate(d.throughput_bps) if live else "-",
        "dirty": format_rate(d.dirty_bytes_per_s) if live else "-",
        "remaining": format_bytes(d.remaining_bytes) if live else "-",
        "passes": str(d.passes) if d.passes is not None and vm.sample and vm.sample.status != "none" else "-",
        "downtime": downtime_text(vm),
        "run-state": vm.run_state or "-",
        "host": host_text(vm),
        "qemu": vm.qemu_version or "-",
        "endpoint": vm.endpoint.path if vm.endpoint.kind == "libvirt" else str(vm.endpoint),
        "note": note_text(vm),
    }
    return tuple(cells[key] for key, _, _ in FLEET_COLUMNS)


def host_text(vm: VMState) -> str:
    """Where the VM runs: a libvirt domain's host, a TCP monitor's host; "local" for a unix socket."""
    endpoint = vm.endpoint
    if endpoint.kind == "unix":
        return "local"
    return endpoint.host or "-"


# (key, label, width): fixed widths for figures, so a column never jumps as values change.
FLEET_COLUMNS = (
    ("vm", "VM", 14),
    ("status", "migration", 12),
    ("verdict", "verdict", 14),
    ("progress", "progress", 15),
    ("eta", "ETA", 6),  # within 80 columns: will it finish, and when
    ("throughput", "throughput", 11),
    ("dirty", "dirty rate", 11),
    ("remaining", "remaining", 10),
    ("passes", "pass", 4),
    ("downtime", "downtime exp/lim", 16),
    ("run-state", "run-state", 11),
    ("host", "host", 10),
    ("qemu", "QEMU", 8),
    ("endpoint", "endpoint", 36),
    ("note", "note", 48),
)
