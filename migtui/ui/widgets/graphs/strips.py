"""plotext's character matrix -> Textual Strips, with the styles cached.

PlotextPlot.render() has plotext write an ANSI string and parses it back with
Text.from_ansi, which alone costs more than the plot; this reads the matrix.
"""

from __future__ import annotations

import re
from typing import Any

import plotext._utility as _plotext_utility
from rich.color import Color as RichColor
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from migtui.ui.widgets.graphs.scale import _NO

_STYLE_CACHE: dict[tuple[Any, Any, Any], Style] = {}
_STYLE_WORDS = {"inverted": "reverse", "flash": "blink", "double-underline": "underline2"}
_INK = re.compile(r"[^ ]+")


def _rich_color(color: Any) -> RichColor | None:
    if color is None or color == _NO:
        return None
    rgb = _plotext_utility.to_rgb(color)  # plotext names and 256-colour codes -> RGB
    if isinstance(rgb, (tuple, list)) and len(rgb) == 3:
        return RichColor.from_rgb(*rgb)
    return None


def _cell_style(fg: Any, st: Any, bg: Any) -> Style:
    key = (fg, st, bg)
    style = _STYLE_CACHE.get(key)
    if style is None:
        words = [] if st in (None, _NO) else str(st).replace("+", " ").split()
        names = [_STYLE_WORDS.get(w, w) for w in words]
        attrs = {n: True for n in names if n in Style.STYLE_ATTRIBUTES}
        style = _STYLE_CACHE[key] = Style(color=_rich_color(fg), bgcolor=_rich_color(bg), **attrs)
    return style


_STYLES_BY_BG: dict[Any, dict[Any, Style]] = {}


def _row_strip(marker: list[str], fg: list[Any], st: list[Any], bg: list[Any], width: int) -> Strip:
    line = "".join(marker)
    if bg.count(bg[0]) == len(bg) and st.count(_NO) == len(st):
        # The usual row: one background, no styles. A space shows no foreground,
        # so only changes of colour between inked cells split segments, and only
        # inked cells are looked at one by one.
        b = bg[0]
        styles = _STYLES_BY_BG.get(b)
        if styles is None:
            styles = _STYLES_BY_BG[b] = {}
        segments: list[Segment] = []
        append = segments.append
        start, current = 0, None
        for match in _INK.finditer(line):
            a, e = match.span()
            run = fg[a:e]
            # One colour over the whole run (the usual case): its first cell says it all.
            for i in (a,) if run.count(run[0]) == e - a else range(a, e):
                colour = fg[i]
                if colour != current:
                    if current is not None:
                        style = styles.get(current)
                        if style is None:
                            style = styles[current] = _cell_style(current, _NO, b)
                        append(Segment(line[start:i], style))
                        start = i
                    current = colour
        current = _NO if current is None else current
        style = styles.get(current)
        if style is None:
            style = styles[current] = _cell_style(current, _NO, b)
        append(Segment(line[start:], style))
        return Strip(segments, width)
    segments = []
    start = 0
    for i in range(1, len(marker) + 1):
        if i == len(marker) or fg[i] != fg[start] or st[i] != st[start] or bg[i] != bg[start]:
            segments.append(Segment(line[start:i], _cell_style(fg[start], st[start], bg[start])))
            start = i
    return Strip(segments, width)


def _matrix_strips(matrix: Any, width: int) -> list[Strip]:
    """plotext's matrices (row 0 at the bottom) -> one Strip per line, top first."""
    strips = []
    for r in range(matrix.rows - 1, -1, -1):
        strip = _row_strip(matrix.marker[r], matrix.fullground[r], matrix.style[r], matrix.background[r], matrix.cols)
        strips.append(strip if matrix.cols == width else strip.adjust_cell_length(width))
    return strips


class _Strips:
    """Built strips as a Rich renderable, for code paths that call render()."""

    def __init__(self, strips: list[Strip]) -> None:
        self.strips = strips

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        newline = Segment.line()
        for strip in self.strips:
            yield from strip
            yield newline
