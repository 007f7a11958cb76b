"""The import contract: which layer may import which, read from the source (every import,
lazy ones in functions too), so a change that breaks a layer fails here before it ships.

- the model imports only the standard library;
- a backend imports no Textual and nothing of the console, the command line, the lab or the simulator;
- the console, the recorder and the command line reach backends through migtui.backend.api
  (and its errors and messages), never the QMP backend's internals, except the few modules
  that choose a backend (listed, each with why);
- the recorder never imports the console;
- the model keeps no state at module level (a tracker owns its memo).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "migtui"
STDLIB = sys.stdlib_module_names

# The interface, which any layer may import.
BACKEND_API = ("migtui.backend.api", "migtui.backend.errors", "migtui.backend.messages", "migtui.backend.audit",
               "migtui.backend.wake")  # wake: the asyncio flag every loop here waits on

# Modules that choose a backend (construct it, or pass its options), and so may import it.
CHOOSES_A_BACKEND = {
    "migtui.cli": "the command line turns targets into backends",
    "migtui.screenshots": "starts a lab and a QMP backend for the console to draw",
    "migtui.ui.demo": "the demo builds its own world (simulated or lab VMs) and the QMP backend for it",
    "migtui.ui.replay": "a replay is the replay backend, by definition",
    "migtui.browser": "serves the console command line, whose backend it chooses",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, resolved to absolute names (relative imports included)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names.add(base)
            # `from migtui.backend import qmp` imports the module migtui.backend.qmp
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return names


def _in(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _chooses(module: str) -> bool:
    return any(_in(module, chooser) for chooser in CHOOSES_A_BACKEND)


def _layer(prefix: str) -> list[str]:
    return sorted(m for m in MODULES if _in(m, prefix))


def test_the_contract_sees_every_layer():
    """A rename must not make the checks below vacuous."""
    for layer in ("migtui.model", "migtui.backend.qmp", "migtui.backend.replay", "migtui.backend.libvirt",
                  "migtui.ui", "migtui.record", "migtui.cli"):
        assert _layer(layer), f"no modules under {layer}"
    assert "migtui.backend.api" in MODULES
    assert "migtui.backend.qmp.session" in _imports(MODULES["migtui.backend.qmp.backend"])


@pytest.mark.parametrize("module", _layer("migtui.model"))
def test_the_model_imports_only_the_standard_library(module):
    bad = sorted(n for n in _imports(MODULES[module])
                 if n.split(".")[0] not in STDLIB and not _in(n, "migtui.model") and n != "__future__")
    assert not bad, f"{module} imports {bad}: the model is pure data and computation"


# Calls that make a container someone can change; a module-level one is state every VM shares.
MUTABLE_CALLS = {"dict", "list", "set", "bytearray", "defaultdict", "OrderedDict", "Counter", "deque", "array",
                 "WeakKeyDictionary", "WeakValueDictionary", "WeakSet", "ChainMap"}
MUTABLE_LITERALS = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)


def _module_state(path: Path) -> list[str]:
    """Module-level names bound to a mutable container, and functions that rebind a global."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) else None
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if value is None or names == ["__all__"]:  # __all__ is a list by convention, read by import *
            continue
        call = value.func if isinstance(value, ast.Call) else None
        called = call.id if isinstance(call, ast.Name) else call.attr if isinstance(call, ast.Attribute) else None
        if isinstance(value, MUTABLE_LITERALS) or called in MUTABLE_CALLS:
            found.append(f"{', '.join(names) or ast.unparse(node)} (line {node.lineno})")
    found += [f"global {', '.join(n.names)} (line {n.lineno})" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    return found


@pytest.mark.parametrize("module", _layer("migtui.model"))
def test_the_model_keeps_no_module_level_state(module):
    """A tracker owns its memo; tables are frozen (tuples, frozensets, read-only mappings)."""
    state = _module_state(MODULES[module])
    assert not state, f"{module} holds state at module level: {state}; put it on the object it belongs to"


def test_the_state_check_sees_what_it_looks_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import weakref\n__all__ = ['x']\nTABLE = {'a': 1}\n_SEEN: list[str] = []\n"
                     "_MEMOS = weakref.WeakKeyDictionary()\nOK = frozenset({1})\nFINE = (1, 2)\n"
                     "def f():\n    global OK\n")
    assert [s.split(" ")[0] for s in _module_state(probe)] == ["TABLE", "_SEEN", "_MEMOS", "global"]


