"""`migtui serve`: the console in a real browser (Debian's chromium, headless, driven by Playwright).

The end-to-end test starts `migtui serve --sim` as an operator would, loads the page,
reads what the terminal shows (xterm.js's own screen buffer: its WebGL renderer puts no
text in the DOM), presses keys and checks the audit log. The rest checks serve's safety
rules without a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lab_fixtures import wait_until
from migtui.cli import main
from migtui.cli.parser import UsageError
from migtui.cli.serve import parse_serve_args

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# The page's xterm.js Terminal is held in a closure; catch it as the page assigns it, to read its buffer.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
    if (value && value.buffer) window.__migtuiTerminal = value;
  },
});
"""
SCREEN_TEXT = """() => {
  const t = window.__migtuiTerminal;
  if (!t) return null;
  const lines = [];
  for (let y = 0; y < t.rows; y++) lines.push(t.buffer.active.getLine(y).translateToString(true));
  return lines.join("\\n");
}"""


def browser_or_skip() -> None:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append("chromium (apt-get install chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if missing:
        reason = f"needs {' and '.join(missing)}"
        if os.environ.get("MIGTUI_REQUIRE_QEMU"):
            pytest.fail(f"MIGTUI_REQUIRE_QEMU is set (CI) but the browser test {reason}")
        pytest.skip(reason)


class Served:
    """`migtui serve ...` in a subprocess, with its own state directory (audit log)."""

    def __init__(self, state: Path, *args: str) -> None:
        env = {**os.environ, "XDG_STATE_HOME": str(state), "XDG_RUNTIME_DIR": tempfile.mkdtemp()}
        self.state = state
        self.process = subprocess.Popen([sys.executable, "-m", "migtui", "serve", "--bind", "127.0.0.1:0", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.process.stdout.readline()  # its first line says where; it blocks until then
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, f"no URL in {line!r}; stderr: {self.process.stderr.read() if not match else ''}"
        self.url = match.group(1)

    def audit(self) -> list[dict]:
        path = self.state / "migtui" / "audit.ndjson"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def stop(self) -> str:
        self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err


@contextlib.asynccontextmanager
async def chromium_page(tmp_path: Path, served: Served, outside: list[str]):
    """A page in headless chromium that reads the terminal's buffer and fetches only from `served`
    (anything else is aborted and listed in `outside`)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 760})
        try:
            page = context.pages[0] if context.pages else await context.new_page()

            async def only_loopback(route):
                # The page must work with nothing from elsewhere (and a test sends nothing elsewhere).
                if route.request.url.startswith(served.url) or route.request.url.startswith("ws://127.0.0.1"):
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()

            await page.route("**/*", only_loopback)
            await page.add_init_script(CATCH_TERMINAL)
            yield page
        finally:
            await context.close()


async def screen(page) -> str:
    return await page.evaluate(SCREEN_TEXT) or ""


async def wait_for_text(page, pattern: str, timeout: float = 30.0) -> str:
    """The terminal's text once it matches `pattern` (a regex); fail with what it showed."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = await screen(page)
        if re.search(pattern, text):
            return text
        await asyncio.sleep(0.1)  # polling the page for a condition, with a deadline
    pytest.fail(f"the page never showed {pattern!r}; it showed:\n{text}")


async def test_serve_sim_in_chromium_draws_the_fleet_takes_keys_and_audits_the_visitor(tmp_path):
    browser_or_skip()
    # --speedup: the stuck migration shows sooner; --no-record: no recording paths in the screenshot.
    served = Served(tmp_path / "state", "--sim", "--speedup", "3", "--no-record")
    outside: list[str] = []
    try:
        async with chromium_page(tmp_path, served, outside) as page:
            await page.goto(served.url)
            # The fleet is drawn: all 12 VMs connected, a migration that will not converge among them.
            text = await wait_for_text(page, r"12 VMs · (?!.*connecting).*migrating")
            await wait_for_text(page, r"not-converging")
            assert re.search(r"^ *db01 +active +not-converging", text + await screen(page), re.M)
            await page.screenshot(path=str(ROOT / "screenshots" / "serve-fleet.png"))

            await page.mouse.click(640, 380)  # the terminal takes the keys
            await page.keyboard.press("/")
            await page.keyboard.type("not-")
            text = await wait_for_text(page, r"filter 'not-': 1 shown")
            rows = [line for line in text.splitlines() if re.match(r" *[a-z]+\d\d +\S", line)]
            assert len(rows) == 1 and rows[0].split()[0] == "db01", rows
            await page.keyboard.press("Enter")  # keeps the filter
            await page.keyboard.press("Enter")  # opens the dashboard of the one shown
            text = await wait_for_text(page, r"NOT-CONVERGING:")
            assert "db01" in text.splitlines()[0] and "advice" in text

            # An action from the browser reaches the audit log with the visitor's address.
            await page.keyboard.press("b")
            await wait_for_text(page, r"bandwidth for db01")  # the dialog
            await page.keyboard.type("4G")
            await page.keyboard.press("Enter")
            await wait_for_text(page, r"max-bandwidth +4\.0 GiB/s")  # the dashboard shows QEMU's new value
            await wait_until(lambda: any(a["command"] in ("migrate-set-parameters", "migrate_set_speed")
                                         for a in served.audit()), timeout=20)
            opened = next(a for a in served.audit() if a["command"] == "web-session-open")
            change = next(a for a in served.audit() if a["command"] in ("migrate-set-parameters",
                                                                         "migrate_set_speed"))
            assert opened["web"]["client"].startswith("127.0.0.1:")
            assert change["vm"] == "db01" and change["web"] == opened["web"]  # same visitor, same visit
            assert change["pid"] != opened["pid"]  # written by the visit's own console process
        # Closing the page ends the visit: its process quits and the audit log says so.
        await wait_until(lambda: any(a["command"] == "web-session-close" for a in served.audit()), timeout=20)
        closed = next(a for a in served.audit() if a["command"] == "web-session-close")
        assert closed["web"] == opened["web"]
    finally:
        err = served.stop()
    assert outside == [], f"the page fetched from elsewhere: {outside}"
    assert "Traceback" not in err, err



def caption_pattern(n: int, step) -> str:
    """Step n's caption line, as the demo draws it at the top: waiting or done (live counts: any number)."""
    texts = [re.escape(t).replace(r"\{star\}", "db01").replace(r"\{in_flight\}", r"\d+")
             for t in (step.waiting, step.caption)]
    return rf"(?m)^ {n}/5 (?:{'|'.join(texts)}) +→ next *$"


async def test_serve_demo_in_chromium_starts_on_its_first_caption_and_steps_on_the_presenters_key(tmp_path):
    """`migtui serve demo`: each visit tells the story from its start; a presenter's key moves it on."""
    browser_or_skip()
    from migtui.ui.story import STORY

    served = Served(tmp_path / "state", "demo")
    outside: list[str] = []
    try:
        async with chromium_page(tmp_path, served, outside) as page:
            await page.goto(served.url)
            # Step 1 on top (not --auto: it waits for the presenter), the fleet under it.
            text = await wait_for_text(page, caption_pattern(1, STORY[0]) + r"(?s:.*)^ *db01 ")
            assert re.search(r"^ *web01 ", text, re.M)
            await page.mouse.click(640, 380)  # the terminal takes the keys
            await page.keyboard.press("ArrowRight")
            text = await wait_for_text(page, caption_pattern(2, STORY[1]))
            # Step 2's view: db01's dashboard, the fleet gone.
            body = text.splitlines()[1:]
            assert "db01" in body[0] and not any(re.match(r" *web01 ", line) for line in body), text
    finally:
        err = served.stop()
    assert outside == [], f"the page fetched from elsewhere: {outside}"
    assert "Traceback" not in err, err

# ---- safety rules, without a browser ----------------------------------------------


def test_serve_binds_loopback_by_default_and_keeps_the_controls_there():
    args = parse_serve_args(["--sim"])
    assert (args.serve.host, args.serve.port) == ("127.0.0.1", 8000)
    assert not args.serve.public and not args.serve.read_only
    assert args.serve.console == ["lab", "--sim"]
    assert args.serve.command.endswith("-m migtui lab --sim")


def test_a_non_loopback_bind_needs_public_and_is_read_only_unless_controls_are_allowed(capsys):
    with pytest.raises(UsageError, match="not loopback.*--public"):
        parse_serve_args(["--bind", "0.0.0.0:8000", "--sim"])
    public = parse_serve_args(["--bind", "0.0.0.0:8000", "--public", "--sim", "--vms", "5"]).serve
    assert public.public and public.read_only
    assert public.console == ["lab", "--read-only", "--sim", "--vms", "5"]
    targets = parse_serve_args(["--bind", "[::]:8000", "--public", "--", "web=unix:/run/web.qmp"]).serve
    assert targets.read_only and targets.console == ["--read-only", "web=unix:/run/web.qmp"]
    demo = parse_serve_args(["--bind", "0.0.0.0:8000", "--public", "demo", "--auto"]).serve
    assert demo.console == ["demo", "--read-only", "--auto"]
    allowed = parse_serve_args(["--bind", "0.0.0.0:8000", "--public", "--allow-controls", "--sim"]).serve
    assert allowed.public and not allowed.read_only and allowed.console == ["lab", "--sim"]


@pytest.mark.parametrize("argv, message", [
    ([], "give what each visit opens"),
    (["status", "x=unix:/x"], "status has no console to serve"),
    (["lab", "--no-ui"], "lab --no-ui has no console"),
    (["replay"], "replay: give the FILE"),
    (["--bind", "localhost", "--sim"], "give HOST:PORT"),
    (["--bind", "127.0.0.1:70000", "--sim"], "port must be"),
    (["sokcet"], "unknown command or socket 'sokcet'"),
    (["--sim", "--lab"], "not both"),
    (["--sim", "--vms", "lots"], "--vms"),
    (["lab", "--mem", "64M"], "--mem"),
    (["--sim", "--theme", "neon"], "unknown theme 'neon'"),
])
def test_serve_refuses_bad_arguments_in_one_line(argv, message, capsys):
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


async def test_serve_refuses_foreign_host_names_and_pages_of_other_origins(tmp_path, monkeypatch):
    """DNS rebinding and cross-site websockets: a page elsewhere cannot reach a loopback console."""
    import aiohttp

    from migtui.browser import ServeOptions, run_server

    options = ServeOptions(host="127.0.0.1", port=0, console=["demo"])
    ready, stop = asyncio.Event(), asyncio.Event()
    server = asyncio.ensure_future(run_server(options, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        base = f"http://127.0.0.1:{options.port}"
        async with aiohttp.ClientSession() as client:
            async with client.get(base + "/") as ok:
                page = await ok.text()
                assert ok.status == 200 and f"ws://127.0.0.1:{options.port}/ws" in page
                assert "googleapis" not in page  # the font comes from here
            async with client.get(base + "/", headers={"Host": f"attacker.example:{options.port}"}) as rebound:
                assert rebound.status == 403 and "not a loopback name" in await rebound.text()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(base + "/ws", headers={"Origin": "http://attacker.example"})
            assert refused.value.status == 403
    finally:
        stop.set()
        await asyncio.wait_for(server, 20)


def test_is_loopback_host():
    from migtui.browser import is_loopback_host

    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert is_loopback_host("127.3.4.5")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("::") and not is_loopback_host("192.0.2.1")
    assert not is_loopback_host("no-such-host.invalid")

