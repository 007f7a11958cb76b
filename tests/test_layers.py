"""The model and the backend never import Textual (nor does the lab or the simulator).

Checked in a fresh interpreter, so nothing imported by another test can hide a leak.
"""

import subprocess
import sys

import pytest

PURE_PACKAGES = ["migtui.model", "migtui.backend", "migtui.lab", "migtui.sim", "migtui.cli", "migtui.record",
                 "migtui.metrics", "migtui.present"]


def _fresh(code: str) -> str:
    """What ``code`` prints in a fresh interpreter (it must succeed)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


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
    printed = _fresh(code)
    assert printed == "", f"{package} pulled in: {printed}"


def test_model_does_no_io():
    """The model is pure: no asyncio, sockets or qemu.qmp."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import migtui.model as pkg\n"
        "for m in pkgutil.walk_packages(pkg.__path__, 'migtui.model.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(','.join(sorted(n for n in sys.modules if n.split('.')[0] in ('asyncio', 'qemu', 'socket'))))\n"
    )
    printed = _fresh(code)
    assert printed == ""


def test_graph_scaling_is_pure():
    """The graphs' scaling (axes, units, downsampling) imports neither Textual nor plotext nor Rich.

    Loaded from its file, so the graphs package (which is Textual) is not imported around it.
    """
    code = (
        "import importlib.util, sys\n"
        "import migtui\n"
        "path = migtui.__path__[0] + '/ui/widgets/graphs/scale.py'\n"
        "spec = importlib.util.spec_from_file_location('graph_scale', path)\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = mod  # dataclasses look their module up\n"
        "spec.loader.exec_module(mod)\n"
        "assert mod.downsample([1.0, 2.0, 3.0], 2) == [1.0, 3.0]\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('textual', 'textual_plotext', 'plotext', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    printed = _fresh(code)
    assert printed == "", f"graphs/scale.py pulled in: {printed}"
