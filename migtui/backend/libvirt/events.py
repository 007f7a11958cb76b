"""libvirt's event loop, run on a thread of its own, and its callbacks handed to asyncio.

Why a thread and not libvirtaio: libvirt takes one event-loop implementation per process,
for good, and libvirtaio's is bound to one asyncio loop (registered on any other, no event
ever arrives). migtui runs several loops in one process (the console's, each test's, a
`migtui serve` visit), so libvirt's default implementation runs on a daemon thread here, and
each callback is passed to the loop of the backend that registered it with
call_soon_threadsafe. libvirt calls themselves never run on that thread or on the loop: a
blocking call there would stall every event and keepalive (see docs/libvirt.md, "threads").
"""

from __future__ import annotations

import threading

__all__ = ["ensure_event_thread", "import_libvirt", "LibvirtMissing"]

_lock = threading.Lock()
_thread: list[threading.Thread] = []  # the one event thread, once started (process-wide, as libvirt's impl is)


class LibvirtMissing(RuntimeError):
    """libvirt-python is not installed: one line saying how to get it."""


def import_libvirt():
    try:
        import libvirt
    except ImportError:
        raise LibvirtMissing(
            "libvirt targets need libvirt-python: apt-get install libvirt-dev pkg-config gcc python3-dev, "
            "then pip install 'migtui[libvirt]'") from None
    return libvirt


def _quiet(_ctx, _err) -> None:
    """libvirt prints every error to stderr by default, over the console: migtui reports them itself."""


def ensure_event_thread() -> None:
    """Register libvirt's default event loop and run it on a daemon thread, once per process.

    Must run before the first connection is opened: events and keepalives need it.
    """
    libvirt = import_libvirt()
    with _lock:
        if _thread:
            return
        libvirt.registerErrorHandler(_quiet, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        thread = threading.Thread(target=run, name="migtui-libvirt-events", daemon=True)
        thread.start()
        _thread.append(thread)
