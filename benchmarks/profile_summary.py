"""Top hot spots of a py-spy raw (folded) profile.

    python benchmarks/profile_summary.py FILE.folded [--top 20] [--only SUBSTRING]

Self: samples whose innermost frame is the function. Inclusive: samples with the
function anywhere on the stack (counted once per stack). Functions are keyed by
name and file, without line numbers; idle samples (the event loop waiting in
select/epoll) are reported apart.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
_IDLE = ("select (selectors.py", "EpollSelector.select", "poll (", "_run_once (asyncio/base_events.py")


def _key(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    return f"{m['name']} ({m['file']})" if m else frame.strip()


def summarize(path: Path, top: int = 20, only: str | None = None) -> dict[str, Any]:
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_key(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        if "EpollSelector.select" in leaf or leaf.startswith("select (") or "selectors.py" in leaf:
            idle += count
            continue
        self_c[leaf] += count
        for frame in set(frames):
            incl[frame] += count
    busy = max(1, total - idle)

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        rows = []
        for name, count in counter.most_common():
            if only and only not in name:
                continue
            rows.append({"function": name, "samples": count, "pct_of_busy": round(100 * count / busy, 1)})
            if len(rows) >= top:
                break
        return rows

    return {"samples": total, "idle_samples": idle, "busy_samples": total - idle,
            "self": table(self_c), "inclusive": table(incl)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--only")
    args = parser.parse_args()
    s = summarize(args.file, args.top, args.only)
    print(f"{s['samples']} samples, {s['idle_samples']} idle, {s['busy_samples']} busy")
    for kind in ("self", "inclusive"):
        print(f"\n{kind}:")
        for row in s[kind]:
            print(f"  {row['pct_of_busy']:5.1f}%  {row['samples']:6d}  {row['function']}")
