"""A non-editable install (the wheel that `pip install .` and `pipx install .` build) runs the console.

The wheel is built from a copy of the checkout, installed into a fresh venv outside it, and run from a
directory outside it, so nothing can come from the checkout by accident.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab_fixtures import wait_until
from migtui.sim.serve import ROLES
from migtui.ui.themes import load_themes

ROOT = Path(__file__).resolve().parent.parent
TMUX_MISSING = "tmux is not installed (apt-get install tmux)"

if shutil.which("tmux") is None and os.environ.get("MIGTUI_REQUIRE_QEMU"):
    # CI sets this (and .ci/run installs tmux): there, a missing tool is a failure, never a silent skip.
    raise RuntimeError(f"MIGTUI_REQUIRE_QEMU is set but {TMUX_MISSING}")

# What a fresh clone holds; the rest is this checkout's own state (a stale build/ would leak into the wheel).
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".hypothesis", "snapshot_report.html")


@dataclass(frozen=True)
class Installed:
    venv: Path
    wheel: Path
    cwd: Path  # outside the checkout and the venv
    env: dict[str, str]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    source = base / "src"
    # symlinks=True: migtui/themes stays the link a clone has, as setuptools sees it in `pip install .`.
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base / "dist"),
                            str(source)], capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, built.stderr
    [wheel] = (base / "dist").glob("migtui-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=240)
    assert pip.returncode == 0, pip.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    cwd = base / "elsewhere"
    cwd.mkdir()
    return Installed(venv, wheel, cwd, env)


def test_the_wheel_carries_every_data_file_of_the_package(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    # Every non-Python file under migtui/ (through the themes link) is runtime data the wheel must hold.
    data = sorted(
        (Path(d) / f).relative_to(ROOT).as_posix()
        for d, dirs, files in os.walk(ROOT / "migtui", followlinks=True)
        if "__pycache__" not in Path(d).parts
        for f in files
        if not f.endswith((".py", ".pyc"))
    )
    assert "migtui/ui/migtui.tcss" in data
    assert {f"migtui/themes/{p.name}" for p in (ROOT / "themes").glob("*.toml")} <= set(data)
    assert [name for name in data if name not in names] == []


def test_installed_migtui_runs_from_the_venv_with_its_themes_and_css(installed: Installed) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = installed.run(str(installed.venv / "bin" / "migtui"), "--version")
    assert (out.returncode, out.stdout.strip()) == (0, f"migtui {version}"), out.stderr

    probe = (
        "import inspect, json, migtui\n"
        "from pathlib import Path\n"
        "from migtui.ui.app import MigtuiApp\n"
        "from migtui.ui.replay import ReplayApp\n"
        "from migtui.ui.themes import THEMES_DIR, load_themes\n"
        # Textual reads CSS_PATH relative to the file that defines the App class.
        "css = [Path(inspect.getfile(a)).with_name(a.CSS_PATH) for a in (MigtuiApp, ReplayApp)]\n"
        "print(json.dumps({'package': migtui.__file__, 'themes_dir': str(THEMES_DIR),\n"
        "                  'themes': sorted(load_themes()), 'css': [str(p) for p in css if p.is_file()]}))\n"
    )
    out = installed.run(str(installed.venv / "bin" / "python"), "-c", probe)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    venv = installed.venv.resolve()
    inside = [Path(p).resolve().is_relative_to(venv) for p in (found["package"], found["themes_dir"], *found["css"])]
    assert inside == [True] * 4, found  # the wheel's copies, not the checkout's files
    assert found["themes"] == sorted(load_themes(ROOT / "themes")), found


@pytest.mark.skipif(shutil.which("tmux") is None, reason=TMUX_MISSING)
async def test_installed_migtui_lab_sim_draws_the_fleet_and_q_quits(installed: Installed, tmp_path: Path) -> None:
    # A private tmux server: it inherits this environment, and other tmux users on the machine are untouched.
    # remain-on-exit keeps the pane after migtui exits, for its exit status and its last words.
    conf = tmp_path / "tmux.conf"
    conf.write_text("set -g remain-on-exit on\n")
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock"), "-f", str(conf)]
    env = dict(installed.env, XDG_RUNTIME_DIR=str(tmp_path))
    status_file = tmp_path / "status"
    # migtui's own exit status, written by the shell tmux runs it in: tmux's pane_dead_status was
    # seen empty for a pane that had died.
    command = (f"{shlex.quote(str(installed.venv / 'bin' / 'migtui'))} lab --sim --vms 4; "
               f"echo $? > {shlex.quote(str(status_file))}")

    def tmux_out(*args: str) -> str:
        return subprocess.run([*tmux, *args], env=env, capture_output=True, text=True, timeout=10).stdout

    def screen() -> str:
        return tmux_out("capture-pane", "-p", "-t", "lab")

    def ended() -> str:
        """How migtui ended ('status 0', 'status 130'), '' while it runs."""
        return f"status {status_file.read_text().strip()}" if status_file.exists() and status_file.read_text().strip() \
            else ""

    names = [f"{role}01" for role in ROLES[:4]]

    def drawn() -> bool:
        shown = screen()
        return "4 VMs" in shown and all(name in shown for name in names)

    subprocess.run([*tmux, "new-session", "-d", "-s", "lab", "-x", "120", "-y", "40", "-c", str(installed.cwd),
                    command], env=env, check=True, timeout=10)
    try:
        # The simulated VMs answer at once; under load the first draw can still take seconds.
        await wait_until(lambda: bool(ended()) or drawn(), timeout=90)
        assert drawn(), f"migtui did not draw the fleet ({ended() or 'still running'}):\n{screen()}"
        # A key typed while the console is still settling after its first frame can be lost
        # on a loaded machine (seen in CI): `q` again every 10 s, until it has ended, 60 s at most.
        for _ in range(6):
            tmux_out("send-keys", "-t", "lab", "q")
            try:
                await wait_until(lambda: bool(ended()), timeout=10)
                break
            except BaseException:
                if ended():
                    break
        assert ended(), f"migtui did not quit on q:\n{screen()}"
        assert ended() == "status 0", f"migtui ended with {ended()}:\n{screen()}"
    finally:
        tmux_out("kill-server")
    assert list(tmp_path.glob("migtui-sim-*")) == []  # the simulated fleet's sockets went with it
