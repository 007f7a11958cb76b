"""Figure 5: the dashboard's render cost per new sample, from migtui's own probe.

`migtui.ui.widgets.graphs.redraw_cost(200, 60, 7200, runs, layout)` is the median
milliseconds to set_data and rebuild all four graphs (throughput/dirty, RAM,
disk, XBZRLE) from one hour of history (7200 points at 2 samples/s), after one
new sample: "grid" is the dashboard's 2x2 grid sharing 200x60, "each" gives every
graph 200x60 (the worst case). It counts data copy, downsampling, plotext and
conversion to strips, not Textual's compositor.
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
    for layout in ("grid", "each"):
        began = time.perf_counter()
        ms = graphs.redraw_cost(200, 60, 7200, runs=runs, layout=layout)
        values[f"{layout}_ms_per_sample"] = rnd(ms, 2)
        values[f"{layout}_wall_s"] = rnd(time.perf_counter() - began, 2)
        goals.append(goal(f"redraw 4 graphs, layout {layout}, 200x60, 7200 points", ms, 20.0, "<=", "ms"))
    return {"params": {"width": 200, "height": 60, "points": 7200, "runs": runs}, "values": values, "goals": goals}


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv, Path(".")), indent=1))
