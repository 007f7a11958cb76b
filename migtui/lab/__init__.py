"""The migration lab: throwaway QEMU source/destination pairs for migtui.

Stands apart from the rest of migtui: it imports neither textual nor
migtui.backend.qmp, only the standard library.
"""

from migtui.lab.guest import DIRTY_END, DIRTY_START, READY_MARKER, build_dirty_guest
from migtui.lab.lab import Lab, run_lab_no_ui
from migtui.lab.qemu import (
    QEMU_ENV,
    QEMU_MISSING_MESSAGE,
    QemuError,
    QemuMissing,
    QemuVM,
    check_qemu,
    find_qemu,
    kvm_usable,
    qemu_version,
)

__all__ = [
    "DIRTY_END",
    "DIRTY_START",
    "QEMU_ENV",
    "QEMU_MISSING_MESSAGE",
    "READY_MARKER",
    "Lab",
    "QemuError",
    "QemuMissing",
    "QemuVM",
    "build_dirty_guest",
    "check_qemu",
    "find_qemu",
    "kvm_usable",
    "qemu_version",
    "run_lab_no_ui",
]
