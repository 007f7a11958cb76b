"""Reading recordings back: a tolerant loader and a cursor that rebuilds the VM at any moment.

`load_recording(path)` returns one migration (`Recording`); `load_recordings`
every migration in a file (a `--record FILE` holds several, one header each).
The loader forgives what an interrupted migtui leaves behind (a last line cut
short, no summary) and lines of types it does not know; a file that is not a
migtui recording at all gets one line saying so, never a traceback.

`Cursor` replays a recording into a VMState (tracker, log, parameters) up to a
playhead, the way the live backend would have filled it: the dashboard draws
it unchanged. Moving forward feeds only the new samples; moving back rebuilds.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migtui.model.derived import MigrationTracker
from migtui.model.endpoint import Endpoint, parse_endpoint
from migtui.model.history import PassMark
from migtui.model.sample import MigrationSample, parse_query_migrate
from migtui.model.units import InputError
from migtui.model.vm import Connection, EventRecord, VMState
from migtui.record.recorder import FORMAT, default_recordings_dir, summarize, summary_text

__all__ = ["Recording", "RecordingError", "Cursor", "load_recording", "load_recordings", "list_recordings"]

_KNOWN = frozenset({"header", "sample", "event", "action", "settings", "summary"})


class RecordingError(InputError):
    """A file that cannot be replayed, in one line (the command line exits 2 with it)."""


@dataclass
class Recording:
    """One recorded migration."""

    path: Path
    header: dict[str, Any]
    samples: list[MigrationSample] = field(default_factory=list)
    derived: list[dict[str, Any] | None] = field(default_factory=list)  # as the console computed it live
    run_states: list[str | None] = field(default_factory=list)  # per sample: the run-state it changed to
    events: list[dict[str, Any]] = field(default_factory=list)  # event and action lines, by time
    settings: list[dict[str, Any]] = field(default_factory=list)  # parameter/capability changes, by time
    summary: dict[str, Any] | None = None  # as recorded; None when the recording was interrupted
    warnings: list[str] = field(default_factory=list)

    @property
    def vm(self) -> str:
        return str(self.header.get("vm") or "?")

    @property
    def name(self) -> str:
        return str(self.header.get("name") or self.vm)

    @property
    def start(self) -> float:
        times = [t for t in (_num(self.header.get("started")),) if t is not None]
        if self.samples:
            times.append(self.samples[0].time)
        if self.events:
            times.append(self.events[0]["time"])
        return min(times) if times else 0.0

    @property
    def end(self) -> float:
        times = [self.start]
        if self.samples:
            times.append(self.samples[-1].time)
        if self.events:
            times.append(self.events[-1]["time"])
        return max(times)

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def status(self) -> str:
        return self.samples[-1].status if self.samples else "unknown"

    def final_summary(self) -> dict[str, Any]:
        """The recorded summary, or one computed from the samples when the recording was cut short."""
        if self.summary is not None:
            return self.summary
        return {"ended-by": "interrupted (no summary in the file)", **summarize(self.samples)}

    def computed_summary(self) -> dict[str, Any]:
        return summarize(self.samples)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordingError(f"{path}: is a directory, not a recording") from None
    except PermissionError:
        raise RecordingError(f"{path}: permission denied") from None
    except OSError as err:
        raise RecordingError(f"{path}: cannot read: {err.strerror or err}") from None


def load_recordings(path: Path | str) -> list[Recording]:
    """Every migration in the file, in the order their headers appear."""
    path = Path(path)
    data = _read(path)
    if not data.strip():
        raise RecordingError(f"{path}: empty, not a migtui recording")
    lines = data.split(b"\n")
    cut_short = not data.endswith(b"\n")
    recordings: list[Recording] = []
    open_: dict[str, Recording] = {}
    bad = unknown = orphan = 0
    first = True
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        last = number == len(lines)
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            obj = None
        if first:
            if obj is None and last and cut_short and raw.lstrip().startswith(b'{"type":"header"'):
                raise RecordingError(f"{path}: cut short inside its header line: there is nothing to replay")
            if not (isinstance(obj, dict) and obj.get("type") == "header" and obj.get("format") == FORMAT):
                raise RecordingError(f"{path}: not a migtui recording (its first line is not a migtui header)")
            first = False
        if not isinstance(obj, dict):
            if last and cut_short:
                continue  # reported below
            bad += 1
            continue
        kind = obj.get("type")
        if kind not in _KNOWN:
            unknown += 1
            continue
        vm = str(obj.get("vm", ""))
        if kind == "header":
            if obj.get("format") != FORMAT:
                bad += 1
                continue
            recording = Recording(path, obj)
            recordings.append(recording)
            open_[vm] = recording
            continue
        target = open_.get(vm) or (next(iter(open_.values())) if len(open_) == 1 and not vm else None)
        if target is None:
            orphan += 1
            continue
        if not _add(target, kind, obj):
            bad += 1
        if kind == "summary":
            open_.pop(vm, None)
    for recording in recordings:
        _finish(recording)
    notes = []
    if cut_short and lines[-1].strip():
        try:
            json.loads(lines[-1].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            notes.append("the last line is cut short (the recording was interrupted); it was skipped")
    if bad:
        notes.append(f"{bad} unreadable line(s) skipped")
    if unknown:
        notes.append(f"{unknown} line(s) of unknown types skipped")
    if orphan:
        notes.append(f"{orphan} line(s) outside any migration skipped")
    for recording in recordings:
        recording.warnings[:0] = notes
    return recordings


def _add(recording: Recording, kind: str, obj: dict[str, Any]) -> bool:
    when = _num(obj.get("time"))
    if kind == "summary":
        recording.summary = {k: v for k, v in obj.items() if k not in ("type", "vm")}
        return True
    if when is None:
        return False
    if kind == "sample":
        migration = obj.get("migration")
        if not isinstance(migration, dict):
            return False
        recording.samples.append(parse_query_migrate(migration, when))
        derived = obj.get("derived")
        recording.derived.append(derived if isinstance(derived, dict) else None)
        run_state = obj.get("run-state")
        recording.run_states.append(run_state if isinstance(run_state, str) else None)
    elif kind in ("event", "action"):
        line = dict(obj)
        line["time"] = when
        recording.events.append(line)
    elif kind == "settings":
        line = dict(obj)
        line["time"] = when
        recording.settings.append(line)
    return True


def _finish(recording: Recording) -> None:
    times = [s.time for s in recording.samples]
    if any(b < a for a, b in zip(times, times[1:])):
        order = sorted(range(len(times)), key=times.__getitem__)
        recording.samples = [recording.samples[i] for i in order]
        recording.derived = [recording.derived[i] for i in order]
        recording.run_states = [recording.run_states[i] for i in order]
    recording.events.sort(key=lambda e: e["time"])
    recording.settings.sort(key=lambda e: e["time"])
    if recording.summary is None:
        recording.warnings.append("no summary: the recording was interrupted; the summary is computed from the samples")


def load_recording(path: Path | str, vm: str | None = None, index: int = -1) -> Recording:
    """One migration from the file: the last one (of `vm`, by key or name, when given)."""
    recordings = load_recordings(path)
    if vm is not None:
        chosen = [r for r in recordings if vm in (r.vm, r.name)]
        if not chosen:
            names = sorted({r.vm for r in recordings})
            raise RecordingError(f"{path}: no migration of {vm!r} in it; it has: {', '.join(names)}")
        recordings = chosen
    try:
        return recordings[index]
    except IndexError:
        raise RecordingError(f"{path}: holds {len(recordings)} migration(s); there is no number {index}") from None


# --------------------------------------------------------------------------- cursor


def _brief(data: Any) -> str:
    if isinstance(data, dict):
        return " ".join(f"{k}={v}" for k, v in data.items())[:200]
    return str(data)[:200]


def _endpoint(header: dict[str, Any]) -> Endpoint:
    key = str(header.get("vm") or "replay")
    text = str(header.get("endpoint") or "")
    if header.get("backend") == "libvirt":
        host = header.get("host") if isinstance(header.get("host"), str) else None
        return Endpoint(key, "libvirt", text.split("#", 1)[0], host, named=True)
    try:
        parsed = parse_endpoint(text)
        return Endpoint(key, parsed.kind, parsed.path, parsed.host, parsed.port, named=True)
    except (InputError, ValueError):
        return Endpoint(key, "unix", text or "(recording)", named=True)


class Cursor:
    """The recorded VM as it was at `time`: seek() feeds the samples, events and settings up to it."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        header = recording.header
        self.vm = VMState(endpoint=_endpoint(header), name=recording.name)
        self.vm.connection = Connection.CONNECTED
        self.vm.qemu_version = header.get("qemu")
        self.vm.dialect = header.get("dialect")
        self._sample_times = [s.time for s in recording.samples]
        self.generation = 0  # bumped at each rebuild (a seek backwards): a viewer's log starts over
        self._reset()

    @property
    def start(self) -> float:
        return self.recording.start

    @property
    def end(self) -> float:
        return self.recording.end

    @property
    def samples_shown(self) -> int:
        return self._samples

    def _reset(self) -> None:
        header = self.recording.header
        vm = self.vm
        self.generation += 1
        vm.tracker = MigrationTracker(history_len=max(16, len(self.recording.samples) + 16))
        vm.log.clear()
        vm.log_total = 0
        vm.problems = ()
        vm.run_state = header.get("run-state")
        self._apply_settings(header)
        self._samples = self._events = self._settings = 0
        self.time = self.start - 1e-9  # before anything

    def _apply_settings(self, line: dict[str, Any]) -> None:
        params = line.get("parameters")
        caps = line.get("capabilities")
        if isinstance(params, dict):
            self.vm.parameters = dict(params)  # the tracker's: max_bandwidth and downtime_limit_ms follow
        if isinstance(caps, dict):
            self.vm.capabilities = {str(k): bool(v) for k, v in caps.items()}

    def _apply_event(self, line: dict[str, Any]) -> None:
        vm = self.vm
        when = line["time"]
        if line.get("type") == "action":
            ok = bool(line.get("ok"))
            detail = (_brief(line.get("arguments")) or "ok") if ok else str(line.get("result"))
            vm.log_append(EventRecord(when, "action" if ok else "error", str(line.get("command")), detail))
            return
        name = str(line.get("event"))
        data = line.get("data") if isinstance(line.get("data"), dict) else {}
        passes = None
        if name == "MIGRATION_PASS" and isinstance(data.get("pass"), int):
            passes = (data["pass"], data["pass"])
            vm.tracker.history.mark_pass(PassMark(when, data["pass"]))
        elif name == "STOP":
            vm.run_state = "paused"
        elif name == "RESUME":
            vm.run_state = "running"
        vm.log_append(EventRecord(when, "event", name, _brief(data), passes))

    def seek(self, when: float) -> bool:
        """Move the playhead (clamped to the recording); True when the VM state changed."""
        when = min(max(when, self.start), self.end)
        changed = False
        if when < self.time:
            self._reset()
            changed = True
        rec = self.recording
        samples, events, settings = rec.samples, rec.events, rec.settings
        inf = float("inf")
        while True:
            ts = samples[self._samples].time if self._samples < len(samples) else inf
            te = events[self._events]["time"] if self._events < len(events) else inf
            tc = settings[self._settings]["time"] if self._settings < len(settings) else inf
            nxt = min(ts, te, tc)
            if nxt > when:
                break
            changed = True
            if tc == nxt:
                self._apply_settings(settings[self._settings])
                self._settings += 1
            elif te == nxt:
                self._apply_event(events[self._events])
                self._events += 1
            else:
                sample = samples[self._samples]
                run_state = rec.run_states[self._samples]
                if run_state is not None:
                    self.vm.run_state = run_state
                self.vm.observe(sample, assess=False)  # the backend assesses once the playhead stops
                self._samples += 1
        self.time = when
        return changed

    def sample_index_at(self, when: float) -> int:
        """How many samples lie at or before `when`."""
        return bisect_right(self._sample_times, when)


