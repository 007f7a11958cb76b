"""Figure 5: the dashboard's render cost per new sample, from migtui's own probe.

`migtui.ui.widgets.graphs.redraw_cost(200, 60, 7200, runs, layout, source)` is the
median milliseconds to set_data and rebuild all four graphs (throughput/dirty, RAM,
disk, XBZRLE) after one new sample, with one hour of history (7200 samples at 2/s):
"grid" is the dashboard's 2x2 grid sharing 200x60, "each" gives every graph 200x60
(the worst case). source "history" is what the live dashboard draws: the samples
went through a session's History, which keeps the newest points exact and thins
older ones, and each run appends a sample and reads the history back. source "all"
draws every one of the 7200 points (a replay of an hour-long recording). It counts
the history read, data copy, downsampling, plotext and conversion to strips, not
Textual's compositor.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from common import goal, rnd


def run(quick: bool, tmp: Path) -> dict[str, Any]:
    from migtui.ui.widgets import graphs

    runs = 5 if quick else 21
    values: dict[str, Any] = {}
    goals = []
    graphs.redraw_cost(200, 60, 7200, runs=1, layout="grid")  # imports and caches warm
    for source in ("history", "all"):
        for layout in ("grid", "each"):
            began = time.perf_counter()
            ms = graphs.redraw_cost(200, 60, 7200, runs=runs, layout=layout, source=source)
            tag = layout if source == "history" else f"{layout}_all_points"
            values[f"{tag}_ms_per_sample"] = rnd(ms, 2)
            values[f"{tag}_wall_s"] = rnd(time.perf_counter() - began, 2)
            if source == "history":
                goals.append(goal(f"redraw 4 graphs, layout {layout}, 200x60, one hour of history", ms, 20.0,
                                  "<=", "ms"))
    return {"params": {"width": 200, "height": 60, "points": 7200, "runs": runs}, "values": values, "goals": goals}


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv, Path(".")), indent=1))
