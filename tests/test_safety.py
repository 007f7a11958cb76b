"""Safety and security: the audit log, read-only everywhere, unsafe configs, no shells, remote TCP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from migtui.sim import SimFleet

MiB = 2**20
MIGTUI = [sys.executable, "-m", "migtui"]
ROOT = Path(__file__).resolve().parent.parent
CONTROL = {"migrate", "migrate_cancel", "migrate-set-parameters", "migrate-set-capabilities",
           "migrate-start-postcopy", "migrate-incoming", "migrate_set_speed", "migrate_set_downtime"}


@pytest_asyncio.fixture
async def vm(tmp_path):
    fleet = SimFleet(tmp_path / "sim", seed=1)
    yield await fleet.add_vm("vm", dirty_rate=300 * MiB, working_set=256 * MiB, ram=1024 * MiB)
    await fleet.stop()


async def migtui(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*MIGTUI, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


def controls(vm) -> list[str]:
    return [n for n, a in vm.received if n in CONTROL
            and a != {"capabilities": [{"capability": "events", "state": True}]}]


async def test_audit_log_records_every_change_with_qemus_answer(vm, tmp_path):
    audit = tmp_path / "state" / "migtui" / "audit.ndjson"
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert (await migtui("set", vm.endpoint, "bandwidth=64M", "tls-creds=server-secret", env=env))[0] == 0
    rc, _, err = await migtui("migrate", vm.endpoint, "--uri", "bogus-scheme-but-valid:x", env=env)
    assert rc == 2  # refused by migtui before sending: not audited
    rc, _, err = await migtui("postcopy", vm.endpoint, env=env)
    assert rc == 2
    rc, _, _ = await migtui("migrate", vm.endpoint, "--uri", "exec:cat > /dev/null", env=env)
    assert rc == 0
    rc, _, err = await migtui("caps", vm.endpoint, "xbzrle=on", env=env)
    assert rc == 2 and "while a migration runs" in err
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [line["command"] for line in lines] == ["migrate-set-parameters", "migrate"]
    first = lines[0]
    assert first["vm"] == "vm" and first["ok"] is True and first["time"].endswith("Z")
    assert first["arguments"]["max-bandwidth"] == 64 * MiB
    assert first["arguments"]["tls-creds"] == "***"  # secrets never reach the log
    assert "server-secret" not in audit.read_text()
    assert oct(audit.stat().st_mode & 0o777) == "0o600"
    # A command QEMU refuses is recorded with QEMU's sentence.
    rc, _, _ = await migtui("set", vm.endpoint, "cpu-throttle-initial=150", env=env)
    last = json.loads(audit.read_text().splitlines()[-1])
    assert rc == 2 and last["ok"] is False and last["result"]


async def test_audit_can_be_switched_off(vm, tmp_path):
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "MIGTUI_AUDIT": "off"}
    assert (await migtui("set", vm.endpoint, "bandwidth=64M", env=env))[0] == 0
    assert not (tmp_path / "state" / "migtui" / "audit.ndjson").exists()


@pytest.mark.parametrize("args", [
    ["migrate", "{ep}", "--uri", "exec:cat > /dev/null"],
    ["cancel", "{ep}"],
    ["set", "{ep}", "bandwidth=1G"],
    ["caps", "{ep}", "xbzrle=on"],
    ["postcopy", "{ep}"],
])
async def test_read_only_makes_the_command_line_refuse_controls(vm, tmp_path, args):
    args = [a.replace("{ep}", vm.endpoint) for a in args]
    rc, _, err = await migtui(*args, env={"MIGTUI_READ_ONLY": "1"})
    assert rc == 2 and "controls are off" in err and len(err.strip().splitlines()) == 1
    config = tmp_path / "config.toml"
    config.write_text("read-only = true\n")
    config.chmod(0o600)
    rc, _, err = await migtui(*args, env={"MIGTUI_CONFIG": str(config)})
    assert rc == 2 and f"read-only in {config}" in err
    assert controls(vm) == []
    rc, out, _ = await migtui("caps", vm.endpoint, env={"MIGTUI_READ_ONLY": "1"})  # reading is fine
    assert rc == 0 and "xbzrle=off" in out


async def test_config_writable_by_others_is_refused(tmp_path, vm):
    config = tmp_path / "config.toml"
    config.write_text('theme = "migtui-light"\n')
    config.chmod(0o666)
    rc, _, err = await migtui("status", vm.endpoint, env={"MIGTUI_CONFIG": str(config)})
    assert rc == 2 and "writable by others" in err and "chmod go-w" in err
    config.chmod(0o644)
    rc, _, err = await migtui("status", vm.endpoint, env={"MIGTUI_CONFIG": str(config)})
    assert rc == 0, err


@pytest.mark.parametrize("text, fragment", [
    ("theme = 3\n", "theme must be a string"),
    ("read-only = 'yes'\n", "read-only must be true or false"),
    ("[tls]\nca = 'x'\n", "unknown ca"),
    ("not toml [", "not valid TOML"),
    ("[tls]\nca-file = '/nonexistent/ca.pem'\n", "[tls] files cannot be used"),
])
async def test_bad_configs_get_one_line(tmp_path, vm, text, fragment):
    config = tmp_path / "config.toml"
    config.write_text(text)
    config.chmod(0o600)
    rc, _, err = await migtui("status", "tcp:127.0.0.1:1", env={"MIGTUI_CONFIG": str(config)})
    assert rc == 2 and fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_migtui_never_runs_a_shell():
    pattern = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|create_subprocess_shell|subprocess\.getoutput")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "migtui").rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_remote_tcp_gets_a_warning_and_loopback_does_not(capsys):
    import argparse

    from migtui.cli.common import _warn_remote
    from migtui.config import Config
    from migtui.model.endpoint import parse_endpoint

    args = argparse.Namespace(config=Config())
    _warn_remote([parse_endpoint("tcp:127.0.0.1:4444"), parse_endpoint("unix:/run/x.qmp")], args)
    assert capsys.readouterr().err == ""
    _warn_remote([parse_endpoint("tcp:192.0.2.10:4444")], args)  # never connected to: a documentation address
    err = capsys.readouterr().err
    assert "not loopback" in err and "no authentication" in err
    args = argparse.Namespace(config=Config(tls_ca_file=Path("/ca.pem")))
    _warn_remote([parse_endpoint("tcp:192.0.2.10:4444")], args)
    assert capsys.readouterr().err == ""


async def test_console_shows_the_remote_tcp_warning():
    from migtui.model.endpoint import parse_endpoint
    from migtui.backend.qmp.backend import QMPBackend
    from migtui.ui.app import MigtuiApp

    fleet = QMPBackend([parse_endpoint("far=tcp:192.0.2.10:4444"), parse_endpoint("near=tcp:127.0.0.1:4444")])
    app = MigtuiApp(fleet, start_fleet=False)  # never connects: the address is only shown
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert app.insecure == ["far"]
        assert "1 over remote TCP without TLS" in str(app.screen.query_one("#fleet-header").render())
        assert any("no authentication" in r.detail for r in fleet.get("far").vm.log)
