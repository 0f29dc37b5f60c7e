"""``segadv-tui`` as a real process: no terminal to draw on is one line and exit 2, before the app starts.

The timeouts bound a failure (the app, once started without a terminal, never exits); nothing asserts a
duration.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from core.paths import demo_checkpoint

LAUNCH = [sys.executable, "-m", "segadv_tui.launch"]
TIMEOUT_S = 60


def arguments(data) -> list[str]:
    return ["--data", str(data), "--checkpoint", str(demo_checkpoint())]


def environment(**changes: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "TEXTUAL_DRIVER"}
    env.update({key: value for key, value in changes.items() if value is not None})
    return env


def test_output_to_a_file_or_a_pipe_is_one_line_and_exit_2(tiny_demo, tmp_path):
    output = tmp_path / "out"
    with output.open("wb") as file:
        result = subprocess.run(
            [*LAUNCH, *arguments(tiny_demo)],
            stdout=file,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=TIMEOUT_S,
            env=environment(),
        )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error:") and "standard output is not a terminal" in line and "--serve" in line
    assert output.read_bytes() == b""  # no escape codes

    piped = subprocess.run(
        [*LAUNCH, *arguments(tiny_demo)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=TIMEOUT_S,
        env=environment(),
    )
    assert piped.returncode == 2 and piped.stdout == ""
    (line,) = piped.stderr.strip().splitlines()
    assert "is not a terminal" in line


def test_term_dumb_is_one_line_and_exit_2(tiny_demo):
    """In a real terminal (a pty) that says TERM=dumb: refused, with nothing drawn."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [*LAUNCH, *arguments(tiny_demo)],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env=environment(TERM="dumb", COLORTERM="truecolor"),
            close_fds=True,
        )
        os.close(follower)
        try:
            code = process.wait(timeout=TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        written = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the pty's other end has closed: all read
                break
            if not chunk:
                break
            written += chunk
    finally:
        os.close(leader)
    text = written.decode(errors="replace")
    assert code == 2, text
    (line,) = [line for line in text.splitlines() if line.strip()]
    assert "TERM=dumb" in line and "--serve" in line
    assert "\x1b[38;2;" not in text and "\x1b[?1049h" not in text  # no 24-bit colour, no full screen


def test_a_browser_tabs_explorer_runs_with_its_output_a_pipe(tiny_demo):
    """textual-serve runs each tab's explorer with stdout a pipe and TEXTUAL_DRIVER naming its web driver:
    that child is not refused; it starts its application mode (the driver's greeting line)."""
    env = environment(TEXTUAL_DRIVER="textual.drivers.web_driver:WebDriver")
    process = subprocess.Popen(
        [*LAUNCH, "--graphics", "halfblock", *arguments(tiny_demo)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        first = process.stdout.readline()
    finally:
        process.kill()
        _, errors = process.communicate(timeout=TIMEOUT_S)
    assert first == b"__GANGLION__\n", errors.decode(errors="replace")
