"""Record every migration to NDJSON, one file per migration, for post-mortems.

The recorder is a backend listener (no Textual): it sees every sample, event
and action of every VM and writes, per migration,

    {"type": "header", "format": "migtui-recording", "vm", "name", "endpoint", "backend" (qmp or
     libvirt), "host" (libvirt), "qemu", "dialect",
     "role", "run-state", "started", "parameters", "capabilities", ...}
    {"type": "sample", "vm", "time", "migration": {query-migrate as returned}, "derived": {...},
     "run-state" (when it changed), "problems" (when the reply had some)}
    {"type": "event", "vm", "time", "event", "data"}
    {"type": "action", "vm", "time", "command", "arguments", "ok", "result"}
    {"type": "settings", "vm", "time", "parameters", "capabilities"}   (when they change)
    {"type": "summary", "vm", "time", "ended-by", "status", "error-desc", "total-time-ms", ...}

A migration starts when a VM's status goes into an in-flight state (setup,
active, ...; or when migtui first sees it in flight; or, for one over before
migtui sampled it in flight, at a finished status right after a `migrate` or
QEMU's setup event) and ends at completed,
failed or cancelled, when the VM disconnects, when a new migration replaces it,
or when the recorder closes. Events and actions that came just before the
first in-flight sample (the `migrate` command, MIGRATION setup) are kept and
written after the header.

Files are opened append-only, each line written with one write(2) (so it is on
disk when the listener returns), 0600 in a 0700 directory. Cost per sample is
one json.dumps of that sample: nothing already written is serialised again,
and the summary is kept up to date incrementally.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

from migtui import __version__
from migtui.model.derived import MigrationTracker
from migtui.model.sample import MigrationSample
from migtui.model.units import format_bytes, format_ms, format_rate
from migtui.model.vm import Connection, VMState
from migtui.backend.audit import redact
from migtui.backend.messages import ActionResult, BackendMessage, Listener, VMEvent, VMUpdated
from migtui.record.retention import Pruned, Retention, prune_recordings

__all__ = [
    "FORMAT",
    "VERSION",
    "Finished",
    "Recorder",
    "SummaryBuilder",
    "default_recordings_dir",
    "summarize",
    "summary_text",
    "zero_times",
]

FORMAT = "migtui-recording"
VERSION = 1
PENDING_MAX = 32  # events/actions kept per idle VM, waiting for a migration to start
PENDING_SECONDS = 30.0  # ... and for at most this long before its first in-flight sample
ZERO_TIME_REPLIES = 5  # completed-with-zero-times replies to wait through (as the session re-asks)
MAX_OPEN_FILES = 64  # descriptors kept open across writes; a fleet of migrations reopens the rest

_log = logging.getLogger(__name__)


def default_recordings_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "migtui" / "recordings"


# --------------------------------------------------------------------------- summary


def _sum(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


class SummaryBuilder:
    """The summary of one migration, kept up to date sample by sample in O(1) memory."""

    def __init__(self) -> None:
        self._tracker = MigrationTracker(history_len=16)  # throughput and dirty rate, as the console computes them
        self.samples = 0
        self.first: MigrationSample | None = None
        self.last: MigrationSample | None = None
        self.bytes_sent: float | None = None
        self.passes: int | None = None
        self.setup_ms: float | None = None
        self.total_ms: float | None = None
        self.peak_throughput: float | None = None
        self.peak_dirty: float | None = None
        self.error_desc: str | None = None
        self.downtime_ms: float | None = None
        self._total_at: float | None = None  # when QEMU last reported total-time

    def add(self, sample: MigrationSample) -> None:
        derived = self._tracker.add(sample)
        self.samples += 1
        if self.first is None:
            self.first = sample
        self.last = sample
        sent = _sum(sample.get("ram", "transferred"), sample.get("disk", "transferred"))
        if sent is not None:
            self.bytes_sent = sent
        if derived.passes is not None:
            self.passes = derived.passes
        glitch = zero_times(sample)  # QEMU 7.2's first reply after completion: every time is 0
        setup = sample.get(None, "setup-time")
        if setup is not None and not glitch:
            self.setup_ms = setup
        total = sample.get(None, "total-time")
        if total is not None and not glitch:
            self.total_ms = total
            self._total_at = sample.time
        downtime = sample.get(None, "downtime")
        if downtime is not None and not glitch:
            self.downtime_ms = downtime
        self.peak_throughput = _max(self.peak_throughput, derived.throughput_bps)
        self.peak_dirty = _max(self.peak_dirty, derived.dirty_bytes_per_s)
        if sample.error_desc:
            self.error_desc = sample.error_desc

    def result(self) -> dict[str, Any]:
        first, last = self.first, self.last
        wall = (last.time - first.time) if first is not None and last is not None else None
        total_ms = self.total_ms if self.total_ms is not None else (None if wall is None else wall * 1000)
        if self.total_ms is not None and last is not None and self._total_at is not None and last.time > self._total_at:
            # The last replies had no total-time (QEMU 1.4 once it completed or failed): add the time since.
            total_ms = round(self.total_ms + (last.time - self._total_at) * 1000)
        average = None
        if self.bytes_sent is not None and total_ms:
            average = self.bytes_sent / (total_ms / 1000)
        peak = self.peak_throughput
        if average is not None and (peak is None or average > peak):
            # Some stretch of the migration ran at least at its average; samples too few or too
            # far apart (a short migration: setup, then completed) would show a lower peak.
            peak = average
        return {
            "status": last.status if last is not None else None,
            "error-desc": self.error_desc,
            "started": first.time if first is not None else None,
            "ended": last.time if last is not None else None,
            "samples": self.samples,
            "total-time-ms": total_ms,  # QEMU's total-time; the span of the samples when it has none
            "wall-time-s": None if wall is None else round(wall, 3),
            "setup-time-ms": self.setup_ms,
            "downtime-ms": self.downtime_ms,
            "bytes-sent": self.bytes_sent,  # ram + disk transferred
            "passes": self.passes,
            "average-throughput-bps": None if average is None else round(average),
            "peak-throughput-bps": None if peak is None else round(peak),
            "peak-dirty-bytes-per-s": None if self.peak_dirty is None else round(self.peak_dirty),
        }


def zero_times(sample: MigrationSample) -> bool:
    """QEMU 7.2 can answer the first query after completion with every time zero; the next reply is right."""
    return sample.status == "completed" and sample.get(None, "total-time") == 0


def summarize(samples: Iterable[MigrationSample]) -> dict[str, Any]:
    """The summary of one migration from its samples, in order: a pure function."""
    builder = SummaryBuilder()
    for sample in samples:
        builder.add(sample)
    return builder.result()


def summary_text(summary: dict[str, Any]) -> str:
    """One line for an operator: how it ended, how long, what it cost."""
    status = summary.get("status") or "unknown"
    total = summary.get("total-time-ms")
    parts = [f"{status} after {format_ms(total)}" if status != "completed" else f"completed in {format_ms(total)}"]
    if summary.get("error-desc"):
        parts[0] += f": {summary['error-desc']}"
    if summary.get("setup-time-ms") is not None:
        parts.append(f"setup {format_ms(summary['setup-time-ms'])}")
    if summary.get("downtime-ms") is not None:
        parts.append(f"downtime {format_ms(summary['downtime-ms'])}")
    if summary.get("bytes-sent") is not None:
        sent = f"{format_bytes(summary['bytes-sent'])} sent"
        if summary.get("passes") is not None:
            sent += f" in {summary['passes']} pass{'es' if summary['passes'] != 1 else ''}"
        parts.append(sent)
    if summary.get("average-throughput-bps") is not None:
        parts.append(f"average {format_rate(summary['average-throughput-bps'])}")
    if summary.get("peak-throughput-bps") is not None:
        parts.append(f"peak {format_rate(summary['peak-throughput-bps'])}")
    if summary.get("peak-dirty-bytes-per-s") is not None:
        parts.append(f"peak dirty {format_rate(summary['peak-dirty-bytes-per-s'])}")
    ended_by = summary.get("ended-by")
    if ended_by and ended_by != "status":
        parts.append(f"recording ended: {ended_by}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- recorder


class _Session(Protocol):
    """What the recorder reads of a VM: a migtui.backend.api.VMHandle has it (a test may give less)."""

    key: str
    vm: VMState


@dataclass(frozen=True)
class Finished:
    """A migration whose recording ended: for the console to show."""

    vm: str  # the session key
    name: str
    path: Path | None  # None when the file could not be written (in full: see Recorder.error)
    summary: dict[str, Any]

    @property
    def text(self) -> str:
        return f"{self.name}: {summary_text(self.summary)}"


@dataclass
class _Track:
    """One VM's open recording."""

    path: Path | None  # None: it could not be created, nothing is written
    shared: bool = False  # the one --record FILE
    name: str = ""
    summary: SummaryBuilder = field(default_factory=SummaryBuilder)
    last_sample: MigrationSample | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, bool] = field(default_factory=dict)
    run_state: str | None = None
    zero_replies: int = 0  # completed replies with zero times (QEMU 7.2) seen so far


