"""Recording, replay and export of migrations: the post-mortem side of migtui.

A `Recorder` listens to the backend and writes every migration it sees to an
NDJSON file (a header, samples, events, actions, settings, a summary) and
prunes old recordings when it starts (`Retention`, `prune_recordings`);
`load_recording` reads one back for `migtui replay` and the exporters. Nothing
here imports Textual or the console: the dashboard as SVG (migtui.ui.export) and the replay
console are the UI's.
"""

from __future__ import annotations

from migtui.record.export import CSV_COLUMNS, export_csv
from migtui.record.recorder import (
    FORMAT,
    Finished,
    Recorder,
    SummaryBuilder,
    default_recordings_dir,
    summarize,
    summary_text,
    zero_times,
)
from migtui.record.retention import Pruned, Retention, prune_recordings
from migtui.record.replay import Cursor, Recording, RecordingError, list_recordings, load_recording, load_recordings

__all__ = [
    "CSV_COLUMNS",
    "FORMAT",
    "Cursor",
    "Finished",
    "Pruned",
    "Recorder",
    "Recording",
    "RecordingError",
    "Retention",
    "SummaryBuilder",
    "default_recordings_dir",
    "export_csv",
    "list_recordings",
    "load_recording",
    "load_recordings",
    "prune_recordings",
    "summarize",
    "summary_text",
    "zero_times",
]
