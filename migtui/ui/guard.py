"""An on-call console must not die of its own bug: report it, keep the screen up.

Handlers that draw from live data are wrapped: an exception there is written
with its traceback to the error log, shown as a one-line notification, and
the console carries on with the next update.
"""

from __future__ import annotations

import functools
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def error_log_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "migtui" / "errors.log"


def log_error(where: str, error: BaseException) -> str:
    """Append the traceback to the error log; says where it went, for a one-line message."""
    path = error_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} in {where}\n")
            log.write("".join(traceback.format_exception(error)))
        return f"details in {path}"
    except OSError:
        return "and the error log could not be written"


def report(app: Any, where: str, error: BaseException) -> None:
    where_logged = log_error(where, error)
    try:
        app.notify(f"internal error in {where}: {error!r:.120}; the console keeps running, {where_logged}",
                   severity="error", timeout=10)
    except Exception:
        pass


def keep_running(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - the point is to catch everything
            report(self.app, method.__qualname__, error)
            return None

    return wrapper  # type: ignore[return-value]
