"""What the model predicts for settings that are not the current ones: the autopilot's
question, "would this converge?", asked before anything is sent."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from migtui.model.derived import MigrationTracker
from migtui.model.guidance.advice import _ladder, _predicted_to_converge, _readings
from migtui.model.guidance.analysis import _analyse, _pass_load
from migtui.model.guidance.tunables import BAND_MIN

__all__ = ["WhatIf", "ladder", "limit_holds_back"]


def ladder(start: float, stop: float) -> list[float]:
    """Candidate values from `start` up to `stop`, 10 % apart, `stop` last."""
    return _ladder(start, stop)


def limit_holds_back(tracker: MigrationTracker, bandwidth: float | None) -> bool:
    """QEMU sends at about its max-bandwidth: a higher limit would send faster (else the link,
    or the guest, is what holds it back, and raising the limit changes nothing)."""
    a = _analyse(tracker)
    tp = a.throughput if a is not None else None
    return bool(tp and bandwidth and tp >= 0.8 * bandwidth)


class WhatIf:
    """The model's answer for other settings, from one reading of the evidence (analysed once:
    a search over bandwidth and downtime asks it hundreds of times).

    It does not count on auto-converge's throttle to come (advice does): a setting that
    converges only once QEMU has slowed the guest further is one the guest pays for in CPU,
    and the throttle may not slow a guest whose writes are not its vCPUs'. The throttle
    already on stays in the forecast: the dirtying measured is the guest at that throttle."""

    def __init__(self, tracker: MigrationTracker, parameters: Mapping[str, Any]) -> None:
        a = _analyse(tracker)
        a = replace(a, throttle=None) if a is not None and a.throttle is not None else a
        self._a = a
        self._load = _pass_load(a) if a is not None else None
        self._readings = _readings(a, self._load) if a is not None and self._load else []
        now = parameters.get("max-bandwidth")
        self._now = float(now) if isinstance(now, (int, float)) and not isinstance(now, bool) else None

    def converges(self, bandwidth: float | None, downtime_ms: float, central: bool = False,
                  fitted_only: bool = False) -> bool | None:
        """Whether the passes get under the threshold at this max-bandwidth (bytes/s; None: as now)
        and downtime limit (ms), at the pessimistic end of every reading of the evidence (as
        advice does), or at its centre (`central`: the pass starts and rates as measured);
        `fitted_only`: under the model the verdict fitted, alone (not calibrated to explain stuck
        passes, as advice's readings are: it asks whether passes are stuck at all).
        None: no evidence yet (pass 1, nothing sent; with `fitted_only`, no model fitted yet)."""
        a, load = self._a, self._load
        tp = a.throughput if a is not None else None
        if a is None or not tp or not load:
            return None
        readings = [a.model] if fitted_only else self._readings
        if readings[:1] == [None] and fitted_only:
            return None
        wire = tp
        if bandwidth is not None and self._now and tp >= 0.8 * self._now:
            wire = tp * bandwidth / self._now  # the limit holds it back: it sends in proportion
        drain = wire * (a.drain or tp) / tp  # bytes of remaining drained per wire byte (zero pages, XBZRLE)
        band = 0.0 if central else BAND_MIN
        return all(_predicted_to_converge(a, m, load, drain, wire * downtime_ms / 1000, band=band)
                   for m in readings)
