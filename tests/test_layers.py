"""The model and the backend never import Textual (nor does the lab or the simulator).

Checked in a fresh interpreter, so nothing imported by another test can hide a leak.
"""

import subprocess
import sys

import pytest

PURE_PACKAGES = ["migtui.model", "migtui.backend.qmp", "migtui.lab", "migtui.sim", "migtui.cli", "migtui.record",
                 "migtui.metrics"]


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_package_does_not_import_textual(package):
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for m in pkgutil.walk_packages(getattr(pkg, '__path__', []), pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'textual' or n.startswith(('textual.', 'textual_plotext', 'plotext')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{package} pulled in: {out.stdout.strip()}"


def test_model_does_no_io():
    """The model is pure: no asyncio, sockets or qemu.qmp."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import migtui.model as pkg\n"
        "for m in pkgutil.walk_packages(pkg.__path__, 'migtui.model.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(','.join(sorted(n for n in sys.modules if n.split('.')[0] in ('asyncio', 'qemu', 'socket'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
