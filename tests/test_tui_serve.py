"""``segadv-tui --serve`` for real: the server on a free local port, a headless Chromium loads the page,
and the screenshot shows the explorer's pictures: the organ outlines, cells of exactly an organ's colour,
over far more pixels than the legend's three squares.

The waits poll until a deadline (they bound a failure; nothing asserts a duration).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from browser import Page, chromium, free_port, wait_for_port
from core.paths import demo_checkpoint
from segadv_tui.launch import command
from segadv_tui.render.imagery import ORGAN_COLOURS
from segadv_tui.serve import instructions

DEADLINE_S = 180


LEGEND_PIXELS = 1000  # the legend's three organ squares cover a few hundred pixels of a 1600 x 1000 page


def organ_pixels(picture) -> int:
    """Pixels of exactly an organ colour: the legend's squares, and the outlines once a slice is drawn."""
    pixels = np.asarray(picture).reshape(-1, 3)
    return int(sum((pixels == colour).all(axis=1).sum() for colour in ORGAN_COLOURS.values()))


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)")
def test_serve_shows_the_explorer_in_a_browser(tiny_demo, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "segadv_tui.launch", "--serve", "--port", str(port), "--data", str(tiny_demo),
         "--checkpoint", str(demo_checkpoint()), "--export-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        first_lines = [server.stdout.readline() for _ in range(2)]
        assert first_lines[0].strip() == f"segadv-tui: serving the explorer at {url}", first_lines
        assert f"ssh -N -L {port}:127.0.0.1:{port} " in first_lines[1] and "warning" not in "".join(first_lines)
        wait_for_port(port, time.monotonic() + DEADLINE_S)

        async def load() -> tuple[int, object]:
            async with Page(url, tmp_path / "profile") as page:
                deadline = time.monotonic() + DEADLINE_S
                while True:
                    shot = await page.screenshot()
                    organs = organ_pixels(shot)
                    if organs > LEGEND_PIXELS or time.monotonic() > deadline:
                        return organs, shot
                    await asyncio.sleep(1)

        organs, shot = asyncio.run(load())
        shot.save(tmp_path / "browser.png")
        assert organs > LEGEND_PIXELS, f"the page never showed the explorer's pictures (see {tmp_path / 'browser.png'})"
    finally:
        # The server and the explorer it started for the tab share the server's process group.
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_serve_instructions_warn_off_loopback():
    local = "\n".join(instructions("127.0.0.1", 8000))
    assert "http://127.0.0.1:8000" in local and "ssh -N -L 8000:127.0.0.1:8000" in local
    assert "warning" not in local
    network = "\n".join(instructions("0.0.0.0", 8000))
    assert "no authentication" in network and "ssh -N -L" not in network


def test_serve_arguments_are_checked_before_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        for arguments, expected in (
            (["--port", "8001"], "--host and --port go with --serve"),
            (["--serve", "--port", str(busy)], f"cannot listen on 127.0.0.1:{busy}"),
        ):
            result = CliRunner().invoke(command, arguments)
            output = " ".join(result.output.split())
            assert result.exit_code == 2, (arguments, result.output)
            assert expected in output and "Traceback" not in output
