"""QMP over TCP with TLS, against real QEMU (tls-creds-x509 on the monitor's chardev)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lab_fixtures import qemu_required

pytestmark = [qemu_required, pytest.mark.qemu,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")]
MIGTUI = [sys.executable, "-m", "migtui"]


def make_pki(d: Path) -> None:
    """A CA and a server certificate for 127.0.0.1, as QEMU's tls-creds-x509 expects them."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca-cert.pem",
        "-days", "2", "-subj", "/CN=migtui test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server-key.pem", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
        "-out", "server-cert.pem", "-days", "2", "-extfile", "ext.cnf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def migtui(*args: str, env: dict) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*MIGTUI, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env={**os.environ, **env})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_tls_monitor(tmp_path: Path):
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    port = free_port()
    qemu = await asyncio.create_subprocess_exec(
        "qemu-system-x86_64", "-nodefaults", "-display", "none", "-m", "64M", "-name", "tlsvm",
        "-object", f"tls-creds-x509,id=tls0,dir={pki},endpoint=server,verify-peer=off",
        "-chardev", f"socket,id=mon,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=tls0",
        "-mon", "chardev=mon,mode=control", stderr=asyncio.subprocess.PIPE)
    try:
        config = tmp_path / "config.toml"
        config.write_text(f'[tls]\nca-file = "{pki / "ca-cert.pem"}"\n')
        config.chmod(0o600)
        env = {"MIGTUI_CONFIG": str(config)}
        target = f"tcp:127.0.0.1:{port}"
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # wait for QEMU to listen
            rc, out, err = await migtui("status", "--json", target, env=env)
            if rc == 0 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert rc == 0, err
        obj = json.loads(out)
        assert obj["name"] == "tlsvm" and obj["qemu"].startswith("7.")
        # Without the CA, the TLS monitor cannot be spoken to: one clear line, no traceback.
        rc, out, err = await migtui("status", target, env={"MIGTUI_CONFIG": str(tmp_path / "none.toml")})
        assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        # A CA that did not sign the server's certificate is refused.
        other = tmp_path / "other"
        other.mkdir()
        make_pki(other)
        config.write_text(f'[tls]\nca-file = "{other / "ca-cert.pem"}"\n')
        rc, out, err = await migtui("status", target, env=env)
        assert rc == 2 and "certificate" in err.lower() and "Traceback" not in err
    finally:
        qemu.kill()
        await qemu.wait()
