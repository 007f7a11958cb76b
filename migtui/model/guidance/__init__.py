"""Operator guidance: what a migration is doing, when it will end, and what would help.

Pure: computed from a MigrationTracker's history, with no I/O, and no state of its own.
(The tracker holds guidance's memo, `tracker.memo`: the per-pass work done for earlier
calls, so a call costs only the samples added since; the results are those of a fresh
computation, except that what a tracker's previous migration showed, `tracker.learned`,
is kept only if it was assessed while it ran.)

The model is QEMU's pre-copy loop. Each pass sends the pages in the dirty bitmap while
the guest dirties pages again. Between 100 ms send windows QEMU checks whether what
is left fits in ``bandwidth x downtime-limit`` (the threshold); if so it syncs the
dirty log, and if it still fits, stops the guest and sends the rest: the switch-over.
So what the next pass must send beyond the threshold is what the guest dirtied during
this one:

    excess(n+1) = dirtied(T(n)),   T(n) = excess(n) / drain

where *drain* is how fast ``remaining`` falls inside a pass (zero pages and XBZRLE
pages cost far fewer wire bytes than 4 KiB, so drain is not the wire *throughput*).
``dirtied(T)`` counts each page once: a guest rewriting a bounded working set W
dirties ``W (1 - exp(-rate T / W))`` distinct bytes in T seconds, so QEMU's
dirty-pages-rate (distinct pages per sync period) is lower for longer periods. Two
periods of different lengths give both the rate and W. Iterating the recurrence says
whether the passes get under the threshold (converging, and when) or settle at a floor
above it (not converging). When the threshold is more than a window's sending, a pass
lasts at least one 100 ms window, so a guest that dirties more than the slack in 100 ms
never converges, however small its working set.

Pass 1 has no dirty rate (QEMU reports one from the second sync). Its own rest is known
from the pages sent so far (zero pages cost a few wire bytes; block migration sends the
disk first); the passes after it need the guest's dirtying from elsewhere: a pre-flight
calc-dirty-rate the backend puts on the tracker (``tracker.dirty_rate_prior``), or what
this tracker saw of the guest's previous migration (its fitted dirtying, unthrottled, and
the share of its RAM that was zero pages). With neither, the ETA guesses the guest dirties
a fifth of what is sent, with a wide band. With auto-converge on (``tracker.capabilities``,
or QEMU reporting a throttle) the passes ahead are run with QEMU's throttling rule. The
first reading, over all of pass 1, cannot tell a working set from a steady rate, so until
the second reading the ETA assumes a middling working set (or the previous migration's).

The package, by concern: `dirtying` (the model and the passes it predicts), `prior` (what
is known before QEMU measures), `passes` (the history pass by pass, and the judge),
`memo` (the work kept between calls), `analysis` (one call's reading), `eta`, `verdict`
(assess, unreachable) and `advice` (advise, take_advice, follow_up); `tunables` holds the
figures they share.
"""

from __future__ import annotations

from migtui.model.guidance.advice import ADVICE_KINDS, Advice, AdviceTaken, FollowUp, advise, follow_up, take_advice
from migtui.model.guidance.verdict import VERDICTS, Assessment, assess, unreachable

__all__ = ["VERDICTS", "ADVICE_KINDS", "Assessment", "Advice", "AdviceTaken", "FollowUp", "assess", "advise",
           "take_advice", "follow_up", "unreachable"]
