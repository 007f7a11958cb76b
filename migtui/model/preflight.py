"""Before a migration: will these settings converge for a guest that dirties this fast?

From the seed's rule: QEMU switches over once what is left fits in
bandwidth x downtime-limit. Each pass sends what the previous one left while
the guest dirties more; with dirty rate d and bandwidth b the left-over
shrinks by d/b per pass, so it converges only when d < b, and the switch-over
is reachable once the working set dirtied during one pass fits in b x limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from migtui.model.guidance.tunables import WINDOW_S
from migtui.model.parameters import DIRTY_LIMIT_UNIT
from migtui.model.requests import MigrationOptions
from migtui.model.units import format_bytes, format_duration, format_ms, format_rate

__all__ = ["Prediction", "predict", "predict_start", "UNSET_BANDWIDTH"]


@dataclass(frozen=True)
class Prediction:
    converges: bool
    sentence: str
    eta_s: float | None


# calc-dirty-rate samples pages, and under-counts a guest that rewrites its
# working set in tight loops: on this project's lab guest the migration's own
# dirty-pages-rate came out ~1.5x the pre-flight figure. Predict with that margin.
SAMPLING_MARGIN = 1.5
# What the pre-flight assumes where neither the start nor the VM says a bandwidth (QEMU's own default).
UNSET_BANDWIDTH = 32 * 2**20


def predict_start(dirty_bps: float, options: MigrationOptions, parameters: Mapping[str, Any], ram_bytes: float,
                  vcpus: int | None = None) -> Prediction:
    """predict() for a start: its options where it sets them, else the VM's settings, else QEMU's defaults."""
    bandwidth = options.bandwidth or parameters.get("max-bandwidth") or UNSET_BANDWIDTH
    downtime = options.downtime_ms or parameters.get("downtime-limit") or 300
    cap = vcpus * options.dirty_limit * DIRTY_LIMIT_UNIT if options.dirty_limit and vcpus else None
    return predict(dirty_bps, bandwidth, downtime, ram_bytes, cap)


def predict(dirty_bps: float, bandwidth_bps: float, downtime_ms: float, ram_bytes: float,
            dirty_cap: float | None = None) -> Prediction:
    """`dirty_cap` is what a dirty limit lets the guest dirty (vCPUs x vcpu-dirty-limit, bytes/s):
    QEMU holds the guest's dirtying under it once the migration does not converge."""
    threshold = bandwidth_bps * downtime_ms / 1000
    measured = dirty_bps
    dirty_bps = dirty_bps * SAMPLING_MARGIN
    capped = ""
    if dirty_cap is not None and dirty_cap < dirty_bps:
        dirty_bps = dirty_cap
        capped = f", capped at {format_rate(dirty_cap)} by the dirty limit"
    if dirty_bps >= bandwidth_bps:
        need = max(dirty_bps * 1.5, bandwidth_bps)
        return Prediction(False, f"the guest dirties {format_rate(measured)} (up to {format_rate(dirty_bps)} "
                                 f"during a migration{capped}), too close to the {format_rate(bandwidth_bps)} of "
                                 f"bandwidth: it will not converge; give at least {format_rate(need)}, "
                                 + ("or a lower dirty limit" if dirty_cap is not None else "or use post-copy"), None)
    # A pass lasts at least one send window however little is left (a dirty-log sync, then the
    # threshold check): a guest that dirties more than the threshold in one window never gets
    # under it. A running Linux guest did so at 1 ms limits (issue 17's fig_real_guest).
    floor = dirty_bps * WINDOW_S
    if floor > threshold:
        need = max(1, math.ceil(floor / bandwidth_bps * 1000 * 1.2))
        return Prediction(False, f"the guest dirties {format_rate(measured)} (up to {format_rate(dirty_bps)} "
                                 f"during a migration{capped}): {format_bytes(floor)} in each pass's "
                                 f"{WINDOW_S * 1000:.0f}ms send window, over the {format_bytes(threshold)} a "
                                 f"{format_ms(downtime_ms)} switch-over allows: it will not converge; give a "
                                 f"downtime limit of at least {format_ms(need)}", None)
    # First pass sends all RAM; each later pass sends what was dirtied during the previous one.
    first = ram_bytes / bandwidth_bps
    left = dirty_bps * first
    ratio = dirty_bps / bandwidth_bps
    if left <= threshold:
        passes = 0
    else:
        passes = math.ceil(math.log(threshold / left) / math.log(ratio)) if ratio > 0 else 0
    total = first + sum(left * ratio**i / bandwidth_bps for i in range(passes))
    total += downtime_ms / 1000
    if passes > 1000:
        return Prediction(False, f"dirtying {format_rate(dirty_bps)} against {format_rate(bandwidth_bps)}: "
                                 f"it would take over 1000 passes to fit in {format_ms(downtime_ms)}", None)
    return Prediction(True, f"dirtying {format_rate(dirty_bps)}{capped} against {format_rate(bandwidth_bps)}: "
                            f"converges in {'one pass' if passes == 0 else f'about {passes + 1} passes'}, "
                            f"{format_duration(total)}, "
                            f"with a downtime under {format_ms(downtime_ms)}", total)
