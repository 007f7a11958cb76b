"""? : the keys, and what the numbers mean."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# migtui keys

| key | action |
| --- | --- |
| `m` | start a migration (to a VM waiting with `-incoming defer`, a URI, or for a libvirt domain another host); Start measures the guest for a second first (the pre-flight: its dirty rate and zero pages time pass 1), Check measures alone |
| `c` | cancel the migration (confirm with `y`) |
| `b` | bandwidth: `max-bandwidth`, bytes/s (`1G` = 1 GiB/s) |
| `d` | downtime limit: `downtime-limit`, e.g. `300ms`, `2s` |
| `x` | XBZRLE cache size (a power of two) |
| `k` | capabilities (QMP: locked while a migration runs; libvirt: the flags of the next migration) |
| `p` | switch to post-copy (confirm; needs post-copy ticked at start) |
| `R` | recover a post-copy whose stream broke (postcopy-paused; confirm; shows the exact QMP) |
| `A` | autopilot: finish this VM's migration (running or next) under a policy, within its caps; `A` again hands it back. `AP` after the status marks it; any change of yours also hands it back |
| `D` | on a libvirt fleet: drain the selected VM's host, every running domain to the other hosts (a queue: `C` cancels all, `escape` leaves it running) |
| `a` | on the dashboard: apply the selected advice (confirm; shows the exact QMP command or libvirt call) |
| `enter` | dashboard of the selected VM |
| `escape` | back |
| `/` | filter the fleet by name, endpoint, status or verdict; `o` cycles the sort column |
| `r` | poll now |
| `s` | save an SVG screenshot in the current directory |
| `t` | next theme |
| `?` | this help |
| `q` | quit |
| `ctrl+p` | every action by name |

Keys can be remapped in `~/.config/migtui/config.toml`, under `[keys]`.

# Reading a migration

- **throughput** is measured by migtui from `transferred` between samples, in
  bytes/s. QEMU's own `mbps` is megabits.
- **dirty rate** is `dirty-pages-rate` x `page-size`: how fast the guest
  re-dirties memory. When it is at or above throughput, the migration **will
  not converge** at these settings: raise bandwidth (`b`), raise the downtime
  limit (`d`), or switch to post-copy (`p`).
- **downtime exp/limit**: QEMU's `expected-downtime` against the
  `downtime-limit`. QEMU switches over once what is left fits in the limit.
- **progress** can go back: the guest dirtied pages again. migtui says so.
- **ETA** is `never` when dirtying outpaces sending, `…` before the first rates.
- **pass** is `dirty-sync-count`, one per sweep over RAM.
- **verdict** is migtui's: `converging`, `not-converging` (remaining stopped
  shrinking across passes), `stalled` (nothing sent for a while),
  `switching-over`, `post-copy`, ... with one sentence of why, an ETA band, and
  the **implied downtime** (remaining / throughput: the limit that would let
  the switch-over happen now).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Back"),
        Binding("question_mark", "dismiss", "Back", show=False),
        Binding("q", "dismiss", "Back", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(HELP)

    def action_dismiss(self) -> None:
        self.dismiss(None)
