"""A run.py JSON object as the Markdown table of BENCHMARKS.md; with two files, side by side.

    python benchmarks/report.py RESULT.json [BASELINE.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("ms", "MB"):
        text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    elif unit == "s":
        text = f"{value:.3f}" if value < 1 else f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def table(report: dict, baseline: dict | None = None) -> str:
    base = {(g["figure"], g["name"]): g for g in (baseline or {}).get("goals", [])}
    head = "| figure | measure | value | goal | value/goal | |"
    rule = "| --- | --- | ---: | ---: | ---: | --- |"
    if baseline:
        head += " baseline |"
        rule += " ---: |"
    lines = [head, rule]
    for g in report["goals"]:
        mark = "met" if g["met"] else "**missed**" if g["met"] is False else "?"
        row = (f"| {g['figure']} | {g['name']} | {_fmt(g['value'], g['unit'])} | {g['op']} {_fmt(g['goal'], g['unit'])}"
               f" | {g['ratio'] if g['ratio'] is not None else 'n/a'} | {mark} |")
        if baseline:
            old = base.get((g["figure"], g["name"]))
            row += f" {_fmt(old['value'], old['unit']) if old else ''} |"
        lines.append(row)
    for name in report.get("errors", []):
        lines.append(f"| {name} | error: {report['figures'][name]['error']} | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    current = json.loads(Path(sys.argv[1]).read_text())
    previous = json.loads(Path(sys.argv[2]).read_text()) if len(sys.argv) > 2 else None
    print(table(current, previous))
