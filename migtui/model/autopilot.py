"""The autopilot: finishing a stuck migration under the operator's policy. Pure: the engine
(migtui.autopilot) feeds it samples and sends what it decides through the backend.

Platforms finish stuck migrations with timers (nova raises the downtime every 75 s, KubeVirt
and nova give up after 800 s per GiB). The autopilot acts on the verdict instead:

- it acts only when the verdict is not-converging, or the ETA passes the deadline, or (with
  auto-converge on) the migration converges only as QEMU throttles the guest harder;
- it takes the cheapest step the model predicts will converge within the policy's caps
  (bandwidth first: the guest does not feel it; then the downtime limit; both; the caps
  themselves where the measured rates, without the pessimistic band, say they converge; the
  XBZRLE cache; post-copy; with auto-converge on, the downtime cap; a steeper throttle), never
  above a cap; its forecasts do not count on auto-converge's throttle to come, a cost the
  guest pays;
- after a step it waits for evidence (a few passes where passes are short, a few seconds and
  two passes where they are long) before it judges it, and escalates only if the migration
  still does not converge; it never lowers what it raised, never takes the same step twice:
  it does not flap;
- at the deadline it does what the policy says: abort, or switch to post-copy;
- the operator's own change wins: the autopilot lets go of that migration, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from migtui.model.derived import MigrationTracker
from migtui.model.guidance.tunables import _number
from migtui.model.requests import ParamChange
from migtui.model.units import (InputError, format_bytes, format_duration, format_ms, format_rate, parse_count,
                                parse_rate, parse_time_ms)

__all__ = ["STEPS", "AT_DEADLINE", "Policy", "Pilot", "Decision", "BUILTIN_POLICIES", "parse_policy", "decide",
           "policy_names"]

# Every step a policy may allow, cheapest first: the order the autopilot tries them in.
# Post-copy before a steeper throttle: that slows every vCPU for as long as the migration lasts,
# where post-copy ends it in the time the rest takes to send.
STEPS = ("bandwidth", "downtime", "xbzrle-cache", "postcopy", "throttle", "abort")
AT_DEADLINE = ("abort", "postcopy", "nothing")
MANAGED = ("max-bandwidth", "downtime-limit", "xbzrle-cache-size", "cpu-throttle-initial", "cpu-throttle-increment")
GiB = 2**30
OWN_TOLERANCE = 0.05
SEARCH_AGAIN_S = 10.0  # s before searching again within one pass (QEMU before 2.x counts no passes)
# A step shows first at the end of the pass after the one it landed in (the XBZRLE cache fills
# during that pass): judged no sooner, however long passes are.
EVIDENCE_MIN_PASSES = 2
THROTTLE_MAX_INCREMENT = 50  # QEMU takes up to 100; more than half a vCPU per step is a guest standing still


@dataclass(frozen=True)
class Policy:
    """The operator's limits for the autopilot: caps it never exceeds, steps it may take, a deadline."""

    name: str
    max_downtime_ms: int  # the most downtime the workload tolerates
    max_bandwidth: int | None  # bytes/s the network allows; None: no bandwidth steps
    steps: tuple[str, ...]  # of STEPS
    deadline_s: float | None = None  # since the migration started
    deadline_per_gib_s: float | None = None  # nova's and KubeVirt's completion timeout (800 s per GiB)
    at_deadline: str = "abort"  # of AT_DEADLINE
    evidence_passes: int = 3  # passes after a step before judging it (short passes) ...
    evidence_s: float = 5.0  # ... or this long and EVIDENCE_MIN_PASSES (long ones)

    def evidence_in(self, passes: int, seconds: float) -> bool:
        """Enough evidence, `passes` and `seconds` after a step, to judge it: passes alone where
        they are short (the lab guest's are 0.1-1 s: 5 s was 50 passes of a migration not
        converging, and of auto-converge's throttle rising), seconds where they are long."""
        return passes >= self.evidence_passes or (passes >= EVIDENCE_MIN_PASSES and seconds >= self.evidence_s)

    def deadline_for(self, ram_bytes: float | None) -> float | None:
        if self.deadline_s is not None:
            return self.deadline_s
        if self.deadline_per_gib_s is not None and ram_bytes:
            return self.deadline_per_gib_s * max(ram_bytes / GiB, 1 / 8)
        return None

    def summary(self) -> str:
        deadline = (format_duration(self.deadline_s) if self.deadline_s is not None
                    else f"{format_duration(self.deadline_per_gib_s)}/GiB" if self.deadline_per_gib_s else "none")
        caps = f"downtime ≤ {format_ms(self.max_downtime_ms)}"
        if self.max_bandwidth is not None:
            caps += f", bandwidth ≤ {format_rate(self.max_bandwidth)}"
        return f"{self.name}: {caps}; steps {', '.join(self.steps)}; deadline {deadline}, then {self.at_deadline}"


