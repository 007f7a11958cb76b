"""Retention of the recordings directory: drop recordings past an age or beyond a total size.

Run once when a recorder starts. Cost: one directory listing and one lstat per
entry; only a file about to be deleted is opened (to check that it is a
migtui recording and that it is not still being written). Rules:

* only files named as the recorder names them (NAME-YYYYMMDD-HHMMSS[-N].ndjson),
  regular files (a symlink is never followed nor removed), owned by this user,
  whose first line is a migtui recording header, are ever deleted; anything
  else in the directory is left alone and not counted;
* the newest recording is always kept;
* a recording without a summary at its end that changed in the last
  IN_PROGRESS_SECONDS is taken as still being written (another migtui) and kept;
* then, newest first: a recording older than `keep_days`, or one that takes the
  total over `max_bytes`, is deleted.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_KEEP_DAYS", "DEFAULT_MAX_MB", "Retention", "Pruned", "prune_recordings", "RECORDING_NAME"]

DEFAULT_KEEP_DAYS = 30
DEFAULT_MAX_MB = 500
KEEP_NEWEST = 1
IN_PROGRESS_SECONDS = 24 * 3600.0
RECORDING_NAME = re.compile(r"[A-Za-z0-9_.@+-]+-\d{8}-\d{6}(?:-\d{1,3})?\.ndjson")
_HEADER = b'{"type":"header","format":"migtui-recording"'
_TAIL = 65536


@dataclass(frozen=True)
class Retention:
    """How long and how much to keep; None means no limit of that kind."""

    keep_days: float | None = DEFAULT_KEEP_DAYS
    max_bytes: int | None = DEFAULT_MAX_MB * 2**20

    @property
    def unlimited(self) -> bool:
        return self.keep_days is None and self.max_bytes is None


@dataclass
class Pruned:
    """What one pruning did."""

    removed: list[Path] = field(default_factory=list)
    freed: int = 0  # bytes
    kept: int = 0  # recordings left
    kept_bytes: int = 0
    error: str | None = None  # why it stopped early, in one line

    @property
    def text(self) -> str:
        from migtui.model.units import format_bytes

        line = f"removed {len(self.removed)} old recording(s), {format_bytes(self.freed)}; kept {self.kept}"
        return line + (f" ({self.error})" if self.error else "")


@dataclass
class _Entry:
    name: str
    size: int
    mtime: float
    inode: tuple[int, int]


def _list(dir_fd: int) -> list[_Entry]:
    uid = os.geteuid()
    entries = []
    with os.scandir(dir_fd) as it:
        for entry in it:
            if not RECORDING_NAME.fullmatch(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_uid != uid:
                continue
            entries.append(_Entry(entry.name, info.st_size, info.st_mtime, (info.st_dev, info.st_ino)))
    return entries


def _check(dir_fd: int, entry: _Entry, now: float) -> str:
    """'recording', 'in-progress' or 'foreign', from the file itself (opened without following links)."""
    try:
        fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return "foreign"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != entry.inode:
            return "foreign"  # replaced since the listing
        if os.pread(fd, len(_HEADER), 0) != _HEADER:
            return "foreign"
        if now - info.st_mtime < IN_PROGRESS_SECONDS:
            tail = os.pread(fd, _TAIL, max(0, info.st_size - _TAIL))
            last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
            if not last.startswith(b'{"type":"summary"'):
                return "in-progress"
        return "recording"
    except OSError:
        return "foreign"
    finally:
        os.close(fd)


def prune_recordings(
    directory: Path | str,
    retention: Retention = Retention(),
    *,
    now: float | None = None,
    in_use: frozenset[str] | set[str] = frozenset(),
) -> Pruned:
    """Apply `retention` to the recordings in `directory` (see the module docstring). Never raises.

    in_use: file names that must be kept whatever their age (a recorder's open files).
    """
    result = Pruned()
    if retention.unlimited:
        return result
    now = time.time() if now is None else now
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return result
    except OSError as err:
        result.error = f"cannot read {directory}: {err.strerror or err}"
        return result
    try:
        if os.fstat(dir_fd).st_uid != os.geteuid():
            result.error = f"{directory} is not ours; nothing pruned"
            return result
        entries = _list(dir_fd)
        entries.sort(key=lambda e: (e.mtime, e.name), reverse=True)
        max_age = None if retention.keep_days is None else retention.keep_days * 86400.0
        total = 0
        for index, entry in enumerate(entries):
            too_old = max_age is not None and now - entry.mtime > max_age
            too_big = retention.max_bytes is not None and total + entry.size > retention.max_bytes
            if index >= KEEP_NEWEST and entry.name not in in_use and (too_old or too_big):
                kind = _check(dir_fd, entry, now)
                if kind == "foreign":
                    continue  # not ours: neither removed nor counted
                if kind == "recording":
                    try:
                        os.unlink(entry.name, dir_fd=dir_fd)
                    except FileNotFoundError:
                        continue
                    except OSError as err:
                        result.error = f"cannot remove {entry.name}: {err.strerror or err}"
                    else:
                        result.removed.append(Path(directory) / entry.name)
                        result.freed += entry.size
                        continue
            total += entry.size
            result.kept += 1
        result.kept_bytes = total
    except OSError as err:
        result.error = f"cannot prune {directory}: {err.strerror or err}"
    finally:
        os.close(dir_fd)
    return result
