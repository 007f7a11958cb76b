"""`migtui serve`: the console in a browser, through textual-serve.

Every browser visit runs migtui's own console command in a process of its own
(textual-serve's model): `migtui serve --sim` gives each visitor a simulated
fleet of their own, `migtui serve TARGET...` opens the console on the same VMs
for each visitor (QEMU serves one client per monitor, so a second visitor at the
same time sees those VMs as busy), `migtui serve demo` tells each visitor the demo.

QMP has no authentication and neither has textual-serve, so:
- the default bind is loopback, and binding elsewhere needs --public (a warning);
- off loopback the console is read-only unless --allow-controls says otherwise;
- on loopback only loopback Host names are served (a web page elsewhere cannot
  reach the console by DNS rebinding), and a websocket from a page of another
  origin is refused (a page the operator visits cannot drive the console);
- each visit's process gets the visitor's address (MIGTUI_WEB_CLIENT, the socket's
  peer, not a header) and a session id, which the audit log writes on every line,
  and the visit's start and end go to the audit log too.

Nothing here imports Textual (the visit's process does).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shlex
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migtui.backend.audit import WEB_CLIENT_ENV, WEB_FORWARDED_ENV, WEB_SESSION_ENV, AuditLog

__all__ = ["ServeOptions", "ListenError", "parse_bind", "is_loopback_host", "run_server"]

DEFAULT_BIND = "127.0.0.1:8000"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class ListenError(Exception):
    """The bind address cannot be listened on (in use, not ours): one line."""


def parse_bind(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPV6]:PORT -> (host, port); ValueError with the accepted forms."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text.strip())
    if not match:
        raise ValueError(f"--bind {text!r}: give HOST:PORT, e.g. 127.0.0.1:8000 or [::1]:8000")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port < 65536:
        raise ValueError(f"--bind {text!r}: the port must be 1 to 65535 (0: any free one)")
    return host, port


def is_loopback_host(host: str) -> bool:
    """Whether every address `host` stands for is a loopback one (an unresolvable name is not)."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


@dataclass
class ServeOptions:
    host: str
    port: int
    console: list[str]  # migtui's arguments for each visit: TARGET..., lab ..., demo ...
    public: bool = False  # the bind is not loopback (and --public said so)
    read_only: bool = False  # forced on each visit
    max_sessions: int = 8
    audit: AuditLog = field(default_factory=lambda: AuditLog(None))

    @property
    def command(self) -> str:
        """The shell command textual-serve runs per visit: this Python's migtui, so a venv is kept."""
        return shlex.join([sys.executable, "-m", "migtui", *self.console])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


# The font textual-serve ships, instead of its link to a web font service.
LOCAL_FONT = ('<style>@font-face { font-family: "Roboto Mono"; '
              'src: url("{{ config.static.url }}fonts/RobotoMono-VariableFont_wght.ttf"); }</style>\n')


def _page_template() -> str:
    """textual-serve's page with its web font served from here: a visit fetches nothing from elsewhere."""
    import textual_serve

    page = (Path(textual_serve.__file__).parent / "templates" / "app_index.html").read_text()
    return re.sub(r'<link\s+rel="stylesheet"\s+href="https://fonts\.googleapis\.com[^>]*>\s*',
                      lambda _: LOCAL_FONT, page)