BUILTIN_POLICIES: Mapping[str, Policy] = MappingProxyType({
    # Nothing the guest would notice beyond a short pause; gives up as nova does.
    "cautious": Policy("cautious", 500, 1 * GiB, ("bandwidth", "downtime", "xbzrle-cache", "abort"),
                       deadline_per_gib_s=800.0, at_deadline="abort"),
    # Whatever it takes to finish, post-copy included where it was enabled at the start.
    "finish": Policy("finish", 2000, 10 * GiB, STEPS, deadline_per_gib_s=800.0, at_deadline="postcopy"),
})


def policy_names(config_policies: Mapping[str, Policy] | None = None) -> list[str]:
    return sorted({**BUILTIN_POLICIES, **(config_policies or {})})


def parse_policy(name: str, table: Mapping[str, Any]) -> Policy:
    """A policy from the config's [autopilot.NAME] table; InputError says what is accepted."""
    where = f"[autopilot.{name}]"
    known = {"max-downtime", "max-bandwidth", "steps", "deadline", "deadline-per-gib", "at-deadline",
             "evidence-passes"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InputError(f"{where}: unknown {', '.join(unknown)}; it takes {', '.join(sorted(known))}")
    if "max-downtime" not in table:
        raise InputError(f"{where}: max-downtime is required, e.g. max-downtime = \"1s\"")
    downtime = parse_time_ms(str(table["max-downtime"]), f"{where} max-downtime")
    bandwidth = parse_rate(str(table["max-bandwidth"]), f"{where} max-bandwidth") if "max-bandwidth" in table else None
    steps = table.get("steps", [s for s in STEPS if s != "bandwidth" or bandwidth is not None])
    if not isinstance(steps, list) or not all(isinstance(s, str) and s in STEPS for s in steps):
        raise InputError(f"{where}: steps is a list of {', '.join(STEPS)}")
    if "bandwidth" in steps and bandwidth is None:
        raise InputError(f"{where}: the bandwidth step needs max-bandwidth, e.g. max-bandwidth = \"1G\"")
    deadline = per_gib = None
    if "deadline" in table and "deadline-per-gib" in table:
        raise InputError(f"{where}: give deadline or deadline-per-gib, not both")
    if "deadline" in table:
        deadline = parse_time_ms(str(table["deadline"]), f"{where} deadline") / 1000
    if "deadline-per-gib" in table:
        per_gib = parse_time_ms(str(table["deadline-per-gib"]), f"{where} deadline-per-gib") / 1000
    at_deadline = table.get("at-deadline", "abort")
    if at_deadline not in AT_DEADLINE:
        raise InputError(f"{where}: at-deadline is one of {', '.join(AT_DEADLINE)}")
    if at_deadline != "nothing" and at_deadline not in steps:
        raise InputError(f"{where}: at-deadline = \"{at_deadline}\" needs \"{at_deadline}\" in steps")
    evidence = parse_count(str(table.get("evidence-passes", 3)), f"{where} evidence-passes", 1, 50)
    ordered = tuple(s for s in STEPS if s in steps)
    return Policy(name, downtime, bandwidth, ordered, deadline, per_gib, at_deadline, evidence)


@dataclass(frozen=True)
class Decision:
    """One step: a parameter change, a switch to post-copy, or an abort; `why` for the log."""

    step: str  # of STEPS
    why: str
    change: ParamChange | None = None
    postcopy: bool = False
    abort: bool = False


@dataclass
class Pilot:
    """One migration on autopilot: what it did and what it waits for. Owned by the engine."""

    policy: Policy
    engaged: bool = True
    off_why: str | None = None
    taken: list[Decision] = field(default_factory=list)
    step_time: float | None = None  # when the last step was taken, on the migration's clock (_clock)
    step_passes: int | None = None
    set_values: dict[str, Any] = field(default_factory=dict)  # what it set, by QEMU's name
    deadline_acted: bool = False
    flying: bool = False  # a migration was seen in flight since it engaged (one engaged while idle waits)
    searched: tuple[int, float] | None = None  # (pass, sample time) when no step within the caps was found
    state: str = "waiting for a migration"  # one line for the fleet and dashboard

    def release(self, why: str) -> None:
        self.engaged, self.off_why, self.state = False, why, f"off: {why}"

    def overridden(self, parameters: Mapping[str, Any]) -> str | None:
        """A parameter it set that someone else has changed since: the operator took over. A value
        read back within OWN_TOLERANCE of what it set is its own (libvirt rounds to MiB/s)."""
        for name, value in self.set_values.items():
            now = parameters.get(name)
            if now is None:
                continue
            if isinstance(value, (int, float)) and isinstance(now, (int, float)):
                if abs(now - value) > OWN_TOLERANCE * max(abs(value), 1):
                    return name
            elif now != value:
                return name
        return None

    def note(self, decision: Decision, tracker: MigrationTracker) -> None:
        """The step was applied: wait for evidence from here."""
        self.taken.append(decision)
        self.step_time = _clock(tracker)
        self.step_passes = tracker.derived.passes
        if decision.change is not None:
            self.set_values.update(decision.change.parameters)
        if decision.abort or decision.postcopy:
            self.deadline_acted = self.deadline_acted or "deadline" in decision.why


def _clock(tracker: MigrationTracker) -> float | None:
    """Seconds on QEMU's own clock (total-time) where it gives one, else the sample's wall time:
    evidence is waited for in the migration's time, as the history runs (a simulator runs faster)."""
    if tracker.derived.elapsed_s is not None:
        return tracker.derived.elapsed_s
    return tracker.last.time if tracker.last is not None else None


def _raised(pilot: Pilot, name: str) -> bool:
    """The autopilot has raised this parameter before, in this migration."""
    return any(d.change is not None and name in d.change.parameters for d in pilot.taken)


def decide(pilot: Pilot, tracker: MigrationTracker, parameters: Mapping[str, Any],
           capabilities: Mapping[str, bool], modern: bool = True, assessment: Any = None) -> Decision | None:
    """The next step, or None (wait). Updates pilot.state, the one line that says what it does.
    `assessment`: the verdict already computed for the latest sample (VMState.assessment())."""
    from migtui.model.guidance import assess, follow_up
    from migtui.model.guidance.whatif import WhatIf, ladder, limit_holds_back

    last = tracker.last
    if not pilot.engaged or last is None or not last.in_flight:
        return None
    if last.status not in ("active", "device", "pre-switchover", "setup"):
        pilot.state = f"{last.status}: nothing to steer"
        return None
    policy = pilot.policy
    elapsed = tracker.derived.elapsed_s or 0.0
    deadline = policy.deadline_for(last.get("ram", "total"))
    if deadline is not None and elapsed >= deadline and not pilot.deadline_acted:
        pilot.deadline_acted = True
        why = f"deadline {format_duration(deadline)} passed ({policy.name})"
        if policy.at_deadline == "postcopy" and capabilities.get("postcopy-ram"):
            return Decision("postcopy", f"{why}: switching to post-copy", postcopy=True)
        if policy.at_deadline == "abort" or policy.at_deadline == "postcopy" and "abort" in policy.steps:
            return Decision("abort", f"{why}: aborting" + (" (postcopy-ram was off at the start)"
                                                          if policy.at_deadline == "postcopy" else ""), abort=True)
        pilot.state = f"{why}: the policy says do nothing"
        return None

    assessment = assessment if assessment is not None else assess(tracker)
    passes = tracker.derived.passes or 0
    searched = pilot.searched
    if searched is not None and searched[0] == passes and 0 <= last.time - searched[1] < SEARCH_AGAIN_S:
        return None  # nothing within the caps at this pass: a new pass is new evidence (the search is costly)
    bandwidth = _number(parameters.get("max-bandwidth")) or tracker.max_bandwidth
    downtime = _number(parameters.get("downtime-limit")) or tracker.downtime_limit_ms or 300.0
    what_if: WhatIf | None = None
    # "Converging" with auto-converge on can mean converging only as QEMU throttles the guest
    # harder (the verdict's forecast counts on the throttle to come): on the lab guest at 256 MiB/s
    # it said so for 18 s while the throttle rose to 90 %. The autopilot weighs the throttle as
    # a cost: where the verdict's own model, at the throttle now, does not converge, it acts.
    throttled = False
    if assessment.verdict == "converging" and capabilities.get("auto-converge"):
        what_if = WhatIf(tracker, parameters)
        throttled = what_if.converges(None, downtime, central=True, fitted_only=True) is False
    if pilot.step_time is not None:
        since = (_clock(tracker) or 0.0) - pilot.step_time
        seen = passes - (pilot.step_passes or 0)
        if not policy.evidence_in(seen, since):
            pilot.state = f"after {pilot.taken[-1].step}: watching ({seen} of {policy.evidence_passes} passes)"
            return None
        judged = follow_up(tracker, parameters, capabilities, modern)
        if judged is not None and (judged.state == "worked" or judged.state == "working" and not throttled):
            pilot.state = f"after {pilot.taken[-1].step}: working"
            return None
    slow = (deadline is not None and assessment.eta_s is not None and assessment.verdict == "converging"
            and elapsed + assessment.eta_s > deadline)
    if assessment.verdict != "not-converging" and not slow and not throttled:
        pilot.state = f"{assessment.verdict}: nothing to do"
        return None

    done = {d.step for d in pilot.taken if d.step in ("xbzrle-cache", "throttle", "postcopy")}
    held = limit_holds_back(tracker, bandwidth)
    cap_bw = policy.max_bandwidth
    why_stuck = ("the ETA passes the deadline" if slow else
                 f"converging only as auto-converge throttles the guest harder ({assessment.why})" if throttled
                 else assessment.why)

    def change(step: str, why: str, **values: Any) -> Decision:
        return Decision(step, why, ParamChange(values, why=f"autopilot ({policy.name}): {why}",
                                               advice=step.split("+")[0] if step != "throttle" else None))

    what_if = what_if or WhatIf(tracker, parameters)
    # Escalating is a real step: once a raise of this setting did not work, the model's forecast
    # for this guest was wrong, and the least value it foresees would creep up 10 % a step (with
    # auto-converge it counts on a throttle that may not come): the next is at least double.
    least_bw = bandwidth * (2 if _raised(pilot, "max-bandwidth") else 1.1) if bandwidth else None
    least_ms = downtime * (2 if _raised(pilot, "downtime-limit") else 1.1)
    # 1. bandwidth, where the limit holds QEMU back and the network allows more.
    raise_bandwidth = "bandwidth" in policy.steps and held and cap_bw and bandwidth and bandwidth < cap_bw
    if raise_bandwidth:
        if slow:
            y = min(cap_bw, bandwidth * 2)
            return change("bandwidth", f"raise bandwidth to {format_rate(y)}: {why_stuck}", **{"max-bandwidth": int(y)})
        for y in ladder(least_bw, cap_bw):
            if what_if.converges(y, downtime):
                return change("bandwidth", f"raise bandwidth to {format_rate(y)} (cap {format_rate(cap_bw)}): "
                                           f"{why_stuck}", **{"max-bandwidth": int(y)})
    # 2. the downtime limit, within what the workload tolerates.
    if "downtime" in policy.steps and downtime < policy.max_downtime_ms and not slow:
        downtimes = ladder(least_ms, float(policy.max_downtime_ms))
        for ms in downtimes:
            if what_if.converges(None, ms):
                return change("downtime", f"raise the downtime limit to {format_ms(ms)} (cap "
                                          f"{format_ms(policy.max_downtime_ms)}): {why_stuck}",
                              **{"downtime-limit": int(ms)})
        # 3. both: the least downtime that converges with bandwidth up to its cap (bandwidth is the
        # cheaper of the two: the guest does not feel it), then the least bandwidth for that downtime.
        if raise_bandwidth:
            for ms in downtimes:
                if what_if.converges(cap_bw, ms):
                    y = next(y for y in ladder(least_bw, cap_bw) if what_if.converges(y, ms))
                    return change("bandwidth+downtime", f"raise bandwidth to {format_rate(y)} and the downtime "
                                                        f"limit to {format_ms(ms)} (caps {format_rate(cap_bw)}, "
                                                        f"{format_ms(policy.max_downtime_ms)}): {why_stuck}",
                                  **{"max-bandwidth": int(y), "downtime-limit": int(ms)})
        # 3b. the caps themselves where the rates as measured converge there and only the pessimistic
        # band (advice's, which must not fail) says no: the pause is one the operator said the
        # workload tolerates, and a raise that fails costs a few passes of evidence, where waiting
        # costs the deadline, and with auto-converge on, a guest throttled harder every second.
        cap_ms = float(policy.max_downtime_ms)
        caps = f"the rates as measured converge there, if not at the pessimistic end of their band; {why_stuck}"
        if what_if.converges(None, cap_ms, central=True):
            return change("downtime", f"raise the downtime limit to its cap, {format_ms(cap_ms)}: {caps}",
                          **{"downtime-limit": int(cap_ms)})
        if raise_bandwidth and what_if.converges(cap_bw, cap_ms, central=True):
            return change("bandwidth+downtime", f"raise bandwidth and the downtime limit to their caps, "
                                                f"{format_rate(cap_bw)} and {format_ms(cap_ms)}: {caps}",
                          **{"max-bandwidth": int(cap_bw), "downtime-limit": int(cap_ms)})
        # 2b. a raise that did not work shows the model wrong about this guest: its "nothing within
        # the cap converges" is no better a guide than its forecast was. Double again, as far as the
        # cap, rather than wait for the deadline (a big raise can put the pending pages well under
        # the new threshold, where small ones never do).
        if _raised(pilot, "downtime-limit"):
            ms = min(least_ms, float(policy.max_downtime_ms))
            return change("downtime", f"raise the downtime limit to {format_ms(ms)} (cap "
                                      f"{format_ms(policy.max_downtime_ms)}): the last raise did not work, and the "
                                      f"model foresees no value within the cap that would; {why_stuck}",
                          **{"downtime-limit": int(ms)})
    # 4. a bigger XBZRLE cache, where XBZRLE is on and misses; once.
    if "xbzrle-cache" in policy.steps and "xbzrle-cache" not in done and capabilities.get("xbzrle"):
        from migtui.model.guidance import advise

        for advice in advise(tracker, parameters, capabilities, modern):
            if advice.kind == "xbzrle-cache" and advice.change is not None:
                size = advice.change.parameters["xbzrle-cache-size"]
                return change("xbzrle-cache", f"XBZRLE cache to {format_bytes(size)}: {advice.text}",
                              **{"xbzrle-cache-size": size})
    # 5. post-copy: finishes whatever the guest dirties; only if enabled at the start (and not
    # where the throttle QEMU applies anyway converges it: that stakes the guest on the link).
    if ("postcopy" in policy.steps and "postcopy" not in done and capabilities.get("postcopy-ram") and not slow
            and not throttled):
        return Decision("postcopy", f"switch to post-copy: nothing within the caps converges ({why_stuck})",
                        postcopy=True)
    # 5b. with auto-converge on, the downtime limit at its cap, although the model (which does not
    # count on the throttle to come) foresees nothing there: QEMU throttles the guest whatever the
    # autopilot does, and the cap lets it switch over at the least throttle that will do (the lab
    # guest at 64 MiB/s under an 800 ms cap: left at 300 ms, it was at 99 % at the horizon). Only
    # once the verdict is not-converging: before, the XBZRLE cache's advice is not yet offered, and
    # a cap raise taken first held it back (saturating-ws 25 s became 35).
    if ("downtime" in policy.steps and capabilities.get("auto-converge") and not slow and not throttled
            and downtime < policy.max_downtime_ms):
        cap_ms = float(policy.max_downtime_ms)
        return change("downtime", f"raise the downtime limit to its cap, {format_ms(cap_ms)}: nothing within the caps "
                                  f"is foreseen to converge without more throttle, and QEMU throttles the guest "
                                  f"until it does; {why_stuck}", **{"downtime-limit": int(cap_ms)})
    # Converging by the throttle, and nothing cheaper within the caps: a steeper throttle costs the
    # guest more; QEMU's throttle finishes it.
    if throttled:
        pilot.state = "converging as auto-converge throttles the guest: no cheaper step within the caps"
        pilot.searched = (passes, last.time)
        return None
    # 6. auto-converge's throttle, steeper: it was on from the start; once.
    if "throttle" in policy.steps and "throttle" not in done and capabilities.get("auto-converge"):
        increment = _number(parameters.get("cpu-throttle-increment"))
        initial = _number(parameters.get("cpu-throttle-initial"))
        if increment is not None and increment < THROTTLE_MAX_INCREMENT:
            values = {"cpu-throttle-increment": int(min(THROTTLE_MAX_INCREMENT, max(increment * 2, 20)))}
            if initial is not None and initial < 40:
                values["cpu-throttle-initial"] = 40
            return change("throttle", f"steeper auto-converge throttle ({', '.join(f'{k} {v}' for k, v in values.items())}):"
                                      f" {why_stuck}", **values)
    left = f" (in {format_duration(deadline - elapsed)}: {policy.at_deadline})" if deadline is not None else ""
    pilot.state = f"{assessment.verdict}: no step within the caps; waiting for the deadline{left}"
    pilot.searched = (passes, last.time)
    return None
