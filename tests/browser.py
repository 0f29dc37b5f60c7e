"""A headless Chromium driven over the DevTools protocol (aiohttp's websocket client, no Playwright):
open a page, read its text, take screenshots, and freeze the browser the way a laptop that sleeps or
a dropped SSH tunnel does: its connections stay open and nothing answers. Only what the serve tests need."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
from PIL import Image

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port}")


class Page:
    """One browser tab showing ``url``; ``screenshot()`` returns it as a PIL image."""

    def __init__(self, url: str, profile: Path, size: tuple[int, int] = (1600, 1000)):
        self.url, self.profile, self.size = url, profile, size
        self._calls = 0

    async def __aenter__(self) -> Page:
        port = free_port()
        self.process = subprocess.Popen(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--remote-debugging-port={port}",
                f"--window-size={self.size[0]},{self.size[1]}",
                self.url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.http = aiohttp.ClientSession()
        targets = None
        deadline = time.monotonic() + 60
        while targets is None:
            try:
                async with self.http.get(f"http://127.0.0.1:{port}/json") as response:
                    targets = [t for t in await response.json() if t["type"] == "page"] or None
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
            if targets is None:
                await asyncio.sleep(0.2)
        self.socket = await self.http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0)
        return self

    async def __aexit__(self, *exc) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)  # the browser's group: its renderer and network processes too
        self.process.wait(timeout=30)
        await self.http.close()

    def freeze(self) -> None:
        """Stop every browser process: its websockets stay open and answer nothing, no close is sent."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    async def text(self) -> str:
        """The page's text (document.body.innerText)."""
        result = await self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return result["result"].get("value", "")

    async def call(self, method: str, **params) -> dict:
        self._calls += 1
        await self.socket.send_json({"id": self._calls, "method": method, "params": params})
        while True:
            message = await self.socket.receive_json()
            if message.get("id") == self._calls:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    async def screenshot(self) -> Image.Image:
        shot = await self.call("Page.captureScreenshot", format="png")
        return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
