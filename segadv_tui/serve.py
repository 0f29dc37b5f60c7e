"""``segadv-tui --serve``: the same explorer in a browser tab, through textual-serve.

textual-serve runs one explorer process per browser tab and relays its screen over a websocket. It has
no authentication of its own, so, as Jupyter does, every request must carry a token: in the URL the
user opens (``/?token=...``), then in a cookie set by that first visit; anything else gets 403. The
server listens on 127.0.0.1 unless told otherwise; the way in from another machine is an SSH tunnel,
whose command line is printed at start.

Each explorer runs in its own process group, and ends when its browser is gone: a closed tab closes
the websocket; a browser that stops answering (a laptop asleep, a dropped tunnel) misses the server's
pings and is dropped after ``1.5 * heartbeat`` seconds. The explorer is then asked to quit, and
killed if it has not ended ``QUIT_S`` later. Stopping the server ends every explorer. The log says
when each explorer starts and ends, its pid, and why.
"""

from __future__ import annotations

import asyncio
import getpass
import hmac
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
from typing import Any

HEARTBEAT_S = 10.0  # a ping every 10 s; no answer within 5 s and the browser counts as gone
QUIT_S = 5.0  # an explorer asked to quit ends within lifetime.GRACE_S (3 s); after this it is killed
TOKEN_COOKIE = "segadv-token-{port}"  # cookies ignore the port: two servers on one host keep apart
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
log = logging.getLogger("segadv-tui.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def public_url(host: str, port: int) -> str:
    """The address a browser uses: a wildcard listen address is reached by this machine's name."""
    name = socket.getfqdn() if host in WILDCARD_HOSTS else host
    if ":" in name:  # an IPv6 literal
        name = f"[{name}]"
    return f"http://{name}:{port}"


def new_token() -> str:
    return secrets.token_urlsafe(24)


def with_token(url: str, token: str | None) -> str:
    return f"{url}/?token={token}" if token else f"{url}/"


def instructions(host: str, port: int, token: str | None, heartbeat_s: float = HEARTBEAT_S) -> list[str]:
    """What ``--serve`` prints before it starts: the URL with its token, the SSH tunnel, the warnings."""
    lines = [f"segadv-tui: serving the explorer at {with_token(public_url(host, port), token)}"]
    if is_loopback(host):
        lines.append(
            f"  from another machine: ssh -N -L {port}:127.0.0.1:{port} {getpass.getuser()}@{socket.getfqdn()}"
            f"   then open {with_token(f'http://127.0.0.1:{port}', token)}"
        )
    elif token:
        lines.append(
            f"  warning: --host {host} serves the explorer to the network, unencrypted: the token can be read "
            f"on the way. The default 127.0.0.1 with an SSH tunnel keeps it private."
        )
    if token is None:
        lines.append(
            f"  warning: --no-token: anyone who can reach port {port} (any user of this machine, at least) can "
            f"run the explorer as you, read the data and checkpoints it opens and write its exports."
        )
    lines.append(
        f"  An explorer ends when its tab closes, or {1.5 * heartbeat_s:g} s after its browser stops answering. "
        f"Ctrl+C stops the server and every explorer."
    )
    return lines


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on (host, port), or None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def token_problem(token: str) -> str | None:
    """Why ``--token VALUE`` cannot be used (it travels in a URL and a cookie), or None."""
    if len(token) < 8:
        return "--token must be at least 8 characters"
    if not all(c.isalnum() or c in "-_.~" for c in token):
        return "--token may hold only letters, digits and - _ . ~ (it goes in a URL and a cookie)"
    return None


def serve(host: str, port: int, arguments: list[str], token: str | None, heartbeat_s: float = HEARTBEAT_S) -> None:
    """Serve ``segadv-tui ARGUMENTS`` (one process per tab) on host:port until SIGINT or SIGTERM."""
    for line in instructions(host, port, token, heartbeat_s):
        print(line, flush=True)
    _server_class()(
        [sys.executable, "-m", "segadv_tui.launch", *arguments],
        host=host,
        port=port,
        token=token,
        heartbeat_s=heartbeat_s,
    ).serve()


def _server_class():
    """textual-serve's Server with a token, a heartbeat, and explorers that end (imported only for --serve)."""
    import aiohttp_jinja2
    from aiohttp import WSCloseCode, web
    from textual_serve.app_service import AppService
    from textual_serve.server import Server, to_int

    class Explorer(AppService):
        """One browser tab's explorer: its own process group, the served driver, its end logged."""

        def __init__(self, argv: list[str], peer: str, **kwargs) -> None:
            super().__init__(" ".join(argv), **kwargs)
            self.argv, self.peer = argv, peer
            self._ending: asyncio.Future | None = None

        @property
        def pid(self) -> int:
            return self._process.pid

        async def _open_app_process(self, width: int = 80, height: int = 24):
            environment = self._build_environment(width=width, height=height)
            environment["TEXTUAL_DRIVER"] = "segadv_tui.lifetime:ServedDriver"
            # No shell between the server and the explorer, and a process group of its own: the pid
            # logged is the explorer's, and ending the group ends whatever it started.
            self._process = process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=environment,
                start_new_session=True,
            )
            self._stdin = process.stdin
            return process

        async def on_data(self, payload: bytes) -> None:
            # Once the browser is gone its output is dropped, still read, so the explorer never blocks
            # writing to a full pipe while it is asked to quit.
            try:
                await self.remote_write_bytes(payload)
            except ConnectionError:
                pass

        def signal_group(self, signum: int) -> None:
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass

        async def end(self, why: str) -> None:
            """Ask the explorer to quit; kill its process group if it has not ended ``QUIT_S`` later.

            Once: the server's stop and the end of its connection may both ask."""
            if self._ending is None:
                self._ending = asyncio.ensure_future(self._end(why))
            await asyncio.shield(self._ending)

        async def _end(self, why: str) -> None:
            log.info("explorer %d: %s", self.pid, why)
            await self.send_meta({"type": "quit"})
            try:
                await asyncio.wait_for(asyncio.shield(self._process.wait()), QUIT_S)
            except asyncio.TimeoutError:
                log.info("explorer %d: still running %g s after quit: killed", self.pid, QUIT_S)
            # Killed in any case: whatever the explorer started goes with it.
            self.signal_group(signal.SIGKILL)
            status = await self._process.wait()
            if self._task is not None:
                await self._task
                self._task = None
            ended = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"
            log.info("explorer %d ended (%s)", self.pid, ended)

    class ExplorerServer(Server):
        def __init__(self, argv: list[str], *, host: str, port: int, token: str | None, heartbeat_s: float) -> None:
            super().__init__(
                " ".join(argv), host=host, port=port, title="segadv-tui", public_url=public_url(host, port)
            )
            self.argv, self.token, self.heartbeat_s = argv, token, heartbeat_s
            self.cookie = TOKEN_COOKIE.format(port=port)
            self.explorers: set[Explorer] = set()
            self.stopping = False

        def initialize_logging(self) -> None:
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout
            )
            logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # a line per static file is noise

        def request_exit(self) -> None:
            log.info("stopping: ending %d explorer(s)", len(self.explorers))
            super().request_exit()

        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            if self.token is not None:
                app.middlewares.append(self._require_token)
            return app

        @web.middleware
        async def _require_token(self, request: web.Request, handler) -> web.StreamResponse:
            from_url = request.query.get("token")
            given = from_url or request.cookies.get(self.cookie, "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                log.info("refused %s %s from %s: no valid token", request.method, request.path, request.remote)
                raise web.HTTPForbidden(
                    text="403 Forbidden: this segadv-tui server needs its token. Open the URL "
                    "it printed (http://...:PORT/?token=...).\n"
                )
            response = await handler(request)
            if from_url and not response.prepared:  # not the websocket: its headers are already sent
                response.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict", path="/")
            return response

        async def on_startup(self, app: web.Application) -> None:
            log.info("listening on %s:%d (pid %d)", self.host, self.port, os.getpid())

        async def on_shutdown(self, app: web.Application) -> None:
            self.stopping = True
            explorers = list(self.explorers)
            await asyncio.gather(*(explorer.end("the server is stopping") for explorer in explorers))
            # Closed here, or aiohttp would wait up to a minute for their handlers to return.
            await asyncio.gather(*(explorer.remote_close() for explorer in explorers))

        @aiohttp_jinja2.template("app_index.html")
        async def handle_index(self, request: web.Request) -> dict[str, Any]:
            # URLs from the address the browser used, not the listen address: a tunnel may use another
            # local port or name, and the token cookie goes only to the host it came from.
            base = f"{request.scheme}://{request.host}"
            return {
                "font_size": to_int(request.query.get("fontsize", "16"), 16),
                "app_websocket_url": f"{'wss' if request.secure else 'ws'}://{request.host}"
                f"{request.app.router['websocket'].url_for()}",
                "config": {
                    "static": {"url": f"{base}{request.app.router['static'].url_for(filename='/')}".rstrip("/") + "/"}
                },
                "application": {"name": self.title},
            }

        async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
            # timeout: how long a close waits for the browser's reply (a frozen one never sends it)
            websocket = web.WebSocketResponse(heartbeat=self.heartbeat_s, timeout=1.0)
            await websocket.prepare(request)
            if self.stopping:
                await websocket.close(code=WSCloseCode.GOING_AWAY)
                return websocket
            explorer = Explorer(
                self.argv,
                request.remote or "?",
                write_bytes=websocket.send_bytes,
                write_str=websocket.send_str,
                close=websocket.close,
                download_manager=self.download_manager,
            )
            await explorer.start(
                to_int(request.query.get("width", "80"), 80), to_int(request.query.get("height", "24"), 24)
            )
            self.explorers.add(explorer)
            log.info("explorer %d started for %s (%d live)", explorer.pid, explorer.peer, len(self.explorers))
            why = "the server is stopping"
            try:
                await self._process_messages(websocket, explorer)
                why = _why_closed(websocket, self.heartbeat_s)
            except asyncio.CancelledError:
                pass
            except ConnectionError as error:
                why = f"the connection broke ({error})"
            finally:
                await explorer.end(why)
                if explorer in self.explorers:
                    self.explorers.discard(explorer)
                    log.info("%d explorer(s) live", len(self.explorers))
            return websocket

    def _why_closed(websocket: web.WebSocketResponse, heartbeat_s: float) -> str:
        if isinstance(websocket.exception(), asyncio.TimeoutError):
            return f"its browser stopped answering (no reply to a ping in {heartbeat_s / 2:g} s)"
        if websocket.close_code in (WSCloseCode.OK, WSCloseCode.GOING_AWAY):
            return f"its browser closed the connection (code {websocket.close_code})"
        return f"the connection dropped without a close (code {websocket.close_code})"

    return ExplorerServer