@pytest.mark.parametrize("module", _layer("migtui.backend"))
def test_a_backend_imports_no_textual_and_no_console(module):
    bad = sorted(n for n in _imports(MODULES[module])
                 if _in(n, "textual", "textual_plotext", "plotext", "rich", "migtui.ui", "migtui.cli", "migtui.lab",
                        "migtui.sim", "migtui.browser", "migtui.metrics"))
    assert not bad, f"{module} imports {bad}"


def test_the_interface_imports_no_backend():
    bad = sorted(n for n in _imports(MODULES["migtui.backend.api"])
                 if _in(n, "migtui.backend.qmp", "migtui.backend.replay", "migtui.backend.libvirt")
                 or n.split(".")[0] in ("qemu", "libvirt"))
    assert not bad, f"backend.api imports {bad}"


_BACKENDS = ("migtui.backend.qmp", "migtui.backend.replay", "migtui.backend.libvirt")


@pytest.mark.parametrize("backend", _BACKENDS)
def test_backends_do_not_import_each_other(backend):
    others = [b for b in _BACKENDS if b != backend]
    for module in _layer(backend):
        bad = sorted(n for n in _imports(MODULES[module]) if _in(n, *others))
        assert not bad, f"{module} imports {bad}: a backend reaches others only through migtui.backend.api"


@pytest.mark.parametrize("module", _layer("migtui.backend.libvirt"))
def test_the_libvirt_backend_never_takes_a_domains_monitor(module):
    """libvirt holds each domain's QMP monitor: migtui must not open it (QEMU serves one client) or
    pass commands through libvirt (qemu-monitor-command taints the domain, custom-monitor)."""
    source = MODULES[module].read_text()
    bad = sorted(n for n in _imports(MODULES[module]) if n.split(".")[0] in ("qemu", "libvirt_qemu"))
    assert not bad, f"{module} imports {bad}"
    for word in ("qemuMonitorCommand", "qemu-monitor-command", "qemuAgentCommand", ".qmp"):
        assert word not in source, f"{module} mentions {word}"


@pytest.mark.parametrize("module", _layer("migtui.ui") + _layer("migtui.record") + _layer("migtui.cli")
                         + ["migtui.metrics", "migtui.autopilot", "migtui.drain"])
def test_consumers_reach_backends_only_through_the_interface(module):
    if _chooses(module):
        pytest.skip(CHOOSES_A_BACKEND[next(c for c in CHOOSES_A_BACKEND if _in(module, c))])
    bad = sorted(n for n in _imports(MODULES[module])
                 if _in(n, "migtui.backend") and n != "migtui.backend" and not _in(n, *BACKEND_API))
    assert not bad, f"{module} imports backend internals {bad}; use migtui.backend.api"


@pytest.mark.parametrize("module", _layer("migtui.record") + ["migtui.autopilot", "migtui.drain"])
def test_the_recorder_and_the_autopilot_never_import_the_console(module):
    bad = sorted(n for n in _imports(MODULES[module]) if _in(n, "migtui.ui", "textual", "migtui.cli"))
    assert not bad, f"{module} imports {bad}"


def test_the_app_and_its_screens_do_not_import_each_other():
    app = _imports(MODULES["migtui.ui.app"])
    for screen in _layer("migtui.ui.screens"):
        assert not ("migtui.ui.app" in _imports(MODULES[screen]) and screen in app), \
            f"migtui.ui.app and {screen} import each other"
