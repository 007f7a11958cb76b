"""One VM's state in one line of text, as `migtui status` and `watch` print it."""

from __future__ import annotations

from migtui.model.units import format_bytes, format_rate
from migtui.model.vm import VMState
from migtui.present.figures import eta_with_range


def state_line(vm: VMState, error: str | None = None) -> str:
    if error:
        return f"{vm.name}: {error}"
    d = vm.derived
    sample = vm.sample
    parts = [
        f"{vm.name}",
        f"qemu {vm.qemu_version}" + (f" ({vm.dialect})" if vm.dialect else ""),
        f"{vm.run_state}",
        f"migration {vm.migration_status}",
    ]
    if sample and sample.status not in ("none",):
        if d.progress is not None:
            parts.append(f"{d.progress * 100:.0f}%")
        parts.append(f"throughput {format_rate(d.throughput_bps)}")
        parts.append(f"remaining {format_bytes(d.remaining_bytes)}")
        if d.dirty_bytes_per_s is not None:
            parts.append(f"dirty {format_rate(d.dirty_bytes_per_s)}")
        if d.passes is not None:
            parts.append(f"pass {d.passes}")
        if sample.in_flight:
            parts.append(f"eta {eta_with_range(vm)}")
        assessment = vm.assessment()
        parts.append(f"verdict {assessment.verdict}: {assessment.why}")
        if sample.error_desc:
            parts.append(f"error: {sample.error_desc}")
    return "  ".join(parts)