# --------------------------------------------------------------------------- listing


def _head_and_tail(path: Path, tail: int = 65536) -> tuple[bytes, bytes]:
    with path.open("rb") as f:
        head = f.readline(1 << 20)
        size = f.seek(0, 2)
        f.seek(max(0, size - tail))
        return head, f.read()


def list_recordings(directory: Path | None = None, limit: int = 20) -> list[tuple[Path, str]]:
    """The newest recordings in the directory, each with one line: VM, start, how it ended.

    Reads only each file's first line and its end, so a directory of long recordings lists fast.
    """
    import time

    directory = Path(directory or default_recordings_dir())
    try:
        paths = [p for p in directory.iterdir() if p.suffix == ".ndjson" and p.is_file()]
    except OSError:
        return []
    paths.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    out: list[tuple[Path, str]] = []
    for path in paths[: max(0, limit)]:
        try:
            head, tail = _head_and_tail(path)
            header = json.loads(head)
        except (OSError, ValueError):
            continue
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            continue
        summary = None
        for raw in reversed(tail.splitlines()):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("type") == "summary":
                summary = obj
            break
        started = _num(header.get("started"))
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started is not None else "?"
        how = summary_text(summary) if summary is not None else "no summary (still running, or interrupted)"
        out.append((path, f"{header.get('name') or header.get('vm')} {when}: {how}"))
    return out
