"""Live migration graphs: plotext charts of one VM's History.

Each graph is a textual-plotext PlotextPlot, with two changes that make an
hour of history (7200 points) cheap enough to redraw on every sample:

* plotext draws the frame (title, axes, ticks, tick labels); the lines, pass
  marks and legend are painted straight into plotext's character matrix with
  the same half-block ("hd") markers plotext uses. plotext's own line path
  costs about 10 ms per series at 200x60; this one well under 1 ms.
* the matrix becomes Strips directly. PlotextPlot.render() has plotext write an
  ANSI string and parses it back with Text.from_ansi, which alone costs more
  than the plot, and it does so on every render; here a build happens only
  when data, size, theme or colours changed.
"""

from migtui.ui.widgets.graphs.benchmark import redraw_cost, synthetic_history
from migtui.ui.widgets.graphs.scale import PlotColor, downsample
from migtui.ui.widgets.graphs.widgets import (
    DEFAULT_COLORS,
    GRAPH_CLASSES,
    DiskGraph,
    MigrationGraph,
    RamGraph,
    ThroughputGraph,
    XbzrleGraph,
)

__all__ = [
    "MigrationGraph",
    "ThroughputGraph",
    "RamGraph",
    "DiskGraph",
    "XbzrleGraph",
    "GRAPH_CLASSES",
    "DEFAULT_COLORS",
    "PlotColor",
    "downsample",
    "synthetic_history",
    "redraw_cost",
]