def _make_server_class():
    """The textual-serve Server, subclassed; built on first use so `migtui --help` stays quick."""
    import aiohttp_jinja2
    import jinja2
    from aiohttp import web
    from textual_serve.app_service import AppService
    from textual_serve.server import Server, to_int

    class VisitService(AppService):
        """One visit's process: textual-serve's, with the visitor in its environment."""

        def __init__(self, *args: Any, visit_env: dict[str, str], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.visit_env = visit_env

        def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
            env = super()._build_environment(width, height)
            env.update(self.visit_env)
            return env

    class ConsoleServer(Server):
        def __init__(self, options: ServeOptions) -> None:
            super().__init__(options.command, host=options.host, port=options.port, title="migtui")
            self.options = options
            self.visits: dict[str, VisitService] = {}
            self._page = _page_template()

        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            aiohttp_jinja2.setup(app, loader=jinja2.DictLoader({"app_index.html": self._page}))
            return app

        async def on_startup(self, app: web.Application) -> None:
            pass  # run_server says where it listens, in one line

        # -- who may visit --------------------------------------------------------------

        def _refusal(self, request: web.Request) -> str | None:
            """Why this request is refused, or None."""
            host = urlsplit(f"//{request.host}").hostname or ""
            if not self.options.public and not is_loopback_host(host):
                return f"Host {request.host!r} is not a loopback name (migtui serve is bound to loopback)"
            origin = request.headers.get("Origin")
            if request.path == "/ws" and origin is not None and urlsplit(origin).netloc != request.host:
                return f"a page from {origin} may not open this console"
            return None

        def _base_url(self, request: web.Request) -> str:
            # The page's own address, so it works on whatever name or address the visitor used.
            scheme = "https" if request.headers.get("X-Forwarded-Proto") == "https" else request.scheme
            return f"{scheme}://{request.host}"

        async def handle_index(self, request: web.Request) -> web.StreamResponse:
            refusal = self._refusal(request)
            if refusal is not None:
                raise web.HTTPForbidden(text=f"migtui serve: {refusal}\n")
            base = self._base_url(request)
            router = request.app.router
            ws = base.replace("http", "ws", 1) + str(router["websocket"].url_for())
            context = {
                "font_size": to_int(request.query.get("fontsize", "16"), 16),
                "app_websocket_url": ws,
                "config": {"static": {"url": base + str(router["static"].url_for(filename="/")).rstrip("/") + "/"}},
                "application": {"name": "migtui"},
            }
            return aiohttp_jinja2.render_template("app_index.html", request, context)

        async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
            refusal = self._refusal(request)
            if refusal is not None:
                raise web.HTTPForbidden(text=f"migtui serve: {refusal}\n")
            websocket = web.WebSocketResponse(heartbeat=15)
            await websocket.prepare(request)
            if len(self.visits) >= self.options.max_sessions:
                await websocket.send_bytes(f"migtui serve: {len(self.visits)} sessions are open, the most "
                                           "allowed (--max-sessions); try again later\r\n".encode())
                await websocket.close()
                return websocket
            peer = request.transport.get_extra_info("peername") if request.transport else None
            client = _address(peer) if peer else (request.remote or "unknown")
            visit_env = {WEB_CLIENT_ENV: client}
            forwarded = request.headers.get("X-Forwarded-For")
            if forwarded:
                visit_env[WEB_FORWARDED_ENV] = forwarded[:200]  # what a proxy claims, kept apart
            if self.options.read_only:
                visit_env["MIGTUI_READ_ONLY"] = "1"
            service = VisitService(self.command, write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                                   close=websocket.close, download_manager=self.download_manager,
                                   visit_env=visit_env)
            visit_env[WEB_SESSION_ENV] = service.app_service_id
            self.visits[service.app_service_id] = service
            self._audit("web-session-open", service, visit_env)
            width = to_int(request.query.get("width", "80"), 80)
            height = to_int(request.query.get("height", "24"), 24)
            try:
                await service.start(width, height)
                await self._process_messages(websocket, service)
            except asyncio.CancelledError:
                await websocket.close()
            except Exception as error:  # a visit's failure ends that visit, never the server
                print(f"migtui serve: visit from {client}: {error}", file=sys.stderr, flush=True)
            finally:
                self.visits.pop(service.app_service_id, None)
                await _stop_visit(service)
                self._audit("web-session-close", service, visit_env)
            return websocket

        def _audit(self, what: str, service: VisitService, env: dict[str, str]) -> None:
            web_session = {"client": env[WEB_CLIENT_ENV], "session": service.app_service_id}
            if WEB_FORWARDED_ENV in env:
                web_session["forwarded-for"] = env[WEB_FORWARDED_ENV]
            self.options.audit.record("", self.options.url, what,
                                      {"console": self.options.console, "read-only": self.options.read_only},
                                      True, None, web=web_session)

        async def close_visits(self) -> None:
            await asyncio.gather(*(_stop_visit(s) for s in list(self.visits.values())), return_exceptions=True)

    return ConsoleServer


def _address(peer: Any) -> str:
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


VISIT_QUIT_S = 5.0  # a visit's process gets this long to quit (and clean its lab up) before SIGTERM


async def _stop_visit(service) -> None:
    """Ask the visit's process to quit; if it does not, terminate it (its lab cleans up on SIGTERM)."""
    process = service._process
    try:
        await asyncio.wait_for(service.stop(), VISIT_QUIT_S)
    except (asyncio.TimeoutError, Exception):
        pass
    if process is not None and process.returncode is None:
        try:
            process.terminate()
            await asyncio.wait_for(process.wait(), VISIT_QUIT_S)
        except ProcessLookupError:
            pass
        except asyncio.TimeoutError:
            process.kill()


async def run_server(options: ServeOptions, *, ready: asyncio.Event | None = None,
                     stop: asyncio.Event | None = None) -> int:
    """Serve until SIGINT or SIGTERM (or `stop`); one line says where."""
    from aiohttp import web

    server = _make_server_class()(options)
    runner = web.AppRunner(await server._make_app(), handle_signals=False, access_log=None)
    await runner.setup()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if stop is None else ()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        site = web.TCPSite(runner, options.host, options.port)
        try:
            await site.start()
        except OSError as err:
            raise ListenError(f"cannot listen on {options.host}:{options.port}: {err.strerror or err}") from None
        if options.port == 0 and runner.addresses:
            options.port = runner.addresses[0][1]  # the free port the system chose
        print(f"migtui serve: {options.url} runs `migtui {shlex.join(options.console)}` for each visit"
              + (" (read-only)" if options.read_only else "") + "; stop with Ctrl-C", flush=True)
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await server.close_visits()
        await runner.cleanup()
    return 0
