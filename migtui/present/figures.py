"""One VM's figures as short text: progress bar, ETA, downtime, status and note."""

from __future__ import annotations

from migtui.model.units import format_duration, format_ms
from migtui.model.vm import VMState, status_category


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
    """The ETA in a cell: '52s', 'never', '…' while it is still judged."""
    if not vm.in_flight or status_category(vm) == "incoming":
        return "-"  # a destination's finish is its source's ETA
    a = vm.assessment()
    if a.eta_s is not None:
        return format_duration(a.eta_s)
    if a.verdict in ("not-converging", "stalled"):
        return "never"
    return "-" if a.verdict == "unreachable" else "…"


def eta_with_range(vm: VMState) -> str:
    """The ETA and its range in a line of text, e.g. '52s (40s-1m10s)' (status, watch, migrate --wait)."""
    a = vm.assessment()
    if a.eta_s is not None:
        band = ""
        if a.eta_low_s is not None and a.eta_high_s is not None:
            band = f" ({format_duration(a.eta_low_s)}-{format_duration(a.eta_high_s)})"
        return format_duration(a.eta_s) + band
    if a.verdict in ("not-converging", "stalled"):
        return "never at these settings"
    return "-"


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
