"""Cells and lines shared by the fleet table and the dashboard."""

from __future__ import annotations

from migtui.model.units import format_bytes, format_duration, format_ms, format_rate
from migtui.model.vm import VMState, status_category

# Theme variables per status category; the table and header colour by these.
CATEGORY_STYLE = {
    "migrating": "$accent",
    "post-copy": "$warning",
    "postcopy-paused": "bold $error",  # an emergency: recover before anything else
    "completed": "$success",
    "failed": "$error",
    "cancelled": "$warning",
    "disconnected": "dim",
    "unresponsive": "$error",
    "connecting": "dim",
    "waiting": "$secondary",
    "incoming": "$secondary",
    "idle": "",
}


def progress_bar(progress: float | None, width: int = 10) -> str:
    """'█████▌    45%' — eighths give a smooth bar in a narrow cell."""
    if progress is None:
        return " " * (width + 5)
    progress = min(1.0, max(0.0, progress))
    eighths = int(progress * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + ("" if part == 0 else " ▏▎▍▌▋▊▉"[part])
    return f"{bar:<{width}} {progress * 100:3.0f}%"


def eta_text(vm: VMState) -> str:
    if not vm.in_flight or status_category(vm) == "incoming":
        return "-"  # a destination's finish is its source's ETA
    a = vm.assessment()
    if a.eta_s is not None:
        return format_duration(a.eta_s)
    if a.verdict in ("not-converging", "stalled"):
        return "never"
    return "-" if a.verdict == "unreachable" else "…"


def downtime_text(vm: VMState) -> str:
    """Expected downtime against the limit, e.g. '812ms/300ms'."""
    sample = vm.sample
    limit = vm.parameters.get("downtime-limit")
    if sample is None:
        return "-"
    if sample.status == "completed" and sample.get(None, "downtime") is not None:
        return f"{format_ms(sample.get(None, 'downtime'))} actual"
    expected = sample.get(None, "expected-downtime") if vm.in_flight else None
    if expected is None and limit is None:
        return "-"
    return f"{format_ms(expected)}/{format_ms(limit)}"


def status_text(vm: VMState) -> str:
    category = status_category(vm)
    if category in ("disconnected", "unresponsive"):
        return str(vm.connection)
    return vm.migration_status


def note_text(vm: VMState) -> str:
    """Why, in a few words: the reason a VM is out of reach, QEMU's error, a reply's problems."""
    if vm.reason and status_category(vm) in ("disconnected", "unresponsive"):
        return vm.reason
    sample = vm.sample
    if sample is not None and sample.error_desc:
        return sample.error_desc
    if vm.problems:
        return "bad reply: " + "; ".join(vm.problems)
    if vm.in_flight and vm.derived.progress_note:
        return "progress went back: dirtied again"
    return ""


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
    return (
        vm.name,
        status_text(vm),
        verdict,
        progress_bar(d.progress) if vm.sample and vm.sample.status != "none" else "",
        format_rate(d.throughput_bps) if live else "-",
        format_rate(d.dirty_bytes_per_s) if live else "-",
        format_bytes(d.remaining_bytes) if live else "-",
        eta_text(vm),
        str(d.passes) if d.passes is not None and vm.sample and vm.sample.status != "none" else "-",
        downtime_text(vm),
        vm.run_state or "-",
        vm.qemu_version or "-",
        str(vm.endpoint),
        note_text(vm),
    )


# (key, label, width): fixed widths for figures, so a column never jumps as values change.
FLEET_COLUMNS = (
    ("vm", "VM", 14),
    ("status", "migration", 12),
    ("verdict", "verdict", 14),
    ("progress", "progress", 15),
    ("throughput", "throughput", 11),
    ("dirty", "dirty rate", 11),
    ("remaining", "remaining", 10),
    ("eta", "ETA", 6),
    ("passes", "pass", 4),
    ("downtime", "downtime exp/lim", 16),
    ("run-state", "run-state", 11),
    ("qemu", "QEMU", 8),
    ("endpoint", "endpoint", 36),
    ("note", "note", 48),
)


def category_style(category: str, theme_vars: dict[str, str]) -> str:
    """The Rich style of a status category, with theme variables ($accent...) resolved."""
    words = CATEGORY_STYLE.get(category, "").split()
    return " ".join(w for w in (theme_vars.get(w[1:], "") if w.startswith("$") else w for w in words) if w)
