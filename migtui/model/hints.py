"""What to do next, for the QEMU refusals operators meet most. Matched on QEMU's own sentence."""

from __future__ import annotations

__all__ = ["hint_for"]

# (fragment of QEMU's error-desc, what to do) — the first match wins.
_HINTS = (
    ("migration process in progress", "a migration already runs: cancel it (c) or wait for it"),
    ("paused due to previous migration", "this VM already migrated away; run `cont` on it only if you mean to"),
    ("expects a valid migration protocol", "use tcp:HOST:PORT, unix:PATH, exec:CMD or fd:NAME"),
    ("while migration is running", "capabilities are fixed during a migration: cancel first or wait"),
    ("Postcopy is not enabled", "tick post-copy (postcopy-ram) in the start dialog before migrating"),
    ("postcopy-ram", "post-copy needs postcopy-ram on both sides before the migration starts"),
    ("Migration is disabled", "a device blocks migration on this VM (see QEMU's blockers)"),
    ("blocked", "a device or option blocks migration on this VM"),
    ("Failed to connect", "check the destination is waiting (-incoming) and reachable"),
    ("Connection refused", "nothing listens at the destination URI: start it with -incoming"),
    ("xbzrle_cache_size", "the XBZRLE cache must be a power of two, at least one page (e.g. 64M)"),
    ("downtime_limit", "the downtime limit must be between 0 and 2000s"),
    ("is not a valid", "check the value against `migtui set --help`"),
)


def hint_for(desc: str) -> str | None:
    lowered = desc.lower()
    for fragment, hint in _HINTS:
        if fragment.lower() in lowered:
            return hint
    return None
