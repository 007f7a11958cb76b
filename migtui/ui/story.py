"""The demo's story and its simulated fleet, as data (migtui.ui.demo plays them).

Each step names what the audience looks at (`view`), what must be true before the
story moves on (`ready`), the caption, and how long the caption stays once it is
true when the story plays itself (`dwell`, seconds, paced for a projector). The
views and conditions are named here and carried out by migtui.ui.demo.Director.
Captions are one line at 80 columns: `{star}` is the stuck VM's name,
`{in_flight}` how many migrations are running.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Step", "STORY", "SimVMSpec", "SIM_FLEET", "SIM_SEED", "SIM_SPEEDUP", "REPLAY_SPEED",
           "CONFIRM_HOLD", "CAPTION_WIDTH", "ADVICE_KIND"]

CAPTION_WIDTH = 64  # the longest caption, so that "5/5 " and "▶ auto" fit beside it at 80 columns


@dataclass(frozen=True)
class Step:
    key: str
    view: str  # "fleet", "dashboard", "advice" (the dashboard and the advice's confirmation) or "replay"
    ready: str  # "connected", "not-converging", "advice-applied", "completed" or "replay-end"
    caption: str  # once ready
    waiting: str  # until then
    dwell: float  # seconds on screen once ready, when the story plays itself
    confirming: str = ""  # the advice step, while its confirmation is up


STORY: tuple[Step, ...] = (
    Step("fleet", "fleet", "connected",
         "A fleet: {in_flight} live migrations in flight, each judged as it runs",
         "A fleet: the console connects to every VM's QMP monitor", 7.0),
    Step("stuck", "dashboard", "not-converging",
         "{star} is stuck: NOT-CONVERGING, and the line under it says why",
         "{star}: the console watches its passes to judge it", 9.0),
    Step("advice", "advice", "advice-applied",
         "Applied: the advice box follows up on whether it works",
         "The advice: what to change, worked out from QEMU's own figures", 3.0,
         confirming="Applying the advice: migtui shows the exact QMP command it sends"),
    Step("complete", "dashboard", "completed",
         "{star} converged and completed: the summary is in its events",
         "{star} follows the advice: the verdict and the ETA say so", 8.0),
    Step("replay", "replay", "replay-end",
         "The post-mortem: {star}'s migration, replayed from its recording",
         "The post-mortem: {star}'s migration, replayed from its recording", 6.0),
)


@dataclass(frozen=True)
class SimVMSpec:
    """A simulated VM; a `destination` makes it the source of a migration started at once."""

    name: str
    dialect: str = "7.2"
    ram_mib: int = 2048
    dirty_mib_s: float = 0.0
    working_set_mib: int = 64
    zero_fraction: float = 0.5
    destination: str | None = None  # the VM (incoming) it migrates to
    star: bool = False  # the one the story follows


# db01 is guidance's "marginal" case: 150 MiB/s dirtied over 256 MiB against QEMU's default 128 MiB/s.
SIM_FLEET: tuple[SimVMSpec, ...] = (
    SimVMSpec("web01", ram_mib=8192, dirty_mib_s=12, working_set_mib=128, zero_fraction=0.6,
              destination="web01-dst"),
    SimVMSpec("db01", ram_mib=2048, dirty_mib_s=150, working_set_mib=256, zero_fraction=0.4,
              destination="db01-dst", star=True),
    SimVMSpec("api01", dialect="1.4", ram_mib=1024, dirty_mib_s=2, working_set_mib=64, zero_fraction=0.5,
              destination="api01-dst"),
    SimVMSpec("cache01", ram_mib=4096, dirty_mib_s=40, working_set_mib=512),
    SimVMSpec("batch01", ram_mib=1024, dirty_mib_s=5),
    SimVMSpec("web01-dst", ram_mib=8192),
    SimVMSpec("db01-dst", ram_mib=2048),
    SimVMSpec("api01-dst", dialect="1.4", ram_mib=1024),
)
SIM_SEED = 16
SIM_SPEEDUP = 2.0  # simulated seconds per second: a story of about a minute
REPLAY_SPEED = 4.0  # the post-mortem plays this much faster than it happened
CONFIRM_HOLD = 4.0  # seconds the advice's confirmation stays up before the story says yes
# The advice the story applies, when the list has it: the console samples in real time, so the order
# of two pieces that both work (bandwidth, downtime limit) can differ between tellings; the story does not.
ADVICE_KIND = "bandwidth"
