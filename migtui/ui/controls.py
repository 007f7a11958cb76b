"""Which of the console's actions change a VM, and the command palette's list of them.

Apart from the app and the screens, so that each can import it (they used to import each other).
"""

from __future__ import annotations

__all__ = ["CONTROL_ACTIONS", "COMMANDS"]

# Actions that change a VM; --read-only makes all of them unreachable.
CONTROL_ACTIONS = frozenset(
    {"start_migration", "cancel_migration", "set_bandwidth", "set_downtime", "set_xbzrle_cache",
     "capabilities", "postcopy", "recover_postcopy", "apply_advice", "autopilot", "drain_host"}
)

# Every action in the command palette, with the key that does the same.
COMMANDS: list[tuple[str, str, str]] = [
    ("start_migration", "Start migration (m)", "Migrate the selected VM to a waiting VM or a URI"),
    ("cancel_migration", "Cancel migration (c)", "Cancel the selected VM's migration, after confirmation"),
    ("set_bandwidth", "Set bandwidth (b)", "Change max-bandwidth, also during a migration"),
    ("set_downtime", "Set downtime limit (d)", "Change downtime-limit, also during a migration"),
    ("set_xbzrle_cache", "Set XBZRLE cache size (x)", "Change xbzrle-cache-size"),
    ("capabilities", "Capabilities (k)", "Turn migration capabilities on or off"),
    ("postcopy", "Switch to post-copy (p)", "Switch the running migration to post-copy, after confirmation"),
    ("recover_postcopy", "Recover post-copy (R)",
     "Resume a post-copy migration whose stream broke (migrate-recover, then migrate resume), after showing the QMP"),
    ("autopilot", "Autopilot (A)",
     "Put the selected VM's migration on autopilot under a policy (caps, steps, deadline), or hand it back"),
    ("drain_host", "Drain host (D)",
     "Move every running domain off the selected VM's libvirt host to the other hosts, in a queue you can watch"),
    ("apply_advice", "Apply advice (a)", "Apply the selected advice on the dashboard, after showing its QMP command"),
    ("open_dashboard", "Open dashboard (enter)", "Graphs, parameters and log of the selected VM"),
    ("filter", "Filter VMs (/)", "Show only VMs whose name, endpoint or status match"),
    ("poll_now", "Poll now (r)", "Ask every VM for a fresh sample"),
    ("screenshot", "Save screenshot (s)", "Save an SVG of the screen in the current directory"),
    ("next_theme", "Next theme (t)", "Cycle dark, light, high-contrast and colour-blind themes"),
    ("help", "Help (?)", "Keys and what the columns mean"),
]
