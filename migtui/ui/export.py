"""`migtui export`: a recording's time series as CSV, and its dashboard as an SVG image.

export_svg draws the replay dashboard at the end of the recording headless and saves
Textual's screenshot of it; Textual is imported only when it is called, so a CSV export
loads none of it.
"""

from __future__ import annotations

from pathlib import Path

from migtui.model.units import InputError
from migtui.record.export import export_csv
from migtui.record.replay import Recording, load_recording

__all__ = ["export_svg", "run_export"]


async def export_svg(
    recording: Recording,
    out: Path | str,
    *,
    size: tuple[int, int] = (160, 48),
    theme: str | None = None,
) -> Path:
    """Draw the replay dashboard at the end of the recording (headless) and save it as SVG."""
    from migtui.ui.replay import ReplayApp

    app = ReplayApp(recording, paused=True, at_end=True, theme=theme, tick=None)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        svg = app.export_screenshot(title=f"migtui · {recording.name} · {recording.status}")
    path = Path(out)
    path.write_text(svg)
    return path


async def run_export(
    path: Path | str,
    *,
    vm: str | None = None,
    csv_out: str | None = None,
    svg_out: str | None = None,
    theme: str | None = None,
) -> list[str]:
    """`migtui export FILE --csv OUT --svg OUT`: what was written, one line each ("-" is stdout for CSV).

    Raises InputError (RecordingError) with one line for a bad file or missing outputs.
    """
    import sys

    if not csv_out and not svg_out:
        raise InputError("export: give --csv OUT and/or --svg OUT")
    recording = load_recording(path, vm)
    done = []
    if csv_out:
        try:
            rows = export_csv(recording, sys.stdout if csv_out == "-" else Path(csv_out))
        except OSError as err:
            raise InputError(f"--csv {csv_out}: {err.strerror or err}") from None
        if csv_out != "-":
            done.append(f"{csv_out}: {rows} samples")
    if svg_out:
        try:
            written = await export_svg(recording, svg_out, theme=theme)
        except OSError as err:
            raise InputError(f"--svg {svg_out}: {err.strerror or err}") from None
        done.append(f"{written}: the dashboard at the end of the recording")
    return done
