"""SIGTERM and SIGHUP end the explorer promptly, in a terminal (a real pty) and served (textual-serve's
pipes), while its first worker is still loading torch; in a terminal the screen is given back.

The waits poll until a deadline (they bound a failure; nothing asserts a duration).
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from core.paths import demo_checkpoint
from segadv_tui.lifetime import GRACE_S

DEADLINE_S = 120
ENTER_ALT_SCREEN, LEAVE_ALT_SCREEN = b"\x1b[?1049h", b"\x1b[?1049l"
FIRST_PAINT = b"loading torch"


def explorer(tiny_demo) -> list[str]:
    return [sys.executable, "-m", "segadv_tui.launch", "--data", str(tiny_demo), "--checkpoint", str(demo_checkpoint())]


class Output:
    """Everything a file descriptor delivers, read in a thread so the explorer never blocks on it."""

    def __init__(self, fd: int):
        self.fd, self.data = fd, bytearray()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the pty's other side is closed
                return
            if not chunk:
                return
            self.data += chunk

    def wait_for(self, marker: bytes) -> int:
        deadline = time.monotonic() + DEADLINE_S
        while marker not in self.data:
            assert time.monotonic() < deadline, f"{marker!r} never came; got {bytes(self.data[-400:])!r}"
            time.sleep(0.05)
        return len(self.data)


def ended(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(timeout=GRACE_S + 30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_ends_the_terminal_explorer_and_gives_the_screen_back(tiny_demo, signum):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        explorer(tiny_demo),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    os.close(slave)
    output = Output(master)
    try:
        mark = output.wait_for(ENTER_ALT_SCREEN)
        output.wait_for(FIRST_PAINT)  # the app runs, torch still loading in its worker
        process.send_signal(signum)
        status = ended(process)
        assert status == 128 + signum, f"exit status {status}: the signal did not end the explorer its way"
        time.sleep(0.2)  # the last bytes through the pty
        assert LEAVE_ALT_SCREEN in output.data[mark:], "the terminal was left in the explorer's screen"
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)


@pytest.mark.parametrize("how", ["SIGTERM", "server gone"])
def test_a_served_explorer_ends_on_sigterm_or_when_its_server_is_gone(tiny_demo, how):
    # As textual-serve starts a browser tab's explorer, with segadv's driver (segadv_tui.serve does).
    environment = {**os.environ, "TEXTUAL_DRIVER": "segadv_tui.lifetime:ServedDriver", "COLUMNS": "120", "ROWS": "40"}
    process = subprocess.Popen(
        explorer(tiny_demo),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=environment,
        start_new_session=True,
    )
    output = Output(process.stdout.fileno())
    try:
        output.wait_for(b"__GANGLION__")  # the web driver started; torch still loading in a worker
        if how == "SIGTERM":
            process.send_signal(signal.SIGTERM)
            assert ended(process) == 128 + signal.SIGTERM
        else:
            process.stdin.close()  # what a server killed with SIGKILL leaves
            assert ended(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
        if not process.stdin.closed:
            process.stdin.close()