def _dumps(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=str, allow_nan=False) + "\n").encode()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]", "_", name)[:64].lstrip(".") or "vm"


def _make_private_dir(directory: Path) -> None:
    """Create directory and missing parents as 0700; directories that exist are left alone."""
    missing = []
    for level in [directory, *directory.parents]:
        if level.exists():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:
            pass
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")


class Recorder:
    """Writes every migration it is told about; see the module docstring for the format.

    directory: one file per migration in it (default $XDG_STATE_HOME/migtui/recordings).
    file: everything into this one file instead (lines carry "vm"; a header opens each migration).
    lookup: key -> session (e.g. Fleet.get), so `listener` can be given to sessions directly;
      without it call `observe(session, message)`.
    on_finish: called with each Finished recording (also kept in `finished`).
    retention: old recordings in `directory` are pruned when the recorder starts (default: 30 days,
      500 MiB; None: never); what was removed is in `pruned`. A --record FILE is never pruned.
    """

    def __init__(
        self,
        directory: Path | None = None,
        file: Path | None = None,
        *,
        lookup: Callable[[str], _Session | None] | None = None,
        on_finish: Callable[[Finished], None] | None = None,
        clock: Callable[[], float] = time.time,
        retention: Retention | None = Retention(),
    ) -> None:
        if directory is not None and file is not None:
            raise ValueError("give a directory or a file, not both")
        self.file = Path(file).expanduser() if file is not None else None
        self.directory = None if self.file is not None else Path(directory or default_recordings_dir()).expanduser()
        self.lookup = lookup
        self.on_finish = on_finish
        self.clock = clock
        self.error: str | None = None  # why the last write failed, for the operator
        self.finished: deque[Finished] = deque(maxlen=100)
        self.paths: list[Path] = []  # every file this recorder created or appended to, in order
        self._tracks: dict[str, _Track] = {}
        self._pending: dict[str, deque[tuple[float, dict[str, Any]]]] = {}
        self._ended_at: dict[str, float] = {}  # time of each VM's last recorded sample: older news is not new
        self._shared_fd: int | None = None
        self._fds: OrderedDict[Path, int] = OrderedDict()  # least recently written first
        self._closed = False
        self.pruned: Pruned | None = None
        if self.directory is not None and retention is not None:
            self.pruned = prune_recordings(self.directory, retention)
            if self.pruned.error:
                _log.warning("recordings: %s", self.pruned.error)

    # ---- the listener side -------------------------------------------------

    def listener(self, message: BackendMessage) -> None:
        """A backend Listener; needs `lookup` to find the message's session."""
        session = self.lookup(message.vm) if self.lookup is not None else None
        if session is not None:
            self.observe(session, message)

    def tee(self, other: Listener | None) -> Listener:
        """A listener that records, then passes the message on to `other`."""

        def both(message: BackendMessage) -> None:
            try:
                self.listener(message)
            except Exception:  # recording must never cost the console its updates
                _log.exception("recorder failed")
            if other is not None:
                other(message)

        return both

    def observe(self, session: _Session, message: BackendMessage) -> Finished | None:
        """Record what this message tells about the session; returns the summary of a migration that ended.

        Never raises: a recorder bug costs the recording, not the console (the reason is in `error`).
        """
        if self._closed:
            return None
        try:
            return self._observe(session, message)
        except Exception as err:  # noqa: BLE001
            _log.exception("recorder failed")
            self.error = f"recording failed: {type(err).__name__}: {err}"[:200]
            return None

    def _observe(self, session: _Session, message: BackendMessage) -> Finished | None:
        key = session.key
        if isinstance(message, VMUpdated):
            # What changed travels with the message; older callers (and tests) send only the word.
            if message.what == "sample":
                return self._on_sample(session, message.sample)
            connection = message.connection or session.vm.connection
            if message.what == "connection" and connection == Connection.DISCONNECTED:
                if key in self._tracks:
                    reason = message.reason if message.connection is not None else session.vm.reason
                    return self._finish(session, f"disconnected: {reason or 'connection lost'}")
            elif message.what == "settings" and key in self._tracks:
                self._write_settings(session, self._tracks[key], message.parameters, message.capabilities)
            return None
        if isinstance(message, VMEvent):
            line = {"type": "event", "vm": key, "time": message.time, "event": message.event, "data": message.data}
            self._line(key, message.time, line)
        elif isinstance(message, ActionResult):
            line = {
                "type": "action", "vm": key, "time": message.time, "command": message.command,
                "arguments": redact(message.arguments), "ok": message.ok,
                "result": redact(message.result) if message.ok else str(message.result),
            }
            self._line(key, message.time, line)
        return None

    def path_for(self, key: str) -> Path | None:
        """The file the VM's current migration is being recorded to."""
        track = self._tracks.get(key)
        return track.path if track is not None else None

    @property
    def recording(self) -> list[str]:
        """Keys of the VMs whose migration is being recorded now."""
        return list(self._tracks)

    def close(self) -> list[Finished]:
        """End every open recording (with its summary) and close the files."""
        if self._closed:
            return []
        done = []
        for key in list(self._tracks):
            track = self._tracks[key]
            done.append(self._finish_track(key, track.name or key, track, "recorder closed"))
        if self._shared_fd is not None:
            _close(self._shared_fd)
            self._shared_fd = None
        for path in list(self._fds):
            _close(self._fds.pop(path))
        self._closed = True
        return done

    # ---- migrations --------------------------------------------------------

    def _line(self, key: str, when: float, line: dict[str, Any]) -> None:
        track = self._tracks.get(key)
        if track is not None:
            self._write(track, line)
            return
        pending = self._pending.setdefault(key, deque(maxlen=PENDING_MAX))
        pending.append((when, line))

    def _on_sample(self, session: _Session, sample: MigrationSample | None = None) -> Finished | None:
        key = session.key
        if sample is None:
            sample = session.vm.sample
        if sample is None:
            return None
        track = self._tracks.get(key)
        if track is not None and sample is track.last_sample:
            return None  # told twice about the same sample
        finished = None
        if track is not None and (sample.status in ("none", "unknown") or _restarted(track.last_sample, sample)):
            reason = "new migration" if sample.in_flight else f"status {sample.status}"
            finished = self._finish(session, reason)
            track = None
        if track is None:
            if not sample.in_flight and not (sample.finished and self._just_started(key, sample.time)):
                if sample.finished or sample.status == "none":
                    self._pending.pop(key, None)  # what came before this idle state belongs to no migration
                return finished
            track = self._start(session, sample)
        self._write_sample(session, track, sample)
        if sample.finished:
            if zero_times(sample) and track.zero_replies < ZERO_TIME_REPLIES:
                track.zero_replies += 1  # the session asks again at once: the summary waits for real times
                return finished
            return self._finish(session, "status")
        return finished

    def _just_started(self, key: str, now: float) -> bool:
        """A migration began (migtui's `migrate`, or QEMU's setup event) since the last one ended:
        a finished first sample is that migration, over before migtui sampled it in flight."""
        after = max(self._ended_at.get(key, float("-inf")), now - PENDING_SECONDS)
        for when, line in self._pending.get(key, ()):
            if when <= after:
                continue
            if line["type"] == "action" and line.get("command") == "migrate" and line.get("ok"):
                return True
            if line["type"] == "event" and line.get("event") == "MIGRATION" \
                    and isinstance(line.get("data"), dict) and line["data"].get("status") == "setup":
                return True
        return False

    def _start(self, session: _Session, sample: MigrationSample) -> _Track:
        vm = session.vm
        key = session.key
        track = self._open(key, sample.time)
        track.name = vm.name
        track.parameters = dict(vm.parameters)
        track.capabilities = dict(vm.capabilities)
        track.run_state = vm.run_state
        self._tracks[key] = track
        header = {
            "type": "header", "format": FORMAT, "version": VERSION, "migtui": __version__,
            "vm": key, "name": vm.name, "endpoint": str(vm.endpoint),
            # Which backend saw it: QMP directly, or libvirt (and on which host).
            "backend": "libvirt" if vm.endpoint.kind == "libvirt" else "qmp",
            **({"host": vm.endpoint.host} if vm.endpoint.kind == "libvirt" else {}),
            "qemu": vm.qemu_version,
            "dialect": vm.dialect, "role": "incoming" if vm.run_state == "inmigrate" else "outgoing",
            "run-state": vm.run_state, "started": sample.time,
            "parameters": redact(track.parameters), "capabilities": track.capabilities,
        }
        self._write(track, header)
        after = max(self._ended_at.get(key, float("-inf")), sample.time - PENDING_SECONDS)
        for when, line in self._pending.pop(key, ()):
            if when > after:
                self._write(track, line)
        return track

    def _write_sample(self, session: _Session, track: _Track, sample: MigrationSample) -> None:
        line: dict[str, Any] = {
            "type": "sample", "vm": session.key, "time": sample.time, "migration": sample.info,
            "derived": session.vm.derived.to_json(),
        }
        if sample.problems:
            line["problems"] = list(sample.problems)
        if session.vm.run_state != track.run_state:  # paused for the switch-over, postmigrate after
            line["run-state"] = track.run_state = session.vm.run_state
        self._write(track, line)
        track.summary.add(sample)
        track.last_sample = sample

    def _write_settings(self, session: _Session, track: _Track, parameters: Mapping[str, Any] | None = None,
                        capabilities: Mapping[str, bool] | None = None) -> None:
        vm = session.vm
        parameters = vm.parameters if parameters is None else parameters
        capabilities = vm.capabilities if capabilities is None else capabilities
        if parameters == track.parameters and capabilities == track.capabilities:
            return
        track.parameters = dict(parameters)
        track.capabilities = dict(capabilities)
        self._write(track, {"type": "settings", "vm": session.key, "time": self.clock(),
                            "parameters": redact(track.parameters), "capabilities": track.capabilities})

    def _finish(self, session: _Session, ended_by: str) -> Finished:
        key = session.key
        track = self._tracks[key]
        return self._finish_track(key, session.vm.name, track, ended_by)

    def _finish_track(self, key: str, name: str, track: _Track, ended_by: str) -> Finished:
        del self._tracks[key]
        summary = {"type": "summary", "vm": key, "time": self.clock(), "ended-by": ended_by, **track.summary.result()}
        self._write(track, summary)
        if track.path is not None and not track.shared and track.path in self._fds:
            _close(self._fds.pop(track.path))
        if track.last_sample is not None:
            self._ended_at[key] = track.last_sample.time
        self._pending.pop(key, None)
        done = Finished(key, name, track.path, {k: v for k, v in summary.items() if k not in ("type", "vm")})
        self.finished.append(done)
        if self.on_finish is not None:
            try:
                self.on_finish(done)
            except Exception:
                _log.exception("on_finish failed")
        return done

    # ---- files -------------------------------------------------------------

    def _open(self, key: str, started: float) -> _Track:
        """A new file for a migration (or the shared file); on failure a track that writes nothing."""
        try:
            if self.file is not None:
                if self._shared_fd is None:
                    if not self.file.parent.exists():
                        _make_private_dir(self.file.parent)
                    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                    self._shared_fd = os.open(self.file, flags, 0o600)
                    self.paths.append(self.file)
                return _Track(self.file, shared=True)
            assert self.directory is not None
            _make_private_dir(self.directory)
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
            base = f"{_safe_name(key)}-{stamp}"
            # O_EXCL and O_NOFOLLOW: never append to a file or a symlink someone put there first.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            for n in range(1, 1000):
                path = self.directory / (f"{base}.ndjson" if n == 1 else f"{base}-{n}.ndjson")
                try:
                    fd = os.open(path, flags, 0o600)
                except FileExistsError:
                    continue
                self.paths.append(path)
                self._keep_open(path, fd)
                return _Track(path)
            raise FileExistsError(f"too many recordings named {base}*")
        except OSError as err:
            where = self.file or self.directory
            self.error = f"recording {where}: {err.strerror or err}"
            return _Track(None)

    def _keep_open(self, path: Path, fd: int) -> None:
        self._fds[path] = fd
        while len(self._fds) > MAX_OPEN_FILES:
            _, old = self._fds.popitem(last=False)
            _close(old)

    def _fd(self, track: _Track) -> int | None:
        if track.path is None:
            return None
        if track.shared:
            return self._shared_fd
        fd = self._fds.get(track.path)
        if fd is not None:
            self._fds.move_to_end(track.path)
            return fd
        # Closed to stay under MAX_OPEN_FILES: reopen the file we created (still append-only, still ours).
        fd = os.open(track.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._keep_open(track.path, fd)
        return fd

    def _write(self, track: _Track, line: dict[str, Any]) -> None:
        if track.path is None:
            return
        try:
            data = _dumps(line)
        except (TypeError, ValueError) as err:  # NaN or a value json cannot take: skip the line, keep recording
            self.error = f"recording {track.path}: a {line.get('type')} line could not be written: {err}"
            return
        try:
            fd = self._fd(track)
            if fd is None:
                return
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as err:
            self.error = f"recording {track.path}: {err.strerror or err}; recording of this migration stopped"
            if not track.shared and track.path in self._fds:
                _close(self._fds.pop(track.path))
            track.path = None


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _restarted(prev: MigrationSample | None, cur: MigrationSample) -> bool:
    """Counters went backwards: QEMU started a new migration we did not see end."""
    if prev is None or not cur.in_flight:
        return False
    if prev.finished:
        return True
    for section, key in ((None, "total-time"), ("ram", "transferred")):
        a, b = prev.get(section, key), cur.get(section, key)
        if a is not None and b is not None and b < a:
            return True
    return False
